//! What container meta tells upstream: the Events of a restart on the Pod (as the kubelet and
//! kruise-daemon write them: `Killing`, `FailedPreStopHook`), one log line per action, metrics.

use std::time::Duration;

use tracing::{info, warn};

use super::Restarted;
use super::decide::Restart;
use crate::cluster::events::{EventType, Note, pod_reference};
use crate::cri::kill::PreStopOutcome;
use crate::cri::kubelet::PodRef;
use crate::telemetry::metrics::Metrics;

fn on_pod(pod: &PodRef) -> k8s_openapi::api::core::v1::ObjectReference {
    pod_reference(&pod.namespace, &pod.name, Some(&pod.uid))
}

/// The Event of a restart: reason `Killing`, as kruise-daemon's restarter.
pub fn killing(pod: &PodRef, target: &Restart) -> Note {
    Note::new(
        on_pod(pod),
        EventType::Normal,
        "Killing",
        "StopContainer",
        format!(
            "Stopping container {}: its env from pod metadata is stale (in-place update)",
            target.container
        ),
    )
}

/// The Event of a preStop hook that failed before the stop.
pub fn failed_pre_stop(pod: &PodRef, container: &str, why: &str) -> Note {
    Note::new(
        on_pod(pod),
        EventType::Warning,
        "FailedPreStopHook",
        "PreStop",
        format!("PreStopHook failed for container {container}: {why}"),
    )
}

/// The log line of a finished restart.
pub fn restart_finished(
    pod: &PodRef,
    target: &Restart,
    pre_stop: &PreStopOutcome,
    grace: Duration,
    restarted: &Restarted,
) {
    match restarted {
        Restarted::Failed(why) => {
            warn!(pod = %pod, pod_uid = %pod.uid, container = %target.container,
            container_id = %target.id, prestop = %pre_stop, error = %why,
            "stopping a container with stale env from metadata failed")
        }
        _ => info!(pod = %pod, pod_uid = %pod.uid, container = %target.container,
            container_id = %target.id, prestop = %pre_stop, stop_grace_s = grace.as_secs(),
            running_hash = target.running, expected_hash = target.expected,
            "container with stale env from metadata stopped; the kubelet starts it again"),
    }
}

/// Count a finished restart.
pub fn count_restart(metrics: &Metrics, restarted: &Restarted) {
    metrics.container_meta_restarted(match restarted {
        Restarted::Stopped => "stopped",
        Restarted::AlreadyDone => "skipped",
        Restarted::Failed(_) => "failed",
    });
}

/// The log line and count of an annotation write.
pub fn written(metrics: &Metrics, pod: &PodRef, result: &Result<(), String>) {
    match result {
        Ok(()) => {
            info!(pod = %pod, pod_uid = %pod.uid, "container meta annotation written");
            metrics.container_meta_written("written");
        }
        Err(e) => {
            warn!(pod = %pod, pod_uid = %pod.uid, error = %e, "writing the container meta annotation failed");
            metrics.container_meta_written("failed");
        }
    }
}
