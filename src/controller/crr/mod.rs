//! ContainerRecreateRequest lifecycle (the manager's half of OpenKruise's CRR): watch CRRs and
//! Pod metadata → read the CRR's Pod → decide ([`decide`]) → write labels/spec (defaulting a CRR
//! created without the webhook), annotations, finalizer, status, the Pod's `KruisePodReady`
//! condition → let the agents act. The admission webhook's answer is [`admission`].

pub mod admission;
pub mod decide;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::kruise::{
    ANNOTATION_CRR_SYNC_CONTAINER_STATUSES, ANNOTATION_CRR_UNREADY_ACQUIRED,
    ContainerRecreateRequest, ContainerRecreateRequestPhase as Phase,
    FINALIZER_CRR_UNREADY_ACQUIRED, LABEL_CRR_ACTIVE,
};
use crate::controller::metrics::{ControllerMetrics, Reason};
use crate::controller::readiness;
use crate::controller::retries::Retries;
use decide::{Defaulting, Step};

type Crr = ContainerRecreateRequest;

#[derive(Debug, thiserror::Error)]
#[error("CRR {crr}: {what}: {source}")]
pub struct Error {
    crr: String,
    what: &'static str,
    #[source]
    source: kube::Error,
}

impl Reason for Error {
    fn reason(&self) -> &'static str {
        self.source.reason()
    }
}

struct Ctx {
    client: kube::Client,
}

fn name_of(crr: &Crr) -> String {
    format!("{}/{}", crr.namespace().unwrap_or_default(), crr.name_any())
}

