//! Pure decisions of the CloneSet controller's scale half (upstream `sync/cloneset_scale.go`,
//! `sync/cloneset_sync_utils.go`, `cloneset_controller.go: cleanupPVCs`; behaviour in
//! `docs/upstream/cloneset.md` §3): plain data in, a plan out, no I/O.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodReadinessGate,
    PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::kruise::{
    CLONESET_INSTANCE_ID_LABEL, CONTROLLER_REVISION_HASH_LABEL, CloneSet, CloneSetStatus,
    LIFECYCLE_STATE_LABEL, LIFECYCLE_TIMESTAMP_ANNOTATION, LifecycleState,
    POD_CONDITION_INPLACE_UPDATE_READY, POD_CONDITION_KRUISE_POD_READY, POD_TEMPLATE_HASH_LABEL,
};

pub mod defaults;
pub mod expect;
pub mod facts;
pub mod inplace;
pub mod order;
pub mod status;
#[cfg(test)]
mod tests;
pub mod update;
pub mod validate;

/// The length of a generated instance id, and its alphabet (no vowels, no look-alikes).
pub const INSTANCE_ID_LEN: usize = 5;
pub const INSTANCE_ID_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `value` (an int, or a percentage of `total`) as the controller reads it: a string is a
/// percentage with or without `%` (upstream's lenient `GetValueFromIntOrPercent`), rounded up or
/// down; anything unreadable is `None`. Clamped to `0..=i32::MAX`.
pub fn scaled(value: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    let n = match value {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(s) => {
            let percent: i64 = s.trim().trim_end_matches('%').parse().ok()?;
            let product = percent.saturating_mul(i64::from(total));
            if round_up {
                product.saturating_add(99).div_euclid(100)
            } else {
                product.div_euclid(100)
            }
        }
    };
    Some(n.clamp(0, i64::from(i32::MAX)) as i32)
}

/// Pods kept at the old revisions for `partition` of `replicas` (upstream
/// `CalculatePartitionReplicas`): a percentage is rounded up, but one other than 100% leaves at
/// least one pod to update when there are several; clamped to `0..=replicas`.
pub fn partition_replicas(partition: Option<&IntOrString>, replicas: i32) -> i32 {
    let Some(partition) = partition else { return 0 };
    let mut p = scaled(partition, replicas, true).unwrap_or(0);
    if let IntOrString::String(s) = partition
        && replicas > 1
        && p >= replicas
        && s.trim() != "100%"
    {
        p = replicas - 1;
    }
    p.clamp(0, replicas.max(0))
}

/// The numbers the CloneSet's spec gives the scale and update decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `spec.replicas`.
    pub replicas: i32,
    /// Pods to keep at old revisions.
    pub partition: i32,
    /// `updateStrategy.maxSurge` (0 while paused).
    pub max_surge: i32,
    /// `updateStrategy.maxUnavailable`.
    pub max_unavailable: i32,
    /// `scaleStrategy.maxUnavailable` (unlimited: `i32::MAX`).
    pub scale_max_unavailable: i32,
}

/// A pod of the CloneSet (active: not terminated, not being deleted) as the decisions see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFacts {
    pub name: String,
    pub instance_id: String,
    /// Created from the update revision.
    pub updated: bool,
    /// `lifecycle.apps.kruise.io/state`, `None` when absent or unknown.
    pub state: Option<LifecycleState>,
    /// Labelled `apps.kruise.io/specified-delete` or named in `scaleStrategy.podsToDelete`.
    pub specified_delete: bool,
    /// Available for minReadySeconds, in state Normal (or none), in-place update ready.
    pub available: bool,
    /// The same without minReadySeconds (upstream `isPodReady`: a ready pod is deleted only
    /// within the unavailability budget).
    pub ready: bool,
    /// Running, Ready and not held by an in-place update (`InPlaceUpdateReady` not False),
    /// whatever the lifecycle state: what `status.readyReplicas` counts.
    pub running_ready: bool,
    /// Carries the in-place update's grace annotation (an update waiting out its grace period).
    pub in_place_grace: bool,
    /// Holds the order in which pods are deleted.
    pub rank: Rank,
    /// The pod's labels, which the update's priority and scatter strategies select by.
    pub labels: BTreeMap<String, String>,
}

