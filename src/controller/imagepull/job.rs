//! ImagePullJob → NodeImage fan-out (upstream `imagepulljob_controller.go`, with the webhook's
//! defaults and validation applied here): pick the target NodeImages (`selector.names`, a label
//! selector, `podSelector`, or all), copy pull secrets into the agent's namespace, put the job's
//! tag on at most `parallelism` unsynced NodeImages at a time, aggregate the status, complete
//! (`Always`), enforce `activeDeadlineSeconds`, delete after `ttlSecondsAfterFinished`, and clean
//! up NodeImages and secret copies behind the `apps.kruise.io/deletion-protection` finalizer.
//!
//! Watch → decide ([`decide`], pure) → act (NodeImage and Secret writes with optimistic
//! concurrency) → report (job status, Events). Reads come from reflector stores except where a
//! fresh copy matters (the read-modify-write of a NodeImage), so no expectations are needed
//! (upstream's waited up to 5 min, #1528).

pub mod decide;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{
    Config, Error, RESYNC, expire, requeue_after, seconds_until, update_node_image, write_status,
};
use crate::api::clamp;
use crate::api::kruise::{
    ANNOTATION_SECRET_MODE, ANNOTATION_SECRET_REFERENCES, ANNOTATION_SECRET_SOURCE_KEY,
    FINALIZER_DELETION_PROTECTION, ImagePullJob, ImagePullJobStatus, NodeImage, ReferenceObject,
    SECRET_MODE_BATCH,
};
use crate::cluster::events::EventType;
use crate::cluster::{is_conflict, is_not_found, retry_on_conflict};
use crate::controller::metrics::ControllerMetrics;
use crate::controller::record_event;
use crate::controller::retries::Retries;
use decide::{JobTarget, NodeProgress};

/// The ImagePullJob controller (its loop) and its job store, which the NodeImage controllers read.
pub(super) fn controller(
    client: &kube::Client,
    cfg: &Config,
    metrics: &ControllerMetrics,
) -> (impl Future<Output = ()> + use<>, Store<ImagePullJob>) {
    let wc = watcher::Config::default;
    let jobs_ctrl = Controller::new(Api::<ImagePullJob>::all(client.clone()), wc());
    let jobs = jobs_ctrl.store();
    // The job controller's own NodeImage view: the store is updated before the event that
    // wakes a job, so a reconcile never reads an older NodeImage than the one that woke it.
    let (node_images, writer) = reflector::store();
    let node_image_events = watcher(Api::<NodeImage>::all(client.clone()), wc())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    // Secrets and Pods only wake jobs, by name, annotations and labels: their metadata is
    // enough (no Secret data, no Pod spec or status crosses the wire or the heap).
    let secret_events = watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), wc())
        .default_backoff()
        .touched_objects();
    let pod_events = watcher(Api::<PartialObjectMeta<Pod>>::all(client.clone()), wc())
        .default_backoff()
        .touched_objects();
    let (j1, j2, j3) = (jobs.clone(), jobs.clone(), jobs.clone());
    let jobs_ctrl = jobs_ctrl
        .watches_stream(node_image_events, move |ni| jobs_for_node_image(&j1, &ni))
        .watches_stream(secret_events, move |s| jobs_for_secret(&j2, &s))
        .watches_stream(pod_events, move |p| jobs_for_pod(&j3, &p));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cfg: cfg.clone(),
        node_images,
    });
    let retries = Retries::new("imagepulljob");
    let job_loop = jobs_ctrl
        .run(
            retries.wrap(metrics.counted("imagepulljob", reconcile)),
            retries.error_policy(),
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    (job_loop, jobs)
}

fn job_ref(j: &ImagePullJob) -> ObjectRef<ImagePullJob> {
    ObjectRef::from_obj(j)
}

fn completed(j: &ImagePullJob) -> bool {
    j.status
        .as_ref()
        .is_some_and(|s| s.completion_time.is_some())
}

