//! Keeping the node model current: relist snapshots, container status reads, kernel exit
//! watchers (pidfd and cgroup), the Pod objects of this node (cluster mode), and the agent's
//! readiness (first list applied and every status read answered).
//!
//! Slow work (CRI calls, waiting on a pidfd) runs in spawned tasks that send a [`NodeEvent`] back
//! through the agent's channel; [`Tracker::handle`] applies it and says which pods changed, so
//! the agent can hand them to the capabilities at once, in the same turn of its loop.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_cri::v1::{Container, ContainerStatus, PodSandbox};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::ExitSource;
use super::cgroup::{self, CgroupV2};
use super::model::{Fetch, NodeModel, State};
use super::pidfd::{ContainerPidfd, PidfdError};
use super::view::NodeView;
use crate::cri::client::VerboseInfo;
use crate::cri::{CriClient, CriError};
use crate::node::pods::PodUpdate;
use crate::report::pb;
use crate::telemetry::http::{Health, Listed};
use crate::telemetry::metrics::Metrics;

/// What the tracker's own tasks report back.
pub enum NodeEvent {
    Snapshot(Result<(Vec<PodSandbox>, Vec<Container>), CriError>),
    Status {
        id: String,
        fetch: Fetch,
        result: Box<Result<(ContainerStatus, VerboseInfo), CriError>>,
    },
    Exit {
        id: String,
        source: ExitSource,
        at: SystemTime,
    },
    /// A new container cgroup appeared.
    Discovered(String),
    /// Read a container's status again (it was still being started).
    Refetch {
        id: String,
        attempt: u32,
    },
}

/// What changed, for the capabilities.
#[derive(Debug, Default)]
pub struct Changes {
    /// Pods to decide for again.
    pub pods: Vec<String>,
    /// The model just became complete (first list applied, every status read): resume what
    /// was pending before a restart, then decide for every pod.
    pub ready: bool,
    /// Pods left the node.
    pub pods_gone: bool,
}

/// How the exit watchers are set up.
pub struct Watchers {
    pub pidfd: Result<(), String>,
    pub cgroup: Result<CgroupV2, String>,
    pub cgroup_tx: Option<mpsc::UnboundedSender<cgroup::Command>>,
    pub proc_root: PathBuf,
}

/// How often a container still being started is read again for its pid (10 ms doubling to 320 ms,
/// then every 320 ms: about 12 s, past the default relist interval). A start slowed down by a
/// busy runtime must not leave the model saying `Created` until the next relist.
const MAX_START_REFETCH: u32 = 42;

#[derive(PartialEq, Eq)]
enum Initial {
    Listing,
    Fetching,
    Ready,
}

pub struct Tracker<E> {
    cri: CriClient,
    tx: mpsc::UnboundedSender<E>,
    metrics: Metrics,
    health: Health,
    relist_interval: Duration,
    /// Liveness: the longest a successful relist may take to follow the last.
    stall_after: Duration,
    model: NodeModel,
    /// What tasks outside the loop may read of the model, republished after every event.
    view: NodeView,
    pidfd_reason: String,
    cgroup_reason: String,
    proc_root: PathBuf,
    pidfd_enabled: bool,
    cgroup: Option<CgroupV2>,
    cgroup_tx: Option<mpsc::UnboundedSender<cgroup::Command>>,
    pidfd_watches: HashMap<String, AbortHandle>,
    cgroup_watches: HashSet<String>,
    cgroup_trees: HashSet<PathBuf>,
    pidfd_rejected: usize,
    /// Containers whose pid was not found once (ESRCH) and whose status was read again. A second
    /// ESRCH for a container the runtime still calls running means its pid is not visible here
    /// (the agent is not in the host PID namespace), not that it exited.
    pid_recheck: HashSet<String>,
    /// Status reads in flight, with how often the container was already re-read while starting.
    fetching: HashMap<String, u32>,
    /// Uids of this node's Pod objects (cluster mode), and the first list's readiness mark.
    api_pods: HashSet<String>,
    pods_listed: Listed,
    relisting: bool,
    /// Relist as soon as the current one (if any) is done, [`TRIGGERED_RELIST_GAP`] after the last.
    relist_wanted: bool,
    next_relist: Instant,
    last_relist: Option<Instant>,
    /// Verbose status reads (the runtime spec: large) in flight at once, at most
    /// [`MAX_VERBOSE_FETCHES`]; plain reads (exit codes, which decisions wait for) are not held.
    verbose_fetches: Arc<Semaphore>,
    runtime_up: bool,
    relist_failures: u32,
    initial: Initial,
    started: Instant,
}

