//! Report: the NodePodProbe status, written whole as a JSON merge patch of `status` (the agent is
//! its only writer; upstream PUTs it), coalesced to at most one write a second; and the
//! `KruiseProbeSucceeded` / `KruiseProbeFailed` Events on the Pod when a probe's state changes
//! (upstream repeats them for every result at every status write).

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::decide::ProbeKey;
use crate::api::kruise::{
    EVENT_REASON_PROBE_FAILED, EVENT_REASON_PROBE_SUCCEEDED, NodePodProbe, NodePodProbeStatus,
    ProbeState,
};
use crate::cluster::events::{EventType, EventWriter, Note, pod_reference};
use crate::cluster::is_not_found;

/// The least time between two status writes: results that arrive meanwhile go out together.
pub const WRITE_GAP: Duration = Duration::from_secs(1);

/// Write the latest desired status of NodePodProbe `name` until `desired` closes.
pub async fn write_statuses(
    api: Api<NodePodProbe>,
    name: String,
    mut desired: watch::Receiver<Option<NodePodProbeStatus>>,
) {
    let mut last_write: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        if desired.changed().await.is_err() {
            return;
        }
        if let Some(at) = last_write {
            tokio::time::sleep_until(at + WRITE_GAP).await;
        }
        let Some(status) = desired.borrow_and_update().clone() else {
            continue;
        };
        let patch = json!({"status": {"podProbeStatuses": status.pod_probe_statuses}});
        last_write = Some(Instant::now());
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                failures = 0;
                debug!(nodepodprobe = %name, pods = status.pod_probe_statuses.len(), "NodePodProbe status written");
            }
            Err(e) if is_not_found(&e) => {
                debug!(nodepodprobe = %name, "NodePodProbe is gone; status not written")
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = crate::backoff::after(
                    failures,
                    Duration::from_secs(1),
                    Duration::from_secs(30),
                );
                warn!(nodepodprobe = %name, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot write NodePodProbe status");
                tokio::time::sleep(wait).await;
                // Try again with whatever is desired by then.
                desired.mark_changed();
            }
        }
    }
}

/// The Event for a probe whose state changed to `state` (none for Unknown).
pub fn note(key: &ProbeKey, state: ProbeState, message: &str) -> Option<Note> {
    let reason = match state {
        ProbeState::Succeeded => EVENT_REASON_PROBE_SUCCEEDED,
        ProbeState::Failed => EVENT_REASON_PROBE_FAILED,
        ProbeState::Unknown => return None,
    };
    let pod = pod_reference(&key.pod_namespace, &key.pod_name, Some(&key.pod_uid));
    Some(Note::new(pod, EventType::Normal, reason, "Probe", message))
}

/// Record the Event of a state change in the background.
pub fn record(events: &EventWriter, key: &ProbeKey, state: ProbeState, message: &str) {
    if let Some(note) = note(key, state, message) {
        events.spawn(note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_pod_and_follow_upstream_reasons() {
        let key = ProbeKey {
            pod_uid: "u".into(),
            pod_namespace: "ns".into(),
            pod_name: "web-0".into(),
            pod_ip: "10.0.0.1".into(),
            container: "app".into(),
            probe: "ppm#healthy".into(),
        };
        let n = note(&key, ProbeState::Failed, "boom").unwrap();
        assert_eq!(n.reason, "KruiseProbeFailed");
        assert_eq!(n.type_, EventType::Normal);
        assert_eq!(n.object.name.as_deref(), Some("web-0"));
        assert_eq!(n.object.uid.as_deref(), Some("u"));
        assert_eq!(
            note(&key, ProbeState::Succeeded, "").unwrap().reason,
            "KruiseProbeSucceeded"
        );
        assert!(note(&key, ProbeState::Unknown, "").is_none());
    }
}
