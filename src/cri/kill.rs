//! The one kubelet-style kill (the kubelet's `killContainer`), used by the sidecar terminator and
//! the CRR executor alike: the container's own preStop hook (exec through CRI, sleep, or httpGet
//! against the pod IP), bounded by the grace period left, then CRI `StopContainer` with the rest
//! of the grace, never less than 2 s. The runtime sends SIGTERM, and SIGKILL when that runs out.
//!
//! The hook and the grace come from the kubelet's own annotations on the container (the Pod
//! spec), never from the object that asked for the kill.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::HTTPGetAction;

use super::handler;
use super::kubelet::{NamedPort, PreStop};
use super::{CriClient, CriError};
use crate::api::well_known::MINIMUM_GRACE_SECONDS;

/// One container to kill.
#[derive(Clone, Copy, Debug)]
pub struct Kill<'a> {
    pub container_id: &'a str,
    /// Its sandbox: the pod IP for an httpGet hook.
    pub sandbox_id: &'a str,
    /// The Pod spec's preStop hook; `None` skips it (none declared, or already run before an
    /// agent restart).
    pub pre_stop: Option<&'a PreStop>,
    /// The container's named ports (an httpGet hook may name one).
    pub ports: &'a [NamedPort],
    /// The termination grace period as decided.
    pub grace: Duration,
    /// When the kill was decided: time spent since then (a journal write, an agent restart, the
    /// hook) comes out of the grace.
    pub decided_at: SystemTime,
}

/// What became of the preStop hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreStopOutcome {
    None,
    /// An exec hook exited 0.
    Exited0,
    /// A sleep or httpGet hook completed.
    Ran,
    /// Cut by the grace period.
    TimedOut,
    Failed(String),
    /// The stop was decided before the agent restarted: the hook may have run then, so it is not
    /// run again (the kubelet runs a preStop hook at most once per stop too).
    NotRerun,
}

impl PreStopOutcome {
    pub fn failure(&self) -> Option<&str> {
        match self {
            Self::Failed(why) => Some(why),
            _ => None,
        }
    }
}

impl std::fmt::Display for PreStopOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Exited0 => f.write_str("exit 0"),
            Self::Ran => f.write_str("ran"),
            Self::TimedOut => f.write_str("cut by the grace period"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::NotRerun => f.write_str("not run again (resumed)"),
        }
    }
}

/// The StopContainer call.
#[derive(Debug)]
pub struct Stopped {
    /// The grace passed to StopContainer.
    pub grace: Duration,
    pub sent_at: SystemTime,
    /// `NotFound` counts as stopped: the container was removed meanwhile.
    pub result: Result<(), CriError>,
    /// The runtime answered `NotFound`: there is no final status to read.
    pub removed: bool,
}