/// Jobs owning a tag on the NodeImage (their progress changed) and unfinished jobs whose
/// selection may take it (it may be new or relabelled).
fn jobs_for_node_image(jobs: &Store<ImagePullJob>, ni: &NodeImage) -> Vec<ObjectRef<ImagePullJob>> {
    jobs.state()
        .iter()
        .filter(|j| {
            let owner = j
                .metadata
                .uid
                .as_deref()
                .is_some_and(|u| decide::is_owner(ni, u));
            owner || (!completed(j) && decide::may_target(&j.spec, ni))
        })
        .map(|j| job_ref(j))
        .collect()
}

/// Jobs using the secret as a source, or referenced by it as a copy.
fn jobs_for_secret(
    jobs: &Store<ImagePullJob>,
    s: &impl ResourceExt,
) -> Vec<ObjectRef<ImagePullJob>> {
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let refs = decide::references(s.annotations());
    jobs.state()
        .iter()
        .filter(|j| {
            let jns = j.namespace().unwrap_or_default();
            (jns == ns && j.spec.template.pull_secrets.contains(&name))
                || refs.contains(&decide::job_key(&jns, &j.name_any()))
        })
        .map(|j| job_ref(j))
        .collect()
}

/// Unfinished jobs whose podSelector matches the pod.
fn jobs_for_pod(jobs: &Store<ImagePullJob>, p: &impl ResourceExt) -> Vec<ObjectRef<ImagePullJob>> {
    let ns = p.namespace().unwrap_or_default();
    jobs.state()
        .iter()
        .filter(|j| !completed(j) && j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| {
            j.spec
                .template
                .pod_selector
                .clone()
                .and_then(|s| Selector::try_from(s).ok())
                .is_some_and(|s| s.matches(p.labels()))
        })
        .map(|j| job_ref(j))
        .collect()
}

struct Ctx {
    client: kube::Client,
    cfg: Config,
    node_images: Store<NodeImage>,
}