/// What orders pods for deletion, first deleted first (upstream `ActivePodsWithRanks.Less`
/// without the topology ranker).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rank {
    pub scheduled: bool,
    /// 0 Pending (or anything else), 1 Unknown, 2 Running.
    pub phase: u8,
    pub available: bool,
    pub ready: bool,
    /// `controller.kubernetes.io/pod-deletion-cost`.
    pub deletion_cost: i32,
    /// Seconds since the epoch the pod became Ready (`None`: unknown, counts as latest).
    pub ready_since: Option<i64>,
    pub restarts: i32,
    /// Seconds since the epoch the pod was created.
    pub created: i64,
}

/// Deleted-first order of two pods.
pub fn delete_first(a: &Rank, b: &Rank) -> Ordering {
    a.scheduled
        .cmp(&b.scheduled)
        .then(a.phase.cmp(&b.phase))
        .then(a.available.cmp(&b.available))
        .then(a.ready.cmp(&b.ready))
        .then(a.deletion_cost.cmp(&b.deletion_cost))
        .then_with(|| ready_later_first(a, b))
        .then(b.restarts.cmp(&a.restarts))
        .then(b.created.cmp(&a.created))
}

/// Of two Ready pods, the one Ready for less time first (an unknown time counts as latest);
/// `Equal` unless both are Ready.
pub fn ready_later_first(a: &Rank, b: &Rank) -> Ordering {
    if !(a.ready && b.ready) {
        return Ordering::Equal;
    }
    let key = |r: &Rank| r.ready_since.unwrap_or(i64::MAX);
    key(b).cmp(&key(a))
}

/// Counts per revision group (upstream `calculateDiffsWithExpectation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Group {
    count: i32,
    active: i32,
    pre_deleting: i32,
    to_delete: i32,
    unavailable: i32,
}

fn group<'a>(pods: impl Iterator<Item = &'a PodFacts>) -> Group {
    let mut g = Group::default();
    for p in pods {
        g.count = g.count.saturating_add(1);
        if p.state == Some(LifecycleState::PreparingDelete) {
            g.pre_deleting = g.pre_deleting.saturating_add(1);
            continue;
        }
        g.active = g.active.saturating_add(1);
        if p.specified_delete {
            g.to_delete = g.to_delete.saturating_add(1);
        } else if !p.available {
            g.unavailable = g.unavailable.saturating_add(1);
        }
    }
    g
}

/// What the scale and update halves should do (upstream's `expectationDiffs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Diffs {
    /// Pods to create, of which from the current (old) revision.
    pub scale_up: i32,
    pub scale_up_old: i32,
    /// How many of `scale_up` the scale unavailability budget lets through.
    pub scale_up_limit: i32,
    /// Pods to delete beyond those planned, of which from the old revisions.
    pub scale_down: i32,
    pub scale_down_old: i32,
    /// Ready pods that may still be deleted.
    pub delete_ready_limit: i32,
    /// Pods to update (positive) or roll back (negative), and the unavailability allowed meanwhile.
    pub update: i32,
    pub update_max_unavailable: i32,
    /// Pods over `replicas` in use for surge.
    pub surge: i32,
    pub surge_old: i32,
}