impl Kill<'_> {
    /// The grace left now.
    fn left(&self) -> Duration {
        let spent = SystemTime::now()
            .duration_since(self.decided_at)
            .unwrap_or_default();
        self.grace.saturating_sub(spent)
    }

    /// Run the preStop hook, bounded by the grace left.
    pub async fn run_pre_stop(&self, cri: &CriClient) -> PreStopOutcome {
        let Some(hook) = self.pre_stop else {
            return PreStopOutcome::None;
        };
        let grace = self.left();
        if grace.is_zero() {
            return PreStopOutcome::TimedOut;
        }
        match tokio::time::timeout(grace, self.hook(cri, hook, grace)).await {
            Err(_) => PreStopOutcome::TimedOut,
            Ok(outcome) => outcome,
        }
    }

    async fn hook(&self, cri: &CriClient, hook: &PreStop, grace: Duration) -> PreStopOutcome {
        match hook {
            PreStop::Exec(cmd) => {
                match cri.exec_sync(self.container_id, cmd.clone(), grace).await {
                    Ok(resp) if resp.exit_code == 0 => PreStopOutcome::Exited0,
                    Ok(resp) => PreStopOutcome::Failed(format!(
                        "command {cmd:?} exited with {}: {}",
                        resp.exit_code,
                        quoted_output(&resp.stderr)
                    )),
                    Err(e) if e.status.code() == tonic::Code::DeadlineExceeded => {
                        PreStopOutcome::TimedOut
                    }
                    Err(e) => PreStopOutcome::Failed(e.to_string()),
                }
            }
            PreStop::Sleep(d) => {
                tokio::time::sleep((*d).min(grace)).await;
                PreStopOutcome::Ran
            }
            PreStop::HttpGet(http) => match self.http_get(cri, http).await {
                Ok(()) => PreStopOutcome::Ran,
                Err(why) => PreStopOutcome::Failed(why),
            },
            PreStop::Unsupported(what) => PreStopOutcome::Failed(format!("{what} cannot run")),
        }
    }

    async fn http_get(&self, cri: &CriClient, http: &HTTPGetAction) -> Result<(), String> {
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err("HTTPS preStop hooks are not supported".into());
        }
        let host = match http.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.to_string(),
            None => handler::pod_ip(cri, self.sandbox_id).await?,
        };
        let port = handler::resolve_port(&http.port, self.ports)?;
        let answer = handler::http_get(&host, port, http, 0).await?;
        if answer.status.is_client_error() || answer.status.is_server_error() {
            return Err(format!("GET {}: HTTP {}", answer.url, answer.status));
        }
        Ok(())
    }

    /// StopContainer with the rest of the grace.
    pub async fn stop(&self, cri: &CriClient) -> Stopped {
        let grace = stop_grace(self.left());
        let sent_at = SystemTime::now();
        let result = cri.stop_container(self.container_id, grace).await;
        let removed = result.as_ref().is_err_and(CriError::is_not_found);
        Stopped {
            grace,
            sent_at,
            result: if removed { Ok(()) } else { result },
            removed,
        }
    }

    /// preStop, then StopContainer: the whole kill.
    pub async fn run(&self, cri: &CriClient) -> (PreStopOutcome, Stopped) {
        let pre_stop = self.run_pre_stop(cri).await;
        (pre_stop, self.stop(cri).await)
    }
}

/// The grace StopContainer gets: what is left, at least the kubelet's minimum (2 s).
pub fn stop_grace(left: Duration) -> Duration {
    left.max(Duration::from_secs(MINIMUM_GRACE_SECONDS as u64))
}

/// At most this much of a hook's output goes into a status message or an Event.
const OUTPUT_SHOWN: usize = 512;

/// A hook's output as it may go into an Event: its first 512 bytes (`OUTPUT_SHOWN`), quoted with
/// control characters escaped (as the kubelet's `%q`), and how much was left out.
pub fn quoted_output(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    let mut end = text.len().min(OUTPUT_SHOWN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let shown = format!("{:?}", &text[..end]);
    match text.len() - end {
        0 => shown,
        more => format!("{shown} ({more} bytes more)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_output_is_quoted_and_bounded() {
        assert_eq!(quoted_output(b"  no such file\n"), "\"no such file\"");
        let hostile = [b"\x1b[2J\r\nFAKE LINE ".repeat(200), vec![0xff, 0xfe]].concat();
        let shown = quoted_output(&hostile);
        assert!(shown.len() < OUTPUT_SHOWN * 2, "{}", shown.len());
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert!(shown.ends_with("bytes more)"), "{shown}");
        // A multi-byte character is not cut in half.
        assert!(quoted_output("é".repeat(OUTPUT_SHOWN).as_bytes()).contains("bytes more"));
    }

    #[test]
    fn stop_grace_has_the_kubelets_floor() {
        let s = Duration::from_secs;
        assert_eq!(stop_grace(s(30)), s(30));
        assert_eq!(stop_grace(s(20)), s(20));
        assert_eq!(stop_grace(s(1)), s(2));
        assert_eq!(stop_grace(s(0)), s(2));
    }
}
