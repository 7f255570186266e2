//! The CloneSet controller's writes: pods and PVCs created and deleted (with their Events),
//! lifecycle states, the `InPlaceUpdateReady` condition, the specified-delete mark, owner
//! references (adoption and release), PVC clean-up, ControllerRevisions and the spec's
//! `podsToDelete`. Each write records what the cache must show before the next pass
//! ([`Expected`]).

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Selector;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::Error;
use super::decide::expect::Expected;
use super::decide::{self, REVISION_HASH_LABEL};
use crate::api::kruise::{
    CLONESET_INSTANCE_ID_LABEL, CloneSet, LIFECYCLE_STATE_LABEL, LIFECYCLE_TIMESTAMP_ANNOTATION,
    LifecycleState, POD_CONDITION_INPLACE_UPDATE_READY, SPECIFIED_DELETE_LABEL,
};
use crate::cluster::events::EventType;
use crate::cluster::{is_already_exists, is_conflict, is_not_found};
use crate::controller::{readiness, record_event};

/// Names tried for a new revision whose hash collides with another template's.
const COLLISION_TRIES: i32 = 10;

fn pod_key(name: &str) -> String {
    format!("pod/{name}")
}

fn pvc_key(name: &str) -> String {
    format!("pvc/{name}")
}

/// A write's result with "the object is gone" as `Ok(None)` (nothing left to write to), any
/// other failure as the error of `action`.
fn gone_is_ok<T>(
    result: Result<T, kube::Error>,
    action: impl FnOnce() -> String,
) -> Result<Option<T>, Error> {
    match result {
        Ok(written) => Ok(Some(written)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(Error::kube(action())(e)),
    }
}

/// Now, as the lifecycle timestamp annotation and conditions write it.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

async fn event(client: &kube::Client, cs: &CloneSet, type_: EventType, reason: &str, msg: &str) {
    let object: ObjectReference = cs.object_ref(&());
    record_event(client, &object, type_, reason, reason, msg).await;
}

/// A pod to create with its claims.
#[derive(Clone, Debug)]
pub struct NewPod {
    pub pod: Pod,
    pub pvcs: Vec<PersistentVolumeClaim>,
}

/// Create `pods` in slow-start batches (1, 2, 4, …; a batch's pods at once), stopping after a
/// batch with a failure (upstream `DoItSlowly`). Claims not in `existing` are created first.
/// Gives how many pods were created, and the first error.
pub async fn create_pods(
    client: &kube::Client,
    cs: &CloneSet,
    pods: Vec<NewPod>,
    existing: &BTreeSet<String>,
    expected: &mut Expected,
) -> (usize, Option<Error>) {
    let mut created = 0;
    let mut batch = 1usize;
    let mut rest = pods.into_iter();
    loop {
        let chunk: Vec<NewPod> = rest.by_ref().take(batch).collect();
        if chunk.is_empty() {
            return (created, None);
        }
        let results = join_all(
            chunk
                .into_iter()
                .map(|p| create_one(client, cs, p, existing)),
        )
        .await;
        let mut failed = None;
        for (keys, result) in results {
            expected.created.extend(keys);
            match result {
                Ok(()) => created += 1,
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if failed.is_some() {
            return (created, failed);
        }
        batch = batch.saturating_mul(2);
    }
}

/// One pod and its missing claims; the keys of what was created.
async fn create_one(
    client: &kube::Client,
    cs: &CloneSet,
    new: NewPod,
    existing: &BTreeSet<String>,
) -> (Vec<String>, Result<(), Error>) {
    let ns = cs.namespace().unwrap_or_default();
    let mut keys = Vec::new();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    for pvc in new.pvcs {
        let name = pvc.name_any();
        if existing.contains(&name) {
            continue;
        }
        match pvcs.create(&PostParams::default(), &pvc).await {
            Ok(_) => keys.push(pvc_key(&name)),
            Err(e) if is_already_exists(&e) => {}
            Err(e) => {
                let body = serde_json::to_string(&pvc).unwrap_or_default();
                let msg = format!("failed to create pvc: {e}, pvc: {body}");
                event(client, cs, EventType::Warning, "FailedCreate", &msg).await;
                return (keys, Err(Error::kube(format!("create PVC {ns}/{name}"))(e)));
            }
        }
    }
    let name = new.pod.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match pods.create(&PostParams::default(), &new.pod).await {
        Ok(pod) => {
            keys.push(pod_key(&name));
            info!(cloneset = %cs.name_any(), namespace = %ns, pod_name = %name, pod_uid = %pod.uid().unwrap_or_default(), "pod created");
            let msg = format!("succeed to create pod {name}");
            event(client, cs, EventType::Normal, "SuccessfulCreate", &msg).await;
            (keys, Ok(()))
        }
        Err(e) => {
            let body = serde_json::to_string(&new.pod).unwrap_or_default();
            let msg = format!("failed to create pod: {e}, pod: {body}");
            event(client, cs, EventType::Warning, "FailedCreate", &msg).await;
            (keys, Err(Error::kube(format!("create pod {ns}/{name}"))(e)))
        }
    }
}

/// Delete `pod` (its uid a precondition) and then its instance's claims (`claims`), with the
/// Events upstream writes.
pub async fn delete_pod(
    client: &kube::Client,
    cs: &CloneSet,
    pod: &Pod,
    claims: &[&PersistentVolumeClaim],
    expected: &mut Expected,
) -> Result<(), Error> {
    let ns = cs.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match pods.delete(&name, &with_uid(&uid)).await {
        Ok(_) => {
            expected.deleted.insert(pod_key(&name), uid.clone());
            info!(cloneset = %cs.name_any(), namespace = %ns, pod_name = %name, pod_uid = %uid, "pod deleted");
            let msg = format!("succeed to delete pod {name}");
            event(client, cs, EventType::Normal, "SuccessfulDelete", &msg).await;
        }
        Err(e) if is_not_found(&e) || is_conflict(&e) => {}
        Err(e) => {
            let msg = format!("failed to delete pod {name}: {e}");
            event(client, cs, EventType::Warning, "FailedDelete", &msg).await;
            return Err(Error::kube(format!("delete pod {ns}/{name}"))(e));
        }
    }
    for pvc in claims {
        delete_pvc(client, cs, pvc, expected, "failed to delete pvc").await?;
    }
    Ok(())
}

fn with_uid(uid: &str) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    }
}

/// Delete one claim (its uid a precondition); `failure` words the Warning Event.
pub async fn delete_pvc(
    client: &kube::Client,
    cs: &CloneSet,
    pvc: &PersistentVolumeClaim,
    expected: &mut Expected,
    failure: &str,
) -> Result<(), Error> {
    let ns = cs.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let uid = pvc.uid().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    match api.delete(&name, &with_uid(&uid)).await {
        Ok(_) => {
            expected.deleted.insert(pvc_key(&name), uid);
            info!(cloneset = %cs.name_any(), namespace = %ns, pvc = %name, "PVC deleted");
            Ok(())
        }
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => {
            let msg = format!("{failure} {name}: {e}");
            event(client, cs, EventType::Warning, "FailedDelete", &msg).await;
            Err(Error::kube(format!("delete PVC {ns}/{name}"))(e))
        }
    }
}

/// Hand a claim from the CloneSet to the terminated pod of its instance (`disablePVCReuse`): it
/// goes with that pod.
pub async fn hand_over_pvc(
    client: &kube::Client,
    cs: &CloneSet,
    pvc: &PersistentVolumeClaim,
    pod: &Pod,
) -> Result<(), Error> {
    let ns = cs.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let cs_uid = cs.uid().unwrap_or_default();
    let mut owners: Vec<OwnerReference> = pvc
        .owner_references()
        .iter()
        .filter(|o| o.uid != cs_uid)
        .cloned()
        .collect();
    owners.push(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        ..Default::default()
    });
    let patch = json!({"metadata": {
        "resourceVersion": pvc.resource_version(),
        "ownerReferences": owners,
    }});
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            info!(cloneset = %cs.name_any(), namespace = %ns, pvc = %name, pod_name = %pod.name_any(), "PVC handed to its terminated pod");
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => {
            let msg = format!("failed to update PVC {name}: {e}");
            event(client, cs, EventType::Warning, "FailedUpdate", &msg).await;
            Err(Error::kube(format!("update PVC {ns}/{name}"))(e))
        }
    }
}

