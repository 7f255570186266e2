//! A read-only copy of the node model for tasks that must not wait for the agent's event loop
//! (the CRR executor): the latest attempt of each container of each pod, republished by the loop
//! for every pod that changed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::model::{NodeModel, State};

/// One container attempt as the runtime reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub sandbox_id: String,
    pub state: State,
    /// The kubelet's restart count annotation.
    pub restart_count: u32,
}

/// Cheap to clone; all clones share the same data.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pods: Arc<RwLock<HashMap<String, Arc<[ContainerView]>>>>,
}

impl NodeView {
    /// The latest attempt of each container of the pod, `None` for a pod the model does not know.
    pub fn pod(&self, uid: &str) -> Option<Arc<[ContainerView]>> {
        self.pods.read().ok()?.get(uid).cloned()
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
            if model.pod(&uid).is_none() {
                pods.remove(&uid);
                continue;
            }
            let containers: Arc<[ContainerView]> = model
                .latest(&uid)
                .into_iter()
                .map(|c| ContainerView {
                    name: c.meta.name.clone(),
                    id: c.id.clone(),
                    sandbox_id: c.sandbox_id.clone(),
                    state: c.state,
                    restart_count: c.meta.restart_count,
                })
                .collect();
            pods.insert(uid, containers);
        }
    }
}