async fn reconcile(job: Arc<ImagePullJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let api: Api<ImagePullJob> = Api::namespaced(ctx.client.clone(), &ns);
    let has_finalizer = job
        .finalizers()
        .iter()
        .any(|f| f == FINALIZER_DELETION_PROTECTION);
    if job.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            finalize(&ctx, &job).await?;
        }
        return Ok(Action::await_change());
    }
    // The mutating webhook's part: defaults and the finalizer.
    let spec = decide::with_defaults(&job.spec);
    if spec != job.spec || !has_finalizer {
        let mut obj = (*job).clone();
        obj.spec = spec;
        if !has_finalizer {
            obj.finalizers_mut()
                .push(FINALIZER_DELETION_PROTECTION.into());
        }
        return match api.replace(&name, &PostParams::default(), &obj).await {
            Ok(_) => {
                info!(job = %name, namespace = %ns, "defaults and finalizer applied");
                Ok(Action::await_change())
            }
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(Action::await_change()),
            Err(e) => Err(Error::kube(format!("update ImagePullJob {ns}/{name}"), e)),
        };
    }
    let now = Timestamp::now();
    if let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone()) {
        release_secrets(&ctx, &job).await?;
        let ttl = job
            .spec
            .template
            .completion_policy
            .ttl_seconds_after_finished;
        return expire(&api, &*job, &done, ttl, now).await;
    }
    let image = match decide::validate(&job.spec) {
        Ok(image) => image,
        Err(message) => {
            if job.status.as_ref().map(|s| s.message.as_str()) != Some(message.as_str()) {
                warn!(job = %name, namespace = %ns, %message, "invalid image pull job");
                record_event(
                    &ctx.client,
                    &job_object_ref(&job),
                    EventType::Warning,
                    "FailedValidation",
                    "Validate",
                    &message,
                )
                .await;
            }
            let status = ImagePullJobStatus {
                start_time: job.status.as_ref().and_then(|s| s.start_time.clone()),
                message,
                ..Default::default()
            };
            write_status(&api, &job, status).await?;
            return Ok(Action::await_change());
        }
    };
    let secrets = match sync_secrets(&ctx, &job).await {
        Ok(s) => s,
        Err(message) => {
            let mut status = job.status.clone().unwrap_or_default();
            if status.message != message {
                warn!(job = %name, namespace = %ns, %message, "pull secrets not synced");
                status.message = message;
                write_status(&api, &job, status).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let target = JobTarget {
        image,
        owner: decide::owner_ref(&job),
        pull_policy: decide::tag_pull_policy(
            &job.spec,
            ctx.cfg.default_ttl_seconds_for_always,
            rand::random::<f64>(),
        ),
        image_pull_policy: job
            .spec
            .template
            .image_pull_policy
            .unwrap_or(crate::api::kruise::DEFAULT_IMAGE_PULL_POLICY),
        sandbox_config: job.spec.template.sandbox_config.clone(),
        secrets,
    };
    let mut nodes = target_node_images(&ctx, &job).await?;
    let progress = |nodes: &[NodeImage]| -> Vec<(String, NodeProgress)> {
        nodes
            .iter()
            .map(|n| (n.name_any(), decide::node_progress(n, &target)))
            .collect()
    };
    let computed = decide::calculate_status(&job.spec, job.status.as_ref(), &progress(&nodes), now);
    if computed.status.completion_time.is_none() {
        let window =
            usize::try_from(job.spec.template.parallelism_value() - computed.status.active)
                .unwrap_or(0);
        let mut to_write: Vec<String> = computed.not_synced.iter().take(window).cloned().collect();
        to_write.extend(
            nodes
                .iter()
                .filter(|n| decide::needs_update(n, &target))
                .map(|n| n.name_any()),
        );
        let mut written = put_on_node_images(&ctx, &job, &target, to_write).await?;
        // The status below counts what was just written, not the (older) store.
        for n in &mut nodes {
            if let Some(w) = written.remove(&n.name_any()) {
                *n = w;
            }
        }
    }
    let computed = decide::calculate_status(&job.spec, job.status.as_ref(), &progress(&nodes), now);
    let status = computed.status;
    let finished = status.completion_time.is_some();
    if decide::status_changed(job.status.as_ref(), &status) {
        if finished {
            info!(job = %name, namespace = %ns, succeeded = status.succeeded, failed = status.failed, message = %status.message, "image pull job finished");
        }
        write_status(&api, &job, status.clone()).await?;
    }
    if finished {
        release_secrets(&ctx, &job).await?;
        let ttl = job
            .spec
            .template
            .completion_policy
            .ttl_seconds_after_finished
            .map(i64::from);
        return Ok(ttl.map_or(Action::await_change(), |t| {
            Action::requeue(clamp::seconds(t))
        }));
    }
    let deadline = job
        .spec
        .template
        .completion_policy
        .active_deadline_seconds
        .zip(status.start_time.as_ref())
        .map(|(d, start)| seconds_until(start, d, now));
    Ok(requeue_after(deadline, RESYNC))
}

/// Puts the job's tag on these NodeImages (read-modify-write each); returns the fresh objects.
async fn put_on_node_images(
    ctx: &Ctx,
    job: &ImagePullJob,
    target: &JobTarget,
    names: Vec<String>,
) -> Result<HashMap<String, NodeImage>, Error> {
    let api: Api<NodeImage> = Api::all(ctx.client.clone());
    let mut written = HashMap::new();
    for node in names {
        let stamp = Time(Timestamp::now());
        let Some((fresh, changed)) = update_node_image(&api, &node, |ni| {
            decide::apply_to_spec(&mut ni.spec, ni.status.as_ref(), target, &stamp)
        })
        .await?
        else {
            continue;
        };
        if changed {
            info!(job = %job.name_any(), namespace = %job.namespace().unwrap_or_default(), node = %node,
                  image = %target.image.name, tag = %target.image.tag, "pull task put on node image");
        }
        written.insert(node, fresh);
    }
    Ok(written)
}

/// The job's NodeImages in selection order (upstream `GetNodeImagesForJob`).
async fn target_node_images(ctx: &Ctx, job: &ImagePullJob) -> Result<Vec<NodeImage>, Error> {
    crate::cluster::store_ready(&ctx.node_images).await;
    let mut all: Vec<NodeImage> = ctx
        .node_images
        .state()
        .iter()
        .map(|n| (**n).clone())
        .collect();
    all.sort_by_key(|n| n.name_any());
    if let Some(ps) = &job.spec.template.pod_selector {
        let ns = job.namespace().unwrap_or_default();
        let selector = Selector::try_from(ps.clone()).unwrap_or_default();
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().labels_from(&selector))
            .await
            .map_err(|e| Error::kube(format!("list pods in {ns}"), e))?;
        let mut names = Vec::new();
        for p in &pods.items {
            let active = p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone())
                && active
                && !names.contains(&node)
            {
                names.push(node);
            }
        }
        return Ok(names
            .iter()
            .filter_map(|n| all.iter().find(|ni| &ni.name_any() == n).cloned())
            .collect());
    }
    let Some(sel) = &job.spec.template.selector else {
        return Ok(all);
    };
    if !sel.names.is_empty() {
        return Ok(sel
            .names
            .iter()
            .filter_map(|n| all.iter().find(|ni| &ni.name_any() == n).cloned())
            .collect());
    }
    let selector = Selector::try_from(sel.label_selector.clone()).unwrap_or_default();
    Ok(all
        .into_iter()
        .filter(|n| selector.matches(n.labels()))
        .collect())
}

