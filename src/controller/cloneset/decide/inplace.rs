//! In-place updates (upstream `pkg/util/inplaceupdate`; `docs/upstream/cloneset.md` §4.5–4.6):
//! the state annotation written when a pod is updated in place, the patch that does it, and
//! when the update is complete.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::InPlaceChange;
use super::facts::ANNOTATION_INPLACE_UPDATE_GRACE;
use crate::api::kruise::{
    ANNOTATION_INPLACE_UPDATE_STATE, ANNOTATION_RUNTIME_CONTAINERS_META,
    CONTROLLER_REVISION_HASH_LABEL, LIFECYCLE_STATE_LABEL, LIFECYCLE_TIMESTAMP_ANNOTATION,
    LifecycleState, POD_TEMPLATE_HASH_LABEL, RuntimeContainerMetaSet,
};
use crate::containermeta::decide::{expected_hash, kubelet_hash, metadata_env};

/// `apps.kruise.io/inplace-update-state`, as upstream writes it (its JSON field order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateState {
    pub revision: String,
    pub update_timestamp: String,
    #[serde(default)]
    pub last_container_statuses: BTreeMap<String, LastStatus>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_env_from_metadata: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_images: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_batches_record: Vec<Batch>,
}

/// A container's image id before its in-place update.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastStatus {
    #[serde(rename = "imageID", default)]
    pub image_id: String,
}

/// The containers one in-place batch updated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub timestamp: String,
    pub containers: Vec<String>,
}

/// The label and annotation changes from one template's metadata to another's, as a merge
/// patch (`null` removes a key).
pub fn metadata_patch(old: &PodTemplateSpec, new: &PodTemplateSpec) -> Value {
    let maps = |t: &PodTemplateSpec| {
        let m = t.metadata.clone().unwrap_or_default();
        (
            m.labels.unwrap_or_default(),
            m.annotations.unwrap_or_default(),
        )
    };
    let ((old_labels, old_notes), (new_labels, new_notes)) = (maps(old), maps(new));
    let diff = |old: &BTreeMap<String, String>, new: &BTreeMap<String, String>| {
        let mut out = serde_json::Map::new();
        for (k, v) in new {
            if old.get(k) != Some(v) {
                out.insert(k.clone(), json!(v));
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            out.insert(k.clone(), Value::Null);
        }
        out
    };
    json!({"labels": diff(&old_labels, &new_labels), "annotations": diff(&old_notes, &new_notes)})
}

/// `apps.kruise.io/inplace-update-grace`: what an in-place update with a grace period applies
/// once the period has passed (upstream `UpdateSpec`, its JSON; `metaDataPatch` is a byte
/// string there, so base64 here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraceSpec {
    pub revision: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub container_images: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub meta_data_patch: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_env_from_metadata: bool,
    #[serde(default)]
    pub grace_seconds: i32,
}

