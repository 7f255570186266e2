//! What the decisions read from a Pod (upstream `IsPodAvailable`, `IsPodUpdateReady`,
//! `EqualToRevisionHash`, `isSpecifiedDelete`, the pod sorter's inputs), and which pod changes
//! can change a decision at all (the event-handler optimization, [`decision_hash`]).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{PodFacts, Rank};
use crate::api::kruise::{
    ANNOTATION_INPLACE_UPDATE_STATE, ANNOTATION_RUNTIME_CONTAINERS_META,
    CLONESET_INSTANCE_ID_LABEL, CONTROLLER_REVISION_HASH_LABEL, LIFECYCLE_STATE_LABEL,
    LifecycleState, POD_CONDITION_INPLACE_UPDATE_READY, POD_CONDITION_KRUISE_POD_READY,
    SPECIFIED_DELETE_LABEL,
};

/// `controller.kubernetes.io/pod-deletion-cost`: pods with a lower cost are deleted first.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The in-place update's grace annotation (upstream `InPlaceUpdateGraceKey`).
pub const ANNOTATION_INPLACE_UPDATE_GRACE: &str = "apps.kruise.io/inplace-update-grace";

/// What the facts of one pod depend on besides the pod.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub update_revision: &'a str,
    /// `scaleStrategy.podsToDelete`.
    pub pods_to_delete: &'a BTreeSet<String>,
    pub min_ready_seconds: i32,
    /// Seconds since the epoch.
    pub now: i64,
}

/// Not finished and not being deleted (upstream `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether a pod's `controller-revision-hash` is `revision` (a revision name `<cs>-<hash>`): the
/// same label, or the same short hash (after the last `-`), as upstream compares.
pub fn at_revision(pod: &Pod, revision: &str) -> bool {
    let Some(label) = label(pod, CONTROLLER_REVISION_HASH_LABEL) else {
        return false;
    };
    let short = |s: &str| s.rsplit('-').next().unwrap_or(s).to_owned();
    label == revision || short(label) == short(revision)
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The pod's lifecycle state; `None` when absent or unknown.
pub fn state(pod: &Pod) -> Option<LifecycleState> {
    label(pod, LIFECYCLE_STATE_LABEL).and_then(LifecycleState::parse)
}

/// Running, Ready, and not held by an in-place update (`InPlaceUpdateReady` absent or True):
/// upstream `IsPodUpdateReady(pod, 0)`, lifecycle ignored.
fn running_ready(pod: &Pod) -> bool {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = condition(pod, "Ready").is_some_and(|c| c.status == "True");
    running && ready && update_ready(pod)
}

fn update_ready(pod: &Pod) -> bool {
    condition(pod, POD_CONDITION_INPLACE_UPDATE_READY).is_none_or(|c| c.status == "True")
}

/// The pod's `InPlaceUpdateReady` condition is True.
pub fn update_ready_true(pod: &Pod) -> bool {
    condition(pod, POD_CONDITION_INPLACE_UPDATE_READY).is_some_and(|c| c.status == "True")
}

/// The pod has the `InPlaceUpdateReady` readiness gate.
pub fn has_update_ready_gate(pod: &Pod) -> bool {
    crate::controller::readiness::has_readiness_gate(pod, POD_CONDITION_INPLACE_UPDATE_READY)
}

/// Seconds since the epoch the pod became Ready (`None` when not Ready or unknown).
fn ready_since(pod: &Pod) -> Option<i64> {
    let c = condition(pod, "Ready").filter(|c| c.status == "True")?;
    c.last_transition_time.as_ref().map(|t| t.0.as_second())
}

/// Available for `min_ready_seconds` at `now`, in state Normal (or none), not held by an in-place
/// update (upstream `IsPodAvailable`).
fn is_available(pod: &Pod, min_ready_seconds: i32, now: i64) -> bool {
    let normal = matches!(state(pod), None | Some(LifecycleState::Normal));
    if !normal || !running_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod).is_some_and(|since| since.saturating_add(i64::from(min_ready_seconds)) <= now)
}