/// Patch a pod (`patch`: merge or strategic); the resourceVersion written is expected in the
/// cache. Whether the pod was still there.
async fn patch_pod(
    client: &kube::Client,
    pod: &Pod,
    patch: &Patch<Value>,
    expected: &mut Expected,
    what: &str,
) -> Result<bool, Error> {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let written = gone_is_ok(
        api.patch(&name, &PatchParams::default(), patch).await,
        || format!("{what} of pod {ns}/{name}"),
    )?;
    if let Some(written) = &written {
        expected.updated.insert(
            pod_key(&name),
            written.resource_version().unwrap_or_default(),
        );
    }
    Ok(written.is_some())
}

/// Hold or release the `KruisePodReady` key the CloneSet's hooks mark a pod entering `state`
/// with (`markPodNotReady`; [`decide::update::not_ready_key`]).
async fn mark_hook_readiness(
    client: &kube::Client,
    cs: &CloneSet,
    pod: &Pod,
    state: LifecycleState,
) -> Result<(), Error> {
    let Some((key, hold)) = decide::update::not_ready_key(state, cs.spec.lifecycle.as_ref()) else {
        return Ok(());
    };
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let key = readiness::NotReadyKey {
        user_agent: decide::update::HOOK_READINESS_USER_AGENT.into(),
        key: key.into(),
    };
    let written = gone_is_ok(readiness::hold(&api, pod, &key, hold).await, || {
        format!("mark pod {ns}/{name} ready or not for its lifecycle hook")
    })?;
    if written == Some(true) {
        info!(cloneset = %cs.name_any(), namespace = %ns, pod_name = %name, pod_uid = %pod.uid().unwrap_or_default(), key = %key.key, hold, "pod readiness key of its lifecycle hook held or released");
    }
    Ok(())
}

