//! Custom pod probes, the controller side (upstream `podprobemarker` and `nodepodprobe`
//! controllers); the agent runs the probes (`crate::podprobe`).
//!
//! - One NodePodProbe per Ready node (same name; none for virtual nodes), deleted with the node.
//! - Its spec is computed from scratch on every pass ([`decide::node_spec`]): the node's probed
//!   pods that a PodProbeMarker selects, with every such marker's probes, named ports resolved.
//!   Pods that finished, left or stopped matching, and probes removed from a marker, leave with it
//!   (upstream only appends, and relies on a second controller to prune pods).
//! - The agent's results (the NodePodProbe status) go onto the pods: a condition and the marker
//!   policy's labels and annotations, in one `pods/status` patch per pod ([`decide::marks`]).
//! - A PodProbeMarker carries the finalizer `kruise.io/node-pod-probe-cleanup` until no node
//!   runs its probes, and its status counts the pods it selects.
//!
//! - A validating webhook ([`admission`]) refuses invalid markers with every reason.
//!
//! No cache of the cluster's Pods is kept: a node's pass lists that node's pods, a marker's pass
//! lists the pods its selector picks, and the Pod watch only routes changes to nodes and markers.

pub mod act;
pub mod admission;
pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use crate::api::kruise::{NodePodProbe, POD_PROBE_MARKER_FINALIZER, PodProbeMarker};
use crate::controller::imagepull::node_image::decide::{Creation, creation};
use crate::controller::metrics::{ControllerMetrics, Reason};
use crate::controller::retries::Retries;
use crate::controller::vk_sidecar::VIRTUAL_NODE_LABEL;

/// Errors of the pod probe reconcilers.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct Error {
    action: String,
    #[source]
    source: kube::Error,
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Error { action, source }
    }
}

impl Reason for Error {
    fn reason(&self) -> &'static str {
        self.source.reason()
    }
}

/// Longest wait between two passes over a NodePodProbe or a PodProbeMarker.
const RESYNC: Duration = Duration::from_secs(300);
/// A marker's matched pods are counted again at least this often.
const MARKER_RESYNC: Duration = Duration::from_secs(60);
/// Changes arriving within this window are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// A marker being deleted looks again this soon for nodes still running its probes.
const FINALIZER_RECHECK: Duration = Duration::from_secs(2);

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
    markers: Store<PodProbeMarker>,
    probes: Store<NodePodProbe>,
}

/// Run the NodePodProbe lifecycle and the PodProbeMarker controllers until the task is dropped.
pub async fn run(client: kube::Client, metrics: ControllerMetrics) {
    let wc = watcher::Config::default;
    let debounced = || controller::Config::default().debounce(DEBOUNCE);
    let (nodes, node_writer) = reflector::store();
    let node_events = watcher(Api::<Node>::all(client.clone()), wc())
        .default_backoff()
        .reflect(node_writer)
        .touched_objects();
    let (markers, marker_writer) = reflector::store();
    // Only spec changes and the start of a deletion (both move the generation) change what a
    // node runs; the marker's own status and finalizer writes do not.
    let marker_events = watcher(Api::<PodProbeMarker>::all(client.clone()), wc())
        .default_backoff()
        .reflect(marker_writer)
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());
    // Every Pod change passes through, deserialized one page at a time, and is dropped once
    // routed: nothing of it is kept.
    let pod_events = watcher(Api::<Pod>::all(client.clone()), wc().page_size(100))
        .default_backoff()
        .touched_objects();
    let probe_ctrl =
        Controller::new(Api::<NodePodProbe>::all(client.clone()), wc()).with_config(debounced());
    let probes = probe_ctrl.store();
    let (all_probes, route_markers, route_pods) = (probes.clone(), markers.clone(), probes.clone());
    let probe_ctrl = probe_ctrl
        .watches_stream(node_events, |n| Some(ObjectRef::new(&n.name_any())))
        .watches_stream(marker_events, move |_| {
            all_probes
                .state()
                .iter()
                .map(|n| ObjectRef::from_obj(&**n))
                .collect::<Vec<_>>()
        })
        .watches_stream(pod_events, move |pod| {
            node_of_probed_pod(&pod, &route_markers, &route_pods)
        });
    // A marker's matched pods change with the node specs that list them (a second full Pod
    // watch would cost more than it tells; the agents' status writes are filtered out); a pod
    // that left every spec is recounted at the marker's resync.
    let probe_events = watcher(Api::<NodePodProbe>::all(client.clone()), wc())
        .default_backoff()
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());
    let marker_ctrl = Controller::new(Api::<PodProbeMarker>::all(client.clone()), wc())
        .with_config(debounced())
        .watches_stream(probe_events, |npp| markers_listed(&npp));
    let creator = Controller::new(Api::<Node>::all(client.clone()), wc());
    let ctx = Arc::new(Ctx {
        client,
        nodes,
        markers,
        probes,
    });
    let (r_node, r_probe, r_marker) = (
        Retries::new("node-podprobe"),
        Retries::new("nodepodprobe"),
        Retries::new("podprobemarker"),
    );
    info!("pod probe controllers started");
    futures::join!(
        creator
            .run(
                r_node.wrap(metrics.counted("node-podprobe", create_for_node)),
                r_node.error_policy(),
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(())),
        probe_ctrl
            .run(
                r_probe.wrap(metrics.counted("nodepodprobe", reconcile_node_pod_probe)),
                r_probe.error_policy(),
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(())),
        marker_ctrl
            .run(
                r_marker.wrap(metrics.counted("podprobemarker", reconcile_marker)),
                r_marker.error_policy(),
                ctx,
            )
            .for_each(|_| futures::future::ready(())),
    );
}