/// The strategic merge patch that updates `pod` in place to `revision` (`<cs>-<hash>`) at
/// `now`: the revision labels, lifecycle state Updating and the state annotation; then, without
/// a grace period, the change itself ([`apply`]); with one (`grace_seconds` > 0: upstream's
/// `inPlaceUpdateStrategy.gracePeriodSeconds`), the grace annotation that holds it until the
/// period has passed ([`grace_step`]) while the pod is not ready. `metadata` is
/// [`metadata_patch`] of the two templates. No resourceVersion: the condition written just
/// before has changed it.
pub fn update_patch(
    pod: &Pod,
    revision: &str,
    change: &InPlaceChange,
    metadata: &Value,
    now: &str,
    grace_seconds: i32,
) -> Value {
    let mut state = InPlaceUpdateState {
        revision: revision.to_string(),
        update_timestamp: now.to_string(),
        update_env_from_metadata: change.env_from_metadata,
        update_images: !change.images.is_empty(),
        ..Default::default()
    };
    let mut patch = json!({"metadata": {"labels": {}, "annotations": {}}});
    if grace_seconds > 0 {
        let grace = GraceSpec {
            revision: revision.to_string(),
            container_images: change.images.clone(),
            meta_data_patch: BASE64.encode(metadata.to_string()),
            update_env_from_metadata: change.env_from_metadata,
            grace_seconds,
        };
        patch["metadata"]["annotations"][ANNOTATION_INPLACE_UPDATE_GRACE] =
            json!(serde_json::to_string(&grace).unwrap_or_default());
    } else {
        apply(
            pod,
            &change.images,
            change.env_from_metadata,
            metadata,
            now,
            &mut state,
            &mut patch,
        );
    }
    let labels = &mut patch["metadata"]["labels"];
    let hash = revision.rsplit('-').next().unwrap_or(revision);
    for (k, v) in [
        (CONTROLLER_REVISION_HASH_LABEL, revision),
        (POD_TEMPLATE_HASH_LABEL, hash),
        (LIFECYCLE_STATE_LABEL, LifecycleState::Updating.as_str()),
    ] {
        labels[k] = json!(v);
    }
    let annotations = &mut patch["metadata"]["annotations"];
    annotations[LIFECYCLE_TIMESTAMP_ANNOTATION] = json!(now);
    annotations[ANNOTATION_INPLACE_UPDATE_STATE] =
        json!(serde_json::to_string(&state).unwrap_or_default());
    patch
}

/// Add to `patch` the in-place change itself at `now`: the new images by container name and
/// the template's metadata changes; `state` records each changed container's image id before
/// the update and the batch of containers it restarts.
fn apply(
    pod: &Pod,
    images: &BTreeMap<String, String>,
    env_from_metadata: bool,
    metadata: &Value,
    now: &str,
    state: &mut InPlaceUpdateState,
    patch: &mut Value,
) {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    state.last_container_statuses = images
        .keys()
        .filter_map(|name| {
            let s = statuses?.iter().find(|s| &s.name == name)?;
            Some((
                name.clone(),
                LastStatus {
                    image_id: s.image_id.clone(),
                },
            ))
        })
        .collect();
    let mut containers: Vec<String> = images.keys().cloned().collect();
    if env_from_metadata {
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            if !metadata_env(c).is_empty() && !containers.contains(&c.name) {
                containers.push(c.name.clone());
            }
        }
    }
    state.container_batches_record = vec![Batch {
        timestamp: now.to_string(),
        containers,
    }];
    for part in ["labels", "annotations"] {
        if let Some(changes) = metadata[part].as_object() {
            for (k, v) in changes {
                patch["metadata"][part][k] = v.clone();
            }
        }
    }
    let images: Vec<Value> = images
        .iter()
        .map(|(name, image)| json!({"name": name, "image": image}))
        .collect();
    if !images.is_empty() {
        patch["spec"] = json!({"containers": images});
    }
}

/// What a pod's pending grace period asks for now (upstream `finishGracePeriod`).
#[derive(Clone, Debug, PartialEq)]
pub enum GraceStep {
    /// Look again then.
    Wait(Duration),
    /// The update was taken over by another revision: drop the grace annotation (a strategic
    /// merge patch).
    Drop(Value),
    /// The period has passed: apply the change and drop the annotation (a strategic merge patch).
    Apply(Value),
    /// The grace or state annotation cannot be read: nothing is applied or dropped (the pod
    /// would otherwise count as updated at its old image), and the CloneSet says why, as
    /// upstream's refresh error does.
    Unreadable(String),
}

