//! Delivering the journal's outbox upstream, exactly once: for each completed stop action an Event
//! (reason `SidecarTerminated`) on the Pod and the Pod condition `SidecarTerminated=True`. An entry
//! leaves the outbox only after both writes succeeded; both are idempotent (the Event name derives
//! from the action key, the condition is merged by type), so a crash between delivery and
//! acknowledgement repeats nothing visible.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event as KubeEvent, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::Notify;

use crate::journal::{Action, Event, Journal, PodInfo};

/// Condition type and Event reason, as OpenKruise v1.6+ writes them.
pub const SIDECAR_TERMINATED: &str = "SidecarTerminated";
/// Event source component.
pub const COMPONENT: &str = "nodeward-agent";

/// A stable, DNS-safe Event name for an action: `<pod>.<16 hex digits of the key's hash>`.
pub fn event_name(pod_name: &str, key: &str) -> String {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut prefix: String = pod_name.chars().take(253 - 17).collect();
    prefix.push('.');
    format!("{prefix}{h:016x}")
}

/// The Event's message: which sidecars were stopped and how they ended.
pub fn message(ev: &Event) -> String {
    let parts: Vec<String> = ev
        .outcome
        .containers
        .iter()
        .map(|c| {
            let code = match (c.exit_code, c.exit_code_ignored) {
                (Some(code), true) => format!("exit {code}, ignored"),
                (Some(code), false) => format!("exit {code}"),
                (None, _) => "gone".into(),
            };
            match c.exit_to_stop_ms {
                Some(ms) => format!(
                    "{} ({code}, stopped {ms:.1} ms after the main containers)",
                    c.name
                ),
                None => format!("{} ({code})", c.name),
            }
        })
        .collect();
    format!("nodeward stopped sidecar(s) {}", parts.join(", "))
}

fn time(t: SystemTime) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::try_from(t).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// The Event object for an outbox entry.
pub fn kube_event(ev: &Event, node: &str) -> KubeEvent {
    let pod = &ev.action.pod;
    let at = time(ev.outcome.finished_at);
    KubeEvent {
        metadata: ObjectMeta {
            name: Some(event_name(&pod.name, &ev.key)),
            namespace: Some(pod.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        },
        reason: Some(SIDECAR_TERMINATED.into()),
        message: Some(message(ev)),
        type_: Some("Normal".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.into()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.into()),
        action: Some("StopContainer".into()),
        first_timestamp: Some(Time(at)),
        last_timestamp: Some(Time(at)),
        event_time: Some(MicroTime(at)),
        count: Some(1),
        ..Default::default()
    }
}

/// With `KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE` sidecars, OpenKruise v1.9 sets the pod phase
/// from the main containers alone: Succeeded when they all exited 0, else Failed. `None` when no
/// stopped sidecar ignores its exit code.
pub fn job_phase(ev: &Event) -> Option<&'static str> {
    let ignoring = ev.outcome.containers.iter().any(|c| c.exit_code_ignored);
    phase_from_inputs(&ev.action, ignoring)
}

fn phase_from_inputs(action: &Action, ignoring: bool) -> Option<&'static str> {
    if !ignoring {
        return None;
    }
    let containers = action.inputs.get("containers")?.as_array()?;
    let mut codes = containers
        .iter()
        .filter(|c| c["role"] == "Main")
        .map(|c| c["exit_code"].as_i64());
    // Without every main container's exit code there is no verdict to write.
    let codes: Option<Vec<i64>> = codes.by_ref().collect();
    let all_ok = codes?.iter().all(|c| *c == 0);
    Some(if all_ok { "Succeeded" } else { "Failed" })
}

/// The phase and condition patch to write before stopping ignore-exit-code sidecars; `None` when no
/// target ignores its exit code or a main container's exit code is unknown.
pub fn verdict_patch(action: &Action, ignoring: bool) -> Option<serde_json::Value> {
    let phase = phase_from_inputs(action, ignoring)?;
    let mut patch = condition_at(action.decided_at);
    patch["status"]["phase"] = phase.into();
    Some(patch)
}

/// Write the verdict before stopping, bounded so that an unreachable API never delays the stop;
/// the outbox writes it again after the stop in any case.
pub async fn patch_verdict(client: &kube::Client, pod: &PodInfo, patch: &serde_json::Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let (params, patch) = (PatchParams::default(), Patch::Strategic(patch));
    let call = pods.patch_status(&pod.name, &params, &patch);
    match tokio::time::timeout(VERDICT_TIMEOUT, call).await {
        Ok(Ok(_)) => tracing::debug!(pod = %pod.name, "job verdict written before stopping"),
        Ok(Err(e)) => {
            tracing::warn!(pod = %pod.name, error = %e, "job verdict not written before stopping; the report retries")
        }
        Err(_) => {
            tracing::warn!(pod = %pod.name, "API too slow for the job verdict; stopping anyway, the report retries")
        }
    }
}

/// How long the pre-stop verdict may hold the stop back.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(1);

/// The strategic merge patch adding the `SidecarTerminated` condition (merged by type), and the
/// phase when [`job_phase`] says so.
pub fn condition_patch(ev: &Event) -> serde_json::Value {
    let mut patch = condition_only(ev);
    if let Some(phase) = job_phase(ev) {
        patch["status"]["phase"] = phase.into();
    }
    patch
}

fn condition_only(ev: &Event) -> serde_json::Value {
    condition_at(ev.outcome.finished_at)
}

