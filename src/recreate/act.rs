//! Carrying out a CRR's stop of one container: the decision made durable where a restart could
//! repeat a side effect, the `Killing` Event, then the kubelet-style kill (`cri::kill`). The
//! kubelet sees the exit and starts the container again.

use std::time::{Instant, SystemTime};

use kube::ResourceExt;
use serde_json::json;
use tracing::{info, warn};

use super::{Crr, Executor, PodContainers, State, SyncError, kill_key, name_of};
use crate::api::kruise::{
    CRR_STATE_MESSAGE_KILL_ERROR_PREFIX, ContainerRecreateRequestPhase as Phase,
};
use crate::cluster::events::EventType;
use crate::cri::kill::{Kill, PreStopOutcome};
use crate::journal::{self, Recorded};

impl Executor {
    /// Stop container `i` of the CRR. `pending` is a kill decided before a restart: it is finished
    /// without running preStop again. Returns the container's new state.
    pub(super) async fn kill(
        &self,
        crr: &Crr,
        i: usize,
        pod: &PodContainers,
        pending: Option<journal::Action>,
        woken: Instant,
    ) -> Result<State, SyncError> {
        let spec = &crr.spec.containers[i];
        let name = spec.name.clone();
        let state = |phase, message: String, is_killed| State {
            name: name.clone(),
            phase,
            message,
            is_killed,
        };
        let Some(raw) = pod.raw.get(&name) else {
            return Ok(state(Phase::Pending, String::new(), false));
        };
        let key = kill_key(&crr.uid().unwrap_or_default(), &name);
        let grace = super::decide::grace(crr);
        let has_pre_stop = raw.pre_stop.is_some() && !grace.is_zero();
        let force = crr.spec.strategy.as_ref().is_some_and(|s| s.force_recreate);
        // The decision must be durable before a side effect that a restarted agent could repeat:
        // a preStop hook, or a forced kill (which a lost decision would repeat on the new
        // instance). A plain stop is idempotent: after a crash the state table sees the instance
        // replaced or exited, or stops the same one again, so its record is written alongside
        // the stop instead of in front of it (one fsync less on the stop path).
        let record_first = has_pre_stop || force;
        let (resumed, decided_at, alongside) = match pending {
            Some(a) => (true, a.decided_at, None),
            None => {
                let action = journal::Action {
                    kind: journal::KIND_RECREATE_CONTAINER.into(),
                    pod: journal::PodInfo {
                        namespace: crr.namespace().unwrap_or_default(),
                        name: crr.spec.pod_name.clone(),
                        uid: crr.pod_uid().unwrap_or_default().to_string(),
                    },
                    containers: vec![journal::ContainerRef {
                        name: name.clone(),
                        id: raw.id.clone(),
                    }],
                    decided_at: SystemTime::now(),
                    reason: format!("ContainerRecreateRequest {}", name_of(crr)),
                    inputs: json!({"crr": name_of(crr), "grace_seconds": grace.as_secs()}),
                };
                let decided_at = action.decided_at;
                if !record_first {
                    (false, decided_at, Some(action))
                } else {
                    match self.cfg.commits.decide(key.clone(), action).await? {
                        Recorded::New(_) => (false, decided_at, None),
                        // Not expected: the pass hands a pending record over as `pending`, and
                        // passes of one pod do not overlap. Finish it without a second preStop.
                        Recorded::Pending => (true, decided_at, None),
                        Recorded::AlreadyDone => {
                            return Ok(state(Phase::Recreating, String::new(), true));
                        }
                    }
                }
            }
        };
        let hook = raw
            .pre_stop
            .as_ref()
            .filter(|_| !resumed && !grace.is_zero());
        let kill = Kill {
            container_id: &raw.id,
            sandbox_id: &raw.sandbox,
            pre_stop: hook,
            ports: &raw.ports,
            grace,
            decided_at,
        };
        let prestop = if resumed {
            info!(crr = %name_of(crr), pod = %crr.spec.pod_name, container = %name, container_id = %raw.id,
                "finishing a stop decided before the agent restarted (preStop not run again)");
            PreStopOutcome::NotRerun.to_string()
        } else {
            let message = format!(
                "Stopping container {name} by ContainerRecreateRequest {}",
                crr.name_any()
            );
            let since_event = woken.elapsed();
            info!(crr = %name_of(crr), pod = %crr.spec.pod_name, container = %name, container_id = %raw.id,
                grace_s = grace.as_secs(), since_event_ms = since_event.as_secs_f64() * 1e3,
                "stopping container for CRR");
            self.cfg.metrics.crr_stop_latency(since_event.as_secs_f64());
            self.event(crr, &name, EventType::Normal, "Killing", message);
            let outcome = kill.run_pre_stop(&self.cfg.cri).await;
            if let Some(why) = outcome.failure() {
                warn!(crr = %name_of(crr), container = %name, error = %why, "preStop hook failed");
                let note = format!("PreStopHook failed: {why}");
                self.event(crr, &name, EventType::Warning, "FailedPreStopHook", note);
            }
            outcome.to_string()
        };
        let stop = kill.stop(&self.cfg.cri);
        let stopped = match alongside {
            None => stop.await,
            Some(action) => {
                let (recorded, stopped) =
                    tokio::join!(self.cfg.commits.decide(key.clone(), action), stop);
                if let Err(e) = recorded {
                    warn!(crr = %name_of(crr), container = %name, error = %e,
                        "recording the stop decision in the journal failed");
                }
                stopped
            }
        };
        let stop_grace = stopped.grace;
        let (new_state, outcome) = match stopped.result {
            Ok(()) => (
                state(Phase::Recreating, String::new(), true),
                journal::RESULT_STOPPED,
            ),
            Err(e) => (
                state(
                    Phase::Failed,
                    format!("{CRR_STATE_MESSAGE_KILL_ERROR_PREFIX}{e}"),
                    false,
                ),
                journal::RESULT_FAILED,
            ),
        };
        info!(crr = %name_of(crr), container = %name, container_id = %raw.id, result = outcome,
            prestop, stop_grace_s = stop_grace.as_secs(), "container stop for CRR finished");
        self.cfg.metrics.crr_container_stopped(outcome);
        let done = journal::Outcome {
            result: outcome.into(),
            message: new_state.message.clone(),
            containers: vec![journal::ContainerOutcome {
                name: name.clone(),
                id: raw.id.clone(),
                prestop,
                ..Default::default()
            }],
            finished_at: SystemTime::now(),
        };
        if let Err(e) = self.cfg.commits.complete(key, done).await {
            warn!(error = %e, "recording the stop in the journal failed");
        }
        Ok(new_state)
    }
}