/// The step for `pod`'s grace annotation, if it has one, at `now` (seconds since the epoch;
/// `now_rfc3339` the same as text): the period counts from the state annotation's
/// `updateTimestamp`.
pub fn grace_step(pod: &Pod, now: i64, now_rfc3339: &str) -> Option<GraceStep> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let raw = annotations.get(ANNOTATION_INPLACE_UPDATE_GRACE)?;
    let unreadable = |what: &str, e: &dyn std::fmt::Display| {
        Some(GraceStep::Unreadable(format!(
            "pod {}: {what} cannot be read: {e}",
            pod.metadata.name.as_deref().unwrap_or_default()
        )))
    };
    let drop = json!({"metadata": {"annotations": {ANNOTATION_INPLACE_UPDATE_GRACE: null}}});
    let grace = match serde_json::from_str::<GraceSpec>(raw) {
        Ok(grace) => grace,
        Err(e) => return unreadable(ANNOTATION_INPLACE_UPDATE_GRACE, &e),
    };
    if !super::facts::at_revision(pod, &grace.revision) {
        return Some(GraceStep::Drop(drop));
    }
    let state = annotations
        .get(ANNOTATION_INPLACE_UPDATE_STATE)
        .map(|raw| serde_json::from_str::<InPlaceUpdateState>(raw));
    let mut state = match state {
        Some(Ok(state)) => state,
        Some(Err(e)) => return unreadable(ANNOTATION_INPLACE_UPDATE_STATE, &e),
        None => return unreadable(ANNOTATION_INPLACE_UPDATE_STATE, &"missing"),
    };
    let started = match state.update_timestamp.parse::<Timestamp>() {
        Ok(t) => t.as_second(),
        Err(e) => return unreadable("its in-place update's updateTimestamp", &e),
    };
    let due = started.saturating_add(i64::from(grace.grace_seconds.max(0)));
    if now < due {
        let left = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
        return Some(GraceStep::Wait(Duration::from_secs(left)));
    }
    let metadata = if grace.meta_data_patch.is_empty() {
        json!({})
    } else {
        let decoded = BASE64
            .decode(&grace.meta_data_patch)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string()));
        match decoded {
            Ok(metadata) => metadata,
            Err(e) => return unreadable("its grace annotation's metaDataPatch", &e),
        }
    };
    let mut patch = drop;
    patch["metadata"]["labels"] = json!({});
    apply(
        pod,
        &grace.container_images,
        grace.update_env_from_metadata,
        &metadata,
        now_rfc3339,
        &mut state,
        &mut patch,
    );
    patch["metadata"]["annotations"][ANNOTATION_INPLACE_UPDATE_STATE] =
        json!(serde_json::to_string(&state).unwrap_or_default());
    Some(GraceStep::Apply(patch))
}

