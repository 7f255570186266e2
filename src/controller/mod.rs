//! `nodeward controller`: one active replica, chosen by Lease leader election, running the
//! reconcilers. The first one terminates sidecars on virtual nodes.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::cluster::events::{EventType, EventWriter, Note};
use crate::cluster::retry_on_conflict;
use crate::telemetry::http::Health;
use crate::telemetry::metrics::Metrics;

pub mod crr;
pub mod imagepulljob;
pub mod nodeimage;
pub mod vk_sidecar;

/// Event source component.
pub const COMPONENT: &str = "nodeward-controller";

#[derive(Clone, Debug)]
pub struct Config {
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's identity in the Lease (pod name, else host name and pid).
    pub identity: String,
    /// Lease duration (upstream: 15 s; renewed `grace` before it expires: 10 s renew deadline).
    pub lease_duration: Duration,
    pub lease_grace: Duration,
    pub addr: Option<std::net::SocketAddr>,
    /// ImagePullJob / NodeImage controllers.
    pub image_pull: imagepulljob::Config,
}

/// Run until `shutdown`; then stop the reconcilers and release the lease so another replica takes
/// over at once.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let health = Health::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = cfg.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("metrics/health listener {addr}: {e}"))?;
        info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
        let (m, h) = (metrics.clone(), health.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let done = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::telemetry::http::serve(listener, m, h, done).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.lease_duration.as_secs().max(2))
        .with_grace(
            cfg.lease_grace
                .as_secs()
                .clamp(1, cfg.lease_duration.as_secs().max(2) - 1),
        )
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("leader election: {e}"))?;
    let (mut leader, election) = manager.watch().await;
    health.set_runtime_connected(true);
    health.set_synced(true);
    info!(lease = %cfg.lease_name, namespace = %cfg.lease_namespace, identity = %cfg.identity, "waiting for leadership");
    tokio::pin!(shutdown);
    let mut reconcilers: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = leader.changed() => {
                if changed.is_err() {
                    warn!("leader election stopped");
                    break;
                }
                let is_leader = *leader.borrow_and_update();
                if is_leader && reconcilers.is_none() {
                    info!(identity = %cfg.identity, "became the leader; starting reconcilers");
                    reconcilers = Some(tokio::spawn(run_reconcilers(client.clone(), cfg.image_pull.clone())));
                } else if !is_leader && let Some(r) = reconcilers.take() {
                    warn!(identity = %cfg.identity, "lost leadership; stopping reconcilers");
                    r.abort();
                }
            }
        }
    }
    if let Some(r) = reconcilers.take() {
        r.abort();
    }
    // Dropping the receiver makes the election task release the lease.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), election).await {
        Ok(Ok(Ok(_))) => info!("stepped down; lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the lease failed"),
        Ok(Err(e)) => warn!(error = %e, "leader election task failed"),
        Err(_) => warn!("releasing the lease timed out"),
    }
    let _ = stop_tx.send(true);
    Ok(())
}

async fn run_reconcilers(client: kube::Client, image_pull: imagepulljob::Config) {
    futures::join!(
        run_vk_sidecar(client.clone()),
        crr::run(client.clone()),
        imagepulljob::run(client, image_pull)
    );
}

/// Keep the set of virtual nodes current; send the name of every node that joins it (also by a
/// relist), whose pods must then be looked at: a pod event seen before its node was known as
/// virtual was passed over.
async fn watch_virtual_nodes(
    client: kube::Client,
    nodes: Arc<RwLock<HashSet<String>>>,
    joined: mpsc::UnboundedSender<String>,
) {
    let (k, v) = vk_sidecar::VIRTUAL_NODE_LABEL;
    let cfg = watcher::Config::default().labels(&format!("{k}={v}"));
    let stream = watcher(Api::<Node>::all(client), cfg).default_backoff();
    futures::pin_mut!(stream);
    let mut listed = HashSet::new();
    while let Some(ev) = stream.next().await {
        let new: Vec<String> = {
            let Ok(mut set) = nodes.write() else { return };
            match ev {
                Ok(watcher::Event::Apply(n)) => {
                    let name = n.name_any();
                    if set.insert(name.clone()) {
                        vec![name]
                    } else {
                        Vec::new()
                    }
                }
                Ok(watcher::Event::Delete(n)) => {
                    set.remove(&n.name_any());
                    Vec::new()
                }
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(n)) => {
                    listed.insert(n.name_any());
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => {
                    let joined = listed.difference(&set).cloned().collect();
                    *set = std::mem::take(&mut listed);
                    joined
                }
                Err(e) => {
                    warn!(error = %e, "node watch interrupted; retrying");
                    Vec::new()
                }
            }
        };
        for name in new {
            if joined.send(name).is_err() {
                return;
            }
        }
    }
}