/// The diffs for `pods` under `limits`.
pub fn diffs(pods: &[PodFacts], limits: Limits) -> Diffs {
    let l = limits;
    let new = group(pods.iter().filter(|p| p.updated));
    let old = group(pods.iter().filter(|p| !p.updated));
    let total = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    let mut d = Diffs::default();
    let update_old = old.active.saturating_sub(l.partition).max(0);
    let update_new = new
        .active
        .saturating_sub(l.replicas.saturating_sub(l.partition))
        .min(0);
    let unavailable = new
        .pre_deleting
        .saturating_add(old.pre_deleting)
        .saturating_add(new.unavailable)
        .saturating_add(old.unavailable);
    if l.max_surge > 0 {
        let to_delete = new.to_delete.saturating_add(old.to_delete);
        let scale_surge = if to_delete > 0 {
            unavailable
                .saturating_add(to_delete)
                .saturating_sub(l.max_unavailable)
                .clamp(0, to_delete)
        } else {
            0
        };
        let scale_old_surge = scale_surge.saturating_sub(new.to_delete).max(0);
        let (mut update_surge, mut update_old_surge) = (0, 0);
        if (update_old > 0 && update_new < 0) || (update_old < 0 && update_new > 0) {
            if update_old.saturating_abs() <= update_new.saturating_abs() {
                update_surge = update_old.saturating_abs();
                update_old_surge = if update_old < 0 { update_surge } else { 0 };
            } else {
                update_surge = update_new.saturating_abs();
                update_old_surge = if update_new > 0 { update_surge } else { 0 };
            }
        }
        if scale_surge >= update_surge {
            d.surge = l.max_surge.min(scale_surge);
            d.surge_old = d.surge.min(scale_old_surge);
        } else {
            d.surge = l.max_surge.min(update_surge);
            d.surge_old = d.surge.min(update_old_surge);
        }
    }
    let expected_total = l.replicas.saturating_add(d.surge);
    let expected_old = l.partition.saturating_add(d.surge_old);
    let up = expected_total.saturating_sub(total);
    if up > 0 {
        d.scale_up = up;
        d.scale_up_old = expected_old.saturating_sub(old.count).max(0);
        d.scale_up_limit = up.min(l.scale_max_unavailable.saturating_sub(unavailable).max(0));
    }
    let to_delete = old.to_delete.saturating_add(new.to_delete);
    let down = total
        .saturating_sub(to_delete)
        .saturating_sub(expected_total);
    if down > 0 {
        d.scale_down = down;
        d.scale_down_old = old
            .count
            .saturating_sub(old.to_delete)
            .saturating_sub(expected_old)
            .max(0);
    }
    if to_delete > 0 || d.scale_down > 0 {
        d.delete_ready_limit = l
            .max_unavailable
            .saturating_add(total.saturating_sub(l.replicas))
            .saturating_sub(unavailable)
            .max(0);
    }
    d.update = if update_old.saturating_abs() <= update_new.saturating_abs() {
        update_old
    } else {
        update_new.saturating_neg()
    };
    if d.update != 0 {
        d.update_max_unavailable = l
            .max_unavailable
            .saturating_add(total)
            .saturating_sub(l.replicas);
    }
    d
}

/// One step of scaling: upstream acts on one kind of change per reconcile and waits for the
/// cache to show it before the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleStep {
    /// Nothing to do.
    Nothing,
    /// Pods in PreparingDelete that are needed again: back to PreparingNormal.
    CancelDelete(Vec<String>),
    /// Create pods: so many from the current revision, so many from the update revision;
    /// `limited` when `scaleStrategy.maxUnavailable` held some back (an Event).
    Create {
        current: i32,
        updated: i32,
        limited: Option<i32>,
    },
    /// Delete these pods (those a preDelete hook holds are moved to PreparingDelete instead).
    Delete(Vec<String>),
}

