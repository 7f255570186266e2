//! The image puller (agent side of ImagePullJob / NodeImage): watch only `NodeImage/$NODE_NAME`,
//! decide which (image, tag, version) pulls to start or stop (`decide`), pull through CRI with a
//! per-node concurrency cap (`act`: one worker per pull), and report the status and Events (`report`).
//!
//! Differences from kruise-daemon: a per-node cap on concurrent pulls (default 2; upstream has
//! none by default), the sandbox config annotation `apps.kruise.io/pulling-image-by: nodeward`,
//! digests pulled as `name@digest` (upstream asks for `name:sha256:…`), status writes coalesced
//! (`decide::write_when`: completion at once, new tasks within 250 ms, progress within 2 s) under
//! the same 0.5/s burst-5 limit.

pub mod act;
pub mod credentials;
pub mod decide;
pub mod reference;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{info, warn};

use crate::api::kruise::{
    ImageTagStatus, KRUISE_DAEMON_CONFIG_NAMESPACE, NodeImage, NodeImageSpec, NodeImageStatus,
};
use crate::cluster::{Named, watch_named};
use crate::cri::CriClient;
use crate::telemetry::http::Listed;
use crate::telemetry::metrics::Metrics;
use act::{Puller, Update};
use decide::TagKey;

/// nodeward's value of the sandbox annotation `apps.kruise.io/pulling-image-by`.
pub const PULLING_IMAGE_BY_NODEWARD: &str = "nodeward";
/// Default of `--max-concurrent-pulls`.
pub const DEFAULT_MAX_CONCURRENT_PULLS: usize = 2;

/// The puller's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name = the NodeImage's name.
    pub node_name: String,
    /// The only namespace pull secrets are read from.
    pub secret_namespace: String,
    /// Pulls running at once on this node.
    pub max_concurrent_pulls: usize,
    /// Marked done after the first list of this node's NodeImage.
    pub first_list: Listed,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            secret_namespace: KRUISE_DAEMON_CONFIG_NAMESPACE.into(),
            max_concurrent_pulls: DEFAULT_MAX_CONCURRENT_PULLS,
            first_list: Listed::default(),
        }
    }
}

/// A running worker.
struct Running {
    version: i64,
    task: AbortHandle,
}

/// The owner of the puller's state: the spec last seen, the tag statuses, the workers.
struct State {
    puller: Arc<Puller>,
    updates: mpsc::UnboundedSender<Update>,
    desired: watch::Sender<Option<NodeImageStatus>>,
    spec: Option<NodeImageSpec>,
    statuses: BTreeMap<TagKey, ImageTagStatus>,
    running: BTreeMap<TagKey, Running>,
}

impl State {
    /// A NodeImage seen by the watch. The first one (after start or re-creation) also brings the
    /// statuses reported before, so finished tags are not pulled again.
    fn observed(&mut self, obj: &NodeImage) {
        if self.spec.is_none() {
            self.statuses = obj
                .status
                .as_ref()
                .map(decide::tag_statuses)
                .unwrap_or_default();
        }
        if self.spec.as_ref() == Some(&obj.spec) {
            return;
        }
        self.spec = Some(obj.spec.clone());
        self.reconcile();
    }

    fn reconcile(&mut self) {
        let Some(spec) = &self.spec else { return };
        let versions = self
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.version))
            .collect();
        let plan = decide::plan(spec, &self.statuses, &versions);
        for key in &plan.stop {
            if let Some(r) = self.running.remove(key) {
                r.task.abort();
                info!(image = %key.image, tag = %key.tag, version = r.version, "image pull stopped");
            }
        }
        for key in &plan.forget {
            self.statuses.remove(key);
        }
        for task in plan.start {
            self.statuses.insert(task.key.clone(), act::waiting(&task));
            let key = task.key.clone();
            let version = task.version;
            let handle = tokio::spawn(self.puller.clone().run(task, self.updates.clone()));
            self.running.insert(
                key,
                Running {
                    version,
                    task: handle.abort_handle(),
                },
            );
        }
        self.publish();
    }

    /// The NodeImage is gone: stop everything and forget it.
    fn deleted(&mut self) {
        for (key, r) in std::mem::take(&mut self.running) {
            r.task.abort();
            info!(image = %key.image, tag = %key.tag, version = r.version, "image pull stopped (NodeImage deleted)");
        }
        self.statuses.clear();
        self.spec = None;
        self.desired.send_replace(None);
    }

    fn update(&mut self, u: Update) {
        let current = self.running.get(&u.key).map(|r| r.version);
        if current != Some(u.version) {
            return;
        }
        if u.status.phase.is_finished() {
            self.running.remove(&u.key);
        }
        self.statuses.insert(u.key, u.status);
        self.publish();
    }

    fn publish(&self) {
        if let Some(spec) = &self.spec {
            self.desired
                .send_replace(Some(decide::status_document(spec, &self.statuses)));
        }
    }
}

/// Run the puller until the process ends.
pub async fn run(client: kube::Client, cri: CriClient, metrics: Metrics, cfg: Config) {
    let node = cfg.node_name.clone();
    let api: Api<NodeImage> = Api::all(client.clone());
    let (desired_tx, desired_rx) = watch::channel(None);
    let (observed_tx, observed_rx) = watch::channel(None);
    tokio::spawn(report::write_statuses(
        api.clone(),
        node.clone(),
        desired_rx,
        observed_rx.clone(),
    ));
    let (updates_tx, mut updates_rx) = mpsc::unbounded_channel();
    let puller = Arc::new(Puller {
        cri,
        secrets: Api::<Secret>::namespaced(client.clone(), &cfg.secret_namespace),
        secret_namespace: cfg.secret_namespace.clone(),
        slots: Arc::new(Semaphore::new(cfg.max_concurrent_pulls.max(1))),
        metrics,
        events: report::Events::new(client, node.clone(), observed_rx),
    });
    let mut state = State {
        puller,
        updates: updates_tx,
        desired: desired_tx,
        spec: None,
        statuses: BTreeMap::new(),
        running: BTreeMap::new(),
    };
    info!(nodeimage = %node, max_concurrent_pulls = cfg.max_concurrent_pulls, secret_namespace = %cfg.secret_namespace, "image puller watching its NodeImage");
    let mut events = std::pin::pin!(watch_named(api, &node, cfg.first_list.clone()));
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return,
                Some(Ok(Named::Seen(obj))) => {
                    observed_tx.send_replace(Some(obj.clone()));
                    state.observed(&obj);
                }
                Some(Ok(Named::Gone)) => {
                    if state.spec.is_some() {
                        observed_tx.send_replace(None);
                        state.deleted();
                    }
                }
                Some(Err(e)) => warn!(nodeimage = %node, error = %e, "NodeImage watch failed; retrying"),
            },
            Some(u) = updates_rx.recv() => state.update(u),
        }
    }
}