async fn run_vk_sidecar(client: kube::Client) {
    let nodes = Arc::new(RwLock::new(HashSet::new()));
    let (joined_tx, mut joined) = mpsc::unbounded_channel();
    tokio::spawn(watch_virtual_nodes(
        client.clone(),
        nodes.clone(),
        joined_tx,
    ));
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            pod = stream.next() => match pod {
                None => return,
                Some(Ok(pod)) => consider_vk_pod(&client, &nodes, &pod).await,
                Some(Err(e)) => warn!(error = %e, "pod watch interrupted; retrying"),
            },
            Some(node) = joined.recv() => {
                let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
                match pods.list(&on_node).await {
                    Ok(list) => {
                        for pod in &list.items {
                            consider_vk_pod(&client, &nodes, pod).await;
                        }
                    }
                    Err(e) => warn!(node = %node, error = %e, "listing the pods of a virtual node failed"),
                }
            }
        }
    }
}

/// Swap the sidecar images of `pod` if it runs on a virtual node and its main containers are done.
async fn consider_vk_pod(client: &kube::Client, nodes: &RwLock<HashSet<String>>, pod: &Pod) {
    let on_virtual = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| nodes.read().is_ok_and(|set| set.contains(n)));
    if !on_virtual || vk_sidecar::decide(pod).is_empty() {
        return;
    }
    if let Err(e) = swap_images(client, pod).await {
        warn!(pod = %pod.name_any(), namespace = %pod.namespace().unwrap_or_default(), error = %e, "in-place sidecar termination failed");
    }
}

/// Swap the images on a fresh copy of the pod, retrying on conflict, then record an Event.
async fn swap_images(client: &kube::Client, pod: &Pod) -> anyhow::Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let swapped = retry_on_conflict(5, || async {
        let Some(mut fresh) = api.get_opt(&name).await? else {
            return Ok(None);
        };
        let swaps = vk_sidecar::decide(&fresh);
        if swaps.is_empty() {
            return Ok(None);
        }
        if let Some(spec) = fresh.spec.as_mut() {
            for s in &swaps {
                if let Some(c) = spec.containers.iter_mut().find(|c| c.name == s.container) {
                    c.image = Some(s.image.clone());
                }
            }
        }
        let written = api.replace(&name, &PostParams::default(), &fresh).await?;
        Ok(Some((written, swaps)))
    })
    .await?;
    let Some((written, swaps)) = swapped else {
        return Ok(());
    };
    let names: Vec<&str> = swaps.iter().map(|s| s.container.as_str()).collect();
    info!(pod = %name, namespace = %ns, sidecars = ?names, "sidecar images swapped for the quick-exit image");
    let msg = format!("nodeward is terminating sidecar {names:?} using in-place update");
    let pod_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        uid: written.uid(),
        ..Default::default()
    };
    record_event(
        client,
        &pod_ref,
        EventType::Normal,
        vk_sidecar::EVENT_REASON,
        &msg,
    )
    .await;
    Ok(())
}

/// Records an Event about `object` (namespace `default` for cluster-scoped objects).
pub(crate) async fn record_event(
    client: &kube::Client,
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    let note = Note::new(object.clone(), type_, reason, message);
    if let Err(e) = EventWriter::new(client.clone(), COMPONENT, None)
        .write(&note)
        .await
    {
        warn!(error = %e, object = ?object.name, reason, "recording the event failed");
    }
}
