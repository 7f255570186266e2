//! HTTP endpoints for operators: `/metrics` (OpenMetrics), `/healthz` (liveness: a relist of the
//! runtime succeeded recently, as the kubelet's PLEG health check) and `/readyz` (readiness: the
//! runtime is connected, the initial sync is done, and in cluster mode every API watch has
//! completed its first list).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::metrics::{Exposition, OPENMETRICS_CONTENT_TYPE};

/// Readiness flags shared between the agent (which sets them) and the HTTP server.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<HealthFlags>,
}

/// The kubelet's PLEG is unhealthy after 3 min without a relist (`relistThreshold`).
pub const STALL_AFTER: Duration = Duration::from_secs(180);

#[derive(Debug, Default)]
struct HealthFlags {
    runtime_connected: AtomicBool,
    synced: AtomicBool,
    /// When the event loop last relisted the runtime successfully, and after how long
    /// without one the agent is stalled.
    progress: Mutex<Option<(Instant, Duration)>>,
    /// API watches readiness waits for, in registration order.
    watches: Mutex<Vec<(&'static str, Listed)>>,
}

/// One API watch that readiness waits for; [`Listed::done`] once its first list is complete.
/// Later interruptions (an API outage) do not make the agent unready again: it keeps working
/// on what it knows, and the watch relists by itself.
#[derive(Clone, Debug, Default)]
pub struct Listed(Arc<AtomicBool>);

impl Listed {
    pub fn done(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_runtime_connected(&self, connected: bool) {
        self.inner
            .runtime_connected
            .store(connected, Ordering::Release);
    }

    /// The initial sync with the runtime (first relist) is done.
    pub fn set_synced(&self, synced: bool) {
        self.inner.synced.store(synced, Ordering::Release);
    }

    /// Make readiness wait for `what` (e.g. `Pods list`: the first list of the Pod watch).
    pub fn expect(&self, what: &'static str) -> Listed {
        let listed = Listed::default();
        self.inner
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((what, listed.clone()));
        listed
    }

    /// A relist succeeded now; the agent is stalled if the next takes over `stall_after`.
    pub fn progressed(&self, stall_after: Duration) {
        *self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), stall_after));
    }

    /// Why the agent is not alive (its loop handled no relist for too long), or `None`. Before
    /// the first relist it is alive: starting is readiness's business.
    pub fn stalled_reason(&self) -> Option<String> {
        let progress = *self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (at, limit) = progress?;
        let since = at.elapsed();
        (since > limit).then(|| {
            format!(
                "no successful relist for {} s (limit {} s): the event loop or the runtime is stuck",
                since.as_secs(),
                limit.as_secs()
            )
        })
    }

    /// Ready on the node alone: the runtime is connected and the initial sync done. What
    /// systemd's `READY=1` means: the agent must start while the API server is unreachable.
    pub fn node_ready(&self) -> bool {
        self.node_not_ready_reason().is_none()
    }

    fn node_not_ready_reason(&self) -> Option<&'static str> {
        if !self.inner.runtime_connected.load(Ordering::Acquire) {
            Some("runtime not connected")
        } else if !self.inner.synced.load(Ordering::Acquire) {
            Some("initial sync not done")
        } else {
            None
        }
    }

    /// Why the agent is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(reason) = self.node_not_ready_reason() {
            return Some(reason.into());
        }
        let watches = self.inner.watches.lock().unwrap_or_else(|p| p.into_inner());
        let waiting: Vec<&str> = watches
            .iter()
            .filter(|(_, l)| !l.is_done())
            .map(|(what, _)| *what)
            .collect();
        (!waiting.is_empty()).then(|| format!("waiting for: {}", waiting.join(", ")))
    }
}

#[derive(Clone)]
struct AppState {
    metrics: std::sync::Arc<dyn Exposition>,
    health: Health,
}

/// The routes, for embedding in another server or for tests.
pub fn router(metrics: impl Exposition, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics: std::sync::Arc::new(metrics),
            health,
        })
}

/// How long in-flight requests may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What one client may hold of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once. A scraper and the kubelet's probes need a handful; past the
    /// cap a new connection waits in the kernel's accept backlog instead of costing memory.
    pub max_connections: usize,
    /// A client must send its request headers within this time, or the connection is closed (a
    /// slow or stuck client cannot hold a connection slot).
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Serve the endpoints on `listener` until `shutdown` resolves (then finish in-flight requests),
/// within the default [`Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: impl Exposition,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        router(metrics, health),
        Limits::default(),
        shutdown,
    )
    .await
}

/// Serve `app` over HTTP/1 on `listener` until `shutdown` resolves, within `limits`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    accept_loop(listener, app, None, limits, shutdown).await
}

