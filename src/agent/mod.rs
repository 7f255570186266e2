//! The agent: one task owns the node model and reacts to events (relist snapshots, container
//! statuses, kernel exit notifications, finished actions). Slow work (CRI calls, waiting on a pidfd,
//! stopping a container) runs in spawned tasks that report back as events, so the owner never blocks.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_cri::v1::{Container, ContainerStatus, PodSandbox};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cri::client::VerboseInfo;
use crate::cri::{CriClient, CriError, RuntimeInfo};
use crate::node::ExitSource;
use crate::node::cgroup::{self, CgroupV2};
use crate::node::model::{Fetch, NodeModel, Role, State};
use crate::node::pidfd::{self, ContainerPidfd, PidfdError};
use crate::sidecar::decide::{Decision, Hold, decide};
use crate::sidecar::run::{StopOutcome, StopRequest, stop_sidecar};

#[derive(Clone, Debug)]
pub struct Config {
    /// Explicit CRI socket; relative paths are taken under `runtime_dir`.
    pub cri_socket: Option<PathBuf>,
    pub runtime_dir: PathBuf,
    pub relist_interval: Duration,
    pub pidfd: bool,
    pub cgroup_events: bool,
    /// Cgroup trees (relative to the cgroup v2 mount) where the kubelet puts pods; watched for new
    /// containers so that even short-lived ones are seen at once.
    pub pods_cgroups: Vec<String>,
    pub proc_root: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cri_socket: None,
            runtime_dir: PathBuf::from("/var/run"),
            relist_interval: Duration::from_secs(10),
            pidfd: true,
            cgroup_events: true,
            pods_cgroups: vec!["kubepods".into(), "kubepods.slice".into()],
            proc_root: PathBuf::from("/proc"),
        }
    }
}

enum Event {
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
    Stopped(Box<StopOutcome>),
    /// A new container cgroup appeared.
    Discovered(String),
    /// Read a container's status again (it was still being started).
    Refetch {
        id: String,
        attempt: u32,
    },
}

/// Connect to the runtime and run until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let runtime = crate::cri::detect(cfg.cri_socket.as_deref(), &cfg.runtime_dir).await?;
    info!(
        runtime = %runtime.name,
        version = %runtime.version,
        api = %runtime.api_version,
        socket = %runtime.socket.display(),
        "connected to container runtime"
    );
    let cri = CriClient::new(crate::cri::channel(&runtime.socket));
    let (tx, rx) = mpsc::unbounded_channel();

    let pidfd_state = if !cfg.pidfd {
        Err("disabled by flag".to_string())
    } else {
        pidfd::supported().map_err(|e| format!("kernel has no pidfd_open: {e}"))
    };
    let cgroup = if !cfg.cgroup_events {
        Err("disabled by flag".to_string())
    } else {
        CgroupV2::detect(&cfg.proc_root)
    };
    info!(
        pidfd = %describe(&pidfd_state.as_ref().map(|_| "available".to_string())),
        cgroup_events = %describe(&cgroup.as_ref().map(|c| format!("cgroup2 at {}", c.mount.display()))),
        relist_interval_ms = cfg.relist_interval.as_millis() as u64,
        "exit watchers"
    );
    let cgroup_tx = match &cgroup {
        Ok(_) => {
            let (ctx, crx) = mpsc::unbounded_channel();
            let (etx, mut erx) = mpsc::unbounded_channel::<cgroup::Notice>();
            tokio::spawn(async move {
                if let Err(e) = cgroup::run(crx, etx).await {
                    warn!(error = %e, "cgroup watcher stopped");
                }
            });
            let fwd = tx.clone();
            tokio::spawn(async move {
                while let Some(notice) = erx.recv().await {
                    let ev = match notice {
                        cgroup::Notice::Emptied(id) => Event::Exit {
                            id,
                            source: ExitSource::Cgroup,
                            at: SystemTime::now(),
                        },
                        cgroup::Notice::Created(id) => Event::Discovered(id),
                    };
                    if fwd.send(ev).is_err() {
                        break;
                    }
                }
            });
            if let Ok(cg) = &cgroup {
                for name in &cfg.pods_cgroups {
                    let root = cg.mount.join(name.trim_start_matches('/'));
                    info!(root = %root.display(), exists = root.is_dir(), "watching pods cgroup tree for new containers");
                    let _ = ctx.send(cgroup::Command::WatchTree { root });
                }
            }
            Some(ctx)
        }
        Err(_) => None,
    };

    let mut agent = Agent {
        cri,
        runtime,
        relist_interval: cfg.relist_interval,
        proc_root: cfg.proc_root.clone(),
        pidfd_enabled: pidfd_state.is_ok(),
        cgroup: cgroup.ok(),
        cgroup_tx,
        tx,
        model: NodeModel::default(),
        pidfd_watches: HashMap::new(),
        cgroup_watches: HashSet::new(),
        cgroup_trees: HashSet::new(),
        pidfd_rejected: 0,
        fetching: HashSet::new(),
        fetch_attempts: HashMap::new(),
        in_flight: HashSet::new(),
        holds: HashMap::new(),
        relisting: false,
        relist_wanted: false,
        next_relist: Instant::now(),
        runtime_up: true,
        relist_failures: 0,
        initial: Initial::Listing,
        started: Instant::now(),
    };
    agent.event_loop(rx, shutdown).await;
    Ok(())
}

