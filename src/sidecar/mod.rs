//! Job sidecar terminator: when a Job pod's main containers are done, stop its sidecars.
//!
//! - `decide`: the pure rule (the pod's facts in, hold or stop out), and the facts it reads from
//!   the node model.
//! - `act`: carrying out one stop decision (journal first, then the kubelet-style kill).
//! - `report`: what goes upstream (the journal outcome, metrics and the log line; the outbox's
//!   Event and Pod condition) and the local API's view of the pods.
//!
//! The agent's loop calls [`Terminator::evaluate`] synchronously whenever a pod changed, and
//! routes the [`Done`] of a finished stop back to [`Terminator::on_done`].

pub mod act;
pub mod decide;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::api::role::Role;
use crate::cri::CriClient;
use crate::cri::kubelet::PodRef;
use crate::journal::{self, Commits, Journal};
use crate::node::model::{NodeModel, State};
use crate::report::pb;
use crate::telemetry::metrics::Metrics;
use act::{Outcome, Request};
use decide::{Decision, Hold, Target, decide};

/// What the terminator needs from the agent.
#[derive(Clone)]
pub struct Config {
    pub cri: CriClient,
    /// The runtime's name, for the log line.
    pub runtime: String,
    pub journal: Journal,
    pub commits: Commits,
    /// Completed actions, to the local API's followers.
    pub live: broadcast::Sender<pb::Event>,
    pub metrics: Metrics,
    /// Cluster mode: the API client, and the outbox reporter to wake after a completed stop.
    pub cluster: Option<(kube::Client, Arc<Notify>)>,
    /// Fault injection for crash tests (`after-decide` aborts right after the decision is
    /// recorded, before it is carried out).
    pub failpoint: Option<String>,
    /// The `SidecarTerminator` gate: when off, no new stop is decided (one decided before, found
    /// in the journal, is still finished).
    pub enabled: bool,
}

/// What a stop action reports back to the terminator.
pub struct Done {
    pub key: String,
    pub action: journal::Action,
    pub requests: Vec<Request>,
    /// `None` when the journal says the action was already completed.
    pub outcomes: Option<Vec<Outcome>>,
    pub journal_error: Option<String>,
}

/// The terminator's state: stops in flight and the last hold per pod.
pub struct Terminator<E> {
    cfg: Config,
    /// Where a finished stop reports back (the agent's event channel).
    tx: mpsc::UnboundedSender<E>,
    in_flight: HashSet<String>,
    holds: HashMap<String, Hold>,
}

impl<E: From<Done> + Send + 'static> Terminator<E> {
    pub fn new(cfg: Config, tx: mpsc::UnboundedSender<E>) -> Self {
        Self {
            cfg,
            tx,
            in_flight: HashSet::new(),
            holds: HashMap::new(),
        }
    }

    /// Stops running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Pods left the node: forget their holds.
    pub fn forget_gone(&mut self, model: &NodeModel) {
        self.holds.retain(|uid, _| model.pod(uid).is_some());
    }

    /// Decide for one pod, and launch the stop when its main containers are done.
    pub fn evaluate(&mut self, model: &NodeModel, uid: &str) {
        if !self.cfg.enabled {
            return;
        }
        let Some(facts) = decide::facts(model, uid) else {
            return;
        };
        let Some(pod) = model.pod(uid).map(|p| p.pod.clone()) else {
            return;
        };
        match decide(&facts) {
            Decision::Hold(hold) => {
                if self.holds.insert(uid.to_string(), hold) != Some(hold)
                    && !matches!(hold, Hold::NoSidecars | Hold::ClassificationPending)
                {
                    debug!(
                        pod_namespace = %pod.namespace,
                        pod_name = %pod.name,
                        pod_uid = %pod.uid,
                        decision = hold.as_str(),
                        "sidecar terminator holds"
                    );
                }
            }
            Decision::Stop(targets) => {
                self.holds.remove(uid);
                let targets: Vec<Target> = targets
                    .into_iter()
                    .filter(|t| !self.in_flight.contains(&t.id))
                    .collect();
                if targets.is_empty() {
                    return;
                }
                let (key, action) = act::action(&pod, &facts, &targets);
                self.launch(model, key, action, targets, false);
            }
        }
    }

    /// Actions decided before a restart and not completed: finish them. Called once, when the
    /// node model is first complete.
    pub fn resume_pending(&mut self, model: &NodeModel) {
        let pending = match self.cfg.journal.pending() {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read pending actions from the journal");
                return;
            }
        };
        // Other kinds (container recreation) are resumed by their own capability.
        let pending = pending
            .into_iter()
            .filter(|(_, a)| a.kind == journal::KIND_STOP_SIDECAR);
        for (key, action) in pending {
            let targets: Vec<Target> = action
                .containers
                .iter()
                .filter_map(|c| {
                    let rec = model.container(&c.id)?;
                    (rec.state == State::Running).then(|| Target {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        ignore_exit_code: rec.role
                            == Some(Role::Sidecar {
                                ignore_exit_code: true,
                            }),
                    })
                })
                .collect();
            info!(
                key = %key,
                pod_namespace = %action.pod.namespace,
                pod_name = %action.pod.name,
                pod_uid = %action.pod.uid,
                still_running = targets.len(),
                "resuming an action decided before the restart"
            );
            self.launch(model, key, action, targets, true);
        }
    }

    /// Record the action as decided, then stop its sidecars concurrently (in `act`). The journal
    /// makes a completed action never repeat and a decided one always finish, across crashes.
    fn launch(
        &mut self,
        model: &NodeModel,
        key: String,
        action: journal::Action,
        targets: Vec<Target>,
        resumed: bool,
    ) {
        let pod = PodRef {
            namespace: action.pod.namespace.clone(),
            name: action.pod.name.clone(),
            uid: action.pod.uid.clone(),
        };
        let requests: Vec<Request> = targets
            .into_iter()
            .filter_map(|t| Request::new(model, &pod, t, action.decided_at, resumed))
            .collect();
        for r in &requests {
            self.in_flight.insert(r.target.id.clone());
        }
        debug!(
            key = %key,
            pod_namespace = %pod.namespace,
            pod_name = %pod.name,
            pod_uid = %pod.uid,
            containers = requests.len(),
            "action decided"
        );
        let (cfg, tx) = (self.cfg.clone(), self.tx.clone());
        tokio::spawn(async move {
            let done = act::carry_out(&cfg, key, action, requests).await;
            let _ = tx.send(E::from(done));
        });
    }

    /// A stop finished: report it. Returns the containers whose final status the model must take
    /// (the caller applies them, so that the exit watchers are released).
    pub fn on_done(&mut self, done: Done, model: &NodeModel) -> Vec<k8s_cri::v1::ContainerStatus> {
        for r in &done.requests {
            self.in_flight.remove(&r.target.id);
        }
        let mains_at = report::mains_finished_at(model, &done.action.pod.uid);
        report::finished(&self.cfg, done, mains_at, SystemTime::now())
    }
}