/// [`serve_with`] over TLS: the handshake, too, must finish within the header timeout.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: tokio_rustls::TlsAcceptor,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    accept_loop(listener, app, Some(tls), limits, shutdown).await
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    crate::telemetry::nofile::count_if_exhausted("http_accept", &e);
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (app, watcher, tls) = (app.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, app, limits, watcher).await,
                Some(tls) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await
                    {
                        serve_connection(stream, app, limits, watcher).await;
                    }
                }
            }
            drop(slot);
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}

async fn serve_connection<I>(
    io: I,
    app: Router,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let _ = watcher.watch(conn).await;
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    match state.metrics.try_encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.health.stalled_reason() {
        None => (StatusCode::OK, "ok".into()),
        Some(reason) => (StatusCode::INTERNAL_SERVER_ERROR, reason),
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.health.not_ready_reason() {
        None => (StatusCode::OK, "ok".into()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// Parse a listen address: `:PORT` (all IPv4 interfaces, as Go-style flags such as
/// kruise-daemon's), `IP:PORT`, `[IPv6]:PORT`, or `IPv6:PORT` without brackets (what
/// `$(HOST_IP):PORT` gives in a manifest on an IPv6 node: the last group is the port).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .map(|port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
            .map_err(|e| format!("invalid listen address {s:?}: port: {e}"));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some((ip, port)) = s.rsplit_once(':')
        && let (Ok(ip), Ok(port)) = (ip.parse::<std::net::Ipv6Addr>(), port.parse::<u16>())
    {
        return Ok(SocketAddr::from((ip, port)));
    }
    s.parse::<SocketAddr>().map_err(|e| {
        format!("invalid listen address {s:?}: {e} (expected :PORT, IP:PORT or [IPv6]:PORT)")
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn liveness_fails_when_relists_stop_being_handled() {
        let health = Health::new();
        assert_eq!(
            health.stalled_reason(),
            None,
            "alive before the first relist"
        );
        health.progressed(Duration::from_secs(3600));
        assert_eq!(health.stalled_reason(), None);
        health.progressed(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let reason = health.stalled_reason().unwrap();
        assert!(reason.contains("no successful relist"), "{reason}");
    }

    #[test]
    fn parse_addr_accepts_go_style_and_std_forms() {
        assert_eq!(
            parse_addr(":10221").unwrap(),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 10221))
        );
        assert_eq!(
            parse_addr("127.0.0.1:0").unwrap(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
        );
        assert_eq!(
            parse_addr("[::1]:9000").unwrap(),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 9000))
        );
        assert_eq!(
            parse_addr("fd00::1:10221").unwrap(),
            SocketAddr::from(("fd00::1".parse::<Ipv6Addr>().unwrap(), 10221))
        );
        for bad in [
            "",
            ":",
            ":x",
            ":70000",
            "10221",
            "localhost:80",
            "1.2.3.4",
            "[::1]",
        ] {
            let err = parse_addr(bad).unwrap_err();
            assert!(err.contains("invalid listen address"), "{bad:?}: {err}");
        }
    }

    /// One HTTP/1.1 GET over a raw TCP connection; returns (status, headers, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    /// A client that connects and sends nothing holds a connection slot only until the header
    /// timeout; the next client is served after it.
    #[tokio::test]
    async fn a_silent_client_is_cut_at_the_header_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(crate::telemetry::metrics::Metrics::new(), Health::new());
        let limits = Limits {
            max_connections: 1,
            header_timeout: Duration::from_millis(300),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(listener, app, limits, async {
            let _ = stop_rx.await;
        }));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let (status, _, body) = get(addr, "/healthz").await;
        let waited = started.elapsed();
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(
            waited >= Duration::from_millis(200),
            "the second client waited for the only slot: {waited:?}"
        );
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), silent.read_to_end(&mut rest))
            .await
            .expect("the silent connection is closed")
            .unwrap_or(0);
        assert!(
            !String::from_utf8_lossy(&rest[..n]).contains("200 OK"),
            "nothing served to the silent client"
        );
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn endpoints_over_a_real_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = crate::telemetry::metrics::Metrics::new();
        let health = Health::new();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics.clone(), health.clone(), async {
            let _ = stop_rx.await;
        }));

        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "runtime not connected"));
        health.set_runtime_connected(true);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "initial sync not done"));
        health.set_synced(true);
        assert_eq!(health.not_ready_reason(), None);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (pods, crrs) = (health.expect("Pods list"), health.expect("CRRs list"));
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "waiting for: Pods list, CRRs list")
        );
        pods.done();
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "waiting for: CRRs list"));
        assert!(health.node_ready());
        crrs.done();
        assert_eq!(health.not_ready_reason(), None);

        metrics.sidecar_terminated("failed");
        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{head}"
        );
        assert!(
            body.lines()
                .any(|l| l == "nodeward_sidecar_terminations_total{result=\"failed\"} 1"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));

        let (status, _, _) = get(addr, "/nope").await;
        assert_eq!(status, 404);

        stop_tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }
}