/// The node whose NodePodProbe a Pod change may change: a marker selects the pod, or the node's
/// spec lists it (it finished, left, or stopped matching).
fn node_of_probed_pod(
    pod: &Pod,
    markers: &Store<PodProbeMarker>,
    probes: &Store<NodePodProbe>,
) -> Option<ObjectRef<NodePodProbe>> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let uid = pod.uid()?;
    let listed = || {
        probes
            .get(&ObjectRef::new(node))
            .is_some_and(|n| n.spec.pod_probes.iter().any(|p| p.uid == uid))
    };
    let selected = || markers.state().iter().any(|m| decide::selects(m, pod));
    (selected() || listed()).then(|| ObjectRef::new(node))
}

/// The markers whose probes a NodePodProbe's spec lists.
fn markers_listed(npp: &NodePodProbe) -> Vec<ObjectRef<PodProbeMarker>> {
    let mut refs: Vec<ObjectRef<PodProbeMarker>> = npp
        .spec
        .pod_probes
        .iter()
        .flat_map(|p| {
            p.probes.iter().filter_map(|c| {
                decide::marker_of(&c.name).map(|(m, _)| ObjectRef::new(m).within(&p.namespace))
            })
        })
        .collect();
    refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    refs.dedup();
    refs
}

fn is_virtual(node: &Node) -> bool {
    let (k, v) = VIRTUAL_NODE_LABEL;
    node.labels().get(k).map(String::as_str) == Some(v)
}

/// A Ready node (not virtual) without a NodePodProbe gets an empty one; looked at again every
/// `RESYNC`, so one deleted by hand comes back.
async fn create_for_node(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.name_any();
    if creation(&node, Timestamp::now(), Duration::ZERO) != Creation::Now {
        return Ok(Action::requeue(RESYNC));
    }
    crate::cluster::store_ready(&ctx.probes).await;
    if ctx.probes.get(&ObjectRef::new(&name)).is_none() {
        act::create_node_pod_probe(&ctx.client, &name).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// One node's pass: delete the NodePodProbe of a gone node; write its spec from scratch; put the
/// agent's results onto the pods.
async fn reconcile_node_pod_probe(npp: Arc<NodePodProbe>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = npp.name_any();
    if npp.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    crate::cluster::store_ready(&ctx.nodes).await;
    crate::cluster::store_ready(&ctx.markers).await;
    // A node the store has not seen yet (its watch lags the creator's) is read before its
    // NodePodProbe is taken for an orphan.
    let node = match ctx.nodes.get(&ObjectRef::new(&name)) {
        Some(n) => Some(n),
        None => Api::<Node>::all(ctx.client.clone())
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("read node {name}")))?
            .map(Arc::new),
    };
    if node
        .as_ref()
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some() || is_virtual(n))
    {
        act::delete_node_pod_probe(&ctx.client, &npp).await?;
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={name}"));
    let pods = pods
        .list(&on_node)
        .await
        .map_err(Error::kube(format!("list the pods of node {name}")))?
        .items;
    let markers = ctx.markers.state();
    let refs: Vec<&PodProbeMarker> = markers.iter().map(|m| &**m).collect();
    let (spec, skipped) = decide::node_spec(&pods, &refs);
    for s in &skipped {
        warn!(node = %name, pod = %s.pod, probe = %s.probe, reason = %s.reason, "probe left out");
    }
    act::write_spec(&ctx.client, &npp, spec).await?;
    let marker = |ns: &str, m: &str| {
        ctx.markers
            .get(&ObjectRef::new(m).within(ns))
            .filter(|m| m.metadata.deletion_timestamp.is_none())
    };
    let mut failed = None;
    for status in npp.status.iter().flat_map(|s| &s.pod_probe_statuses) {
        let Some(pod) = pods
            .iter()
            .find(|p| p.uid().as_deref() == Some(status.uid.as_str()) && decide::is_probed(p))
        else {
            continue;
        };
        let found: Vec<Arc<PodProbeMarker>> = status
            .probe_states
            .iter()
            .filter_map(|s| decide::marker_of(&s.name))
            .filter_map(|(m, _)| marker(&status.namespace, m))
            .collect();
        let marks = decide::marks(status, |m| {
            found.iter().find(|f| f.name_any() == m).map(|a| &**a)
        });
        // One pod the API refuses must not keep the node's other pods unmarked.
        if let Err(e) = act::mark_pod(&ctx.client, pod, &marks).await {
            warn!(node = %name, error = %e, "marking a pod failed");
            failed.get_or_insert(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Action::requeue(RESYNC)),
    }
}

/// One marker's pass: its finalizer (removed once no node runs its probes) and its status.
async fn reconcile_marker(ppm: Arc<PodProbeMarker>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = ppm.namespace().unwrap_or_default();
    let name = ppm.name_any();
    let has_finalizer = ppm
        .finalizers()
        .iter()
        .any(|f| f == POD_PROBE_MARKER_FINALIZER);
    if ppm.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        crate::cluster::store_ready(&ctx.probes).await;
        let running = ctx
            .probes
            .state()
            .iter()
            .any(|n| decide::still_probed(&n.spec, &ns, &name));
        if running {
            return Ok(Action::requeue(FINALIZER_RECHECK));
        }
        act::remove_finalizer(&ctx.client, &ppm).await?;
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        act::add_finalizer(&ctx.client, &ppm).await?;
    }
    crate::cluster::store_ready(&ctx.nodes).await;
    let matched = act::count_matched(&ctx.client, &ppm, |node| {
        ctx.nodes
            .get(&ObjectRef::new(node))
            .is_some_and(|n| !is_virtual(&n))
    })
    .await?;
    act::write_status(&ctx.client, &ppm, matched).await?;
    Ok(Action::requeue(MARKER_RESYNC))
}
