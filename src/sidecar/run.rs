//! Carrying out a stop decision for one sidecar: preStop (bounded by the grace), then CRI
//! `StopContainer` with the remaining grace, so the runtime sends SIGTERM and SIGKILL after it.

use std::time::{Duration, Instant, SystemTime};

use crate::api::well_known as wk;
use crate::cri::CriClient;
use crate::cri::kubelet::{PodRef, PreStop};
use crate::sidecar::decide::Target;

#[derive(Clone, Debug)]
pub struct StopRequest {
    pub pod: PodRef,
    pub target: Target,
    pub grace: Duration,
    pub pre_stop: Option<PreStop>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreStopOutcome {
    None,
    Completed { exit_code: i32 },
    TimedOut,
    Failed(String),
    Skipped(String),
}

impl std::fmt::Display for PreStopOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Completed { exit_code } => write!(f, "exit {exit_code}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StopOutcome {
    pub request: StopRequest,
    pub pre_stop: PreStopOutcome,
    pub pre_stop_duration: Duration,
    /// Grace passed to StopContainer.
    pub stop_grace: Duration,
    /// When StopContainer was sent.
    pub stop_sent_at: SystemTime,
    /// The container's final status after the stop, or why the stop failed.
    pub result: Result<Option<k8s_cri::v1::ContainerStatus>, String>,
}

/// kubelet's rule: the grace left after preStop, never below the minimum.
pub fn remaining_grace(grace: Duration, pre_stop_took: Duration) -> Duration {
    grace
        .saturating_sub(pre_stop_took)
        .max(Duration::from_secs(wk::MINIMUM_GRACE_SECONDS as u64))
}

async fn run_pre_stop(
    cri: &CriClient,
    id: &str,
    hook: &PreStop,
    grace: Duration,
) -> PreStopOutcome {
    match hook {
        PreStop::Exec(cmd) => {
            match tokio::time::timeout(grace, cri.exec_sync(id, cmd.clone(), grace)).await {
                Err(_) => PreStopOutcome::TimedOut,
                Ok(Ok(resp)) => PreStopOutcome::Completed {
                    exit_code: resp.exit_code,
                },
                Ok(Err(e)) if e.status.code() == tonic::Code::DeadlineExceeded => {
                    PreStopOutcome::TimedOut
                }
                Ok(Err(e)) => PreStopOutcome::Failed(e.to_string()),
            }
        }
        PreStop::Sleep(d) => {
            tokio::time::sleep((*d).min(grace)).await;
            PreStopOutcome::Completed { exit_code: 0 }
        }
        PreStop::HttpGet(_) => PreStopOutcome::Skipped("httpGet not supported".into()),
        PreStop::Unsupported(what) => PreStopOutcome::Skipped(format!("{what} not supported")),
    }
}

/// Stop one sidecar. Never panics; every failure is in the outcome.
pub async fn stop_sidecar(cri: &CriClient, request: StopRequest) -> StopOutcome {
    let id = request.target.id.clone();
    let started = Instant::now();
    let pre_stop = match &request.pre_stop {
        None => PreStopOutcome::None,
        Some(hook) => run_pre_stop(cri, &id, hook, request.grace).await,
    };
    let pre_stop_duration = started.elapsed();
    let stop_grace = remaining_grace(request.grace, pre_stop_duration);
    let stop_sent_at = SystemTime::now();
    let result = match cri.stop_container(&id, stop_grace).await {
        Ok(()) => match cri.container_status(&id, false).await {
            Ok((st, _)) => Ok(Some(st)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(format!("stopped, but reading the final status failed: {e}")),
        },
        // Removed meanwhile: nothing left to stop.
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    StopOutcome {
        request,
        pre_stop,
        pre_stop_duration,
        stop_grace,
        stop_sent_at,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_left_after_prestop_has_a_floor() {
        let s = Duration::from_secs;
        assert_eq!(remaining_grace(s(30), s(0)), s(30));
        assert_eq!(remaining_grace(s(30), s(10)), s(20));
        assert_eq!(remaining_grace(s(30), s(29)), s(2));
        assert_eq!(remaining_grace(s(0), s(0)), s(2));
    }
}