fn condition_at(at: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "status": {
            "conditions": [{
                "type": SIDECAR_TERMINATED,
                "status": "True",
                "reason": SIDECAR_TERMINATED,
                "message": "Terminated by nodeward",
                "lastTransitionTime": Time(time(at)),
            }]
        }
    })
}

#[derive(Debug, thiserror::Error)]
#[error("delivering {what} for {pod}: {source}")]
pub struct DeliveryError {
    what: &'static str,
    pod: String,
    #[source]
    source: kube::Error,
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Deliver one outbox entry. A Pod that no longer exists has nothing to report to: delivered.
/// Entries of other kinds than sidecar stops are acknowledged without a write.
pub async fn deliver(client: &kube::Client, node: &str, ev: &Event) -> Result<(), DeliveryError> {
    // Container recreation reports through the CRR's status and its own Events.
    if ev.action.kind != crate::journal::KIND_STOP_SIDECAR {
        return Ok(());
    }
    let pod = &ev.action.pod;
    let err = |what| {
        let pod = format!("{}/{}", pod.namespace, pod.name);
        move |source| DeliveryError { what, pod, source }
    };
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), &pod.namespace);
    match events
        .create(&PostParams::default(), &kube_event(ev, node))
        .await
    {
        Ok(_) => {}
        Err(e) if is_code(&e, 409) => {}
        Err(e) if is_code(&e, 404) => return Ok(()),
        Err(e) => return Err(err("Event")(e)),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    match pods
        .patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(condition_patch(ev)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 404) => Ok(()),
        Err(e) => Err(err("pod condition")(e)),
    }
}

/// Deliver the outbox until the process ends: at start, whenever `wake` is notified (a new
/// entry), and with backoff (1 s → 60 s) while the API is unreachable.
pub async fn run(
    client: kube::Client,
    node: String,
    journal: Journal,
    wake: std::sync::Arc<Notify>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let j = journal.clone();
        let batch = tokio::task::spawn_blocking(move || j.outbox(100)).await;
        let batch = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox reader failed");
                Vec::new()
            }
        };
        let mut failed = false;
        for ev in &batch {
            match deliver(&client, &node, ev).await {
                Ok(()) => {
                    let j = journal.clone();
                    let seq = ev.seq;
                    let _ = tokio::task::spawn_blocking(move || j.ack_outbox(&[seq])).await;
                    tracing::debug!(seq, key = %ev.key, "report delivered");
                }
                Err(e) => {
                    tracing::warn!(error = %e, seq = ev.seq, retry_in_ms = backoff.as_millis() as u64, "report not delivered; will retry");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            continue;
        }
        backoff = Duration::from_secs(1);
        if batch.len() == 100 {
            continue;
        }
        // New entries wake us; a periodic pass catches anything else.
        let _ = tokio::time::timeout(Duration::from_secs(30), wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{ContainerOutcome, Outcome};

    fn ev() -> Event {
        Event {
            seq: 7,
            key: "stop_sidecar/u1/abc".into(),
            action: Action {
                kind: "stop_sidecar".into(),
                pod: PodInfo {
                    namespace: "batch".into(),
                    name: "job-x".into(),
                    uid: "u1".into(),
                },
                ..Default::default()
            },
            outcome: Outcome {
                result: "stopped".into(),
                containers: vec![ContainerOutcome {
                    name: "proxy".into(),
                    id: "abc".into(),
                    exit_code: Some(143),
                    exit_code_ignored: true,
                    exit_to_stop_ms: Some(1.25),
                    ..Default::default()
                }],
                finished_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                ..Default::default()
            },
        }
    }

    #[test]
    fn event_names_are_stable_and_distinct() {
        let a = event_name("job-x", "stop_sidecar/u1/abc");
        assert_eq!(a, event_name("job-x", "stop_sidecar/u1/abc"));
        assert_ne!(a, event_name("job-x", "stop_sidecar/u1/abd"));
        assert!(a.starts_with("job-x.") && a.len() == "job-x.".len() + 16);
        assert!(event_name(&"p".repeat(300), "k").len() <= 253);
    }

    #[test]
    fn event_and_condition_shapes() {
        let e = kube_event(&ev(), "node-a");
        assert_eq!(e.reason.as_deref(), Some("SidecarTerminated"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("batch"));
        assert_eq!(
            e.message.as_deref(),
            Some(
                "nodeward stopped sidecar(s) proxy (exit 143, ignored, stopped 1.2 ms after the main containers)"
            )
        );
        let mut e = ev();
        let p = condition_patch(&e);
        assert_eq!(
            p["status"]["phase"],
            serde_json::Value::Null,
            "no main exit codes known"
        );
        e.action.inputs = serde_json::json!({"containers": [
            {"name": "main", "role": "Main", "exit_code": 0},
            {"name": "proxy", "role": {"Sidecar": {"ignore_exit_code": true}}, "exit_code": null}
        ]});
        assert_eq!(condition_patch(&e)["status"]["phase"], "Succeeded");
        e.action.inputs["containers"][0]["exit_code"] = 2.into();
        assert_eq!(condition_patch(&e)["status"]["phase"], "Failed");
        let v = verdict_patch(&e.action, true).unwrap();
        assert_eq!(v["status"]["phase"], "Failed");
        assert!(verdict_patch(&e.action, false).is_none());
        e.action.inputs["containers"][0]["exit_code"] = serde_json::Value::Null;
        assert!(condition_patch(&e)["status"].get("phase").is_none());
        e.outcome.containers[0].exit_code_ignored = false;
        assert!(condition_patch(&e)["status"].get("phase").is_none());
        assert_eq!(p["status"]["conditions"][0]["type"], "SidecarTerminated");
        assert_eq!(p["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
    }
}
