//! The agent: one task owns the node model and reacts to events (relist snapshots, container
//! statuses, kernel exit notifications, finished actions). Slow work (CRI calls, waiting on a pidfd,
//! stopping a container) runs in spawned tasks that report back as events, so the owner never blocks.

mod systemd;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_cri::v1::{Container, ContainerStatus, PodSandbox};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cri::client::VerboseInfo;
use crate::cri::{CriClient, CriError, RuntimeInfo};
use crate::journal::{self, Journal, Recorded, Retention};
use crate::node::ExitSource;
use crate::node::cgroup::{self, CgroupV2};
use crate::node::model::{Fetch, NodeModel, Role, State};
use crate::node::pidfd::{self, ContainerPidfd, PidfdError};
use crate::node::view::NodeView;
use crate::report::api::{ApiService, Query};
use crate::report::pb;
use crate::sidecar::decide::{Decision, Hold, Target, decide};
use crate::sidecar::run::{StopOutcome, StopRequest, stop_sidecar};
use crate::telemetry::http::{Health, Listed, STALL_AFTER};
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
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
    /// Node name reported by the API (`NODE_NAME`, else the host name).
    pub node_name: String,
    /// Where the journal lives.
    pub state_dir: PathBuf,
    pub retention: Retention,
    /// The local gRPC API socket.
    pub api_socket: PathBuf,
    /// Metrics and health listen address; `None` disables the HTTP server.
    pub addr: Option<std::net::SocketAddr>,
    /// Fault injection for crash tests (`NODEWARD_FAILPOINT`): `after-decide` aborts the process
    /// right after an action is recorded as decided, before it is carried out.
    pub failpoint: Option<String>,
    /// Cluster mode: the API client (the node name is `node_name`). `None`: standalone.
    pub cluster: Option<kube::Client>,
    /// Image puller (cluster mode): CRI pulls running at once on this node.
    pub max_concurrent_pulls: usize,
    /// Image puller (cluster mode): the only namespace pull secrets are read from.
    pub pull_secret_namespace: String,
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
            node_name: String::new(),
            state_dir: PathBuf::from("/var/lib/nodeward"),
            retention: Retention::default(),
            api_socket: PathBuf::from("/run/nodeward/agent.sock"),
            addr: Some(std::net::SocketAddr::from(([0, 0, 0, 0], 10221))),
            failpoint: None,
            cluster: None,
            max_concurrent_pulls: crate::imagepull::DEFAULT_MAX_CONCURRENT_PULLS,
            pull_secret_namespace: crate::api::kruise::KRUISE_DAEMON_CONFIG_NAMESPACE.into(),
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
    /// A stop action finished (or was found already done in the journal).
    ActionDone(Box<ActionDone>),
    /// A question from the local API.
    Query(Query),
    /// This node's Pods changed (cluster mode).
    Pod(crate::cluster::pods::PodUpdate),
    /// A new container cgroup appeared.
    Discovered(String),
    /// Read a container's status again (it was still being started).
    Refetch {
        id: String,
        attempt: u32,
    },
}

