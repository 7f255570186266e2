//! A read-only copy of the node model for tasks that must not wait for the agent's event loop
//! (the CRR executor): the latest attempt of each container of each pod, republished by the loop
//! for every pod that changed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::model::{NodeModel, State};
use crate::cri::kubelet::{NamedPort, PodRef, PreStop};

/// One container attempt as the runtime reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub sandbox_id: String,
    pub state: State,
    /// When it started (Unix nanos), 0 when not known yet.
    pub started_at: i64,
    /// The kubelet's restart count annotation.
    pub restart_count: u32,
    /// The kubelet's container hash annotation (0 when missing).
    pub hash: u64,
    /// The termination grace period the kubelet annotated.
    pub grace: Duration,
    /// The Pod spec's preStop hook and named ports, as the kubelet annotated the container.
    pub pre_stop: Option<PreStop>,
    pub ports: Vec<NamedPort>,
}

/// A pod's identity and its containers, by pod uid.
type Pods = HashMap<String, (PodRef, Arc<[ContainerView]>)>;

/// Cheap to clone; all clones share the same data.
#[derive(Clone, Debug)]
pub struct NodeView {
    pods: Arc<RwLock<Pods>>,
    /// Counts the publishes that changed something.
    version: Arc<watch::Sender<u64>>,
}

impl Default for NodeView {
    fn default() -> Self {
        Self {
            pods: Arc::default(),
            version: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl NodeView {
    /// The latest attempt of each container of the pod, `None` for a pod the model does not know.
    pub fn pod(&self, uid: &str) -> Option<Arc<[ContainerView]>> {
        Some(self.pods.read().ok()?.get(uid)?.1.clone())
    }

    /// The pod's identity as the kubelet labelled its sandbox.
    pub fn identity(&self, uid: &str) -> Option<PodRef> {
        Some(self.pods.read().ok()?.get(uid)?.0.clone())
    }

    /// Wakes whenever a publish changed a pod.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Copy the pods that changed in the model since the last call.
    pub fn publish(&self, model: &mut NodeModel) {
        let changed = model.take_changed();
        if changed.is_empty() {
            return;
        }
        let Ok(mut pods) = self.pods.write() else {
            return;
        };
        for uid in changed {
            let Some(record) = model.pod(&uid) else {
                pods.remove(&uid);
                continue;
            };
            let identity = record.pod.clone();
            let containers: Arc<[ContainerView]> = model
                .latest(&uid)
                .into_iter()
                .map(|c| ContainerView {
                    name: c.meta.name.clone(),
                    id: c.id.clone(),
                    sandbox_id: c.sandbox_id.clone(),
                    state: c.state,
                    started_at: c.started_at,
                    restart_count: c.meta.restart_count,
                    hash: c.meta.hash,
                    grace: c.meta.grace,
                    pre_stop: c.meta.pre_stop.clone(),
                    ports: c.meta.ports.clone(),
                })
                .collect();
            pods.insert(uid, (identity, containers));
        }
        drop(pods);
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}