impl<E: From<NodeEvent> + Send + 'static> Tracker<E> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cri: CriClient,
        tx: mpsc::UnboundedSender<E>,
        metrics: Metrics,
        health: Health,
        relist_interval: Duration,
        stall_after: Duration,
        watchers: Watchers,
        view: NodeView,
        pods_listed: Listed,
    ) -> Self {
        Self {
            cri,
            tx,
            metrics,
            health,
            relist_interval,
            stall_after: stall_after.max(relist_interval.saturating_mul(3)),
            model: NodeModel::default(),
            view,
            pidfd_reason: watchers.pidfd.as_ref().err().cloned().unwrap_or_default(),
            cgroup_reason: watchers.cgroup.as_ref().err().cloned().unwrap_or_default(),
            proc_root: watchers.proc_root,
            pidfd_enabled: watchers.pidfd.is_ok(),
            cgroup: watchers.cgroup.ok(),
            cgroup_tx: watchers.cgroup_tx,
            pidfd_watches: HashMap::new(),
            cgroup_watches: HashSet::new(),
            cgroup_trees: HashSet::new(),
            pidfd_rejected: 0,
            pid_recheck: HashSet::new(),
            fetching: HashMap::new(),
            api_pods: HashSet::new(),
            pods_listed,
            relisting: false,
            relist_wanted: false,
            last_relist: None,
            verbose_fetches: Arc::new(Semaphore::new(MAX_VERBOSE_FETCHES)),
            next_relist: Instant::now(),
            runtime_up: true,
            relist_failures: 0,
            initial: Initial::Listing,
            started: Instant::now(),
        }
    }

    pub fn model(&self) -> &NodeModel {
        &self.model
    }

    pub fn is_ready(&self) -> bool {
        self.initial == Initial::Ready
    }

    pub fn runtime_up(&self) -> bool {
        self.runtime_up
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the next relist is due, `None` while one runs.
    pub fn next_relist(&mut self) -> Option<Instant> {
        if self.relisting {
            return None;
        }
        if self.relist_wanted {
            self.next_relist =
                triggered_relist_at(self.next_relist, self.last_relist, Instant::now());
        }
        Some(self.next_relist)
    }

    /// List sandboxes and containers now (off the loop; the answer comes as a snapshot).
    pub fn start_relist(&mut self) {
        self.relist_wanted = false;
        self.relisting = true;
        let now = Instant::now();
        self.last_relist = Some(now);
        self.next_relist = now + self.relist_interval;
        let cri = self.cri.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let res =
                async { Ok((cri.list_sandboxes().await?, cri.list_containers().await?)) }.await;
            let _ = tx.send(E::from(NodeEvent::Snapshot(res)));
        });
    }

    /// After every event: publish the view and the watcher gauges.
    pub fn publish(&mut self) {
        self.view.publish(&mut self.model);
        self.metrics.set_watched("pidfd", self.pidfd_watches.len());
        self.metrics
            .set_watched("cgroup", self.cgroup_watches.len());
    }

    pub fn handle(&mut self, ev: NodeEvent) -> Changes {
        let mut changes = Changes::default();
        match ev {
            NodeEvent::Snapshot(res) => {
                self.relisting = false;
                if let Some(delay) = self.on_snapshot(res, &mut changes) {
                    self.next_relist = Instant::now() + delay;
                }
            }
            NodeEvent::Status { id, fetch, result } => {
                self.on_status(id, fetch, *result, &mut changes)
            }
            NodeEvent::Exit { id, source, at } => self.on_exit(&id, source, at, &mut changes),
            NodeEvent::Discovered(id) => {
                if self.model.container(&id).is_none() {
                    // A new container (or sandbox) is starting: list now rather than at the next tick.
                    self.relist_wanted = true;
                }
            }
            NodeEvent::Refetch { id, attempt } => {
                if self
                    .model
                    .container(&id)
                    .is_some_and(|c| c.state == State::Created)
                {
                    self.fetch_status_attempt(id, Fetch::Verbose, attempt);
                }
            }
        }
        changes
    }

    fn on_snapshot(
        &mut self,
        res: Result<(Vec<PodSandbox>, Vec<Container>), CriError>,
        changes: &mut Changes,
    ) -> Option<Duration> {
        let (sandboxes, containers) = match res {
            Ok(v) => {
                // Liveness, as the kubelet's PLEG: a successful relist within the limit. A loop
                // that stopped, or a runtime that has not answered for that long (every CRI call
                // has a deadline), makes /healthz and the systemd watchdog fail; a restart also
                // drops a wedged runtime connection.
                self.health.progressed(self.stall_after);
                self.metrics.relisted();
                v
            }
            Err(e) => {
                self.relist_failures = self.relist_failures.saturating_add(1);
                if self.runtime_up {
                    warn!(error = %e, "container runtime unreachable; retrying with backoff");
                    self.runtime_up = false;
                    self.health.set_runtime_connected(false);
                    self.metrics.set_runtime_connected(false);
                }
                return Some(relist_backoff(self.relist_failures, self.relist_interval));
            }
        };
        if !self.runtime_up {
            info!(
                failures = self.relist_failures,
                "container runtime reachable again; resynchronising"
            );
            self.runtime_up = true;
            self.health.set_runtime_connected(true);
            self.metrics.set_runtime_connected(true);
        }
        self.relist_failures = 0;
        let diff = self
            .model
            .apply_snapshot(&sandboxes, &containers, SystemTime::now());
        for id in &diff.removed {
            self.unwatch(id);
        }
        changes.pods_gone = !diff.removed.is_empty();
        for id in &diff.exited {
            self.unwatch(id);
            self.metrics.exit_event(ExitSource::Relist.as_str());
            debug!(container_id = %id, source = "relist", "container exit observed");
        }
        for (id, fetch) in diff.fetch {
            self.fetch_status(id, fetch);
        }
        // Every pod is decided again: cheap, and it retries actions that failed earlier.
        changes.pods = self.model.pods().map(|p| p.pod.uid.clone()).collect();
        if self.initial == Initial::Listing {
            self.initial = Initial::Fetching;
            self.check_ready(changes);
        }
        None
    }

    fn check_ready(&mut self, changes: &mut Changes) {
        if self.initial != Initial::Fetching || !self.fetching.is_empty() {
            return;
        }
        self.initial = Initial::Ready;
        let running = self
            .model
            .containers()
            .filter(|c| c.state == State::Running)
            .count();
        info!(
            pods = self.model.pods().count(),
            containers = self.model.containers().count(),
            running,
            pidfd_watched = self.pidfd_watches.len(),
            cgroup_watched = self.cgroup_watches.len(),
            ready_ms = self.started.elapsed().as_millis() as u64,
            "agent ready"
        );
        if self.pidfd_enabled && running > 0 && self.pidfd_watches.is_empty() {
            warn!(
                "pidfd unusable: container pids are not visible here (run in the host PID namespace); relying on cgroup events and relist"
            );
        }
        self.health.set_synced(true);
        changes.ready = true;
    }

    fn fetch_status(&mut self, id: String, fetch: Fetch) {
        self.fetch_status_attempt(id, fetch, 0);
    }

    fn fetch_status_attempt(&mut self, id: String, fetch: Fetch, attempt: u32) {
        if self.fetching.contains_key(&id) {
            return;
        }
        self.fetching.insert(id.clone(), attempt);
        let cri = self.cri.clone();
        let tx = self.tx.clone();
        let verbose_fetches = self.verbose_fetches.clone();
        tokio::spawn(async move {
            let _permit = match fetch {
                Fetch::Verbose => verbose_fetches.acquire_owned().await.ok(),
                Fetch::Plain => None,
            };
            let result = cri.container_status(&id, fetch == Fetch::Verbose).await;
            let _ = tx.send(E::from(NodeEvent::Status {
                id,
                fetch,
                result: Box::new(result),
            }));
        });
    }

    fn on_status(
        &mut self,
        id: String,
        fetch: Fetch,
        result: Result<(ContainerStatus, VerboseInfo), CriError>,
        changes: &mut Changes,
    ) {
        let attempt = self.fetching.remove(&id).unwrap_or(0);
        match result {
            Ok((st, info)) => {
                let verbose = (fetch == Fetch::Verbose).then_some(&info);
                let changed = self.model.apply_status(&st, verbose);
                if let Some(rec) = self.model.container(&id) {
                    if rec.state == State::Created && attempt < MAX_START_REFETCH {
                        // Being started: read again shortly to get its pid.
                        let tx = self.tx.clone();
                        let delay = crate::backoff::after(
                            attempt.saturating_add(1),
                            Duration::from_millis(10),
                            Duration::from_millis(320),
                        );
                        let id = id.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(E::from(NodeEvent::Refetch {
                                id,
                                attempt: attempt + 1,
                            }));
                        });
                    }
                    if rec.state == State::Running {
                        if let Some(pid) = rec.pid {
                            self.watch(&id, pid);
                        }
                    } else if rec.state.is_exited() {
                        self.unwatch(&id);
                    }
                }
                changes.pods.extend(changed);
            }
            Err(e) if e.is_not_found() => {
                debug!(container_id = %id, "container gone before its status was read")
            }
            Err(e) => {
                debug!(container_id = %id, error = %e, "status read failed; the next relist retries")
            }
        }
        self.check_ready(changes);
    }

    /// A stop carried out by a capability read the container's final status: take it.
    pub fn apply_final_status(&mut self, st: &ContainerStatus) {
        if self.model.apply_status(st, None).is_some() {
            self.unwatch(&st.id);
        }
    }

    fn watch(&mut self, id: &str, pid: u32) {
        if self.pidfd_enabled && !self.pidfd_watches.contains_key(id) {
            match ContainerPidfd::open(pid, id, &self.proc_root) {
                Ok(fd) => {
                    let tx = self.tx.clone();
                    let cid = id.to_string();
                    let handle = tokio::spawn(async move {
                        if fd.exited().await.is_ok() {
                            let at = SystemTime::now();
                            let _ = tx.send(E::from(NodeEvent::Exit {
                                id: cid,
                                source: ExitSource::Pidfd,
                                at,
                            }));
                        }
                    });
                    self.pidfd_watches
                        .insert(id.to_string(), handle.abort_handle());
                }
                Err(PidfdError::Open { source, .. })
                    if source.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
                        && self.pid_recheck.insert(id.to_string()) =>
                {
                    // Gone already, or not visible here: ask the runtime again.
                    self.fetch_status(id.to_string(), Fetch::Plain);
                }
                Err(e) => {
                    self.pidfd_rejected += 1;
                    debug!(container_id = %id, error = %e, "no pidfd for container");
                }
            }
        }
        if let (Some(cg), Some(ctx)) = (&self.cgroup, &self.cgroup_tx)
            && !self.cgroup_watches.contains(id)
            && let Some((events_file, root)) = cg.container_cgroup(pid, id)
        {
            let _ = ctx.send(cgroup::Command::Watch {
                id: id.to_string(),
                events_file,
            });
            self.cgroup_watches.insert(id.to_string());
            if self.cgroup_trees.insert(root.clone()) {
                info!(root = %root.display(), "watching pods cgroup tree for new containers");
                let _ = ctx.send(cgroup::Command::WatchTree { root });
            }
        }
    }

    fn unwatch(&mut self, id: &str) {
        self.pid_recheck.remove(id);
        if let Some(h) = self.pidfd_watches.remove(id) {
            h.abort();
        }
        if self.cgroup_watches.remove(id)
            && let Some(ctx) = &self.cgroup_tx
        {
            let _ = ctx.send(cgroup::Command::Unwatch { id: id.to_string() });
        }
    }

    fn on_exit(&mut self, id: &str, source: ExitSource, at: SystemTime, changes: &mut Changes) {
        if let Some(h) = self.pidfd_watches.remove(id) {
            h.abort();
        }
        if source == ExitSource::Cgroup {
            self.cgroup_watches.remove(id);
        }
        let Some(uid) = self.model.mark_exited(id, source, at) else {
            return;
        };
        debug!(container_id = %id, source = source.as_str(), "container exit observed");
        self.metrics.exit_event(source.as_str());
        self.confirm_exit(id.to_string());
        changes.pods.push(uid);
    }

    /// The kernel saw the exit; the runtime records it a little later. Poll its status briefly.
    fn confirm_exit(&mut self, id: String) {
        if self.fetching.contains_key(&id) {
            return;
        }
        self.fetching.insert(id.clone(), 0);
        let cri = self.cri.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut delays =
                crate::backoff::exponential(Duration::from_millis(1), Duration::from_millis(200));
            let deadline = Instant::now() + Duration::from_secs(3);
            let result = loop {
                let r = cri.container_status(&id, false).await;
                let done = match &r {
                    Ok((st, _)) => State::from_cri(st.state, st.exit_code).is_exited(),
                    Err(_) => true,
                };
                let delay = delays.next().unwrap_or(Duration::from_millis(200));
                if done || Instant::now() + delay > deadline {
                    break r;
                }
                tokio::time::sleep(delay).await;
            };
            let _ = tx.send(E::from(NodeEvent::Status {
                id,
                fetch: Fetch::Plain,
                result: Box::new(result),
            }));
        });
    }

    /// This node's Pods changed (cluster mode). Returns the pod to decide for again.
    pub fn on_pod(&mut self, update: PodUpdate) -> Option<String> {
        match update {
            PodUpdate::Upsert {
                pod, phase, spec, ..
            } => {
                self.api_pods.insert(pod.uid.clone());
                let terminal = phase == "Succeeded" || phase == "Failed";
                (self.model.set_pod_spec(&pod.uid, spec) && !terminal).then_some(pod.uid)
            }
            PodUpdate::Remove { uid } => {
                self.api_pods.remove(&uid);
                self.model.remove_pod_spec(&uid);
                None
            }
            PodUpdate::Resync { uids } => {
                let keep: HashSet<String> = uids.into_iter().collect();
                for uid in self.api_pods.difference(&keep) {
                    self.model.remove_pod_spec(uid);
                }
                self.api_pods = keep;
                self.pods_listed.done();
                None
            }
        }
    }

    /// The exit watchers, for the local API's status.
    pub fn watchers(&self) -> Vec<pb::WatchMechanism> {
        vec![
            pb::WatchMechanism {
                name: "pidfd".into(),
                enabled: self.pidfd_enabled,
                detail: if self.pidfd_enabled {
                    format!(
                        "{} containers, {} not visible",
                        self.pidfd_watches.len(),
                        self.pidfd_rejected
                    )
                } else {
                    self.pidfd_reason.clone()
                },
                watched: self.pidfd_watches.len() as u32,
            },
            pb::WatchMechanism {
                name: "cgroup".into(),
                enabled: self.cgroup.is_some(),
                detail: match &self.cgroup {
                    Some(cg) => format!("cgroup2 at {}", cg.mount.display()),
                    None => self.cgroup_reason.clone(),
                },
                watched: self.cgroup_watches.len() as u32,
            },
            pb::WatchMechanism {
                name: "relist".into(),
                enabled: true,
                detail: format!("every {:?}", self.relist_interval),
                watched: 0,
            },
        ]
    }
}

