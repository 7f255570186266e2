//! Container meta (the node half of OpenKruise's `DaemonWatchingPod` and
//! `InPlaceUpdateEnvFromMetadata`): for this node's pods that a Kruise workload controls (or a
//! SidecarSet injected), write the pod annotation `apps.kruise.io/runtime-containers-meta` (each
//! container's runtime id, restart count, the kubelet's container hash and the hash of its env
//! from labels and annotations as the running container sees it), which kruise-manager's
//! in-place update reads; and while the pod's `InPlaceUpdateReady` condition is `False`, stop a
//! container whose env from metadata is stale, so that the kubelet starts it again with the new
//! values. Facts: `docs/upstream/container-meta.md`.
//!
//! The pods come from the agent's node-scoped Pod watch (routed here by the agent), the containers
//! from the node model (`NodeView`: the runtime's view, never a field a user could set), the env
//! from `env` run in the container through CRI ExecSync, once per container instance. A stop goes
//! through the one kill path (`cri::kill`: preStop, then StopContainer with the rest of the
//! grace) and is recorded in the journal first: at most one per container instance, and one
//! interrupted by a crash is finished without a second preStop.
//!
//! Differences from kruise-daemon: containers are matched by name (upstream pairs spec, status
//! and annotation entries by index in its event filter, and the kubelet sorts statuses by name);
//! a pod is handled on first sight, also at the agent's start (upstream skips pods without the
//! annotation until their next status change); a value with spaces or newlines is compared whole
//! (upstream trims it, and restarts such a container again and again); no stop while the
//! kubelet's own container hash says it recreates the container itself (an image change in the
//! same update: upstream relies on its 3 s delay); the hash is checked again when the delay ends;
//! failed `env` reads back off from 3 s to 5 min (upstream: every 3 s forever).

pub mod act;
pub mod decide;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::api::kruise::ANNOTATION_RUNTIME_CONTAINERS_META;
use crate::cluster::COMPONENT;
use crate::cluster::events::EventWriter;
use crate::cri::CriClient;
use crate::cri::kubelet::PodRef;
use crate::journal::{self, Commits, Journal};
use crate::node::pods::PodUpdate;
use crate::node::view::NodeView;
use crate::telemetry::metrics::Metrics;
use decide::{EnvRead, Restart};

/// A stale container is stopped this long after it is first seen stale (upstream's delay).
pub const RESTART_DELAY: Duration = Duration::from_secs(3);
/// Failed stops and failed `env` reads back off up to these.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(600);
const READ_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Failed annotation writes back off from 500 ms up to this.
const WRITE_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What a restart came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restarted {
    Stopped,
    /// Recorded as done before (another pass, or before an agent restart): not repeated.
    AlreadyDone,
    Failed(String),
}

/// Container meta's settings.
#[derive(Clone)]
pub struct Config {
    pub client: kube::Client,
    pub cri: CriClient,
    /// The runtime's name in container ids (`containerd` in `containerd://<id>`).
    pub runtime: String,
    pub node_name: String,
    pub view: NodeView,
    pub journal: Journal,
    pub commits: Commits,
    pub metrics: Metrics,
}

/// What the agent's router hands over.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::UnboundedSender<PodUpdate>,
}

impl Handle {
    /// A change to this node's Pods, as the Pod watch reported it.
    pub fn observe(&self, update: &PodUpdate) {
        let _ = self.tx.send(update.clone());
    }
}

/// Start container meta; it runs until the agent stops.
pub fn start(cfg: Config) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(close_stale_restarts(cfg.clone()));
    tokio::spawn(run(cfg, rx));
    Handle { tx }
}