fn describe(r: &Result<String, &String>) -> String {
    match r {
        Ok(s) => s.clone(),
        Err(e) => format!("unavailable ({e})"),
    }
}

/// How often a container still being started is read again for its pid (10 ms doubling to 320 ms).
const MAX_START_REFETCH: u32 = 12;

#[derive(PartialEq, Eq)]
enum Initial {
    Listing,
    Fetching,
    Ready,
}

struct Agent {
    cri: CriClient,
    runtime: RuntimeInfo,
    relist_interval: Duration,
    proc_root: PathBuf,
    pidfd_enabled: bool,
    cgroup: Option<CgroupV2>,
    cgroup_tx: Option<mpsc::UnboundedSender<cgroup::Command>>,
    tx: mpsc::UnboundedSender<Event>,
    model: NodeModel,
    pidfd_watches: HashMap<String, AbortHandle>,
    cgroup_watches: HashSet<String>,
    cgroup_trees: HashSet<PathBuf>,
    pidfd_rejected: usize,
    fetching: HashSet<String>,
    fetch_attempts: HashMap<String, u32>,
    in_flight: HashSet<String>,
    holds: HashMap<String, Hold>,
    relisting: bool,
    /// Relist as soon as the current one (if any) is done.
    relist_wanted: bool,
    next_relist: Instant,
    runtime_up: bool,
    relist_failures: u32,
    initial: Initial,
    started: Instant,
}

