//! The agent: wiring, and one loop that routes events. The node tracker (`node::tracker`) keeps the
//! node model current; every pod it reports changed is handed at once, in the same turn, to the
//! capabilities that decide on the model (today the Job sidecar terminator); their finished work
//! comes back as events too. Capabilities that follow API objects (CRR executor, image puller,
//! pod prober) run their own tasks and read the model through the `NodeView`; container meta
//! runs its own task too, fed the Pod watch's updates by this loop. Slow work always runs in spawned
//! tasks, so the loop never blocks.

mod config;
mod systemd;

pub use config::Config;

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cri::{CriClient, RuntimeInfo};
use crate::journal::Journal;
use crate::node::ExitSource;
use crate::node::cgroup::{self, CgroupV2};
use crate::node::model::State;
use crate::node::pidfd;
use crate::node::pods::PodUpdate;
use crate::node::tracker::{NodeEvent, Tracker, Watchers};
use crate::node::view::NodeView;
use crate::report::api::{ApiService, Query};
use crate::report::pb;
use crate::sidecar::{self, Terminator};
use crate::telemetry::http::{Health, Listed};
use crate::telemetry::metrics::Metrics;

enum Event {
    Node(NodeEvent),
    /// This node's Pods changed (cluster mode).
    Pod(PodUpdate),
    /// A sidecar stop finished (or was found already done in the journal).
    Sidecar(Box<sidecar::Done>),
    /// A question from the local API.
    Query(Query),
}

impl From<NodeEvent> for Event {
    fn from(ev: NodeEvent) -> Self {
        Self::Node(ev)
    }
}

impl From<sidecar::Done> for Event {
    fn from(done: sidecar::Done) -> Self {
        Self::Sidecar(Box::new(done))
    }
}