fn job_object_ref(job: &ImagePullJob) -> ObjectReference {
    kube::Resource::object_ref(job, &())
}

/// The job's pull secrets as the agent reads them: copies in the agent's namespace named
/// `<source>-<6 hex>`, with the job in their references and their data refreshed from the
/// source. Jobs in that namespace use their secrets directly. `Err` is a status message.
async fn sync_secrets(ctx: &Ctx, job: &ImagePullJob) -> Result<Vec<ReferenceObject>, String> {
    let ns = job.namespace().unwrap_or_default();
    let target_ns = &ctx.cfg.pull_secret_namespace;
    if job.spec.template.pull_secrets.is_empty() {
        return Ok(Vec::new());
    }
    if &ns == target_ns {
        return Ok(job
            .spec
            .template
            .pull_secrets
            .iter()
            .map(|s| ReferenceObject {
                namespace: ns.clone(),
                name: s.clone(),
                ..Default::default()
            })
            .collect());
    }
    let key = decide::job_key(&ns, &job.name_any());
    let sources: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let copies: Api<Secret> = Api::namespaced(ctx.client.clone(), target_ns);
    let mut out = Vec::new();
    for src_name in &job.spec.template.pull_secrets {
        let source = sources
            .get_opt(src_name)
            .await
            .map_err(|e| format!("failed to get pull secret {ns}/{src_name}: {e}"))?
            .ok_or_else(|| format!("pull secret {ns}/{src_name} not found"))?;
        let copy = ensure_copy(&copies, target_ns, &source, &key, &ns)
            .await
            .map_err(|e| format!("failed to sync pull secret {ns}/{src_name}: {e}"))?;
        out.push(ReferenceObject {
            namespace: target_ns.clone(),
            name: copy,
            mode: SECRET_MODE_BATCH.into(),
        });
    }
    Ok(out)
}

