//! NodePodProbe (agent side of OpenKruise's PodProbeMarker, gate `PodProbeMarkerGate`): watch
//! only `NodePodProbe/$NODE_NAME`, run one worker per (pod, container, probe) (`decide` says which
//! and when, `act` runs a probe), and write the results into the NodePodProbe status with Events
//! on the Pod (`report`). The container each probe targets, its state and its start time come
//! from the node model (`NodeView`): a container known to have exited is reported Failed without
//! a probe, and the initial delay counts from its start.
//!
//! The agent trusts the kubelet's view, not the NodePodProbe: a probe runs only in a container of
//! a pod the runtime knows under that uid, namespace and name; httpGet and tcpSocket go to the
//! pod IP from the CRI sandbox status (not the spec's `IP`), and a probe naming a `host` is not
//! run. (Whoever writes a NodePodProbe spec still chooses the exec commands: only the controller
//! may, see SECURITY.md.)
//!
//! Differences from kruise-daemon: results are kept per probe (upstream keys them by container,
//! so two probes of one container overwrite each other); a period change takes effect at once
//! (upstream keeps the first ticker); Events only on a change of state (upstream repeats every
//! result at every status write); the status is merge-patched, not PUT; a stable per-probe
//! jitter instead of a random one; messages cut at a character, not a byte; HTTPS probes are not
//! run (an error, which leaves the state as it was).

pub mod act;
pub mod decide;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::api::kruise::{NodePodProbe, NodePodProbeSpec, NodePodProbeStatus, ProbeState};
use crate::cluster::events::EventWriter;
use crate::cluster::{COMPONENT, Named, watch_named};
use crate::cri::{CriClient, handler};
use crate::node::model::State as ContainerState;
use crate::node::view::NodeView;
use crate::telemetry::http::Listed;
use crate::telemetry::metrics::Metrics;
use decide::{ProbeKey, ProbeSpec, Reported, Step, Target, Thresholds};

/// The prober's settings.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// This node's name = the NodePodProbe's name.
    pub node_name: String,
    pub metrics: Metrics,
    /// Marked done after the first list of this node's NodePodProbe.
    pub first_list: Listed,
}

/// What the workers share.
struct Ctx {
    cri: CriClient,
    view: NodeView,
    results: mpsc::UnboundedSender<(ProbeKey, Reported)>,
    started: Instant,
    metrics: Metrics,
}

struct Worker {
    spec: watch::Sender<ProbeSpec>,
    task: AbortHandle,
}

/// The owner of the prober's state: the NodePodProbe last seen, the workers, their results.
struct Prober {
    ctx: Arc<Ctx>,
    spec: Option<NodePodProbeSpec>,
    /// The status as the API last showed it: the base the results are merged into.
    status: Option<NodePodProbeStatus>,
    workers: BTreeMap<ProbeKey, Worker>,
    results: BTreeMap<(String, String), Reported>,
    desired: watch::Sender<Option<NodePodProbeStatus>>,
    events: EventWriter,
}

impl Prober {
    fn observed(&mut self, obj: &NodePodProbe) {
        self.status = obj.status.clone();
        if self.spec.as_ref() != Some(&obj.spec) {
            self.spec = Some(obj.spec.clone());
            self.reconcile();
        }
        self.publish();
    }

    fn reconcile(&mut self) {
        let Some(spec) = &self.spec else { return };
        let running = self
            .workers
            .iter()
            .map(|(k, w)| (k.clone(), w.spec.borrow().clone()))
            .collect();
        let plan = decide::plan(&running, &decide::wanted(spec));
        for key in plan.stop {
            self.stop(&key);
        }
        for (key, spec) in plan.update {
            if let Some(w) = self.workers.get(&key) {
                w.spec.send_replace(spec);
            }
        }
        for (key, spec) in plan.start {
            info!(pod_namespace = %key.pod_namespace, pod_name = %key.pod_name, pod_uid = %key.pod_uid,
                container = %key.container, probe = %key.probe, period_s = spec.period.as_secs(), "probe worker started");
            let (tx, rx) = watch::channel(spec);
            let task = tokio::spawn(run_worker(self.ctx.clone(), key.clone(), rx));
            self.workers.insert(
                key,
                Worker {
                    spec: tx,
                    task: task.abort_handle(),
                },
            );
        }
    }

    fn stop(&mut self, key: &ProbeKey) {
        if let Some(w) = self.workers.remove(key) {
            w.task.abort();
            self.results
                .remove(&(key.pod_uid.clone(), key.probe.clone()));
            info!(pod_namespace = %key.pod_namespace, pod_name = %key.pod_name, pod_uid = %key.pod_uid,
                container = %key.container, probe = %key.probe, "probe worker stopped");
        }
    }

    /// The NodePodProbe is gone: stop every worker and forget it.
    fn deleted(&mut self) {
        let keys: Vec<ProbeKey> = self.workers.keys().cloned().collect();
        for key in &keys {
            self.stop(key);
        }
        self.spec = None;
        self.status = None;
        self.desired.send_replace(None);
    }

    fn result(&mut self, key: ProbeKey, r: Reported) {
        if !self.workers.contains_key(&key) {
            return;
        }
        let id = (key.pod_uid.clone(), key.probe.clone());
        let before = self.results.get(&id).map(|p| p.state);
        if before != Some(r.state) {
            info!(pod_namespace = %key.pod_namespace, pod_name = %key.pod_name, pod_uid = %key.pod_uid,
                container = %key.container, probe = %key.probe, state = r.state.as_str(),
                message = %r.message, "probe state changed");
            report::record(&self.events, &key, r.state, &r.message);
        }
        self.results.insert(id, r);
        self.publish();
    }

