//! ContainerRecreateRequest executor (the agent's half of OpenKruise's CRR): watch this node's
//! active CRRs → decide per pod ([`decide`], pure) → stop containers through the kubelet-style
//! kill (`act`) → report on the CRR's `/status` and with `Killing` Events (`report`).
//!
//! Differences from kruise-daemon, all wire-compatible:
//! * one pass goes from `Recreating` to the first kill without waiting for the watch to echo each
//!   write, and the next CRR of a pod starts as soon as one completes (upstream #1626);
//! * a kill with a preStop hook or a forced kill is recorded in the journal before it starts, so
//!   after a `kill -9` a stop in flight is finished (without running preStop again) instead of
//!   repeated, and `isKilled` survives a lost status write; a plain stop, which is idempotent, is
//!   recorded while StopContainer runs;
//! * an `httpGet` preStop is sent to the pod IP from the CRI sandbox status;
//! * nothing a CRR says about its pod is trusted: the agent acts only when the kubelet's pod of
//!   the `pod-uid` label (node view or CRI labels) is the CRR's own namespace and `spec.podName`
//!   ([`decide::check_pod`]), and runs only the Pod spec's own preStop hook and named ports, from
//!   the kubelet's container annotations, never the CRR's `preStop`/`ports` (kruise-daemon runs
//!   the CRR's copy and relies on its webhook to have written it).

mod act;
pub mod decide;
mod report;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::kruise::{
    CRR_ACTIVE_VALUE, ContainerRecreateRequest, ContainerRecreateRequestContainerRecreateState,
    ContainerRecreateRequestPhase as Phase, ContainerRecreateRequestSyncContainerStatus,
    LABEL_CRR_ACTIVE, LABEL_CRR_NODE_NAME,
};
use crate::api::well_known as wk;
use crate::cluster::COMPONENT;
use crate::cluster::events::EventWriter;
use crate::cri::CriClient;
use crate::cri::kubelet::{ContainerMeta, NamedPort, PodRef, PreStop};
use crate::journal::{self, Journal, Lookup};
use crate::node::view::{ContainerView, NodeView};
use crate::telemetry::http::Listed;
use crate::telemetry::metrics::Metrics;
use decide::{Gate, Next, RuntimeContainer};
use report::is_conflict_or_gone;

type Crr = ContainerRecreateRequest;
type State = ContainerRecreateRequestContainerRecreateState;
type SyncStatus = ContainerRecreateRequestSyncContainerStatus;

/// What the executor needs.
#[derive(Clone)]
pub struct Config {
    pub client: kube::Client,
    pub cri: CriClient,
    /// The runtime's name as CRI `Version` reports it (`containerd`, `cri-o`, `docker`): the
    /// prefix of container IDs in Pod statuses.
    pub runtime: String,
    pub node: String,
    pub journal: Journal,
    /// Group commit of journal writes (shared with the sidecar terminator).
    pub commits: journal::Commits,
    pub metrics: Metrics,
    /// The agent's node model: the first stop of a CRR is decided from it, without asking the
    /// runtime.
    pub view: NodeView,
    /// Marked done after the first list of this node's CRRs.
    pub first_list: Listed,
}

/// CRRs are handled per pod, one at a time (upstream's queue key `<ns>/<podName>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PodKey {
    namespace: String,
    pod: String,
}

