//! Sidecar termination on virtual nodes (label `type=virtual-kubelet`, no kubelet to stop a
//! container): when a Job pod's main containers are done, each sidecar's image is set to its
//! `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE` (OpenKruise's in-place strategy).
//!
//! `mod.rs` watches the virtual nodes and their pods; `decide` is the pure rule; `act` swaps
//! the images (retry on conflict) and records the Event.

pub mod act;
pub mod decide;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tracing::warn;

pub use decide::{EVENT_REASON, Swap, VIRTUAL_NODE_LABEL};

use crate::controller::metrics::ControllerMetrics;

/// Keep the set of virtual nodes current; send the name of every node that joins it (also by a
/// relist), whose pods must then be looked at: a pod event seen before its node was known as
/// virtual was passed over.
async fn watch_virtual_nodes(
    client: kube::Client,
    nodes: Arc<RwLock<HashSet<String>>>,
    joined: mpsc::UnboundedSender<String>,
) {
    let (k, v) = decide::VIRTUAL_NODE_LABEL;
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

/// Swap sidecar images on virtual nodes until the task is dropped.
pub async fn run(client: kube::Client, metrics: ControllerMetrics) {
    let nodes = Arc::new(RwLock::new(HashSet::new()));
    let (joined_tx, mut joined) = mpsc::unbounded_channel();
    tokio::spawn(watch_virtual_nodes(
        client.clone(),
        nodes.clone(),
        joined_tx,
    ));
    let pods: Api<Pod> = Api::all(client.clone());
    // Full Pods (the swap reads the containers' env), none kept: listed 100 at a time so that a
    // large cluster's initial list never holds more than a small page (controller_memory bench).
    let stream = watcher(pods.clone(), watcher::Config::default().page_size(100))
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            pod = stream.next() => match pod {
                None => return,
                Some(Ok(pod)) => consider_vk_pod(&client, &metrics, &nodes, &pod).await,
                Some(Err(e)) => warn!(error = %e, "pod watch interrupted; retrying"),
            },
            Some(node) = joined.recv() => {
                let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
                match pods.list(&on_node).await {
                    Ok(list) => {
                        for pod in &list.items {
                            consider_vk_pod(&client, &metrics, &nodes, pod).await;
                        }
                    }
                    Err(e) => warn!(node = %node, error = %e, "listing the pods of a virtual node failed"),
                }
            }
        }
    }
}

/// Swap the sidecar images of `pod` if it runs on a virtual node and its main containers are done.
async fn consider_vk_pod(
    client: &kube::Client,
    metrics: &ControllerMetrics,
    nodes: &RwLock<HashSet<String>>,
    pod: &Pod,
) {
    let on_virtual = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| nodes.read().is_ok_and(|set| set.contains(n)));
    if !on_virtual || decide::decide(pod).is_empty() {
        return;
    }
    if let Err(e) = metrics
        .measure("vk_sidecar", act::swap_images(client, pod))
        .await
    {
        warn!(pod = %pod.name_any(), namespace = %pod.namespace().unwrap_or_default(), error = %e, "in-place sidecar termination failed");
    }
}