/// `image` as the kubelet reports it: `:latest` when it names no tag or digest.
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Whether the pod's in-place update, if any, is complete (upstream
/// `DefaultCheckInPlaceUpdateCompleted`): not while a grace period holds it; no state annotation; or, for env from metadata, the
/// agent's runtime-containers-meta shows every container running with the env the metadata
/// gives; and then either that annotation shows every container running (its id in the pod's
/// status) with the kubelet's hash of its spec (name and image), or every container whose image
/// changed runs another image id than before, or the image its spec names. (The same content
/// pushed under a new name keeps its image id, and the runtime may report it by its first name:
/// only the kubelet's hash tells then.)
pub fn in_place_done(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key(ANNOTATION_INPLACE_UPDATE_GRACE)) {
        return false;
    }
    let Some(raw) = annotations.and_then(|a| a.get(ANNOTATION_INPLACE_UPDATE_STATE)) else {
        return true;
    };
    let Ok(state) = serde_json::from_str::<InPlaceUpdateState>(raw) else {
        return true;
    };
    let spec_containers = pod.spec.iter().flat_map(|s| &s.containers);
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let runtime_meta = RuntimeContainerMetaSet::parse(
        annotations
            .and_then(|a| a.get(ANNOTATION_RUNTIME_CONTAINERS_META))
            .map(String::as_str),
    );
    if state.update_env_from_metadata {
        let Some(meta) = &runtime_meta else {
            return false;
        };
        let current = spec_containers.clone().all(|c| {
            meta.containers.iter().any(|m| {
                m.name == c.name
                    && m.hashes.extracted_env_from_metadata_hash == expected_hash(c, pod)
            })
        });
        if !current {
            return false;
        }
    }
    let hashes_current = runtime_meta.as_ref().is_some_and(|meta| {
        spec_containers.clone().all(|c| {
            let id = statuses
                .iter()
                .find(|s| s.name == c.name)
                .and_then(|s| s.container_id.as_deref());
            meta.containers.iter().any(|m| {
                m.name == c.name
                    && Some(m.container_id.as_str()) == id
                    && m.hashes.plain_hash == kubelet_hash(c)
            })
        })
    });
    if hashes_current {
        return true;
    }
    state.last_container_statuses.iter().all(|(name, last)| {
        let Some(status) = statuses.iter().find(|s| &s.name == name) else {
            return false;
        };
        let spec_image = spec_containers
            .clone()
            .find(|c| &c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        status.image_id != last.image_id || with_tag(&status.image) == with_tag(&spec_image)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(labels: Value, image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "image": image}]},
        }))
        .unwrap()
    }

    fn pod(image: &str, status_image: &str, image_id: &str, annotations: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "resourceVersion": "5", "annotations": annotations},
            "spec": {"containers": [{"name": "main", "image": image}]},
            "status": {"containerStatuses": [{"name": "main", "image": status_image,
                "imageID": image_id, "ready": true, "restartCount": 0}]},
        }))
        .unwrap()
    }

    #[test]
    fn metadata_changes_as_a_merge_patch() {
        let old = template(json!({"app": "a", "gone": "x", "same": "s"}), "i:1");
        let new = template(json!({"app": "b", "same": "s", "added": "y"}), "i:1");
        assert_eq!(
            metadata_patch(&old, &new),
            json!({"labels": {"app": "b", "added": "y", "gone": null}, "annotations": {}})
        );
    }

    #[test]
    fn the_update_patch_and_its_completion() {
        let before = pod("r/i:1", "r/i:1", "sha256:a", json!({}));
        let change = InPlaceChange {
            images: [("main".to_string(), "r/i:2".to_string())].into(),
            ..Default::default()
        };
        let meta = json!({"labels": {}, "annotations": {}});
        let patch = update_patch(&before, "cs-7f9", &change, &meta, "2026-12-07T10:00:00Z", 0);
        assert!(patch["metadata"]["annotations"][ANNOTATION_INPLACE_UPDATE_GRACE].is_null());
        assert_eq!(
            patch["spec"]["containers"],
            json!([{"name": "main", "image": "r/i:2"}])
        );
        let labels = &patch["metadata"]["labels"];
        assert_eq!(labels[CONTROLLER_REVISION_HASH_LABEL], "cs-7f9");
        assert_eq!(labels[POD_TEMPLATE_HASH_LABEL], "7f9");
        assert_eq!(labels[LIFECYCLE_STATE_LABEL], "Updating");
        let raw = patch["metadata"]["annotations"][ANNOTATION_INPLACE_UPDATE_STATE]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            raw,
            r#"{"revision":"cs-7f9","updateTimestamp":"2026-12-07T10:00:00Z","lastContainerStatuses":{"main":{"imageID":"sha256:a"}},"updateImages":true,"containerBatchesRecord":[{"timestamp":"2026-12-07T10:00:00Z","containers":["main"]}]}"#
        );
        let state = json!({ANNOTATION_INPLACE_UPDATE_STATE: raw});
        // Spec updated, the kubelet has not restarted the container yet.
        assert!(!in_place_done(&pod(
            "r/i:2",
            "r/i:1",
            "sha256:a",
            state.clone()
        )));
        // Restarted: the same image content under the new name, or another image id.
        assert!(in_place_done(&pod(
            "r/i:2",
            "r/i:2",
            "sha256:a",
            state.clone()
        )));
        assert!(in_place_done(&pod("r/i:2", "r/i:1", "sha256:b", state)));
        // No state annotation: nothing in progress.
        assert!(in_place_done(&pod("r/i:2", "r/i:1", "sha256:a", json!({}))));
        assert_eq!(with_tag("r:5000/i"), "r:5000/i:latest");
        assert_eq!(with_tag("r:5000/i:1"), "r:5000/i:1");
    }

    #[test]
    fn a_grace_period_holds_the_change_then_applies_it() {
        let mut before = pod("r/i:1", "r/i:1", "sha256:a", json!({}));
        let change = InPlaceChange {
            images: [("main".to_string(), "r/i:2".to_string())].into(),
            metadata: true,
            ..Default::default()
        };
        let meta = json!({"labels": {"v": "2"}, "annotations": {}});
        let at = "2026-12-07T10:00:00Z";
        let start: i64 = at.parse::<Timestamp>().unwrap().as_second();
        let patch = update_patch(&before, "cs-7f9", &change, &meta, at, 30);
        assert!(
            patch.get("spec").is_none(),
            "images wait for the grace period"
        );
        assert!(patch["metadata"]["labels"].get("v").is_none());
        assert_eq!(
            patch["metadata"]["labels"][LIFECYCLE_STATE_LABEL],
            "Updating"
        );
        let annotations = &patch["metadata"]["annotations"];
        let grace: GraceSpec = serde_json::from_str(
            annotations[ANNOTATION_INPLACE_UPDATE_GRACE]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(grace.grace_seconds, 30);
        assert_eq!(
            annotations[ANNOTATION_INPLACE_UPDATE_STATE],
            r#"{"revision":"cs-7f9","updateTimestamp":"2026-12-07T10:00:00Z","lastContainerStatuses":{},"updateImages":true}"#
        );
        // The pod as the patch leaves it.
        let notes = before.metadata.annotations.get_or_insert_default();
        for key in [
            ANNOTATION_INPLACE_UPDATE_GRACE,
            ANNOTATION_INPLACE_UPDATE_STATE,
        ] {
            notes.insert(key.into(), annotations[key].as_str().unwrap().into());
        }
        before.metadata.labels = Some(
            [(
                CONTROLLER_REVISION_HASH_LABEL.to_string(),
                "cs-7f9".to_string(),
            )]
            .into(),
        );
        assert!(!in_place_done(&before), "held by the grace period");
        assert_eq!(
            grace_step(&before, start + 10, "later"),
            Some(GraceStep::Wait(Duration::from_secs(20)))
        );
        let Some(GraceStep::Apply(applied)) =
            grace_step(&before, start + 30, "2026-12-07T10:00:30Z")
        else {
            panic!("the period has passed");
        };
        assert_eq!(
            applied["spec"]["containers"],
            json!([{"name": "main", "image": "r/i:2"}])
        );
        assert_eq!(applied["metadata"]["labels"]["v"], "2");
        assert!(applied["metadata"]["annotations"][ANNOTATION_INPLACE_UPDATE_GRACE].is_null());
        assert!(
            applied["metadata"]["annotations"][ANNOTATION_INPLACE_UPDATE_STATE]
                .as_str()
                .unwrap()
                .contains(r#""lastContainerStatuses":{"main":{"imageID":"sha256:a"}}"#)
        );
        // Another revision took over: the record goes.
        before.metadata.labels = Some(
            [(
                CONTROLLER_REVISION_HASH_LABEL.to_string(),
                "cs-other".to_string(),
            )]
            .into(),
        );
        assert!(matches!(
            grace_step(&before, start, at),
            Some(GraceStep::Drop(_))
        ));
        assert_eq!(grace_step(&pod("i", "i", "x", json!({})), start, at), None);
        // Records that cannot be read: nothing applied or dropped, the reason given.
        let unreadable = |notes: Value| {
            let mut p = pod("i", "i", "x", notes);
            p.metadata.labels = Some(
                [(
                    CONTROLLER_REVISION_HASH_LABEL.to_string(),
                    "cs-7f9".to_string(),
                )]
                .into(),
            );
            grace_step(&p, start, at)
        };
        let grace = r#"{"revision":"cs-7f9","graceSeconds":3}"#;
        for (notes, why) in [
            (
                json!({ANNOTATION_INPLACE_UPDATE_GRACE: "{"}),
                ANNOTATION_INPLACE_UPDATE_GRACE,
            ),
            (json!({ANNOTATION_INPLACE_UPDATE_GRACE: grace}), "missing"),
            (
                json!({ANNOTATION_INPLACE_UPDATE_GRACE: grace,
                    ANNOTATION_INPLACE_UPDATE_STATE: r#"{"revision":"cs-7f9","updateTimestamp":"then"}"#}),
                "updateTimestamp",
            ),
        ] {
            match unreadable(notes) {
                Some(GraceStep::Unreadable(msg)) => assert!(msg.contains(why), "{msg}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn env_from_metadata_waits_for_the_agent() {
        let raw = r#"{"revision":"cs-1","updateTimestamp":"t","lastContainerStatuses":{},"updateEnvFromMetadata":true}"#;
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"v": "2"}, "annotations": {ANNOTATION_INPLACE_UPDATE_STATE: raw}},
            "spec": {"containers": [{"name": "main", "image": "i:1", "env": [
                {"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['v']"}}}]}]},
            "status": {"containerStatuses": [{"name": "main", "image": "i:1", "imageID": "x",
                "ready": true, "restartCount": 1}]},
        }))
        .unwrap();
        assert!(!in_place_done(&p), "no runtime-containers-meta yet");
        let hash = expected_hash(&p.spec.as_ref().unwrap().containers[0], &p);
        let meta = json!({"containers": [{"name": "main", "containerID": "containerd://c2",
            "restartCount": 1, "hashes": {"plainHash": 1, "extractedEnvFromMetadataHash": hash}}]});
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_RUNTIME_CONTAINERS_META.into(), meta.to_string());
        assert!(in_place_done(&p));
    }

    #[test]
    fn the_kubelets_hash_tells_when_the_image_id_cannot() {
        let raw = r#"{"revision":"cs-1","updateTimestamp":"t","lastContainerStatuses":{"main":{"imageID":"r/i@sha256:a"}},"updateImages":true}"#;
        let with_meta = |hash: u64, id: &str| -> Pod {
            let meta = json!({"containers": [{"name": "main", "containerID": id, "restartCount": 1,
                "hashes": {"plainHash": hash, "extractedEnvFromMetadataHash": 0}}]});
            serde_json::from_value(json!({
                "metadata": {"name": "p", "annotations": {ANNOTATION_INPLACE_UPDATE_STATE: raw,
                    ANNOTATION_RUNTIME_CONTAINERS_META: meta.to_string()}},
                "spec": {"containers": [{"name": "main", "image": "r/copy:2"}]},
                "status": {"containerStatuses": [{"name": "main", "image": "r/i:1",
                    "imageID": "r/i@sha256:a", "containerID": "containerd://c2", "ready": true,
                    "restartCount": 1}]},
            }))
            .unwrap()
        };
        let spec: k8s_openapi::api::core::v1::Container =
            serde_json::from_value(json!({"name": "main", "image": "r/copy:2"})).unwrap();
        let hash = kubelet_hash(&spec);
        assert!(in_place_done(&with_meta(hash, "containerd://c2")));
        assert!(
            !in_place_done(&with_meta(hash, "containerd://c1")),
            "an old container"
        );
        assert!(
            !in_place_done(&with_meta(hash ^ 1, "containerd://c2")),
            "the old spec"
        );
    }
}