/// The next scale step for `pods` (upstream `Scale`). `hooks_mark_not_ready`: a preDelete or
/// inPlaceUpdate hook with `markPodNotReady` (then PreparingDelete pods are never cancelled).
pub fn scale(pods: &[PodFacts], limits: Limits, hooks_mark_not_ready: bool) -> ScaleStep {
    let specified: Vec<&PodFacts> = pods.iter().filter(|p| p.specified_delete).collect();
    let pre_deleting: Vec<&PodFacts> = pods
        .iter()
        .filter(|p| p.state == Some(LifecycleState::PreparingDelete))
        .collect();
    let planned: BTreeSet<&str> = specified
        .iter()
        .chain(&pre_deleting)
        .map(|p| p.name.as_str())
        .collect();
    let planned = i32::try_from(planned.len()).unwrap_or(i32::MAX);
    let total = i32::try_from(pods.len()).unwrap_or(i32::MAX);

    if !hooks_mark_not_ready {
        let mut wanted = limits
            .replicas
            .saturating_sub(total)
            .saturating_add(planned);
        let mut cancel = Vec::new();
        for p in pre_deleting.iter().filter(|p| !p.specified_delete) {
            if wanted <= 0 {
                break;
            }
            cancel.push(p.name.clone());
            wanted -= 1;
        }
        if !cancel.is_empty() {
            return ScaleStep::CancelDelete(cancel);
        }
    }

    let d = diffs(pods, limits);
    if d.scale_up > 0 {
        let current = d.scale_up_old.min(d.scale_up_limit);
        return ScaleStep::Create {
            current,
            updated: d.scale_up_limit.saturating_sub(current),
            limited: (d.scale_up > d.scale_up_limit).then_some(d.scale_up_limit),
        };
    }
    if !pre_deleting.is_empty() {
        return ScaleStep::Delete(pre_deleting.iter().map(|p| p.name.clone()).collect());
    }
    let mut budget = d.delete_ready_limit;
    let mut within_budget = |p: &PodFacts| {
        if !p.ready {
            true
        } else if budget > 0 {
            budget -= 1;
            true
        } else {
            false
        }
    };
    let chosen: Vec<String> = specified
        .iter()
        .filter(|p| within_budget(p))
        .map(|p| p.name.clone())
        .collect();
    if !chosen.is_empty() {
        return ScaleStep::Delete(chosen);
    }
    if d.scale_down > 0 {
        if planned > 0 {
            // The planned deletions go first.
            return ScaleStep::Nothing;
        }
        let pick = |updated: bool, n: i32| -> Vec<&PodFacts> {
            let mut group: Vec<&PodFacts> = pods.iter().filter(|p| p.updated == updated).collect();
            group.sort_by(|a, b| delete_first(&a.rank, &b.rank));
            group.truncate(usize::try_from(n.max(0)).unwrap_or(0));
            group
        };
        let from_old = d.scale_down_old.min(d.scale_down);
        let mut victims = pick(false, from_old);
        victims.extend(pick(true, d.scale_down.saturating_sub(from_old)));
        let chosen: Vec<String> = victims
            .into_iter()
            .filter(|p| within_budget(p))
            .map(|p| p.name.clone())
            .collect();
        if !chosen.is_empty() {
            return ScaleStep::Delete(chosen);
        }
    }
    ScaleStep::Nothing
}

/// Instance ids for `n` new pods: first those of PVCs no active pod holds (reused with their
/// volumes), then fresh ones from `fresh` that no PVC or pod holds; sorted, as upstream consumes
/// them (the first ones get the current revision).
pub fn instance_ids(
    n: usize,
    pvc_ids: &BTreeSet<String>,
    pod_ids: &BTreeSet<String>,
    mut fresh: impl FnMut() -> String,
) -> Vec<String> {
    let mut ids: BTreeSet<String> = pvc_ids.difference(pod_ids).take(n).cloned().collect();
    // A bounded number of draws: the alphabet gives 27^5 ids, so collisions are rare.
    let mut draws = n.saturating_mul(100).saturating_add(100);
    while ids.len() < n && draws > 0 {
        draws -= 1;
        let id = fresh();
        if !pvc_ids.contains(&id) && !pod_ids.contains(&id) {
            ids.insert(id);
        }
    }
    ids.into_iter().collect()
}

/// What `scaleStrategy.disablePVCReuse` does with the CloneSet's PVCs (upstream
/// `cleanupPVCs`): those of active pods stay; those of a terminated pod still listed go to that
/// pod (deleted with it); the rest are deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PvcCleanup {
    /// (PVC, the terminated pod to own it).
    pub hand_over: Vec<(String, String)>,
    pub delete: Vec<String>,
}

