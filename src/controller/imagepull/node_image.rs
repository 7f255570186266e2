//! NodeImage lifecycle, one per Node: created once the Node has been Ready for
//! `--nodeimage-creation-delay` (never for virtual nodes), labels mirrored from the Node, deleted
//! with the Node (unless labelled `apps.kruise.io/fake-nodeimage`), spec garbage-collected, and
//! tags the agent does not answer for failed by the manager. Two `kube::runtime::Controller`s:
//! one over Nodes (creation) and one over NodeImages (everything else, also woken by Node events).

pub mod decide;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{Config, Error, RESYNC, requeue_after, update_node_image};
use crate::api::kruise::{EVENT_REASON_PULL_IMAGE_FAILED, ImagePullJob, NodeImage, NodeImageSpec};
use crate::cluster::events::EventType;
use crate::cluster::{is_already_exists, is_not_found, retry_on_conflict};
use crate::controller::metrics::ControllerMetrics;
use crate::controller::record_event;
use crate::controller::retries::Retries;
use decide::Creation;

struct Ctx {
    client: kube::Client,
    cfg: Config,
    nodes: Store<Node>,
    jobs: Store<ImagePullJob>,
    node_images: Store<NodeImage>,
}

/// The two controllers, ready to run.
pub(crate) struct Controllers {
    nodes: Controller<Node>,
    node_images: Controller<NodeImage>,
    /// Nodes as seen by the NodeImage controller's Node watch: a Node event is only handled
    /// once this store has it.
    node_store: Store<Node>,
}

impl Controllers {
    pub(crate) fn new(client: &kube::Client) -> Self {
        let wc = watcher::Config::default;
        let nodes = Controller::new(Api::<Node>::all(client.clone()), wc());
        let (node_store, writer) = reflector::store();
        let node_events = watcher(Api::<Node>::all(client.clone()), wc())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let node_images = Controller::new(Api::<NodeImage>::all(client.clone()), wc())
            .watches_stream(node_events, |n| Some(ObjectRef::new(&n.name_any())));
        Controllers {
            nodes,
            node_images,
            node_store,
        }
    }