/// Restarts left pending by an agent that died after its stop (or whose pod went meanwhile):
/// once the node model has long been complete, those whose container no longer runs are closed,
/// so the journal does not keep them for ever. One that still runs is finished by the next pass
/// that finds it stale (without a second preStop), or stays for the next start.
async fn close_stale_restarts(cfg: Config) {
    tokio::time::sleep(STALE_SWEEP_AFTER).await;
    let journal = cfg.journal.clone();
    let pending = match tokio::task::spawn_blocking(move || journal.pending()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read pending restarts from the journal");
            return;
        }
        Err(_) => return,
    };
    for (_, action) in pending {
        if action.kind != journal::KIND_RESTART_FOR_METADATA_ENV {
            continue;
        }
        for c in &action.containers {
            let running = cfg.view.pod(&action.pod.uid).is_some_and(|cs| {
                cs.iter()
                    .any(|v| v.id == c.id && v.state == crate::node::model::State::Running)
            });
            if !running {
                act::abandon(&cfg.commits, &c.id, "the container no longer runs").await;
            }
        }
    }
}

/// A finished piece of I/O.
enum Done {
    Read {
        id: String,
        uid: String,
        result: Result<String, String>,
    },
    Written {
        uid: String,
        value: String,
        ok: bool,
    },
    Restarted {
        id: String,
        uid: String,
        result: Restarted,
    },
}

/// One pending thing's timer: consecutive failures, and when to act (`None`: the time came and
/// the next pass acts; no timer runs meanwhile).
#[derive(Clone, Copy, Debug, Default)]
struct Timer {
    failures: u32,
    at: Option<Instant>,
}

impl Timer {
    fn at(at: Instant) -> Self {
        Self {
            failures: 0,
            at: Some(at),
        }
    }

    /// The timer after one more failure: the backoff from `min` to `max`.
    fn failed(previous: Option<&Timer>, min: Duration, max: Duration) -> Self {
        let failures = previous.map_or(1, |t| t.failures.saturating_add(1));
        Self {
            failures,
            at: Some(Instant::now() + crate::backoff::after(failures, min, max)),
        }
    }

    fn waiting(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| at > now)
    }

    /// Whether the time has come now; a timer fires once.
    fn fire(&mut self, now: Instant) -> bool {
        let fired = self.at.is_some_and(|at| at <= now);
        if fired {
            self.at = None;
        }
        fired
    }
}

/// Timers keyed by a container id or a pod uid, each with its pod's uid.
type Timers = HashMap<String, (String, Timer)>;

struct Meta {
    cfg: Config,
    events: EventWriter,
    done: mpsc::UnboundedSender<Done>,
    /// This node's eligible pods, by uid, as the watch last showed them.
    pods: BTreeMap<String, Arc<Pod>>,
    /// What is known of running containers' env, by container id.
    reads: HashMap<String, EnvRead>,
    reading: BTreeSet<String>,
    /// Failed reads, by container id: read again when the timer fires.
    read_retry: Timers,
    /// The annotation value last written per pod uid, forgotten when the watch shows it or when
    /// its timer fires (`WRITTEN_EXPIRES`: the watch may never show it, if another writer came
    /// first).
    written: HashMap<String, String>,
    written_expiry: Timers,
    writing: BTreeSet<String>,
    /// Failed writes, by pod uid.
    write_retry: Timers,
    /// Stale containers by id: the stop is due when the timer fires (first sight + 3 s, or the
    /// backoff after a failed stop).
    due: Timers,
    restarting: BTreeSet<String>,
    /// Containers whose stop failed (pending in the journal): the next one resumes it.
    failed: BTreeSet<String>,
    /// Containers stopped (or found stopped before): never again.
    stopped: BTreeSet<String>,
    /// The container ids each pod's entries are kept under, to forget them with the pod.
    ids: HashMap<String, BTreeSet<String>>,
    dirty: BTreeSet<String>,
}

/// Pending restarts are swept this long after the agent starts.
const STALE_SWEEP_AFTER: Duration = Duration::from_secs(120);
/// A value written is taken as shown after this long even if the watch never showed it.
const WRITTEN_EXPIRES: Duration = Duration::from_secs(30);