/// The runtime, waited for with backoff (1 s doubling to 30 s) while none answers: at boot the
/// agent may start before containerd.
async fn wait_for_runtime(cfg: &Config) -> crate::cri::RuntimeInfo {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build();
    loop {
        match crate::cri::detect(cfg.cri_socket.as_deref(), &cfg.runtime_dir).await {
            Ok(runtime) => return runtime,
            Err(e) => {
                let wait = delays.next().unwrap_or(Duration::from_secs(30));
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "no container runtime yet; waiting");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Connect to the runtime and run until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let metrics = Metrics::new();
    let health = Health::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Health first: while the runtime is not up yet (a node booting), the agent answers
    // `/healthz` ok and `/readyz` 503 instead of exiting.
    if let Some(addr) = cfg.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("metrics/health listener {addr}: {e}"))?;
        info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
        let (m, h, done) = (metrics.clone(), health.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = crate::telemetry::http::serve(listener, m, h, done).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }
    let runtime = tokio::select! {
        runtime = wait_for_runtime(&cfg) => runtime,
        () = &mut shutdown => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
    };
    info!(
        runtime = %runtime.name,
        version = %runtime.version,
        api = %runtime.api_version,
        socket = %runtime.socket.display(),
        "connected to container runtime"
    );
    health.set_runtime_connected(true);
    metrics.set_runtime_connected(true);
    let notifier = systemd::Notifier::spawn(health.clone());
    let cri = CriClient::new(crate::cri::channel(&runtime.socket)).with_metrics(metrics.clone());
    let (tx, rx) = mpsc::unbounded_channel();

    let (journal, report) = Journal::open(&cfg.state_dir, cfg.retention)?;
    // Standalone: nothing to deliver upstream.
    journal.set_upstream(cfg.cluster.is_some());
    if let Some((moved, reason)) = &report.moved_aside {
        tracing::error!(moved_to = %moved.display(), reason = %reason, "journal unreadable; moved aside, starting with a fresh one");
    }
    info!(
        path = %journal.path().display(),
        events = report.events,
        pending = report.pending,
        "journal open"
    );
    if let Ok(stats) = journal.stats() {
        metrics.set_journal(&stats);
    }
    let (live_tx, _) = broadcast::channel(256);
    let api_listener = crate::report::socket::bind(&cfg.api_socket)?;
    info!(socket = %cfg.api_socket.display(), "serving the local API");
    let (query_tx, mut query_rx) = mpsc::unbounded_channel();
    let service = ApiService::new(query_tx, journal.clone(), live_tx.clone());
    let api_done = stopped(stop_rx.clone());
    let api_socket = cfg.api_socket.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::report::api::serve(api_listener, service, api_done).await {
            warn!(error = %e, "local API server stopped");
        }
        let _ = std::fs::remove_file(&api_socket);
    });
    let reporter = std::sync::Arc::new(tokio::sync::Notify::new());
    let commits = crate::journal::Commits::new(journal.clone());
    let view = NodeView::default();
    let mut pods_listed = Listed::default();
    if let Some(client) = &cfg.cluster {
        info!(node = %cfg.node_name, "cluster mode: watching this node's Pods, reporting upstream");
        let (pod_tx, mut pod_rx) = mpsc::unbounded_channel();
        pods_listed = health.expect_list("Pods");
        tokio::spawn(crate::cluster::pods::watch(
            client.clone(),
            cfg.node_name.clone(),
            pod_tx,
        ));
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some(u) = pod_rx.recv().await {
                if fwd.send(Event::Pod(u)).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(crate::cluster::report::run(
            client.clone(),
            cfg.node_name.clone(),
            journal.clone(),
            reporter.clone(),
        ));
        tokio::spawn(crate::recreate::run(crate::recreate::Config {
            client: client.clone(),
            cri: cri.clone(),
            runtime: runtime.name.clone(),
            node: cfg.node_name.clone(),
            journal: journal.clone(),
            commits: commits.clone(),
            metrics: metrics.clone(),
            view: view.clone(),
            first_list: health.expect_list("ContainerRecreateRequests"),
        }));
        tokio::spawn(crate::imagepull::run(
            client.clone(),
            cri.clone(),
            metrics.clone(),
            crate::imagepull::Config {
                node_name: cfg.node_name.clone(),
                secret_namespace: cfg.pull_secret_namespace.clone(),
                max_concurrent_pulls: cfg.max_concurrent_pulls,
                first_list: health.expect_list("NodeImage"),
            },
        ));
    }
    let fwd = tx.clone();
    tokio::spawn(async move {
        while let Some(q) = query_rx.recv().await {
            if fwd.send(Event::Query(q)).is_err() {
                break;
            }
        }
    });

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
        node_name: cfg.node_name.clone(),
        journal,
        commits,
        live: live_tx,
        metrics,
        health,
        pods_listed,
        failpoint: cfg.failpoint.clone(),
        cluster: cfg.cluster.clone(),
        reporter,
        pidfd_reason: pidfd_state.as_ref().err().cloned().unwrap_or_default(),
        cgroup_reason: cgroup.as_ref().err().cloned().unwrap_or_default(),
        runtime,
        relist_interval: cfg.relist_interval,
        proc_root: cfg.proc_root.clone(),
        pidfd_enabled: pidfd_state.is_ok(),
        cgroup: cgroup.ok(),
        cgroup_tx,
        tx,
        model: NodeModel::default(),
        view,
        pidfd_watches: HashMap::new(),
        cgroup_watches: HashSet::new(),
        cgroup_trees: HashSet::new(),
        pidfd_rejected: 0,
        pid_recheck: HashSet::new(),
        fetching: HashMap::new(),
        api_pods: HashSet::new(),
        in_flight: HashSet::new(),
        holds: HashMap::new(),
        relisting: false,
        relist_wanted: false,
        next_relist: Instant::now(),
        runtime_up: true,
        relist_failures: 0,
        initial: Initial::Listing,
        started: Instant::now(),
        last_prune: None,
    };
    agent.event_loop(rx, shutdown.as_mut()).await;
    notifier.stopping();
    let _ = stop_tx.send(true);
    // Let the servers finish in-flight requests and remove the API socket.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