/// The facts the scale and update decisions use.
pub fn pod_facts(pod: &Pod, seen: &Seen<'_>) -> PodFacts {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let available = is_available(pod, seen.min_ready_seconds, seen.now);
    let ready = is_available(pod, 0, seen.now);
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => 2,
        Some("Unknown") => 1,
        _ => 0,
    };
    let restarts = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let rank = Rank {
        scheduled: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty()),
        phase,
        available,
        ready: condition(pod, "Ready").is_some_and(|c| c.status == "True"),
        deletion_cost: annotation(pod, POD_DELETION_COST_ANNOTATION)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        ready_since: ready_since(pod),
        restarts,
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
    };
    PodFacts {
        instance_id: label(pod, CLONESET_INSTANCE_ID_LABEL)
            .unwrap_or_default()
            .to_owned(),
        updated: at_revision(pod, seen.update_revision),
        state: state(pod),
        specified_delete: label(pod, SPECIFIED_DELETE_LABEL).is_some()
            || seen.pods_to_delete.contains(&name),
        available,
        ready,
        running_ready: running_ready(pod),
        in_place_grace: annotation(pod, ANNOTATION_INPLACE_UPDATE_GRACE).is_some(),
        rank,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        name,
    }
}

/// The CloneSet controlling `owners`, if any: (apiVersion group is `apps.kruise.io`, kind
/// CloneSet).
pub fn cloneset_owner(owners: &[OwnerReference]) -> Option<&OwnerReference> {
    owners.iter().find(|o| {
        o.controller == Some(true)
            && o.kind == "CloneSet"
            && o.api_version.split('/').next() == Some("apps.kruise.io")
    })
}