impl Agent {
    async fn event_loop(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            if self.relist_wanted && !self.relisting {
                self.next_relist = Instant::now();
            }
            tokio::select! {
                _ = &mut shutdown => {
                    info!(in_flight = self.in_flight.len(), "shutting down");
                    return;
                }
                _ = tokio::time::sleep_until(self.next_relist), if !self.relisting => {
                    self.relist_wanted = false;
                    self.start_relist();
                    self.next_relist = Instant::now() + self.relist_interval;
                }
                ev = rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.handle(ev);
                }
            }
        }
    }

    fn start_relist(&mut self) {
        self.relisting = true;
        let cri = self.cri.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let res =
                async { Ok((cri.list_sandboxes().await?, cri.list_containers().await?)) }.await;
            let _ = tx.send(Event::Snapshot(res));
        });
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Snapshot(res) => {
                self.relisting = false;
                if let Some(delay) = self.on_snapshot(res) {
                    self.next_relist = Instant::now() + delay;
                }
            }
            Event::Status { id, fetch, result } => self.on_status(id, fetch, *result),
            Event::Exit { id, source, at } => self.on_exit(&id, source, at),
            Event::Stopped(outcome) => self.on_stopped(*outcome),
            Event::Discovered(id) => {
                if self.model.container(&id).is_none() {
                    // A new container (or sandbox) is starting: list now rather than at the next tick.
                    self.relist_wanted = true;
                }
            }
            Event::Refetch { id, attempt } => {
                if self
                    .model
                    .container(&id)
                    .is_some_and(|c| c.state == State::Created)
                {
                    self.fetch_status_attempt(id, Fetch::Verbose, attempt);
                }
            }
        }
    }

    fn on_snapshot(
        &mut self,
        res: Result<(Vec<PodSandbox>, Vec<Container>), CriError>,
    ) -> Option<Duration> {
        let (sandboxes, containers) = match res {
            Ok(v) => v,
            Err(e) => {
                self.relist_failures += 1;
                if self.runtime_up {
                    warn!(error = %e, "container runtime unreachable; retrying with backoff");
                    self.runtime_up = false;
                }
                let backoff = Duration::from_millis(100)
                    .saturating_mul(1 << self.relist_failures.min(10))
                    .min(self.relist_interval);
                return Some(backoff);
            }
        };
        if !self.runtime_up {
            info!(
                failures = self.relist_failures,
                "container runtime reachable again; resynchronising"
            );
            self.runtime_up = true;
        }
        self.relist_failures = 0;
        let diff = self
            .model
            .apply_snapshot(&sandboxes, &containers, SystemTime::now());
        for id in &diff.removed {
            self.unwatch(id);
            self.holds.retain(|uid, _| self.model.pod(uid).is_some());
        }
        for id in &diff.exited {
            self.unwatch(id);
            debug!(container_id = %id, source = "relist", "container exit observed");
        }
        for (id, fetch) in diff.fetch {
            self.fetch_status(id, fetch);
        }
        if self.initial == Initial::Listing {
            self.initial = Initial::Fetching;
            self.check_ready();
        }
        // Re-evaluate every pod: cheap, and it retries actions that failed earlier.
        let uids: Vec<String> = self.model.pods().map(|p| p.pod.uid.clone()).collect();
        for uid in uids {
            self.evaluate(&uid);
        }
        None
    }

    fn check_ready(&mut self) {
        if self.initial == Initial::Fetching && self.fetching.is_empty() {
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
        }
    }

    fn fetch_status(&mut self, id: String, fetch: Fetch) {
        self.fetch_status_attempt(id, fetch, 0);
    }

    fn fetch_status_attempt(&mut self, id: String, fetch: Fetch, attempt: u32) {
        if !self.fetching.insert(id.clone()) {
            return;
        }
        self.fetch_attempts.insert(id.clone(), attempt);
        let cri = self.cri.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = cri.container_status(&id, fetch == Fetch::Verbose).await;
            let _ = tx.send(Event::Status {
                id,
                fetch,
                result: Box::new(result),
            });
        });
    }

    fn on_status(
        &mut self,
        id: String,
        fetch: Fetch,
        result: Result<(ContainerStatus, VerboseInfo), CriError>,
    ) {
        self.fetching.remove(&id);
        let attempt = self.fetch_attempts.remove(&id).unwrap_or(0);
        match result {
            Ok((st, info)) => {
                let verbose = (fetch == Fetch::Verbose).then_some(&info);
                let changed = self.model.apply_status(&st, verbose);
                if let Some(rec) = self.model.container(&id) {
                    if rec.state == State::Created && attempt < MAX_START_REFETCH {
                        // Being started: read again shortly to get its pid.
                        let tx = self.tx.clone();
                        let delay = Duration::from_millis(10 << attempt.min(5));
                        let id = id.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(Event::Refetch {
                                id,
                                attempt: attempt + 1,
                            });
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
                if let Some(uid) = changed {
                    self.evaluate(&uid);
                }
            }
            Err(e) if e.is_not_found() => {
                debug!(container_id = %id, "container gone before its status was read")
            }
            Err(e) => {
                debug!(container_id = %id, error = %e, "status read failed; the next relist retries")
            }
        }
        self.check_ready();
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
                            let _ = tx.send(Event::Exit {
                                id: cid,
                                source: ExitSource::Pidfd,
                                at,
                            });
                        }
                    });
                    self.pidfd_watches
                        .insert(id.to_string(), handle.abort_handle());
                }
                Err(PidfdError::Open { source, .. })
                    if source.raw_os_error() == Some(libc_esrch()) =>
                {
                    // Gone already: ask the runtime for the exit code.
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
        if let Some(h) = self.pidfd_watches.remove(id) {
            h.abort();
        }
        if self.cgroup_watches.remove(id)
            && let Some(ctx) = &self.cgroup_tx
        {
            let _ = ctx.send(cgroup::Command::Unwatch { id: id.to_string() });
        }
    }

    fn on_exit(&mut self, id: &str, source: ExitSource, at: SystemTime) {
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
        self.confirm_exit(id.to_string());
        self.evaluate(&uid);
    }

    /// The kernel saw the exit; the runtime records it a little later. Poll its status briefly.
    fn confirm_exit(&mut self, id: String) {
        if !self.fetching.insert(id.clone()) {
            return;
        }
        let cri = self.cri.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(1);
            let deadline = Instant::now() + Duration::from_secs(3);
            let result = loop {
                let r = cri.container_status(&id, false).await;
                let done = match &r {
                    Ok((st, _)) => State::from_cri(st.state, st.exit_code).is_exited(),
                    Err(_) => true,
                };
                if done || Instant::now() + delay > deadline {
                    break r;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            };
            let _ = tx.send(Event::Status {
                id,
                fetch: Fetch::Plain,
                result: Box::new(result),
            });
        });
    }

    fn evaluate(&mut self, uid: &str) {
        let Some(facts) = self.model.pod_facts(uid) else {
            return;
        };
        let Some(pod) = self.model.pod(uid).map(|p| p.pod.clone()) else {
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
                for target in targets {
                    if !self.in_flight.insert(target.id.clone()) {
                        continue;
                    }
                    let Some(rec) = self.model.container(&target.id) else {
                        continue;
                    };
                    let request = StopRequest {
                        pod: pod.clone(),
                        grace: rec.meta.grace,
                        pre_stop: rec.meta.pre_stop.clone(),
                        target,
                    };
                    let cri = self.cri.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let outcome = stop_sidecar(&cri, request).await;
                        let _ = tx.send(Event::Stopped(Box::new(outcome)));
                    });
                }
            }
        }
    }

    /// When the pod's main containers finished: the latest main exit, by the runtime's clock when
    /// known, else when the agent observed it.
    fn mains_finished_at(&self, uid: &str) -> Option<SystemTime> {
        let facts = self.model.pod_facts(uid)?;
        facts
            .containers
            .iter()
            .filter(|c| c.role == Some(Role::Main))
            .map(|c| {
                let rec = self.model.container(&c.id)?;
                if rec.finished_at > 0 {
                    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(rec.finished_at as u64))
                } else {
                    rec.exit_observed.map(|(_, at)| at)
                }
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    fn on_stopped(&mut self, o: StopOutcome) {
        let req = &o.request;
        self.in_flight.remove(&req.target.id);
        let uid = req.pod.uid.clone();
        let mains_at = self.mains_finished_at(&uid);
        let ms = |from: Option<SystemTime>, to: SystemTime| -> Option<f64> {
            to.duration_since(from?)
                .ok()
                .map(|d| d.as_secs_f64() * 1000.0)
        };
        let exit_to_stop_ms = ms(mains_at, o.stop_sent_at);
        match &o.result {
            Ok(final_status) => {
                let (code, finished) = match final_status {
                    Some(st) => {
                        let changed = self.model.apply_status(st, None);
                        let fin = (st.finished_at > 0).then(|| {
                            SystemTime::UNIX_EPOCH + Duration::from_nanos(st.finished_at as u64)
                        });
                        if changed.is_some() {
                            self.unwatch(&req.target.id);
                        }
                        (Some(st.exit_code), fin)
                    }
                    None => (None, None),
                };
                info!(
                    pod_namespace = %req.pod.namespace,
                    pod_name = %req.pod.name,
                    pod_uid = %req.pod.uid,
                    container = %req.target.name,
                    container_id = %req.target.id,
                    decision = "stop_sidecar",
                    runtime = %self.runtime.name,
                    prestop = %o.pre_stop,
                    grace_s = o.stop_grace.as_secs(),
                    exit_to_stop_ms = exit_to_stop_ms.map(|v| (v * 1000.0).round() / 1000.0),
                    exit_to_sidecar_exit_ms = finished.and_then(|f| ms(mains_at, f)).map(|v| (v * 1000.0).round() / 1000.0),
                    sidecar_exit_code = code,
                    exit_code_ignored = req.target.ignore_exit_code,
                    result = "stopped",
                    "sidecar stopped"
                );
            }
            Err(e) => {
                warn!(
                    pod_namespace = %req.pod.namespace,
                    pod_name = %req.pod.name,
                    pod_uid = %req.pod.uid,
                    container = %req.target.name,
                    container_id = %req.target.id,
                    decision = "stop_sidecar",
                    prestop = %o.pre_stop,
                    exit_to_stop_ms = exit_to_stop_ms.map(|v| (v * 1000.0).round() / 1000.0),
                    error = %e,
                    result = "failed",
                    "stopping sidecar failed; retrying at the next relist"
                );
            }
        }
    }
}

fn libc_esrch() -> i32 {
    rustix::io::Errno::SRCH.raw_os_error()
}