/// The runtime, waited for with backoff (1 s doubling to 30 s) while none answers: at boot the
/// agent may start before containerd.
async fn wait_for_runtime(cfg: &Config) -> crate::cri::RuntimeInfo {
    let mut delays = crate::backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));
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
    let mut container_meta = None;
    if let Some(client) = &cfg.cluster {
        info!(node = %cfg.node_name, feature_gates = %cfg.gates, "cluster mode: watching this node's Pods, reporting upstream");
        let (pod_tx, mut pod_rx) = mpsc::unbounded_channel();
        pods_listed = health.expect("Pods list");
        tokio::spawn(crate::node::pods::watch(
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
        tokio::spawn(crate::sidecar::report::run_outbox(
            client.clone(),
            cfg.node_name.clone(),
            journal.clone(),
            reporter.clone(),
            metrics.clone(),
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
            first_list: health.expect("ContainerRecreateRequests list"),
        }));
        if cfg.gates.image_pull {
            tokio::spawn(crate::imagepull::run(
                client.clone(),
                cri.clone(),
                metrics.clone(),
                crate::imagepull::Config {
                    node_name: cfg.node_name.clone(),
                    secret_namespace: cfg.pull_secret_namespace.clone(),
                    max_concurrent_pulls: cfg.max_concurrent_pulls,
                    first_list: health.expect("NodeImage list"),
                },
            ));
        }
        if cfg.gates.container_meta {
            container_meta = Some(crate::containermeta::start(crate::containermeta::Config {
                client: client.clone(),
                cri: cri.clone(),
                runtime: runtime.name.clone(),
                node_name: cfg.node_name.clone(),
                view: view.clone(),
                journal: journal.clone(),
                commits: commits.clone(),
                metrics: metrics.clone(),
            }));
        }
        if cfg.gates.pod_probe {
            tokio::spawn(crate::podprobe::run(
                client.clone(),
                cri.clone(),
                view.clone(),
                crate::podprobe::Config {
                    node_name: cfg.node_name.clone(),
                    metrics: metrics.clone(),
                    first_list: health.expect("NodePodProbe list"),
                },
            ));
        }
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
        pidfd = %describe(&pidfd_state, |()| "available".to_string()),
        cgroup_events = %describe(&cgroup, |c| format!("cgroup2 at {}", c.mount.display())),
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
                        cgroup::Notice::Emptied(id) => NodeEvent::Exit {
                            id,
                            source: ExitSource::Cgroup,
                            at: SystemTime::now(),
                        },
                        cgroup::Notice::Created(id) => NodeEvent::Discovered(id),
                    };
                    if fwd.send(Event::Node(ev)).is_err() {
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

    let terminator = Terminator::new(
        sidecar::Config {
            cri: cri.clone(),
            runtime: runtime.name.clone(),
            journal: journal.clone(),
            commits,
            live: live_tx,
            metrics: metrics.clone(),
            cluster: cfg.cluster.clone().map(|c| (c, reporter)),
            failpoint: cfg.failpoint.clone(),
            enabled: cfg.gates.sidecar_terminator,
        },
        tx.clone(),
    );
    let tracker = Tracker::new(
        cri,
        tx,
        metrics.clone(),
        health.clone(),
        cfg.relist_interval,
        cfg.stall_after,
        Watchers {
            pidfd: pidfd_state,
            cgroup,
            cgroup_tx,
            proc_root: cfg.proc_root.clone(),
        },
        view,
        pods_listed,
    );
    let mut agent = Agent {
        tracker,
        terminator,
        container_meta,
        node_name: cfg.node_name.clone(),
        cluster: cfg.cluster.is_some(),
        runtime,
        journal,
        metrics,
        last_prune: None,
    };
    agent.event_loop(rx, shutdown.as_mut()).await;
    notifier.stopping();
    let _ = stop_tx.send(true);
    // Let the servers finish in-flight requests and remove the API socket.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

fn describe<T>(r: &Result<T, String>, ok: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => format!("unavailable ({e})"),
    }
}

/// How often the journal's retention is applied.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

struct Agent {
    tracker: Tracker<Event>,
    terminator: Terminator<Event>,
    /// Container meta follows the Pod watch (cluster mode only).
    container_meta: Option<crate::containermeta::Handle>,
    node_name: String,
    cluster: bool,
    runtime: RuntimeInfo,
    journal: Journal,
    metrics: Metrics,
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
            let next_relist = self.tracker.next_relist();
            tokio::select! {
                _ = &mut shutdown => {
                    info!(in_flight = self.terminator.in_flight(), "shutting down");
                    return;
                }
                _ = tokio::time::sleep_until(next_relist.unwrap_or_else(Instant::now)), if next_relist.is_some() => {
                    self.tracker.start_relist();
                    self.maybe_prune();
                }
                ev = rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.handle(ev);
                    self.tracker.publish();
                }
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Node(ev) => {
                let changes = self.tracker.handle(ev);
                let model = self.tracker.model();
                if changes.pods_gone {
                    self.terminator.forget_gone(model);
                }
                if changes.ready {
                    // Pending actions from before a restart first, then every pod.
                    self.terminator.resume_pending(model);
                    let uids: Vec<String> = model.pods().map(|p| p.pod.uid.clone()).collect();
                    self.evaluate(&uids);
                } else {
                    self.evaluate(&changes.pods);
                }
            }
            Event::Pod(update) => {
                if let Some(meta) = &self.container_meta {
                    meta.observe(&update);
                }
                if let Some(uid) = self.tracker.on_pod(update) {
                    self.evaluate(&[uid]);
                }
            }
            Event::Sidecar(done) => {
                for st in self.terminator.on_done(*done, self.tracker.model()) {
                    self.tracker.apply_final_status(&st);
                }
            }
            Event::Query(Query::Status(reply)) => {
                let _ = reply.send(self.status());
            }
            Event::Query(Query::Pods(reply)) => {
                let _ = reply.send(sidecar::report::pods(self.tracker.model()));
            }
        }
    }

    /// Hand changed pods to the capabilities that decide on the node model. Nothing is decided
    /// before the model is complete (readiness resumes and decides for every pod itself).
    fn evaluate(&mut self, uids: &[String]) {
        if !self.tracker.is_ready() {
            return;
        }
        for uid in uids {
            self.terminator.evaluate(self.tracker.model(), uid);
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

    fn status(&self) -> pb::AgentStatus {
        let model = self.tracker.model();
        let running = model
            .containers()
            .filter(|c| c.state == State::Running)
            .count();
        let stats = self.journal.stats().unwrap_or_default();
        pb::AgentStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            node: self.node_name.clone(),
            mode: if self.cluster {
                "cluster"
            } else {
                "standalone"
            }
            .into(),
            runtime_name: self.runtime.name.clone(),
            runtime_version: self.runtime.version.clone(),
            runtime_socket: self.runtime.socket.display().to_string(),
            runtime_connected: self.tracker.runtime_up(),
            ready: self.tracker.is_ready(),
            uptime_seconds: self.tracker.uptime().as_secs(),
            watchers: self.tracker.watchers(),
            pods: model.pods().count() as u32,
            containers: model.containers().count() as u32,
            running_containers: running as u32,
            actions_in_flight: self.terminator.in_flight() as u32,
            last_event_seq: self.journal.last_seq(),
            outbox: stats.outbox,
        }
    }
}
