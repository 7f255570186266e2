//! ImageListPullJob → ImagePullJobs (upstream `imagelistpulljob_controller.go`): one
//! ImagePullJob per listed image, made from the list's template and controlled by the list
//! (deleted with it by the garbage collector); a job whose image left the list or whose template
//! changed is deleted and made again; the list's status sums its jobs'; an `Always` list
//! completes when all of its jobs did, is then left as it is, and is deleted
//! `ttlSecondsAfterFinished` later.
//!
//! Watch (the list jobs, and every ImagePullJob through a store updated before the event that
//! wakes its list) → decide ([`decide::plan`], pure) → act (creates and deletes) → report (the
//! list's status, Events as upstream words them).

pub mod decide;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{Error, RESYNC, expire, write_status};
use crate::api::kruise::{ImageListPullJob, ImagePullJob, ImagePullJobSpec};
use crate::cluster::events::EventType;
use crate::cluster::{is_already_exists, is_conflict, is_not_found};
use crate::controller::metrics::ControllerMetrics;
use crate::controller::record_event;
use crate::controller::retries::Retries;

/// The ImageListPullJob controller's loop.
pub(super) fn controller(
    client: &kube::Client,
    metrics: &ControllerMetrics,
) -> impl Future<Output = ()> + use<> {
    let wc = watcher::Config::default;
    let (jobs, writer) = reflector::store();
    let job_events = watcher(Api::<ImagePullJob>::all(client.clone()), wc())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        jobs,
    });
    let retries = Retries::new("imagelistpulljob");
    Controller::new(Api::<ImageListPullJob>::all(client.clone()), wc())
        .watches_stream(job_events, |job| list_of(&job))
        .run(
            retries.wrap(metrics.counted("imagelistpulljob", reconcile)),
            retries.error_policy(),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

struct Ctx {
    client: kube::Client,
    jobs: Store<ImagePullJob>,
}

/// The list job controlling an ImagePullJob, if any (any version of the group, as upstream).
fn list_of(job: &ImagePullJob) -> Option<ObjectRef<ImageListPullJob>> {
    let owner = job.metadata.owner_references.as_ref()?.iter().find(|o| {
        o.controller == Some(true)
            && o.kind == ImageListPullJob::kind(&())
            && o.api_version.split('/').next() == Some(ImageListPullJob::group(&()).as_ref())
    })?;
    Some(ObjectRef::new(&owner.name).within(job.namespace().as_deref().unwrap_or_default()))
}

fn controls(list: &ImageListPullJob, job: &ImagePullJob) -> bool {
    let uid = list.metadata.uid.as_deref();
    job.metadata.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
    })
}

async fn reconcile(list: Arc<ImageListPullJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = list.namespace().unwrap_or_default();
    let name = list.name_any();
    let api: Api<ImageListPullJob> = Api::namespaced(ctx.client.clone(), &ns);
    if list.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // The mutating webhook's part, for lists stored before it served.
    let mut spec = list.spec.clone();
    spec.apply_webhook_defaults();
    if spec != list.spec {
        let mut obj = (*list).clone();
        obj.spec = spec;
        return match api.replace(&name, &PostParams::default(), &obj).await {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(Action::await_change()),
            Err(e) => Err(Error::kube(
                format!("update ImageListPullJob {ns}/{name}"),
                e,
            )),
        };
    }
    let now = Timestamp::now();
    if let Some(done) = list.status.as_ref().and_then(|s| s.completion_time.clone()) {
        let ttl = list
            .spec
            .template
            .completion_policy
            .ttl_seconds_after_finished;
        return expire(&api, &*list, &done, ttl, now).await;
    }
    if let Err(message) = decide::validate(&spec) {
        warn!(job = %name, namespace = %ns, %message, "invalid image list pull job");
        event(
            &ctx,
            &list,
            EventType::Warning,
            "FailedValidation",
            &message,
        )
        .await;
        return Ok(Action::await_change());
    }
    let hash = decide::template_hash(&spec.template);
    let list = if list.labels().get(decide::TEMPLATE_HASH_LABEL) == Some(&hash) {
        list
    } else {
        let patch = json!({"metadata": {"labels": {decide::TEMPLATE_HASH_LABEL: &hash}}});
        let labelled = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::kube(format!("label ImageListPullJob {ns}/{name}"), e))?;
        Arc::new(labelled)
    };
    crate::cluster::store_ready(&ctx.jobs).await;
    let owned: Vec<Arc<ImagePullJob>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()) && controls(&list, j))
        .collect();
    let refs: Vec<&ImagePullJob> = owned.iter().map(Arc::as_ref).collect();
    let plan = decide::plan(&spec, list.status.as_ref(), &hash, &refs, now);
    let jobs: Api<ImagePullJob> = Api::namespaced(ctx.client.clone(), &ns);
    let mut made = 0;
    for image in &plan.create {
        let job = new_job(&list, image, &hash);
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {
                made += 1;
                info!(job = %name, namespace = %ns, image = %image, image_pull_job = %job.name_any(), "image pull job created");
            }
            Err(e) if is_already_exists(&e) => {}
            Err(e) => {
                let what = format!("create ImagePullJob {ns}/{} for {image}", job.name_any());
                return Err(Error::kube(what, e));
            }
        }
    }
    if made > 0 {
        let message = format!("Create {made} ImagePullJob");
        event(
            &ctx,
            &list,
            EventType::Normal,
            "Successful create ImagePullJob",
            &message,
        )
        .await;
    }
    let mut removed = 0;
    for child in &plan.delete {
        match jobs.delete(child, &DeleteParams::default()).await {
            Ok(_) => {
                removed += 1;
                info!(job = %name, namespace = %ns, image_pull_job = %child, "stale image pull job deleted");
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                let what = format!("fail to delete ImagePullJob ({ns}/{child}) for : {name}");
                return Err(Error::kube(what, e));
            }
        }
    }
    if removed > 0 {
        let message = format!("Delete {removed} ImagePullJob");
        event(
            &ctx,
            &list,
            EventType::Normal,
            "Successful delete ImagePullJob",
            &message,
        )
        .await;
    }
    write_status(&api, &list, plan.status.clone()).await?;
    match plan.status.completion_time {
        Some(done) => {
            info!(job = %name, namespace = %ns, succeeded = plan.status.succeeded, completed = plan.status.completed, "image list pull job finished");
            let ttl = list
                .spec
                .template
                .completion_policy
                .ttl_seconds_after_finished;
            expire(&api, &*list, &done, ttl, now).await
        }
        None => Ok(Action::requeue(RESYNC)),
    }
}

/// The ImagePullJob of `image`: the list's template, the template's hash as a label, controlled
/// by the list.
fn new_job(list: &ImageListPullJob, image: &str, hash: &str) -> ImagePullJob {
    let owner = OwnerReference {
        api_version: ImageListPullJob::api_version(&()).into_owned(),
        kind: ImageListPullJob::kind(&()).into_owned(),
        name: list.name_any(),
        uid: list.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    ImagePullJob {
        metadata: ObjectMeta {
            name: Some(decide::job_name(&list.name_any(), image, hash)),
            namespace: list.namespace(),
            labels: Some([(decide::TEMPLATE_HASH_LABEL.to_string(), hash.to_string())].into()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: ImagePullJobSpec {
            image: image.to_string(),
            template: list.spec.template.clone(),
        },
        status: None,
    }
}

async fn event(ctx: &Ctx, list: &ImageListPullJob, type_: EventType, reason: &str, message: &str) {
    let object: ObjectReference = list.object_ref(&());
    record_event(&ctx.client, &object, type_, reason, "Reconcile", message).await;
}