/// The CRRs a Pod change concerns: those labelled with its uid, and new ones naming it.
fn crrs_for_pod(store: &Store<Crr>, pod: &impl ResourceExt) -> Vec<ObjectRef<Crr>> {
    let (ns, name, uid) = (pod.namespace(), pod.name_any(), pod.uid());
    store
        .state()
        .iter()
        .filter(|c| c.namespace() == ns && !decide::is_finished(c))
        .filter(|c| match c.pod_uid() {
            Some(u) => Some(u) == uid.as_deref(),
            None => c.spec.pod_name == name,
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Run until the task is aborted (on losing leadership).
pub async fn run(client: kube::Client, metrics: ControllerMetrics) {
    let crrs: Api<Crr> = Api::all(client.clone());
    let controller = Controller::new(crrs, watcher::Config::default());
    let store = controller.store();
    // Pod changes only wake the CRRs naming the pod (metadata is enough, and nothing is kept:
    // the controller does not hold the cluster's Pods); a reconcile reads its one Pod.
    let pod_events = watcher(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let retries = Retries::new("crr");
    let counted = retries.wrap(metrics.counted("crr", reconcile));
    let ctx = Arc::new(Ctx { client });
    controller
        .watches_stream(pod_events, move |pod| crrs_for_pod(&store, &pod))
        .run(counted, retries.error_policy(), ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "CRR reconcile");
            }
        })
        .await;
}

async fn reconcile(crr: Arc<Crr>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = crr.namespace().unwrap_or_default();
    let api: Api<Crr> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let err = |what| {
        let crr = name_of(&crr);
        move |source| Error { crr, what, source }
    };
    // Read when needed (upstream reads its cache of every Pod; this is one GET per pass).
    let pod = if crr.spec.pod_name.is_empty() {
        None
    } else {
        pods.get_opt(&crr.spec.pod_name)
            .await
            .map_err(err("reading the Pod"))?
            .map(Arc::new)
    };
    if decide::needs_defaulting(&crr) {
        match decide::default_crr(&crr, pod.as_deref()) {
            Defaulting::Apply(next) => {
                api.replace(&crr.name_any(), &PostParams::default(), &next)
                    .await
                    .map_err(err("defaulting"))?;
                info!(crr = %name_of(&crr), pod = %crr.spec.pod_name, "CRR defaulted from its Pod");
            }
            Defaulting::Reject(message) => {
                warn!(crr = %name_of(&crr), reason = %message, "CRR rejected");
                complete(&api, &crr, &message, None)
                    .await
                    .map_err(err("rejecting"))?;
            }
        }
        return Ok(Action::await_change());
    }
    let plan = decide::lifecycle(&crr, pod.as_deref(), SystemTime::now());
    for step in plan.steps {
        match step {
            Step::ReleaseUnready => {
                if let Some(pod) = &pod {
                    readiness::hold(&pods, pod, &decide::readiness_key(&crr), false)
                        .await
                        .map_err(err("releasing the pod's readiness"))?;
                }
                let rest: Vec<String> = crr
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER_CRR_UNREADY_ACQUIRED)
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {
                    "resourceVersion": crr.metadata.resource_version,
                    "finalizers": rest,
                }});
                merge(&api, &crr, &patch)
                    .await
                    .map_err(err("removing the finalizer"))?;
            }
            Step::RemoveActiveLabel => {
                let patch = json!({"metadata": {"labels": {LABEL_CRR_ACTIVE: null}}});
                merge(&api, &crr, &patch)
                    .await
                    .map_err(err("removing the active label"))?;
            }
            Step::Delete => match api.delete(&crr.name_any(), &DeleteParams::default()).await {
                Ok(_) => info!(crr = %name_of(&crr), "CRR deleted after its TTL"),
                Err(e) if crate::cluster::is_not_found(&e) => {}
                Err(e) => return Err(err("deleting after the TTL")(e)),
            },
            Step::Complete { message, states } => {
                complete(&api, &crr, &message, states)
                    .await
                    .map_err(err("completing"))?;
                info!(crr = %name_of(&crr), message = %message, "CRR completed by the controller");
                return Ok(Action::await_change());
            }
            Step::SyncStatuses(json) => {
                let patch = json!({"metadata": {"annotations": {
                    ANNOTATION_CRR_SYNC_CONTAINER_STATUSES: json,
                }}});
                merge(&api, &crr, &patch)
                    .await
                    .map_err(err("syncing container statuses"))?;
            }
            Step::AcquireUnready { pod_condition } => {
                if pod_condition && let Some(pod) = &pod {
                    if !crr
                        .finalizers()
                        .iter()
                        .any(|f| f == FINALIZER_CRR_UNREADY_ACQUIRED)
                    {
                        let mut fins = crr.finalizers().to_vec();
                        fins.push(FINALIZER_CRR_UNREADY_ACQUIRED.into());
                        let patch = json!({"metadata": {
                            "resourceVersion": crr.metadata.resource_version,
                            "finalizers": fins,
                        }});
                        merge(&api, &crr, &patch)
                            .await
                            .map_err(err("adding the finalizer"))?;
                    }
                    readiness::hold(&pods, pod, &decide::readiness_key(&crr), true)
                        .await
                        .map_err(err("making the pod not-ready"))?;
                }
                let at = Time(k8s_openapi::jiff::Timestamp::now());
                let patch = json!({"metadata": {"annotations": {
                    ANNOTATION_CRR_UNREADY_ACQUIRED: at,
                }}});
                merge(&api, &crr, &patch)
                    .await
                    .map_err(err("recording the unready time"))?;
                info!(crr = %name_of(&crr), pod = %crr.spec.pod_name, readiness_gate = pod_condition, "pod made not-ready for the CRR");
            }
        }
    }
    Ok(match plan.requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

async fn merge(api: &Api<Crr>, crr: &Crr, patch: &serde_json::Value) -> Result<(), kube::Error> {
    api.patch(
        &crr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map(|_| ())
}

async fn complete(
    api: &Api<Crr>,
    crr: &Crr,
    message: &str,
    states: Option<Vec<crate::api::kruise::ContainerRecreateRequestContainerRecreateState>>,
) -> Result<(), kube::Error> {
    let mut status = json!({
        "phase": Phase::Completed,
        "completionTime": Time(k8s_openapi::jiff::Timestamp::now()),
        "message": message,
    });
    if let Some(states) = states {
        status["containerRecreateStates"] = json!(states);
    }
    let patch = json!({
        "metadata": {"resourceVersion": crr.metadata.resource_version},
        "status": status,
    });
    api.patch_status(
        &crr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}