/// A hash of everything in a pod that a CloneSet decision reads: labels, owners, finalizers,
/// deletion, node, images, phase, the Ready / InPlaceUpdateReady / KruisePodReady conditions,
/// the in-place annotations and the containers' ids. A pod update that leaves it unchanged (a
/// new resourceVersion, managedFields, other annotations, probe times, restart counts, IPs)
/// cannot change what the controller does, and does not start a reconcile (upstream's
/// `CloneSetEventHandlerOptimization`, here on by default). What ranks pods for deletion but
/// does not start a decision (restart counts, ready times) is read at the next reconcile.
pub fn decision_hash(pod: &Pod) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let m = &pod.metadata;
    m.labels.hash(&mut h);
    for key in [
        ANNOTATION_INPLACE_UPDATE_STATE,
        ANNOTATION_INPLACE_UPDATE_GRACE,
        ANNOTATION_RUNTIME_CONTAINERS_META,
        POD_DELETION_COST_ANNOTATION,
    ] {
        annotation(pod, key).hash(&mut h);
    }
    m.generation.hash(&mut h);
    m.finalizers.hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    for o in m.owner_references.iter().flatten() {
        (&o.uid, o.controller).hash(&mut h);
    }
    if let Some(spec) = &pod.spec {
        spec.node_name.hash(&mut h);
        for c in &spec.containers {
            (&c.name, &c.image).hash(&mut h);
        }
    }
    if let Some(status) = &pod.status {
        status.phase.hash(&mut h);
        for type_ in [
            "Ready",
            POD_CONDITION_INPLACE_UPDATE_READY,
            POD_CONDITION_KRUISE_POD_READY,
        ] {
            condition(pod, type_).map(|c| &c.status).hash(&mut h);
        }
        for c in status.container_statuses.iter().flatten() {
            (&c.name, &c.image, &c.image_id, &c.container_id, c.ready).hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut base = json!({
            "metadata": {
                "name": "web-abcde",
                "resourceVersion": "7",
                "creationTimestamp": "2026-12-07T10:00:00Z",
                "labels": {
                    "apps.kruise.io/cloneset-instance-id": "abcde",
                    "controller-revision-hash": "web-5d4c",
                    "lifecycle.apps.kruise.io/state": "Normal",
                },
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "busybox:1"}]},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-07T10:00:10Z"},
                    {"type": "InPlaceUpdateReady", "status": "True"},
                ],
                "containerStatuses": [{"name": "main", "image": "busybox:1", "imageID": "sha256:1",
                    "ready": true, "restartCount": 2, "containerID": "containerd://c1"}],
            },
        });
        json_patch::merge(&mut base, &extra);
        serde_json::from_value(base).unwrap()
    }

    fn seen<'a>(to_delete: &'a BTreeSet<String>, min_ready: i32) -> Seen<'a> {
        Seen {
            update_revision: "web-5d4c",
            pods_to_delete: to_delete,
            min_ready_seconds: min_ready,
            // 20 s after the pod became Ready.
            now: 1_796_637_630,
        }
    }

    #[test]
    fn facts_of_a_pod() {
        let none = BTreeSet::new();
        let f = pod_facts(&pod(json!({})), &seen(&none, 0));
        assert_eq!(f.instance_id, "abcde");
        assert_eq!(f.labels["controller-revision-hash"], "web-5d4c");
        assert!(f.updated && f.available && f.ready && f.running_ready);
        assert!(!f.specified_delete && !f.in_place_grace);
        assert_eq!((f.rank.phase, f.rank.restarts), (2, 2));
        assert!(f.rank.scheduled);
        // minReadySeconds beyond the 20 s it has been Ready: ready, not available.
        let f = pod_facts(&pod(json!({})), &seen(&none, 30));
        assert!(f.ready && !f.available);
        // Another revision by its short hash only; named in podsToDelete.
        let named: BTreeSet<String> = ["web-abcde".to_string()].into();
        let other = pod(json!({"metadata": {"labels": {"controller-revision-hash": "5d4c"}}}));
        let f = pod_facts(&other, &seen(&named, 0));
        assert!(f.updated && f.specified_delete);
        // PreparingNormal: running and ready, not available.
        let preparing = pod(
            json!({"metadata": {"labels": {"lifecycle.apps.kruise.io/state": "PreparingNormal"}}}),
        );
        let f = pod_facts(&preparing, &seen(&none, 0));
        assert!(f.running_ready && !f.available && !f.ready);
        // An in-place update in progress holds readiness.
        let updating = pod(json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "InPlaceUpdateReady", "status": "False"},
        ]}}));
        let f = pod_facts(&updating, &seen(&none, 0));
        assert!(!f.running_ready && !f.available);
        assert!(is_active(&pod(json!({}))));
        assert!(!is_active(&pod(json!({"status": {"phase": "Succeeded"}}))));
        assert!(!is_active(&pod(
            json!({"metadata": {"deletionTimestamp": "2026-12-07T10:00:00Z"}})
        )));
    }

    #[test]
    fn only_what_a_decision_reads_changes_the_hash() {
        let base = decision_hash(&pod(json!({})));
        let same = [
            json!({"metadata": {"resourceVersion": "8", "managedFields": [{"manager": "kubelet"}]}}),
            json!({"metadata": {"annotations": {"note": "x"}}}),
            json!({"status": {"podIP": "10.0.0.9"}}),
            json!({"status": {"containerStatuses": [{"name": "main", "image": "busybox:1",
                "imageID": "sha256:1", "ready": true, "restartCount": 3,
                "containerID": "containerd://c1"}]}}),
        ];
        for change in same {
            assert_eq!(decision_hash(&pod(change.clone())), base, "{change}");
        }
        let different = [
            json!({"metadata": {"labels": {"x": "y"}}}),
            json!({"metadata": {"finalizers": ["example.com/hook"]}}),
            json!({"metadata": {"deletionTimestamp": "2026-12-07T10:00:00Z"}}),
            json!({"metadata": {"annotations": {"apps.kruise.io/inplace-update-state": "{}"}}}),
            json!({"status": {"phase": "Failed"}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            json!({"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}),
            json!({"status": {"containerStatuses": [{"name": "main", "image": "busybox:1",
                "imageID": "sha256:2", "ready": true, "restartCount": 2,
                "containerID": "containerd://c2"}]}}),
        ];
        for change in different {
            assert_ne!(decision_hash(&pod(change.clone())), base, "{change}");
        }
    }
}