/// `pvcs`: (name, instance id); `active_ids`: ids of active pods; `inactive`: instance id → name
/// of terminated pods.
pub fn pvc_cleanup(
    pvcs: &[(String, String)],
    active_ids: &BTreeSet<String>,
    inactive: &BTreeMap<String, String>,
) -> PvcCleanup {
    let mut plan = PvcCleanup::default();
    for (pvc, id) in pvcs {
        if active_ids.contains(id) {
            continue;
        }
        match inactive.get(id) {
            Some(pod) => plan.hand_over.push((pvc.clone(), pod.clone())),
            None => plan.delete.push(pvc.clone()),
        }
    }
    plan
}

/// The name of a volume claim template's PVC for an instance: `<template>-<cloneset>-<id>`.
pub fn pvc_name(template: &str, cloneset: &str, id: &str) -> String {
    format!("{template}-{cloneset}-{id}")
}

/// The CloneSet as the controller of what it makes.
pub fn controller_ref(cs: &CloneSet) -> OwnerReference {
    OwnerReference {
        api_version: CloneSet::api_version(&()).into_owned(),
        kind: CloneSet::kind(&()).into_owned(),
        name: cs.name_any(),
        uid: cs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod of instance `id` from `template` (the spec of `revision`, a ControllerRevision's
/// name `<cloneset>-<hash>`), as upstream makes it: the template's metadata and spec, named
/// `<cloneset>-<id>`, controlled by the CloneSet, labelled with the instance id, the revision
/// (`controller-revision-hash`, and its hash as `pod-template-hash`) and lifecycle state
/// PreparingNormal since `now` (RFC 3339), the `InPlaceUpdateReady` readiness gate, and one PVC
/// volume per volume claim template (replacing a template volume of the same name, first).
pub fn new_pod(
    cs: &CloneSet,
    revision: &str,
    template: &PodTemplateSpec,
    id: &str,
    now: &str,
) -> Pod {
    let name = cs.name_any();
    let hash = revision.rsplit('-').next().unwrap_or(revision);
    let mut metadata = template.metadata.clone().unwrap_or_default();
    let labels = metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in [
        (CLONESET_INSTANCE_ID_LABEL, id),
        (CONTROLLER_REVISION_HASH_LABEL, revision),
        (POD_TEMPLATE_HASH_LABEL, hash),
        (
            LIFECYCLE_STATE_LABEL,
            LifecycleState::PreparingNormal.as_str(),
        ),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(LIFECYCLE_TIMESTAMP_ANNOTATION.to_string(), now.to_string());
    metadata.name = Some(format!("{name}-{id}"));
    metadata.generate_name = Some(format!("{name}-"));
    metadata.namespace = cs.namespace();
    metadata.owner_references = Some(vec![controller_ref(cs)]);
    let mut spec = template.spec.clone().unwrap_or_default();
    let gates = spec.readiness_gates.get_or_insert_with(Vec::new);
    let marks_not_ready = cs
        .spec
        .lifecycle
        .as_ref()
        .is_some_and(|l| l.marks_pod_not_ready());
    let wanted = [
        Some(POD_CONDITION_INPLACE_UPDATE_READY),
        marks_not_ready.then_some(POD_CONDITION_KRUISE_POD_READY),
    ];
    for gate in wanted.into_iter().flatten() {
        if !gates.iter().any(|g| g.condition_type == gate) {
            gates.push(PodReadinessGate {
                condition_type: gate.to_string(),
            });
        }
    }
    let claims: Vec<Volume> = cs
        .spec
        .volume_claim_templates
        .iter()
        .filter_map(|t| t.metadata.as_ref()?.name.clone())
        .map(|template| Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(&template, &name, id),
                read_only: None,
            }),
            name: template,
            ..Default::default()
        })
        .collect();
    if !claims.is_empty() {
        let others = spec
            .volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claims.iter().any(|c| c.name == v.name));
        spec.volumes = Some(claims.iter().cloned().chain(others).collect());
    }
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// The PVCs of instance `id`, one per volume claim template: named `<template>-<cloneset>-<id>`,
/// labelled with the template's labels, the selector's match labels and the instance id, owned
/// by the template's owners and controlled by the CloneSet.
pub fn new_pvcs(cs: &CloneSet, id: &str) -> Vec<PersistentVolumeClaim> {
    let name = cs.name_any();
    cs.spec
        .volume_claim_templates
        .iter()
        .filter_map(|t| {
            let meta = t.metadata.clone().unwrap_or_default();
            let template = meta.name.clone()?;
            let mut labels = meta.labels.clone().unwrap_or_default();
            labels.extend(cs.spec.selector.match_labels.clone().unwrap_or_default());
            labels.insert(CLONESET_INSTANCE_ID_LABEL.to_string(), id.to_string());
            let mut owners = meta.owner_references.clone().unwrap_or_default();
            owners.push(controller_ref(cs));
            Some(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(pvc_name(&template, &name, id)),
                    namespace: cs.namespace(),
                    labels: Some(labels),
                    annotations: meta.annotations.clone(),
                    finalizers: meta.finalizers.clone(),
                    owner_references: Some(owners),
                    ..Default::default()
                },
                spec: Some(t.spec.clone()),
                status: None,
            })
        })
        .collect()
}