impl PodKey {
    fn of(crr: &Crr) -> Self {
        Self {
            namespace: crr.namespace().unwrap_or_default(),
            pod: crr.spec.pod_name.clone(),
        }
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("CRR {crr}: {what}: {source}")]
    Api {
        crr: String,
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Cri(#[from] crate::cri::CriError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

/// How long a pass waits before the pod is looked at again (`None`: until the next event).
type Requeue = Option<Duration>;

struct Executor {
    cfg: Config,
    store: Store<Crr>,
    events: EventWriter,
    /// Objects as our own writes returned them, used until the watch delivers them (or newer):
    /// upstream's resourceVersion expectations.
    written: Mutex<HashMap<String, Arc<Crr>>>,
}

/// Watch, and sync each pod's CRRs on every change, on timers, and right after a completion.
pub async fn run(cfg: Config) {
    let selector = format!(
        "{LABEL_CRR_NODE_NAME}={},{LABEL_CRR_ACTIVE}={CRR_ACTIVE_VALUE}",
        cfg.node
    );
    info!(selector = %selector, runtime = %cfg.runtime, "CRR executor: watching ContainerRecreateRequests");
    let api: Api<Crr> = Api::all(cfg.client.clone());
    let (store, writer) = reflector::store();
    let stream = crate::cluster::marking_first_list(
        reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().labels(&selector)),
        )
        .default_backoff(),
        cfg.first_list.clone(),
    );
    let events = EventWriter::new(cfg.client.clone(), COMPONENT, Some(cfg.node.clone()));
    let exec = Arc::new(Executor {
        cfg,
        store,
        events,
        written: Mutex::new(HashMap::new()),
    });
    let mut queue = Queue::new(exec);
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                None => break,
                Some(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))) => {
                    queue.add(PodKey::of(&c), Instant::now());
                }
                Some(Ok(watcher::Event::Delete(c))) => {
                    queue.exec.forget(&c);
                    // The pod's next CRR may start now (upstream leaves it Pending: #1626).
                    queue.add(PodKey::of(&c), Instant::now());
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let keys: HashSet<PodKey> =
                        queue.exec.store.state().iter().map(|c| PodKey::of(c)).collect();
                    for k in keys {
                        queue.add(k, Instant::now());
                    }
                }
                Some(Ok(watcher::Event::Init)) => {}
                Some(Err(e)) => warn!(error = %e, "CRR watch interrupted; retrying"),
            },
            Some(key) = queue.wake_rx.recv() => queue.add(key, Instant::now()),
            Some((key, res)) = queue.done_rx.recv() => queue.finished(key, res),
        }
    }
}

/// A work queue with upstream's semantics: a key is synced by one task at a time; an event for a
/// busy key makes it run again once the current pass finishes; failures back off per key.
struct Queue {
    exec: Arc<Executor>,
    busy: HashSet<PodKey>,
    /// Keys changed during their pass, with when the first change came.
    dirty: HashMap<PodKey, Instant>,
    failures: HashMap<PodKey, u32>,
    wake_tx: mpsc::UnboundedSender<PodKey>,
    wake_rx: mpsc::UnboundedReceiver<PodKey>,
    done_tx: mpsc::UnboundedSender<(PodKey, Result<Requeue, SyncError>)>,
    done_rx: mpsc::UnboundedReceiver<(PodKey, Result<Requeue, SyncError>)>,
}