/// Finds the copy of `source` (by its source-key annotation) or creates it, then brings its
/// data, type and references up to date. Returns its name.
async fn ensure_copy(
    copies: &Api<Secret>,
    copies_ns: &str,
    source: &Secret,
    job_key: &str,
    source_ns: &str,
) -> Result<String, Error> {
    let source_key = decide::job_key(source_ns, &source.name_any());
    retry_on_conflict(5, || async {
        let list = copies.list(&ListParams::default()).await?;
        let existing = list
            .items
            .into_iter()
            .find(|s| s.annotations().get(ANNOTATION_SECRET_SOURCE_KEY) == Some(&source_key));
        let mut copy = existing.clone().unwrap_or_else(|| Secret {
            metadata: ObjectMeta {
                name: Some(decide::secret_copy_name(source_ns, &source.name_any())),
                namespace: Some(copies_ns.to_string()),
                ..Default::default()
            },
            ..Default::default()
        });
        let refs = decide::references_with(copy.annotations(), job_key, true);
        let annotations = copy.annotations_mut();
        annotations.insert(ANNOTATION_SECRET_SOURCE_KEY.into(), source_key.clone());
        annotations.insert(
            ANNOTATION_SECRET_REFERENCES.into(),
            decide::join_references(&refs),
        );
        annotations.insert(ANNOTATION_SECRET_MODE.into(), SECRET_MODE_BATCH.into());
        copy.data.clone_from(&source.data);
        copy.type_.clone_from(&source.type_);
        copy.string_data = None;
        let name = copy.name_any();
        match &existing {
            Some(e) if same_secret(e, &copy) => return Ok(name),
            Some(_) => copies.replace(&name, &PostParams::default(), &copy).await?,
            None => copies.create(&PostParams::default(), &copy).await?,
        };
        info!(secret = %name, source = %source_key, job = %job_key, "pull secret copy synced");
        Ok(name)
    })
    .await
    .map_err(|e| Error::kube(format!("sync the secret copy of {source_key}"), e))
}

fn same_secret(a: &Secret, b: &Secret) -> bool {
    a.data == b.data && a.type_ == b.type_ && a.metadata.annotations == b.metadata.annotations
}

/// Removes the job from every secret copy's references; deletes copies nobody references.
async fn release_secrets(ctx: &Ctx, job: &ImagePullJob) -> Result<(), Error> {
    let ns = job.namespace().unwrap_or_default();
    // `pullSecrets` is immutable (upstream's webhook): a job without any never got a copy.
    if ns == ctx.cfg.pull_secret_namespace || job.spec.template.pull_secrets.is_empty() {
        return Ok(());
    }
    let key = decide::job_key(&ns, &job.name_any());
    let copies: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.cfg.pull_secret_namespace);
    // A conflict on one copy reads them all again (the others are then found done).
    retry_on_conflict(5, || async {
        let list = copies.list(&ListParams::default()).await?;
        for mut s in list.items {
            if !decide::references(s.annotations()).contains(&key) {
                continue;
            }
            let refs: BTreeSet<String> = decide::references_with(s.annotations(), &key, false);
            let name = s.name_any();
            let res = if refs.is_empty() {
                let dp = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        resource_version: s.resource_version(),
                        uid: None,
                    }),
                    ..Default::default()
                };
                copies.delete(&name, &dp).await.map(|_| {
                    info!(secret = %name, job = %key, "unreferenced pull secret copy deleted");
                })
            } else {
                s.annotations_mut().insert(
                    ANNOTATION_SECRET_REFERENCES.into(),
                    decide::join_references(&refs),
                );
                copies
                    .replace(&name, &PostParams::default(), &s)
                    .await
                    .map(|_| ())
            };
            match res {
                Err(e) if !is_not_found(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::kube(format!("release the secret copies of {key}"), e))
}