async fn run(cfg: Config, mut updates: mpsc::UnboundedReceiver<PodUpdate>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut view_changes = cfg.view.subscribe();
    let mut meta = Meta {
        events: EventWriter::new(cfg.client.clone(), COMPONENT, Some(cfg.node_name.clone())),
        cfg,
        done: done_tx,
        pods: BTreeMap::new(),
        reads: HashMap::new(),
        reading: BTreeSet::new(),
        read_retry: HashMap::new(),
        written: HashMap::new(),
        written_expiry: HashMap::new(),
        writing: BTreeSet::new(),
        write_retry: HashMap::new(),
        due: HashMap::new(),
        restarting: BTreeSet::new(),
        failed: BTreeSet::new(),
        stopped: BTreeSet::new(),
        ids: HashMap::new(),
        dirty: BTreeSet::new(),
    };
    loop {
        let wake = meta.next_wake();
        tokio::select! {
            update = updates.recv() => match update {
                Some(u) => meta.on_pod(u),
                None => return,
            },
            changed = view_changes.changed() => {
                if changed.is_err() {
                    return;
                }
                meta.dirty.extend(meta.pods.keys().cloned());
            }
            Some(done) = done_rx.recv() => meta.on_done(done),
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                meta.on_timer(Instant::now());
            }
        }
        meta.evaluate();
    }
}