/// A burst of new containers (each discovered by its cgroup) relists at most this often, not
/// back to back: each relist lists the whole node.
const TRIGGERED_RELIST_GAP: Duration = Duration::from_millis(200);

/// Verbose status reads in flight at once (an agent started on a full node reads every
/// container's runtime spec).
const MAX_VERBOSE_FETCHES: usize = 16;

/// When a wanted relist runs: now, unless the last started under [`TRIGGERED_RELIST_GAP`] ago;
/// never later than the periodic one.
fn triggered_relist_at(periodic: Instant, last: Option<Instant>, now: Instant) -> Instant {
    let earliest = last.map_or(now, |l| (l + TRIGGERED_RELIST_GAP).max(now));
    earliest.min(periodic)
}

/// While the runtime does not answer: 200 ms doubling, up to the relist interval.
fn relist_backoff(failures: u32, interval: Duration) -> Duration {
    crate::backoff::after(failures, Duration::from_millis(200), interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggered_relists_keep_a_gap_and_never_delay_the_periodic_one() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let periodic = now + Duration::from_secs(10);
        // (last relist started, expected start)
        let table = [
            (None, now),
            (Some(now - Duration::from_secs(5)), now),
            (Some(now - ms(50)), now + ms(150)),
            (Some(now), now + TRIGGERED_RELIST_GAP),
        ];
        for (last, want) in table {
            assert_eq!(triggered_relist_at(periodic, last, now), want, "{last:?}");
        }
        let soon = now + ms(20);
        assert_eq!(triggered_relist_at(soon, Some(now), now), soon);
    }
}