/// Move a pod to lifecycle `state` (label and timestamp annotation; first its readiness, when a
/// hook marks it); nothing when it is there.
pub async fn set_state(
    client: &kube::Client,
    cs: &CloneSet,
    pod: &Pod,
    state: LifecycleState,
    expected: &mut Expected,
) -> Result<(), Error> {
    mark_hook_readiness(client, cs, pod, state).await?;
    if decide::facts::state(pod) == Some(state) {
        return Ok(());
    }
    let patch = Patch::Merge(json!({"metadata": {
        "labels": {LIFECYCLE_STATE_LABEL: state.as_str()},
        "annotations": {LIFECYCLE_TIMESTAMP_ANNOTATION: now_rfc3339()},
    }}));
    if patch_pod(client, pod, &patch, expected, "set the lifecycle state").await? {
        info!(cloneset = %cs.name_any(), namespace = %pod.namespace().unwrap_or_default(), pod_name = %pod.name_any(), pod_uid = %pod.uid().unwrap_or_default(), state = state.as_str(), "pod lifecycle state set");
    }
    Ok(())
}

/// Label a pod `apps.kruise.io/specified-delete` for a ReCreate update to `revision`, with
/// upstream's Events.
pub async fn mark_recreate(
    client: &kube::Client,
    cs: &CloneSet,
    pod: &Pod,
    revision: &str,
    expected: &mut Expected,
) -> Result<(), Error> {
    let name = pod.name_any();
    let labelled = pod.labels().contains_key(SPECIFIED_DELETE_LABEL);
    if !labelled {
        let patch = Patch::Merge(json!({"metadata": {"labels": {SPECIFIED_DELETE_LABEL: "true"}}}));
        if let Err(e) = patch_pod(client, pod, &patch, expected, "mark for recreation").await {
            let msg = format!(
                "failed to patch pod specified-delete {name} for update(revision {revision}): {e}"
            );
            event(
                client,
                cs,
                EventType::Warning,
                "FailedUpdatePodReCreate",
                &msg,
            )
            .await;
            return Err(e);
        }
        info!(cloneset = %cs.name_any(), namespace = %pod.namespace().unwrap_or_default(), pod_name = %name, pod_uid = %pod.uid().unwrap_or_default(), revision, "pod marked to be recreated at the update revision");
    }
    let msg =
        format!("successfully patch pod {name} specified-delete for update(revision {revision})");
    event(
        client,
        cs,
        EventType::Normal,
        "SuccessfulUpdatePodReCreate",
        &msg,
    )
    .await;
    Ok(())
}