impl Queue {
    fn new(exec: Arc<Executor>) -> Self {
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            exec,
            busy: HashSet::new(),
            dirty: HashMap::new(),
            failures: HashMap::new(),
            wake_tx,
            wake_rx,
            done_tx,
            done_rx,
        }
    }

    /// Sync `key` now, or after its current pass; `woken` is when the reason to came.
    fn add(&mut self, key: PodKey, woken: Instant) {
        if self.busy.contains(&key) {
            self.dirty.entry(key).or_insert(woken);
            return;
        }
        self.busy.insert(key.clone());
        let (exec, done) = (self.exec.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let res = exec.sync(&key, woken).await;
            let _ = done.send((key, res));
        });
    }

    fn later(&self, key: PodKey, after: Duration) {
        let tx = self.wake_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(key);
        });
    }

    fn finished(&mut self, key: PodKey, res: Result<Requeue, SyncError>) {
        self.busy.remove(&key);
        let again = self.dirty.remove(&key);
        let now = Instant::now();
        match res {
            Ok(requeue) => {
                self.failures.remove(&key);
                match requeue {
                    Some(d) if d.is_zero() => return self.add(key, again.unwrap_or(now)),
                    Some(d) => self.later(key.clone(), d),
                    None => {}
                }
            }
            Err(e) => {
                let n = self.failures.entry(key.clone()).or_insert(0);
                *n = n.saturating_add(1);
                let backoff =
                    crate::backoff::after(*n, Duration::from_millis(500), Duration::from_secs(60));
                warn!(pod = %key, error = %e, retry_in_ms = backoff.as_millis() as u64, "CRR sync failed");
                self.later(key.clone(), backoff);
            }
        }
        if let Some(woken) = again {
            self.add(key, woken);
        }
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn phase_of(crr: &Crr) -> Option<Phase> {
    crr.status.as_ref().and_then(|s| s.phase)
}

fn rv(crr: &Crr) -> Option<u64> {
    crr.metadata.resource_version.as_deref()?.parse().ok()
}

fn name_of(crr: &Crr) -> String {
    format!("{}/{}", crr.namespace().unwrap_or_default(), crr.name_any())
}

impl Executor {
    /// The pod's CRRs from the cache, or as our last write returned them when the cache is
    /// behind.
    fn crrs_of(&self, key: &PodKey) -> Vec<Arc<Crr>> {
        let written = self.written.lock().map(|w| w.clone()).unwrap_or_default();
        self.store
            .state()
            .into_iter()
            .filter(|c| PodKey::of(c) == *key)
            .map(|c| {
                let uid = c.uid().unwrap_or_default();
                match written.get(&uid) {
                    Some(w) if rv(w) > rv(&c) => w.clone(),
                    _ => c,
                }
            })
            .collect()
    }

    fn remember(&self, crr: Crr) -> Arc<Crr> {
        let crr = Arc::new(crr);
        if let (Ok(mut w), Some(uid)) = (self.written.lock(), crr.uid()) {
            w.insert(uid, crr.clone());
        }
        crr
    }

    fn forget(&self, crr: &Crr) {
        if let (Ok(mut w), Some(uid)) = (self.written.lock(), crr.uid()) {
            w.remove(&uid);
        }
    }

    /// One pass over a pod's CRRs.
    async fn sync(&self, key: &PodKey, woken: Instant) -> Result<Requeue, SyncError> {
        let crrs = self.crrs_of(key);
        let refs: Vec<&Crr> = crrs.iter().map(Arc::as_ref).collect();
        let (picked, mark) = decide::pick(&refs);
        let result = match picked {
            Some(i) => self.run_one(crrs[i].clone(), woken).await,
            None => Ok(None),
        };
        // Off the stop's path: the others of the pod are told they wait.
        for i in mark {
            match self.set_phase(refs[i], Phase::Pending).await {
                Ok(_) => {}
                Err(SyncError::Api { source, .. }) if is_conflict_or_gone(&source) => {}
                Err(e) => return Err(e),
            }
        }
        result
    }

    /// Act on the pod's running CRR. Nothing is written to the API before a stop: the journal
    /// records it, and one status write after reports the phase and the states together.
    async fn run_one(&self, mut crr: Arc<Crr>, woken: Instant) -> Result<Requeue, SyncError> {
        let wants_unready = crr
            .spec
            .strategy
            .as_ref()
            .is_some_and(|s| s.unready_grace_period_seconds.is_some());
        // The controller makes the pod not-ready only for a Recreating CRR: say so first.
        if wants_unready && phase_of(&crr) != Some(Phase::Recreating) {
            crr = match self.set_phase(&crr, Phase::Recreating).await {
                Ok(c) => c,
                // Changed meanwhile: the watch brings the new version.
                Err(SyncError::Api { source, .. }) if is_conflict_or_gone(&source) => {
                    return Ok(Some(Duration::from_millis(200)));
                }
                Err(e) => return Err(e),
            };
        }
        match decide::unready_gate(&crr, now()) {
            Gate::Go => {}
            Gate::AwaitUnready => {
                debug!(crr = %name_of(&crr), "waiting for the controller to make the pod not-ready");
                return Ok(None);
            }
            Gate::Until(left) => return Ok(Some(left + Duration::from_millis(100))),
            Gate::Invalid(msg) => return self.finish(&crr, &msg, None).await,
        }
        if let Err(msg) = decide::check_runtime(&crr, &self.cfg.runtime) {
            return self.finish(&crr, &msg, None).await;
        }
        // The pod as the kubelet labelled it, never as the CRR says: the node view, or the
        // runtime when the view does not know the uid.
        let pod_uid = crr.pod_uid().unwrap_or_default().to_string();
        let identity = match self.cfg.view.identity(&pod_uid) {
            Some(found) => Some(found),
            None if pod_uid.is_empty() => None,
            None => self.identity_from_runtime(&pod_uid).await?,
        };
        if let Err(msg) = decide::check_pod(&crr, identity.as_ref()) {
            warn!(crr = %name_of(&crr), pod = %crr.spec.pod_name, pod_uid = %pod_uid, reason = %msg,
                "CRR does not name a pod of this node as the kubelet knows it; not acting");
            return self.finish(&crr, &msg, None).await;
        }
        let synced = crr.sync_container_statuses().unwrap_or_else(|e| {
            warn!(crr = %name_of(&crr), error = %e, "unreadable sync-container-statuses annotation; ignored");
            Vec::new()
        });
        let records = self.journal_records(&crr)?;
        // The node view serves a first stop only: after one, a view not yet caught up with the
        // exit would still show the stopped instance running.
        let first_stop = records.iter().all(|(_, _, found)| found.is_none());
        let pod = match first_stop
            .then(|| self.untouched(&crr, &pod_uid, &synced))
            .flatten()
        {
            Some(pod) => pod,
            None => self.pod_containers(&crr, &pod_uid).await?,
        };
        let journal = self.journal_facts(records, &pod).await?;
        let mut states =
            decide::container_states(&crr, &pod.newest, &synced, &journal.killed, now());
        let step = decide::next(&crr, &mut states, &pod.newest, now());
        match step {
            Next::Kill(i) => {
                let name = states[i].name.clone();
                let pending = journal.pending.get(&name).cloned();
                states[i] = self.kill(&crr, i, &pod, pending, woken).await?;
                self.write_progress(&crr, &states).await?;
                Ok(Some(Duration::ZERO))
            }
            Next::Complete => self.finish(&crr, "", Some(&states)).await,
            Next::Wait(after) => {
                self.write_progress(&crr, &states).await?;
                Ok(after)
            }
        }
    }

    /// Complete the CRR, then look at the pod again at once: its next CRR starts now.
    async fn finish(
        &self,
        crr: &Crr,
        message: &str,
        states: Option<&[State]>,
    ) -> Result<Requeue, SyncError> {
        match self.complete(crr, message, states).await {
            Ok(()) => Ok(Some(Duration::ZERO)),
            Err(SyncError::Api { source, .. }) if is_conflict_or_gone(&source) => {
                Ok(Some(Duration::from_millis(200)))
            }
            Err(e) => Err(e),
        }
    }

    /// The pod's containers from the node view when they are as the CRR found them: the newest
    /// instance of every container it names is the one of its statusContext, not exited, and the Pod status the
    /// controller synced names no other. That is a new CRR, whose first stop a runtime round
    /// trip would only delay; anything else is read from the runtime.
    fn untouched(&self, crr: &Crr, pod_uid: &str, synced: &[SyncStatus]) -> Option<PodContainers> {
        let view = self.cfg.view.pod(pod_uid)?;
        let id_of = |c: &ContainerView| format!("{}://{}", self.cfg.runtime, c.id);
        for spec in &crr.spec.containers {
            let ctx = spec.status_context.as_ref()?;
            let c = view.iter().find(|c| c.name == spec.name)?;
            let moved_on = synced.iter().any(|s| {
                s.name == spec.name
                    && !s.container_id.is_empty()
                    && s.container_id != ctx.container_id
            });
            if c.state.is_exited() || id_of(c) != ctx.container_id || moved_on {
                return None;
            }
        }
        let mut pod = PodContainers::default();
        for c in view.iter() {
            pod.raw.insert(
                c.name.clone(),
                RawContainer {
                    id: c.id.clone(),
                    sandbox: c.sandbox_id.clone(),
                    pre_stop: c.pre_stop.clone(),
                    ports: c.ports.clone(),
                },
            );
            pod.newest.push(RuntimeContainer {
                name: c.name.clone(),
                id: id_of(c),
                exited: c.state.is_exited(),
                restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
                started_at: None,
            });
        }
        Some(pod)
    }

    /// The pod of `uid` as the kubelet labelled its containers, `None` when none is on the node.
    async fn identity_from_runtime(&self, uid: &str) -> Result<Option<PodRef>, SyncError> {
        let containers = self.cfg.cri.list_pod_containers(uid).await?;
        Ok(containers
            .iter()
            .find_map(|c| PodRef::from_labels(&c.labels))
            .filter(|p| p.uid == uid))
    }

    /// The pod's containers from the runtime, newest instance per name.
    async fn pod_containers(&self, crr: &Crr, pod_uid: &str) -> Result<PodContainers, SyncError> {
        let mut all = self.cfg.cri.list_pod_containers(pod_uid).await?;
        all.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let mut seen = HashSet::new();
        let mut pod = PodContainers::default();
        for c in all {
            let Some(name) = c
                .labels
                .get(wk::LABEL_CONTAINER_NAME)
                .cloned()
                .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
            else {
                continue;
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            let exited = c.state == k8s_cri::v1::ContainerState::ContainerExited as i32;
            let restart_count = c
                .annotations
                .get(wk::ANNOTATION_RESTART_COUNT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let id = format!("{}://{}", self.cfg.runtime, c.id);
            // The start time only matters for a new instance (minStartedSeconds): skip the
            // ContainerStatus call on the way to the first stop.
            let renewed = crr
                .spec
                .containers
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.status_context.as_ref())
                .is_some_and(|ctx| ctx.container_id != id || restart_count > ctx.restart_count);
            let started_at = if renewed && !exited {
                match self.cfg.cri.container_status(&c.id, false).await {
                    Ok((s, _)) => Some(s.started_at)
                        .filter(|&ns| ns > 0)
                        .map(|ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)),
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            let meta = ContainerMeta::from_cri(&c.labels, &c.annotations, &name);
            pod.raw.insert(
                name.clone(),
                RawContainer {
                    id: c.id.clone(),
                    sandbox: c.pod_sandbox_id.clone(),
                    pre_stop: meta.pre_stop,
                    ports: meta.ports,
                },
            );
            pod.newest.push(RuntimeContainer {
                name,
                id,
                exited,
                restart_count,
                started_at,
            });
        }
        Ok(pod)
    }

    /// The journal's record of each of the CRR's kills: (container, key, record).
    fn journal_records(
        &self,
        crr: &Crr,
    ) -> Result<Vec<(String, String, Option<Lookup>)>, SyncError> {
        let uid = crr.uid().unwrap_or_default();
        let keys: Vec<String> = crr
            .spec
            .containers
            .iter()
            .map(|c| kill_key(&uid, &c.name))
            .collect();
        let found = self
            .cfg
            .journal
            .lookup_all(&keys.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(crr
            .spec
            .containers
            .iter()
            .zip(keys)
            .zip(found)
            .map(|((c, key), found)| (c.name.clone(), key, found))
            .collect())
    }

    /// What the journal's records tell about this CRR's kills. A kill recorded as decided whose
    /// container has since exited or been replaced did happen before a crash: it is completed now.
    async fn journal_facts(
        &self,
        records: Vec<(String, String, Option<Lookup>)>,
        pod: &PodContainers,
    ) -> Result<JournalFacts, SyncError> {
        let mut facts = JournalFacts::default();
        for (name, key, found) in records {
            match found {
                None => {}
                Some(Lookup::Done) => {
                    facts.killed.insert(name);
                }
                Some(Lookup::Pending(action)) => {
                    facts.killed.insert(name.clone());
                    let target = action.containers.first().map(|c| c.id.as_str());
                    let live = pod.raw.get(&name).map(|r| r.id.as_str());
                    let running = pod.newest.iter().any(|r| r.name == name && !r.exited);
                    if target.is_some() && target == live && running {
                        facts.pending.insert(name, action);
                    } else {
                        let outcome = journal::Outcome {
                            result: journal::RESULT_STOPPED.into(),
                            message: "stopped before the agent restarted".into(),
                            finished_at: SystemTime::now(),
                            ..Default::default()
                        };
                        self.cfg.commits.complete(key, outcome).await?;
                    }
                }
            }
        }
        Ok(facts)
    }
}

/// Journal key of one container's kill for one CRR.
fn kill_key(crr_uid: &str, container: &str) -> String {
    format!("{}/{crr_uid}/{container}", journal::KIND_RECREATE_CONTAINER)
}

#[derive(Default)]
struct PodContainers {
    newest: Vec<RuntimeContainer>,
    raw: HashMap<String, RawContainer>,
}

struct RawContainer {
    id: String,
    sandbox: String,
    /// The Pod spec's preStop hook and named ports, from the kubelet's annotations.
    pre_stop: Option<PreStop>,
    ports: Vec<NamedPort>,
}

#[derive(Default)]
struct JournalFacts {
    /// Containers this agent stopped (or started stopping) for the CRR.
    killed: HashSet<String>,
    /// Kills decided before a restart whose container still runs: finish them.
    pending: HashMap<String, journal::Action>,
}