/// Deletion: take the job off every NodeImage, release its secret copies, drop the finalizer.
async fn finalize(ctx: &Ctx, job: &ImagePullJob) -> Result<(), Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let ni_api: Api<NodeImage> = Api::all(ctx.client.clone());
    if let Some(uid) = job.metadata.uid.as_deref() {
        // A fresh list: a stale store could miss a tag written just before the deletion.
        let all = ni_api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("list NodeImages", e))?;
        for ni in all.items.iter().filter(|n| decide::is_owner(n, uid)) {
            let updated = update_node_image(&ni_api, &ni.name_any(), |n| {
                decide::remove_owner(&mut n.spec, uid)
            })
            .await?;
            if updated.is_some_and(|(_, changed)| changed) {
                info!(job = %name, namespace = %ns, node = %ni.name_any(), "pull task removed from node image");
            }
        }
    }
    release_secrets(ctx, job).await?;
    let api: Api<ImagePullJob> = Api::namespaced(ctx.client.clone(), &ns);
    let finalizers: Vec<String> = job
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER_DELETION_PROTECTION)
        .cloned()
        .collect();
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": job.resource_version()}
    });
    match api
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => info!(job = %name, namespace = %ns, "finalizer removed"),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(Error::kube(format!("remove finalizer of {ns}/{name}"), e)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(jobs: &[serde_json::Value]) -> Store<ImagePullJob> {
        let (reader, mut writer) = reflector::store();
        for j in jobs {
            let mut j = j.clone();
            j["apiVersion"] = json!("apps.kruise.io/v1alpha1");
            j["kind"] = json!("ImagePullJob");
            writer.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(j).unwrap()));
        }
        reader
    }

    fn names(refs: Vec<ObjectRef<ImagePullJob>>) -> Vec<String> {
        let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    #[test]
    fn node_image_events_wake_owners_and_candidates() {
        let jobs = store(&[
            json!({"metadata": {"name": "owner", "namespace": "ns", "uid": "u1"},
                   "spec": {"image": "a"}, "status": {"desired": 1, "completionTime": "2026-01-01T00:00:00Z"}}),
            json!({"metadata": {"name": "all", "namespace": "ns", "uid": "u2"}, "spec": {"image": "a"}}),
            json!({"metadata": {"name": "elsewhere", "namespace": "ns", "uid": "u3"},
                   "spec": {"image": "a", "selector": {"names": ["other"]}}}),
            json!({"metadata": {"name": "done", "namespace": "ns", "uid": "u4"},
                   "spec": {"image": "a"}, "status": {"desired": 1, "completionTime": "2026-01-01T00:00:00Z"}}),
        ]);
        let ni: NodeImage = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"images": {"a": {"tags": [{"tag": "latest", "ownerReferences": [{"uid": "u1"}]}]}}}
        }))
        .unwrap();
        assert_eq!(names(jobs_for_node_image(&jobs, &ni)), ["all", "owner"]);
    }

    #[test]
    fn secret_and_pod_events_wake_their_jobs() {
        let jobs = store(&[
            json!({"metadata": {"name": "src", "namespace": "ns", "uid": "u1"},
                   "spec": {"image": "a", "pullSecrets": ["cred"]}}),
            json!({"metadata": {"name": "other-ns", "namespace": "x", "uid": "u2"},
                   "spec": {"image": "a", "pullSecrets": ["cred"]}}),
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u3"},
                   "spec": {"image": "a", "podSelector": {"matchLabels": {"app": "web"}}}}),
        ]);
        let source: Secret =
            serde_json::from_value(json!({"metadata": {"name": "cred", "namespace": "ns"}}))
                .unwrap();
        assert_eq!(names(jobs_for_secret(&jobs, &source)), ["src"]);
        let copy: Secret = serde_json::from_value(json!({"metadata": {
            "name": "cred-abcdef", "namespace": "kruise-daemon-config",
            "annotations": {"imagepulljobs.kruise.io/references": "ns/web,x/other-ns"}}}))
        .unwrap();
        assert_eq!(names(jobs_for_secret(&jobs, &copy)), ["other-ns", "web"]);
        let pod = |labels: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}}),
            )
            .unwrap()
        };
        assert_eq!(
            names(jobs_for_pod(&jobs, &pod(json!({"app": "web"})))),
            ["web"]
        );
        assert!(jobs_for_pod(&jobs, &pod(json!({"app": "db"}))).is_empty());
    }
}