/// Set the pod's `InPlaceUpdateReady` condition True (how a new pod passes its readiness gate,
/// and an in-place update ends).
pub async fn mark_update_ready(client: &kube::Client, pod: &Pod) -> Result<(), Error> {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let patch = json!({"status": {"conditions": [{
        "type": POD_CONDITION_INPLACE_UPDATE_READY,
        "status": "True",
        "lastTransitionTime": now_rfc3339(),
    }]}});
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    gone_is_ok(
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await,
        || format!("set the {POD_CONDITION_INPLACE_UPDATE_READY} condition of pod {ns}/{name}"),
    )
    .map(|_| ())
}

/// Give a pod with the `KruisePodReady` gate (a hook with `markPodNotReady`) the condition's
/// first value, True, when it has none.
pub async fn start_pod_readiness(client: &kube::Client, pod: &Pod) -> Result<(), Error> {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    gone_is_ok(readiness::start(&api, pod).await, || {
        format!("set the KruisePodReady condition of pod {ns}/{name}")
    })
    .map(|_| ())
}

/// Update `pod` in place to `revision` (upstream `inplaceupdate.Update`): its
/// `InPlaceUpdateReady` condition False first (and Ready with it), so that no traffic reaches it
/// while the kubelet restarts its containers; then one patch (`patch`:
/// [`decide::inplace::update_patch`]) of revision labels, state Updating, the state annotation
/// and either the images and metadata or, with a grace period, the grace annotation holding
/// them. A pod that went meanwhile is left alone.
pub async fn update_in_place(
    client: &kube::Client,
    cs: &CloneSet,
    pod: &Pod,
    revision: &str,
    patch: &Value,
    expected: &mut Expected,
) -> Result<(), Error> {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let now = now_rfc3339();
    let mut conditions = vec![json!({
        "type": POD_CONDITION_INPLACE_UPDATE_READY,
        "status": "False",
        "reason": "StartInPlaceUpdate",
        "lastTransitionTime": now,
    })];
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    if ready.is_some_and(|c| c.status == "True") {
        conditions.push(json!({
            "type": "Ready",
            "status": "False",
            "reason": "ReadinessGatesNotReady",
            "message": format!("the status of pod readiness gate \"{POD_CONDITION_INPLACE_UPDATE_READY}\" is not \"True\", but False"),
            "lastTransitionTime": now,
        }));
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let unready = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(&json!({"status": {"conditions": conditions}})),
        )
        .await;
    let result = match gone_is_ok(unready, || format!("mark pod {ns}/{name} not ready")) {
        Ok(Some(_)) => {
            let patch = Patch::Strategic(patch.clone());
            patch_pod(client, pod, &patch, expected, "update in place").await
        }
        other => other.map(|_| false),
    };
    match result {
        Ok(true) => {
            info!(cloneset = %cs.name_any(), namespace = %ns, pod_name = %name, pod_uid = %pod.uid().unwrap_or_default(), revision, "pod updated in place");
            let msg = format!("successfully update pod {name} in-place(revision {revision})");
            event(
                client,
                cs,
                EventType::Normal,
                "SuccessfulUpdatePodInPlace",
                &msg,
            )
            .await;
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => {
            let msg = format!("failed to update pod {name} in-place(revision {revision}): {e}");
            event(
                client,
                cs,
                EventType::Warning,
                "FailedUpdatePodInPlace",
                &msg,
            )
            .await;
            Err(e)
        }
    }
}

/// End a pod's grace period with `patch` ([`decide::inplace::grace_step`]): the held in-place
/// change `applied`, or the grace annotation only dropped.
pub async fn finish_grace(
    client: &kube::Client,
    cs: &CloneSet,
    pod: &Pod,
    patch: Value,
    applied: bool,
    expected: &mut Expected,
) -> Result<(), Error> {
    let patch = Patch::Strategic(patch);
    if patch_pod(
        client,
        pod,
        &patch,
        expected,
        "end the in-place grace period",
    )
    .await?
    {
        info!(cloneset = %cs.name_any(), namespace = %pod.namespace().unwrap_or_default(), pod_name = %pod.name_any(), pod_uid = %pod.uid().unwrap_or_default(), applied, "in-place grace period ended");
    }
    Ok(())
}

/// Put the inPlaceUpdate hook's labels and finalizers back on an Updated pod and move it to
/// PreparingUpdate (upstream `UpdatePodLifecycleWithHandler`).
pub async fn rehook(
    client: &kube::Client,
    cs: &CloneSet,
    pod: &Pod,
    hook: &crate::api::kruise::LifecycleHook,
    expected: &mut Expected,
) -> Result<(), Error> {
    mark_hook_readiness(client, cs, pod, LifecycleState::PreparingUpdate).await?;
    let mut labels = json!(hook.labels_handler);
    labels[LIFECYCLE_STATE_LABEL] = json!(LifecycleState::PreparingUpdate.as_str());
    let patch = Patch::Strategic(json!({"metadata": {
        "labels": labels,
        "annotations": {LIFECYCLE_TIMESTAMP_ANNOTATION: now_rfc3339()},
        "finalizers": hook.finalizers_handler,
    }}));
    patch_pod(
        client,
        pod,
        &patch,
        expected,
        "put the inPlaceUpdate hook back",
    )
    .await
    .map(|_| ())
}

/// Set a pod's owner references (guarded by the resourceVersion read): adoption and release.
pub async fn set_owners(
    client: &kube::Client,
    pod: &Pod,
    owners: Vec<OwnerReference>,
    expected: &mut Expected,
) -> Result<(), Error> {
    let patch = Patch::Merge(json!({"metadata": {
        "resourceVersion": pod.resource_version(),
        "ownerReferences": owners,
    }}));
    match patch_pod(client, pod, &patch, expected, "set the owner references").await {
        Err(Error::Kube { source, .. }) if is_conflict(&source) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// The ControllerRevisions the CloneSet may use (upstream `ListControllerRevisions`): in its
/// namespace, matching its selector, controlled by it or by nothing; oldest first.
pub async fn list_revisions(
    client: &kube::Client,
    cs: &CloneSet,
    selector: &Selector,
) -> Result<Vec<ControllerRevision>, Error> {
    let ns = cs.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let uid = cs.uid().unwrap_or_default();
    let mut revisions: Vec<ControllerRevision> = api
        .list(&ListParams::default().labels_from(selector))
        .await
        .map_err(Error::kube(format!(
            "list the revisions of CloneSet {ns}/{}",
            cs.name_any()
        )))?
        .items
        .into_iter()
        .filter(|r| {
            r.owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .is_none_or(|o| o.uid == uid)
        })
        .collect();
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    Ok(revisions)
}

/// The template a revision holds.
pub fn revision_template(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.0["spec"]["template"].clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// The update revision for the CloneSet's template (upstream `getActiveRevisions`): the newest
/// revision when it holds the template; an older one holding it made the newest again
/// (rollback); else a new one. Gives it and the collision count used.
pub async fn update_revision(
    client: &kube::Client,
    cs: &CloneSet,
    revisions: &[ControllerRevision],
) -> Result<(ControllerRevision, i32), Error> {
    let ns = cs.namespace().unwrap_or_default();
    let name = cs.name_any();
    let data = decide::revision_data(&cs.spec.template);
    let holds = |r: &ControllerRevision| decide::same_template(&r.data.0, &data);
    let mut collision = cs
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0)
        .max(0);
    let next = revisions
        .iter()
        .filter_map(|r| r.revision)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    if let Some(newest) = revisions.last().filter(|r| holds(r)) {
        return Ok((newest.clone(), collision));
    }
    if let Some(older) = revisions.iter().rev().find(|r| holds(r)) {
        let rname = older.name_any();
        let patch =
            json!({"metadata": {"resourceVersion": older.resource_version()}, "revision": next});
        let bumped = api
            .patch(&rname, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube(format!(
                "make revision {ns}/{rname} the newest"
            )))?;
        info!(cloneset = %name, namespace = %ns, revision = %rname, "rolled back to an earlier revision");
        return Ok((bumped, collision));
    }
    let mut labels = cs
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for _ in 0..COLLISION_TRIES {
        let hash = decide::revision_hash(&data, collision);
        let rname = decide::revision_name(&name, &hash);
        labels.insert(REVISION_HASH_LABEL.into(), hash);
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(rname.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                annotations: cs.metadata.annotations.clone(),
                owner_references: Some(vec![decide::controller_ref(cs)]),
                ..Default::default()
            },
            data: RawExtension(data.clone()),
            revision: Some(next),
        };
        match api.create(&PostParams::default(), &revision).await {
            Ok(created) => {
                info!(cloneset = %name, namespace = %ns, revision = %rname, number = next, "revision created");
                return Ok((created, collision));
            }
            Err(e) if is_already_exists(&e) => {
                let found = api
                    .get(&rname)
                    .await
                    .map_err(Error::kube(format!("read revision {ns}/{rname}")))?;
                if holds(&found) {
                    return Ok((found, collision));
                }
                collision = collision.saturating_add(1);
            }
            Err(e) => return Err(Error::kube(format!("create revision {ns}/{rname}"))(e)),
        }
    }
    Err(Error::Refused(format!(
        "no free revision name for CloneSet {ns}/{name} after {COLLISION_TRIES} collisions"
    )))
}

/// Delete the revisions `names` (upstream `truncateHistory`); failures are only logged.
pub async fn delete_revisions(client: &kube::Client, cs: &CloneSet, names: &[String]) {
    let ns = cs.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                info!(cloneset = %cs.name_any(), namespace = %ns, revision = %name, "old revision deleted")
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                warn!(cloneset = %cs.name_any(), namespace = %ns, revision = %name, error = %e, "deleting an old revision failed")
            }
        }
    }
}