    /// Runs both controllers until the task is dropped.
    pub(crate) async fn run(
        self,
        client: kube::Client,
        cfg: Config,
        jobs: Store<ImagePullJob>,
        metrics: ControllerMetrics,
    ) {
        let ctx = Arc::new(Ctx {
            client,
            cfg,
            nodes: self.node_store,
            jobs,
            node_images: self.node_images.store(),
        });
        let (nodes, node_images) = (Retries::new("node"), Retries::new("nodeimage"));
        let creator = self
            .nodes
            .run(
                nodes.wrap(metrics.counted("node", reconcile_node)),
                nodes.error_policy(),
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
        let lifecycle = self
            .node_images
            .run(
                node_images.wrap(metrics.counted("nodeimage", reconcile_node_image)),
                node_images.error_policy(),
                ctx,
            )
            .for_each(|_| futures::future::ready(()));
        futures::join!(creator, lifecycle);
    }
}

/// Creates the NodeImage of a Node that has been Ready long enough.
async fn reconcile_node(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.name_any();
    match decide::creation(&node, Timestamp::now(), ctx.cfg.node_image_creation_delay) {
        Creation::No => Ok(Action::await_change()),
        Creation::After(d) => Ok(Action::requeue(d)),
        // A NodeImage deleted by hand comes back at the next look.
        Creation::Now => {
            if ctx.node_images.get(&ObjectRef::new(&name)).is_some() {
                return Ok(Action::requeue(RESYNC));
            }
            let ni = NodeImage {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: node.metadata.labels.clone(),
                    ..Default::default()
                },
                spec: NodeImageSpec::default(),
                status: None,
            };
            let api: Api<NodeImage> = Api::all(ctx.client.clone());
            match api.create(&PostParams::default(), &ni).await {
                Ok(_) => info!(node = %name, "node image created"),
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(Error::kube(format!("create NodeImage {name}"), e)),
            }
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// Deletes the NodeImage of a gone Node, mirrors labels, garbage-collects the spec and fails the
/// tags the agent does not answer for.
async fn reconcile_node_image(ni: Arc<NodeImage>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ni.name_any();
    let api: Api<NodeImage> = Api::all(ctx.client.clone());
    if ni.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    crate::cluster::store_ready(&ctx.nodes).await;
    crate::cluster::store_ready(&ctx.jobs).await;
    let node = ctx.nodes.get(&ObjectRef::new(&name));
    let fake = decide::is_fake(&ni);
    let node_gone = node
        .as_ref()
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
    if node_gone && !fake {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => info!(node = %name, "node gone; node image deleted"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::kube(format!("delete NodeImage {name}"), e)),
        }
        return Ok(Action::await_change());
    }
    let labels = node.and_then(|n| n.metadata.labels.clone());
    let jobs = ctx.jobs.clone();
    let job_uid = move |ns: &str, job: &str| {
        jobs.get(&ObjectRef::new(job).within(ns))
            .and_then(|j| j.metadata.uid.clone())
    };
    let edit = |obj: &mut NodeImage, next: &mut Option<i64>| {
        let mut changed = false;
        if !fake && obj.metadata.labels != labels {
            obj.metadata.labels.clone_from(&labels);
            changed = true;
        }
        let (gc, wake) = decide::gc_spec(
            &mut obj.spec,
            obj.status.as_ref(),
            &job_uid,
            Timestamp::now(),
        );
        *next = wake;
        changed || gc
    };
    // Decide on the cached copy; read-modify-write only when something is to change.
    let mut next = None;
    let mut current = (*ni).clone();
    if edit(&mut current.clone(), &mut next) {
        match update_node_image(&api, &name, |obj| edit(obj, &mut next)).await? {
            Some((fresh, _)) => current = fresh,
            None => return Ok(Action::await_change()),
        }
    }
    // The status pass: conflicts with the agent's writes are expected; the first try uses the
    // copy at hand, a retry reads it again.
    let at_hand = std::sync::Mutex::new(Some(current));
    let checked = retry_on_conflict(5, || async {
        let held = at_hand.lock().ok().and_then(|mut c| c.take());
        let obj = match held {
            Some(obj) => obj,
            None => match api.get_opt(&name).await? {
                Some(obj) => obj,
                None => return Ok(None),
            },
        };
        let c = decide::check_status(&obj, Timestamp::now(), ctx.cfg.node_image_response_timeout);
        // Only failures make the controller write a status the agent has not written yet.
        let unchanged = match &obj.status {
            Some(s) => *s == c.status,
            None => c.failed.is_empty(),
        };
        if !unchanged {
            let mut next = obj.clone();
            next.status = Some(c.status.clone());
            api.replace_status(&name, &PostParams::default(), &next)
                .await?;
        }
        Ok(Some((obj, c)))
    })
    .await
    .map_err(|e| Error::kube(format!("update NodeImage {name} status"), e))?;
    let Some((current, check)) = checked else {
        return Ok(Action::await_change());
    };
    for f in &check.failed {
        warn!(node = %name, image = %f.image, tag = %f.tag, message = %f.message, "pull task failed by the controller");
        let msg = format!("Image {}:{} {}", f.image, f.tag, f.message);
        for owner in &f.owners {
            record_event(
                &ctx.client,
                owner,
                EventType::Warning,
                EVENT_REASON_PULL_IMAGE_FAILED,
                "PullImage",
                &msg,
            )
            .await;
        }
        let me = kube::Resource::object_ref(&current, &());
        record_event(
            &ctx.client,
            &me,
            EventType::Warning,
            EVENT_REASON_PULL_IMAGE_FAILED,
            "PullImage",
            &msg,
        )
        .await;
    }
    let wake = [next, check.next].into_iter().flatten().min();
    Ok(requeue_after(wake, RESYNC))
}