fn describe(r: &Result<String, &String>) -> String {
    match r {
        Ok(s) => s.clone(),
        Err(e) => format!("unavailable ({e})"),
    }
}

/// How often the journal's retention is applied.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

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

struct Agent {
    cri: CriClient,
    node_name: String,
    journal: Journal,
    /// Group commit of journal writes: a burst of stops costs one fsync.
    commits: crate::journal::Commits,
    live: broadcast::Sender<pb::Event>,
    metrics: Metrics,
    health: Health,
    /// Marked done once the first list of this node's Pods is applied (cluster mode).
    pods_listed: Listed,
    failpoint: Option<String>,
    cluster: Option<kube::Client>,
    /// Wakes the outbox reporter (cluster mode).
    reporter: std::sync::Arc<tokio::sync::Notify>,
    pidfd_reason: String,
    cgroup_reason: String,
    runtime: RuntimeInfo,
    relist_interval: Duration,
    proc_root: PathBuf,
    pidfd_enabled: bool,
    cgroup: Option<CgroupV2>,
    cgroup_tx: Option<mpsc::UnboundedSender<cgroup::Command>>,
    tx: mpsc::UnboundedSender<Event>,
    model: NodeModel,
    /// What tasks outside the loop may read of the model, republished after every event.
    view: NodeView,
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
    /// Uids of this node's Pod objects (cluster mode).
    api_pods: HashSet<String>,
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
    last_prune: Option<Instant>,
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
                    self.maybe_prune();
                }
                ev = rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.handle(ev);
                }
            }
        }
    }

    /// Apply the journal's retention now and then, off the event loop.
    fn maybe_prune(&mut self) {
        if self
            .last_prune
            .is_some_and(|t| t.elapsed() < PRUNE_INTERVAL)
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let journal = self.journal.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || match journal.prune(SystemTime::now()) {
            Ok(n) => {
                if n > 0 {
                    info!(pruned = n, "journal retention applied");
                }
                if let Ok(stats) = journal.stats() {
                    metrics.set_journal(&stats);
                }
            }
            Err(e) => warn!(error = %e, "journal retention failed"),
        });
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
        self.handle_event(ev);
        self.view.publish(&mut self.model);
        self.metrics.set_watched("pidfd", self.pidfd_watches.len());
        self.metrics
            .set_watched("cgroup", self.cgroup_watches.len());
    }

    fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Snapshot(res) => {
                self.relisting = false;
                if let Some(delay) = self.on_snapshot(res) {
                    self.next_relist = Instant::now() + delay;
                }
            }
            Event::Status { id, fetch, result } => self.on_status(id, fetch, *result),
            Event::Exit { id, source, at } => self.on_exit(&id, source, at),
            Event::ActionDone(done) => self.on_action_done(*done),
            Event::Query(q) => self.answer(q),
            Event::Pod(u) => self.on_pod(u),
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
        // Liveness: the loop got here. Every CRI call has a deadline, so relists keep coming
        // while the loop runs, whether the runtime answers or not.
        self.health
            .progressed(STALL_AFTER.max(self.relist_interval.saturating_mul(3)));
        let (sandboxes, containers) = match res {
            Ok(v) => {
                self.metrics.relisted();
                v
            }
            Err(e) => {
                self.relist_failures += 1;
                if self.runtime_up {
                    warn!(error = %e, "container runtime unreachable; retrying with backoff");
                    self.runtime_up = false;
                    self.health.set_runtime_connected(false);
                    self.metrics.set_runtime_connected(false);
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
        if !diff.removed.is_empty() {
            self.holds.retain(|uid, _| self.model.pod(uid).is_some());
        }
        for id in &diff.exited {
            self.unwatch(id);
            self.metrics.exit_event(ExitSource::Relist.as_str());
            debug!(container_id = %id, source = "relist", "container exit observed");
        }
        for (id, fetch) in diff.fetch {
            self.fetch_status(id, fetch);
        }
        // Re-evaluate every pod: cheap, and it retries actions that failed earlier. Before
        // readiness this does nothing; readiness evaluates every pod once itself.
        let uids: Vec<String> = self.model.pods().map(|p| p.pod.uid.clone()).collect();
        for uid in uids {
            self.evaluate(&uid);
        }
        if self.initial == Initial::Listing {
            self.initial = Initial::Fetching;
            self.check_ready();
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
            self.health.set_synced(true);
            self.resume_pending();
            let uids: Vec<String> = self.model.pods().map(|p| p.pod.uid.clone()).collect();
            for uid in uids {
                self.evaluate(&uid);
            }
        }
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
        let attempt = self.fetching.remove(&id).unwrap_or(0);
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
                    if source.raw_os_error() == Some(libc_esrch())
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
        self.metrics.exit_event(source.as_str());
        self.confirm_exit(id.to_string());
        self.evaluate(&uid);
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
        if self.initial != Initial::Ready {
            // Pending actions from before a restart are resumed first, at readiness.
            return;
        }
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
                let targets: Vec<Target> = targets
                    .into_iter()
                    .filter(|t| !self.in_flight.contains(&t.id))
                    .collect();
                if targets.is_empty() {
                    return;
                }
                let mut ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
                ids.sort_unstable();
                let key = format!(
                    "{}/{}/{}",
                    journal::KIND_STOP_SIDECAR,
                    pod.uid,
                    ids.join("+")
                );
                let inputs = serde_json::json!({
                    "restart_policy": facts.policy,
                    "containers": facts.containers.iter().map(|c| serde_json::json!({
                        "name": c.name,
                        "id": c.id,
                        "role": c.role,
                        "state": c.state.as_str(),
                        "exit_code": match c.state { State::Exited { code } => code, _ => None },
                    })).collect::<Vec<_>>(),
                });
                let action = journal::Action {
                    kind: journal::KIND_STOP_SIDECAR.into(),
                    pod: journal::PodInfo {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        uid: pod.uid.clone(),
                    },
                    containers: targets
                        .iter()
                        .map(|t| journal::ContainerRef {
                            name: t.name.clone(),
                            id: t.id.clone(),
                        })
                        .collect(),
                    decided_at: SystemTime::now(),
                    reason: match facts.policy {
                        Some(p) => format!("main containers done (restartPolicy {p:?})"),
                        None => "main containers exited 0 (restart policy unknown)".into(),
                    },
                    inputs,
                };
                self.launch(key, action, targets);
            }
        }
    }

    fn stop_request(
        &self,
        pod: &crate::cri::kubelet::PodRef,
        target: Target,
        decided_at: SystemTime,
    ) -> Option<StopRequest> {
        let rec = self.model.container(&target.id)?;
        // After a restart, only the grace left since the decision.
        let spent = SystemTime::now()
            .duration_since(decided_at)
            .unwrap_or_default();
        Some(StopRequest {
            pod: pod.clone(),
            grace: rec.meta.grace.saturating_sub(spent),
            pre_stop: rec.meta.pre_stop.clone(),
            target,
        })
    }

    /// Record the action as decided, then stop its sidecars concurrently. The journal makes a
    /// completed action never repeat and a decided one always finish, across crashes.
    fn launch(&mut self, key: String, action: journal::Action, targets: Vec<Target>) {
        let pod = crate::cri::kubelet::PodRef {
            namespace: action.pod.namespace.clone(),
            name: action.pod.name.clone(),
            uid: action.pod.uid.clone(),
        };
        let requests: Vec<StopRequest> = targets
            .into_iter()
            .filter_map(|t| self.stop_request(&pod, t, action.decided_at))
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
        let (cri, tx) = (self.cri.clone(), self.tx.clone());
        let commits = self.commits.clone();
        let failpoint = self.failpoint.clone();
        // Upstream v1.9: with ignore-exit-code sidecars, the Job's phase is written before they
        // are stopped, so the kubelet never reports a phase from the sidecar's exit code.
        let verdict = self.cluster.clone().and_then(|client| {
            let ignoring = requests.iter().any(|r| r.target.ignore_exit_code);
            let patch = crate::cluster::report::verdict_patch(&action, ignoring)?;
            Some((client, patch))
        });
        tokio::spawn(async move {
            let recorded = commits
                .decide(key.clone(), action.clone())
                .await
                .map_err(|e| e.to_string());
            if failpoint.as_deref() == Some("after-decide")
                && matches!(recorded, Ok(Recorded::New(_)))
            {
                eprintln!("nodeward: failpoint after-decide: aborting");
                std::process::abort();
            }
            if let (Some((client, patch)), Ok(Recorded::New(_) | Recorded::Pending)) =
                (&verdict, &recorded)
            {
                crate::cluster::report::patch_verdict(client, &action.pod, patch).await;
            }
            let outcomes = match recorded {
                Ok(Recorded::AlreadyDone) => None,
                // A journal that cannot record must not stop the agent from acting.
                Ok(_) | Err(_) => Some(
                    futures::future::join_all(
                        requests.iter().cloned().map(|r| stop_sidecar(&cri, r)),
                    )
                    .await,
                ),
            };
            let journal_error = recorded.err();
            let _ = tx.send(Event::ActionDone(Box::new(ActionDone {
                key,
                action,
                requests,
                outcomes,
                journal_error,
            })));
        });
    }

    /// Actions decided before a restart and not completed: finish them.
    fn resume_pending(&mut self) {
        let pending = match self.journal.pending() {
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
                .filter(|c| {
                    self.model
                        .container(&c.id)
                        .is_some_and(|r| r.state == State::Running)
                })
                .map(|c| Target {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    ignore_exit_code: self.model.container(&c.id).and_then(|r| r.role)
                        == Some(Role::Sidecar {
                            ignore_exit_code: true,
                        }),
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
            self.launch(key, action, targets);
        }
    }

    /// When the pod's main containers finished: the latest main exit, each by the earliest
    /// evidence of it — the runtime's `finishedAt`, or when the agent saw it (under load the
    /// runtime may record the exit after the agent already acted on it).
    fn mains_finished_at(&self, uid: &str) -> Option<SystemTime> {
        let facts = self.model.pod_facts(uid)?;
        facts
            .containers
            .iter()
            .filter(|c| c.role == Some(Role::Main))
            .map(|c| {
                let rec = self.model.container(&c.id)?;
                let runtime = (rec.finished_at > 0)
                    .then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(rec.finished_at as u64));
                let seen = rec.exit_observed.map(|(_, at)| at);
                match (runtime, seen) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    fn on_action_done(&mut self, done: ActionDone) {
        for r in &done.requests {
            self.in_flight.remove(&r.target.id);
        }
        let Some(outcomes) = done.outcomes else {
            debug!(key = %done.key, "action already completed before; not repeated");
            return;
        };
        let uid = done.action.pod.uid.clone();
        let mains_at = self.mains_finished_at(&uid);
        let ms = |from: Option<SystemTime>, to: SystemTime| -> Option<f64> {
            to.duration_since(from?)
                .ok()
                .map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0)
        };
        let mut containers = Vec::new();
        let mut failures = Vec::new();
        for o in &outcomes {
            let req = &o.request;
            let exit_to_stop_ms = ms(mains_at, o.stop_sent_at);
            let mut co = journal::ContainerOutcome {
                name: req.target.name.clone(),
                id: req.target.id.clone(),
                exit_code: None,
                exit_code_ignored: req.target.ignore_exit_code,
                exit_to_stop_ms,
                exit_to_exit_ms: None,
                prestop: o.pre_stop.to_string(),
            };
            match &o.result {
                Ok(final_status) => {
                    if let Some(st) = final_status {
                        if self.model.apply_status(st, None).is_some() {
                            self.unwatch(&req.target.id);
                        }
                        co.exit_code = Some(st.exit_code);
                        co.exit_to_exit_ms = (st.finished_at > 0)
                            .then(|| {
                                SystemTime::UNIX_EPOCH + Duration::from_nanos(st.finished_at as u64)
                            })
                            .and_then(|f| ms(mains_at, f));
                    }
                    self.metrics.sidecar_terminated(journal::RESULT_STOPPED);
                    if let Some(v) = co.exit_to_stop_ms {
                        self.metrics.observe_latency("exit_to_stop", v / 1000.0);
                    }
                    if let Some(v) = co.exit_to_exit_ms {
                        self.metrics
                            .observe_latency("exit_to_sidecar_exit", v / 1000.0);
                    }
                    info!(
                        pod_namespace = %req.pod.namespace,
                        pod_name = %req.pod.name,
                        pod_uid = %req.pod.uid,
                        container = %req.target.name,
                        container_id = %req.target.id,
                        decision = "stop_sidecar",
                        runtime = %self.runtime.name,
                        prestop = %o.pre_stop,
                        grace_s = crate::cri::client::grace_seconds(o.stop_grace),
                        exit_to_stop_ms = co.exit_to_stop_ms,
                        exit_to_sidecar_exit_ms = co.exit_to_exit_ms,
                        sidecar_exit_code = co.exit_code,
                        exit_code_ignored = req.target.ignore_exit_code,
                        result = "stopped",
                        "sidecar stopped"
                    );
                }
                Err(e) => {
                    self.metrics.sidecar_terminated(journal::RESULT_FAILED);
                    failures.push(format!("{}: {e}", req.target.name));
                    warn!(
                        pod_namespace = %req.pod.namespace,
                        pod_name = %req.pod.name,
                        pod_uid = %req.pod.uid,
                        container = %req.target.name,
                        container_id = %req.target.id,
                        decision = "stop_sidecar",
                        prestop = %o.pre_stop,
                        exit_to_stop_ms = co.exit_to_stop_ms,
                        error = %e,
                        result = "failed",
                        "stopping sidecar failed; retrying at the next relist"
                    );
                }
            }
            containers.push(co);
        }
        if let Some(e) = &done.journal_error {
            warn!(key = %done.key, error = %e, "journal could not record the decision; acted anyway");
        }
        if !failures.is_empty() {
            // Not completed: the next relist decides again and the same key is re-issued.
            return;
        }
        let outcome = journal::Outcome {
            result: journal::RESULT_STOPPED.into(),
            message: String::new(),
            containers,
            finished_at: SystemTime::now(),
        };
        // Recording is an fsync, shared with concurrent writes: off the event loop.
        let (journal, commits, live, metrics) = (
            self.journal.clone(),
            self.commits.clone(),
            self.live.clone(),
            self.metrics.clone(),
        );
        let reporter = self.cluster.is_some().then(|| self.reporter.clone());
        let key = done.key;
        tokio::spawn(async move {
            match commits.complete(key.clone(), outcome).await {
                Ok(event) => {
                    let _ = live.send(crate::report::api::to_pb(&event));
                    if let Some(r) = &reporter {
                        r.notify_one();
                    }
                }
                Err(e) => warn!(key = %key, error = %e, "journal could not record the outcome"),
            }
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(stats) = journal.stats() {
                    metrics.set_journal(&stats);
                }
            })
            .await;
        });
    }

    fn on_pod(&mut self, update: crate::cluster::pods::PodUpdate) {
        use crate::cluster::pods::PodUpdate;
        match update {
            PodUpdate::Upsert { pod, phase, spec } => {
                self.api_pods.insert(pod.uid.clone());
                let terminal = phase == "Succeeded" || phase == "Failed";
                if self.model.set_pod_spec(&pod.uid, spec) && !terminal {
                    self.evaluate(&pod.uid);
                }
            }
            PodUpdate::Remove { uid } => {
                self.api_pods.remove(&uid);
                self.model.remove_pod_spec(&uid);
            }
            PodUpdate::Resync { uids } => {
                let keep: HashSet<String> = uids.into_iter().collect();
                for uid in self.api_pods.difference(&keep) {
                    self.model.remove_pod_spec(uid);
                }
                self.api_pods = keep;
                self.pods_listed.done();
            }
        }
    }

    fn answer(&mut self, q: Query) {
        match q {
            Query::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Query::Pods(reply) => {
                let _ = reply.send(self.pods());
            }
        }
    }

    fn status(&self) -> pb::AgentStatus {
        let running = self
            .model
            .containers()
            .filter(|c| c.state == State::Running)
            .count();
        let stats = self.journal.stats().unwrap_or_default();
        pb::AgentStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            node: self.node_name.clone(),
            mode: if self.cluster.is_some() {
                "cluster"
            } else {
                "standalone"
            }
            .into(),
            runtime_name: self.runtime.name.clone(),
            runtime_version: self.runtime.version.clone(),
            runtime_socket: self.runtime.socket.display().to_string(),
            runtime_connected: self.runtime_up,
            ready: self.initial == Initial::Ready,
            uptime_seconds: self.started.elapsed().as_secs(),
            watchers: vec![
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
            ],
            pods: self.model.pods().count() as u32,
            containers: self.model.containers().count() as u32,
            running_containers: running as u32,
            actions_in_flight: self.in_flight.len() as u32,
            last_event_seq: self.journal.last_seq(),
            outbox: stats.outbox,
        }
    }

    fn pods(&self) -> Vec<pb::Pod> {
        let mut pods: Vec<pb::Pod> = self
            .model
            .pods()
            .filter_map(|p| {
                let facts = self.model.pod_facts(&p.pod.uid)?;
                let decision = match decide(&facts) {
                    Decision::Hold(h) => h.as_str().to_string(),
                    Decision::Stop(_) => "stop".to_string(),
                };
                let containers = facts
                    .containers
                    .iter()
                    .filter_map(|f| Some((f.role, self.model.container(&f.id)?)))
                    .map(|(role, c)| pb::Container {
                        name: c.meta.name.clone(),
                        id: c.id.clone(),
                        role: match role {
                            Some(Role::Main) => "main",
                            Some(Role::Sidecar { .. }) => "sidecar",
                            Some(Role::Other) | None => "other",
                        }
                        .into(),
                        state: c.state.as_str().into(),
                        exit_code: match c.state {
                            State::Exited { code } => code,
                            _ => None,
                        },
                        restart_count: c.meta.restart_count,
                        exit_code_ignored: role
                            == Some(Role::Sidecar {
                                ignore_exit_code: true,
                            }),
                        exit_source: c
                            .exit_observed
                            .map(|(s, _)| s.as_str().to_string())
                            .unwrap_or_default(),
                    })
                    .collect();
                Some(pb::Pod {
                    namespace: p.pod.namespace.clone(),
                    name: p.pod.name.clone(),
                    uid: p.pod.uid.clone(),
                    restart_policy: p
                        .restart_policy
                        .map(|r| format!("{r:?}"))
                        .unwrap_or_default(),
                    sidecar_decision: decision,
                    containers,
                })
            })
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }
}

/// What a stop action task reports back.
struct ActionDone {
    key: String,
    action: journal::Action,
    requests: Vec<StopRequest>,
    /// `None` when the journal says the action was already completed.
    outcomes: Option<Vec<StopOutcome>>,
    journal_error: Option<String>,
}

fn libc_esrch() -> i32 {
    rustix::io::Errno::SRCH.raw_os_error()
}