/// Keep in `scaleStrategy.podsToDelete` only the names of active pods (upstream
/// `truncatePodsToDelete`); failures are only logged.
pub async fn truncate_pods_to_delete(
    client: &kube::Client,
    cs: &CloneSet,
    active: &BTreeSet<String>,
) {
    let listed = &cs.spec.scale_strategy.pods_to_delete;
    if listed.iter().all(|n| active.contains(n)) {
        return;
    }
    let kept: Vec<&String> = listed.iter().filter(|n| active.contains(*n)).collect();
    let (ns, name) = (cs.namespace().unwrap_or_default(), cs.name_any());
    let api: Api<CloneSet> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "metadata": {"resourceVersion": cs.resource_version()},
        "spec": {"scaleStrategy": {"podsToDelete": kept}},
    });
    if let Err(e) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(cloneset = %name, namespace = %ns, error = %e, "dropping gone pods from podsToDelete failed");
    }
}

/// Write `status` with a merge patch of the status subresource (what it leaves out, the
/// stored status loses).
pub async fn write_status(
    client: &kube::Client,
    cs: &CloneSet,
    status: &crate::api::kruise::CloneSetStatus,
) -> Result<(), Error> {
    let (ns, name) = (cs.namespace().unwrap_or_default(), cs.name_any());
    let api: Api<CloneSet> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"status": decide::status::merge_patch(cs.status.as_ref(), status)});
    gone_is_ok(
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
        || format!("write the status of CloneSet {ns}/{name}"),
    )
    .map(|_| ())
}

/// The ScaleUpLimited Warning.
pub async fn scale_up_limited(client: &kube::Client, cs: &CloneSet, limit: i32) {
    let msg = format!("scaleUp is limited because of scaleStrategy.maxUnavailable, limit: {limit}");
    event(client, cs, EventType::Warning, "ScaleUpLimited", &msg).await;
}

/// The claims of each instance id.
pub fn claims_by_id(
    pvcs: &[std::sync::Arc<PersistentVolumeClaim>],
) -> BTreeMap<String, Vec<&PersistentVolumeClaim>> {
    let mut by_id: BTreeMap<String, Vec<&PersistentVolumeClaim>> = BTreeMap::new();
    for pvc in pvcs {
        if let Some(id) = pvc.labels().get(CLONESET_INSTANCE_ID_LABEL) {
            by_id.entry(id.clone()).or_default().push(pvc);
        }
    }
    by_id
}