impl Meta {
    fn on_pod(&mut self, update: PodUpdate) {
        match update {
            PodUpdate::Upsert { pod, object, .. } => {
                if decide::eligible(&object) {
                    let shown = object.annotations().get(ANNOTATION_RUNTIME_CONTAINERS_META);
                    if shown.is_some() && self.written.get(&pod.uid) == shown {
                        self.written.remove(&pod.uid);
                        self.written_expiry.remove(&pod.uid);
                    }
                    self.pods.insert(pod.uid.clone(), object);
                    self.dirty.insert(pod.uid);
                } else {
                    self.forget(&pod.uid);
                }
            }
            PodUpdate::Remove { uid } => self.forget(&uid),
            PodUpdate::Resync { uids } => {
                let live: BTreeSet<String> = uids.into_iter().collect();
                let gone: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|u| !live.contains(*u))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.forget(&uid);
                }
            }
        }
    }

    fn forget(&mut self, uid: &str) {
        if self.pods.remove(uid).is_none() {
            return;
        }
        self.written.remove(uid);
        self.written_expiry.remove(uid);
        self.write_retry.remove(uid);
        self.due.retain(|_, (u, _)| u != uid);
        self.read_retry.retain(|_, (u, _)| u != uid);
        for id in self.ids.remove(uid).unwrap_or_default() {
            self.reads.remove(&id);
            self.stopped.remove(&id);
            if self.failed.remove(&id) {
                self.abandon(id, "the pod is gone");
            }
        }
    }

    fn abandon(&self, id: String, why: &'static str) {
        let commits = self.cfg.commits.clone();
        tokio::spawn(async move { act::abandon(&commits, &id, why).await });
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Read { id, uid, result } => {
                self.reading.remove(&id);
                let Some(pod) = self.pods.get(&uid).cloned() else {
                    return;
                };
                self.ids.entry(uid.clone()).or_default().insert(id.clone());
                let read = match result {
                    Ok(output) => {
                        self.read_retry.remove(&id);
                        self.hash_of(&pod, &id, &output).map(EnvRead::Hash)
                    }
                    Err(why) => {
                        let timer = Timer::failed(
                            self.read_retry.get(&id).map(|(_, t)| t),
                            RESTART_DELAY,
                            READ_BACKOFF_MAX,
                        );
                        warn!(pod_uid = %uid, container_id = %id, error = %why,
                            failures = timer.failures,
                            "reading the container's env failed; its env-from-metadata hash stays unknown");
                        self.read_retry.insert(id.clone(), (uid.clone(), timer));
                        Some(EnvRead::Failed)
                    }
                };
                if let Some(read) = read {
                    self.reads.insert(id, read);
                }
                self.dirty.insert(uid);
            }
            Done::Written { uid, value, ok } => {
                self.writing.remove(&uid);
                if !self.pods.contains_key(&uid) {
                    return;
                }
                if ok {
                    self.write_retry.remove(&uid);
                    self.written_expiry.insert(
                        uid.clone(),
                        (uid.clone(), Timer::at(Instant::now() + WRITTEN_EXPIRES)),
                    );
                } else {
                    if self.written.get(&uid) == Some(&value) {
                        self.written.remove(&uid);
                    }
                    let timer = Timer::failed(
                        self.write_retry.get(&uid).map(|(_, t)| t),
                        Duration::from_millis(500),
                        WRITE_BACKOFF_MAX,
                    );
                    self.write_retry.insert(uid.clone(), (uid.clone(), timer));
                }
                self.dirty.insert(uid);
            }
            Done::Restarted { id, uid, result } => {
                self.restarting.remove(&id);
                report::count_restart(&self.cfg.metrics, &result);
                if !self.pods.contains_key(&uid) {
                    if matches!(result, Restarted::Failed(_)) {
                        self.abandon(id, "the pod is gone");
                    }
                    return;
                }
                self.ids.entry(uid.clone()).or_default().insert(id.clone());
                match result {
                    Restarted::Stopped | Restarted::AlreadyDone => {
                        self.failed.remove(&id);
                        self.due.remove(&id);
                        self.stopped.insert(id);
                    }
                    Restarted::Failed(_) => {
                        let timer = Timer::failed(
                            self.due.get(&id).map(|(_, t)| t),
                            RESTART_DELAY,
                            RESTART_BACKOFF_MAX,
                        );
                        self.failed.insert(id.clone());
                        self.due.insert(id, (uid.clone(), timer));
                    }
                }
                self.dirty.insert(uid);
            }
        }
    }

    /// The env hash of container `id` of the pod from `env`'s output.
    fn hash_of(&self, pod: &Pod, id: &str, output: &str) -> Option<u64> {
        let runtime = self.cfg.view.pod(pod.metadata.uid.as_deref()?)?;
        let name = &runtime.iter().find(|c| c.id == id)?.name;
        let container = pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| &c.name == name)?;
        Some(decide::current_hash(container, pod, output))
    }

    fn timers(&self) -> impl Iterator<Item = &Timers> {
        [
            &self.read_retry,
            &self.written_expiry,
            &self.write_retry,
            &self.due,
        ]
        .into_iter()
    }

    fn next_wake(&self) -> Option<Instant> {
        self.timers()
            .flat_map(|t| t.values().filter_map(|(_, t)| t.at))
            .min()
    }

    /// Fire the timers whose time came: each marks its pod for the next pass, once.
    fn on_timer(&mut self, now: Instant) {
        for (id, (uid, timer)) in &mut self.read_retry {
            if timer.fire(now) {
                // Read again: the plan asks for it once the failure is forgotten.
                self.reads.remove(id);
                self.dirty.insert(uid.clone());
            }
        }
        let mut expired = Vec::new();
        for (uid, (_, timer)) in &mut self.written_expiry {
            if timer.fire(now) {
                expired.push(uid.clone());
            }
        }
        for uid in expired {
            self.written_expiry.remove(&uid);
            self.written.remove(&uid);
            self.dirty.insert(uid);
        }
        for timers in [&mut self.write_retry, &mut self.due] {
            for (uid, timer) in timers.values_mut() {
                if timer.fire(now) {
                    self.dirty.insert(uid.clone());
                }
            }
        }
    }

    fn evaluate(&mut self) {
        for uid in std::mem::take(&mut self.dirty) {
            self.evaluate_pod(&uid);
        }
    }

    fn evaluate_pod(&mut self, uid: &str) {
        let Some(pod) = self.pods.get(uid).cloned() else {
            return;
        };
        let (Some(runtime), Some(identity)) = (self.cfg.view.pod(uid), self.cfg.view.identity(uid))
        else {
            return;
        };
        let pod_ref = PodRef {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: uid.to_string(),
        };
        if identity != pod_ref {
            return;
        }
        let plan = decide::plan(&pod, &runtime, &self.cfg.runtime, &self.reads);
        for (name, id) in plan.read_env {
            if self.reading.insert(id.clone()) {
                debug!(pod = %pod_ref, container = %name, container_id = %id, "reading the container's env");
                let cri = self.cfg.cri.clone();
                let done = self.done.clone();
                let uid = uid.to_string();
                tokio::spawn(async move {
                    let result = act::read_env(&cri, &id).await;
                    let _ = done.send(Done::Read { id, uid, result });
                });
            }
        }
        if let Some(value) = plan.annotation {
            self.write(&pod_ref, value);
        }
        self.restart(&pod_ref, &runtime, plan.restart);
    }

    fn write(&mut self, pod: &PodRef, value: String) {
        let now = Instant::now();
        let waiting = self
            .write_retry
            .get(&pod.uid)
            .is_some_and(|(_, t)| t.waiting(now));
        if waiting || self.writing.contains(&pod.uid) || self.written.get(&pod.uid) == Some(&value)
        {
            return;
        }
        self.writing.insert(pod.uid.clone());
        self.written.insert(pod.uid.clone(), value.clone());
        let client = self.cfg.client.clone();
        let metrics = self.cfg.metrics.clone();
        let done = self.done.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            let result = act::write_annotation(&client, &pod, &value).await;
            report::written(&metrics, &pod, &result);
            let _ = done.send(Done::Written {
                uid: pod.uid,
                value,
                ok: result.is_ok(),
            });
        });
    }

    fn restart(
        &mut self,
        pod: &PodRef,
        runtime: &[crate::node::view::ContainerView],
        stale: Vec<Restart>,
    ) {
        let now = Instant::now();
        let wanted: BTreeSet<&str> = stale.iter().map(|r| r.id.as_str()).collect();
        // No longer stale (the update ended, the container exited): no stop, and a failed one
        // is closed in the journal.
        let dropped: Vec<String> = self
            .due
            .iter()
            .filter(|(id, (u, _))| u == &pod.uid && !wanted.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            self.due.remove(&id);
            if self.failed.remove(&id) {
                self.abandon(id, "no longer stale");
            }
        }
        for target in stale {
            if self.stopped.contains(&target.id) || self.restarting.contains(&target.id) {
                continue;
            }
            let timer = &self
                .due
                .entry(target.id.clone())
                .or_insert_with(|| (pod.uid.clone(), Timer::at(now + RESTART_DELAY)))
                .1;
            if timer.waiting(now) {
                continue;
            }
            let Some(container) = runtime.iter().find(|c| c.id == target.id).cloned() else {
                continue;
            };
            self.restarting.insert(target.id.clone());
            let cri = self.cfg.cri.clone();
            let commits = self.cfg.commits.clone();
            let events = self.events.clone();
            let done = self.done.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                let result = act::restart(&cri, &commits, &events, &pod, &target, &container).await;
                let _ = done.send(Done::Restarted {
                    id: target.id,
                    uid: pod.uid,
                    result,
                });
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_fires_once_and_backs_off() {
        let now = Instant::now();
        let mut t = Timer::at(now);
        assert!(!t.waiting(now));
        assert!(t.fire(now));
        assert!(!t.fire(now), "fired timers do not fire again");
        assert_eq!(t.at, None);
        let first = Timer::failed(None, RESTART_DELAY, RESTART_BACKOFF_MAX);
        assert_eq!(first.failures, 1);
        assert!(first.waiting(now));
        let later = Timer::failed(Some(&first), RESTART_DELAY, RESTART_BACKOFF_MAX);
        assert_eq!(later.failures, 2);
        assert!(later.at > first.at);
        let capped = Timer {
            failures: u32::MAX,
            at: None,
        };
        assert_eq!(
            Timer::failed(Some(&capped), RESTART_DELAY, RESTART_BACKOFF_MAX).failures,
            u32::MAX
        );
    }
}