/// The counters of the CloneSet's status over its active pods (upstream `calculateStatus`), with
/// `currentRevision` becoming the update revision once every pod is updated and there are as
/// many as wanted.
pub fn status_counts(
    pods: &[PodFacts],
    replicas: i32,
    partition: i32,
    update_revision: &str,
    current_revision: &str,
) -> CloneSetStatus {
    let count = |f: &dyn Fn(&PodFacts) -> bool| {
        i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let mut status = CloneSetStatus {
        replicas: count(&|_| true),
        ready_replicas: count(&|p| p.running_ready),
        available_replicas: count(&|p| p.available),
        updated_replicas: count(&|p| p.updated),
        updated_ready_replicas: count(&|p| p.updated && p.running_ready),
        updated_available_replicas: count(&|p| p.updated && p.available),
        expected_updated_replicas: replicas.saturating_sub(partition).max(0),
        update_revision: update_revision.to_string(),
        current_revision: current_revision.to_string(),
        ..Default::default()
    };
    if status.updated_replicas == status.replicas && status.replicas == replicas {
        status.current_revision = update_revision.to_string();
    }
    status
}

/// A label selector as `labels.Selector.String()` writes it (`status.labelSelector`, for the
/// scale subresource): requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
/// `!k`, joined by commas. (kube's `Selector` writes the same requirements unsorted, match labels
/// first, and cannot give their keys back to sort by.)
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut requirements: Vec<(String, String)> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={v}")))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let k = &e.key;
        let text = match e.operator.as_str() {
            "In" => format!("{k} in ({})", values.join(",")),
            "NotIn" => format!("{k} notin ({})", values.join(",")),
            "Exists" => k.clone(),
            "DoesNotExist" => format!("!{k}"),
            other => format!("{k} {other} ({})", values.join(",")),
        };
        requirements.push((k.clone(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// The label of a ControllerRevision carrying its hash.
pub const REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The data of the ControllerRevision of a template, as upstream stores it: the template to put
/// in place of the CloneSet's (`{"spec": {"template": {…, "$patch": "replace"}}}`).
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// `value` without its nulls and empty objects and lists, at every depth: two revisions whose
/// canonical data are equal hold the same template, whoever wrote them (kruise-manager's Go JSON
/// carries `"creationTimestamp": null` and `"resources": {}` where nodeward's has nothing).
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), canonical(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether two revisions' data hold the same template, kruise-manager's defaults applied to both
/// ([`defaults`]).
pub fn same_template(a: &Value, b: &Value) -> bool {
    let read = |data: &Value| {
        let mut template = data["spec"]["template"].clone();
        if let Value::Object(map) = &mut template {
            map.remove("$patch");
        }
        let parsed = serde_json::from_value::<PodTemplateSpec>(template.clone()).ok();
        let defaulted = parsed.and_then(|t| serde_json::to_value(defaults::defaulted(&t)).ok());
        canonical(&defaulted.unwrap_or(template))
    };
    read(a) == read(b)
}

/// The hash naming a revision: FNV-1a (32 bits) of the canonical data's JSON (keys sorted), then
/// of the collision count, safe-encoded. (Upstream hashes Go's own JSON with FNV-1: the names
/// differ, which is why a revision kruise-manager made is found by [`same_template`], not by
/// name.)
pub fn revision_hash(data: &Value, collision_count: i32) -> String {
    let mut bytes = serde_json::to_vec(&canonical(data)).unwrap_or_default();
    if collision_count != 0 {
        bytes.extend(collision_count.to_string().bytes());
    }
    crate::hash::safe_encode(&crate::hash::fnv1a_32(bytes).to_string())
}

/// A revision's name: `<cloneset>-<hash>`, the CloneSet's name cut to 223 characters as upstream.
pub fn revision_name(cloneset: &str, hash: &str) -> String {
    let prefix: String = cloneset.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// Whether `selector` selects an object with `labels` (kube's `Selector`, as
/// `metav1.LabelSelectorAsSelector`); a selector that does not parse selects nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::SelectorExt;
    kube::core::Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// What an in-place update of a pod from one template to another changes (upstream
/// `defaultCalculateInPlaceUpdateSpec`, §4.4 of `docs/upstream/cloneset.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InPlaceChange {
    /// New images by container name (of the old template's container at that index).
    pub images: BTreeMap<String, String>,
    /// Labels or annotations changed.
    pub metadata: bool,
    /// A changed label or annotation is read by a container's env (`fieldRef`): the agent's
    /// container meta restarts those containers.
    pub env_from_metadata: bool,
}

/// The in-place change from `old` to `new`, or `None` when the pods must be recreated: only
/// container images (`replace` of `/spec/containers/N/image`) and metadata may differ.
pub fn in_place_change(old: &PodTemplateSpec, new: &PodTemplateSpec) -> Option<InPlaceChange> {
    // kruise-manager's defaults on both sides: a template it defaulted and the same one written
    // without them differ in nothing.
    let (old_value, new_value) = (
        canonical(&serde_json::to_value(defaults::defaulted(old)).ok()?),
        canonical(&serde_json::to_value(defaults::defaulted(new)).ok()?),
    );
    let ops = serde_json::to_value(json_patch::diff(&old_value, &new_value)).ok()?;
    let mut change = InPlaceChange::default();
    let env_reads: Vec<String> = new
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| {
            Some(
                e.value_from
                    .as_ref()?
                    .field_ref
                    .as_ref()?
                    .field_path
                    .clone(),
            )
        })
        .collect();
    for op in ops.as_array()? {
        let kind = op["op"].as_str()?;
        let path = op["path"].as_str()?;
        if let Some(meta) = path.strip_prefix("/metadata/") {
            change.metadata = true;
            let key = |prefix: &str| {
                meta.strip_prefix(prefix)
                    .map(|k| k.replace("~1", "/").replace("~0", "~"))
            };
            let read = match (key("labels/"), key("annotations/")) {
                (Some(k), _) => Some(format!("metadata.labels['{k}']")),
                (_, Some(k)) => Some(format!("metadata.annotations['{k}']")),
                _ => None,
            };
            if matches!(kind, "add" | "replace") && read.is_some_and(|r| env_reads.contains(&r)) {
                change.env_from_metadata = true;
            }
            continue;
        }
        let index: usize = path
            .strip_prefix("/spec/containers/")?
            .strip_suffix("/image")?
            .parse()
            .ok()?;
        if kind != "replace" {
            return None;
        }
        let name = old.spec.as_ref()?.containers.get(index)?.name.clone();
        change
            .images
            .insert(name, op["value"].as_str()?.to_string());
    }
    Some(change)
}