    fn publish(&self) {
        let Some(spec) = &self.spec else { return };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let want = decide::status(self.status.as_ref(), spec, &self.results, &now);
        if self
            .status
            .as_ref()
            .unwrap_or(&NodePodProbeStatus::default())
            == &want
        {
            return;
        }
        self.desired.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&want);
            if changed {
                *current = Some(want.clone());
            }
            changed
        });
    }
}

/// Run the prober until the process ends.
pub async fn run(client: kube::Client, cri: CriClient, view: NodeView, cfg: Config) {
    let node = cfg.node_name.clone();
    let api: Api<NodePodProbe> = Api::all(client.clone());
    let (desired_tx, desired_rx) = watch::channel(None);
    tokio::spawn(report::write_statuses(
        api.clone(),
        node.clone(),
        desired_rx,
    ));
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let mut prober = Prober {
        ctx: Arc::new(Ctx {
            cri,
            view,
            results: results_tx,
            started: Instant::now(),
            metrics: cfg.metrics.clone(),
        }),
        spec: None,
        status: None,
        workers: BTreeMap::new(),
        results: BTreeMap::new(),
        desired: desired_tx,
        events: EventWriter::new(client, COMPONENT, Some(node.clone())),
    };
    info!(nodepodprobe = %node, "pod prober watching its NodePodProbe");
    let mut events = std::pin::pin!(watch_named(api, &node, cfg.first_list.clone()));
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return,
                Some(Ok(Named::Seen(obj))) => prober.observed(&obj),
                Some(Ok(Named::Gone)) => prober.deleted(),
                Some(Err(e)) => warn!(nodepodprobe = %node, error = %e, "NodePodProbe watch failed; retrying"),
            },
            Some((key, r)) = results_rx.recv() => prober.result(key, r),
        }
    }
}

/// The container `key` probes, as the node model has it now: a pod the runtime knows by that
/// uid, under the namespace and name the NodePodProbe gives (the kubelet's labels decide).
fn target(view: &NodeView, key: &ProbeKey) -> Option<Target> {
    let pod = view.identity(&key.pod_uid)?;
    if pod.namespace != key.pod_namespace || pod.name != key.pod_name {
        return None;
    }
    let containers = view.pod(&key.pod_uid)?;
    let c = containers.iter().find(|c| c.name == key.container)?;
    Some(Target {
        id: c.id.clone(),
        sandbox_id: c.sandbox_id.clone(),
        running: c.state == ContainerState::Running,
        started_at: c.started_at,
    })
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// One probe's worker: probe at every period, count results against the thresholds, send a
/// result when it is worth a status write.
async fn run_worker(ctx: Arc<Ctx>, key: ProbeKey, mut specs: watch::Receiver<ProbeSpec>) {
    let mut spec = specs.borrow_and_update().clone();
    if ctx.started.elapsed() < spec.period {
        tokio::time::sleep(decide::jitter(&key, spec.period)).await;
    }
    let mut tick = ticker(spec.period);
    let mut thresholds = Thresholds::default();
    let mut container: Option<String> = None;
    let mut pod_ip: Option<String> = None;
    let mut last: Option<Reported> = None;
    let send = |state: ProbeState, message: &str, last: &mut Option<Reported>| {
        let r = Reported {
            state,
            message: decide::message(message),
            at: Time(k8s_openapi::jiff::Timestamp::now()),
        };
        if decide::worth_reporting(last.as_ref(), &r) {
            *last = Some(r.clone());
            let _ = ctx.results.send((key.clone(), r));
        }
    };
    loop {
        let due = tokio::select! {
            due = tick.tick() => due,
            changed = specs.changed() => {
                if changed.is_err() {
                    return;
                }
                let next = specs.borrow_and_update().clone();
                if next.handler_differs(&spec) && container.is_some() {
                    thresholds = Thresholds::default();
                    send(ProbeState::Unknown, "", &mut last);
                }
                if next.period != spec.period {
                    tick = ticker(next.period);
                }
                spec = next;
                continue;
            }
        };
        let target = target(&ctx.view, &key);
        let id = target.as_ref().map(|t| t.id.clone());
        if id.is_some() && id != container {
            container = id;
            pod_ip = None;
            thresholds = Thresholds::default();
            send(ProbeState::Unknown, "", &mut last);
        }
        match decide::step(target.as_ref(), &key.container, &spec, now_nanos()) {
            Step::Wait | Step::Delay => {}
            Step::NotRunning(message) => send(ProbeState::Failed, &message, &mut last),
            Step::Probe => {
                let Some(t) = &target else { continue };
                if pod_ip.is_none()
                    && (spec.probe.http_get.is_some() || spec.probe.tcp_socket.is_some())
                {
                    match handler::pod_ip(&ctx.cri, &t.sandbox_id).await {
                        Ok(ip) => pod_ip = Some(ip),
                        Err(e) => {
                            debug!(pod_uid = %key.pod_uid, error = %e, "no pod IP yet");
                            continue;
                        }
                    }
                }
                let ip = pod_ip.as_deref().unwrap_or_default();
                ctx.metrics.probe_lateness(due.elapsed().as_secs_f64());
                match act::probe(&ctx.cri, &spec.probe, &t.id, ip, spec.timeout).await {
                    Ok((state, message)) => {
                        if let Some(state) = thresholds.observe(state, &spec) {
                            send(state, &message, &mut last);
                        }
                    }
                    Err(e) => debug!(pod_uid = %key.pod_uid, container = %key.container,
                        probe = %key.probe, error = %e, "probe did not run"),
                }
            }
        }
    }
}
