//! An in-memory Kubernetes API server for tests and benchmarks, spoken to by the real
//! `kube::Client` over plain HTTP on 127.0.0.1.
//!
//! It implements the apiserver semantics nodeward relies on: discovery, CRUD with `Status`
//! errors (404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid), a global resourceVersion with
//! optimistic concurrency, `metadata.generation`, the status subresource split, JSON/merge/
//! strategic-merge patches, server-side apply with field-ownership conflicts, finalizers and
//! `deletionTimestamp`, graceful pod deletion, ownerReference garbage collection, namespace
//! deletion, list pagination, label and field selectors, and watches (history replay, 410
//! Gone, bookmarks, `timeoutSeconds`, `sendInitialEvents`, selector transitions as
//! ADDED/DELETED). Tests can inject faults (`set_unavailable`, `fail_next`) and read a request
//! log.
//!
//! ```ignore
//! let server = ApiServer::start().await?;
//! let pods: kube::Api<Pod> = kube::Api::default_namespaced(server.client());
//! ```
//!
//! The server runs on a runtime of its own (a background thread pool), so one instance can be
//! shared by many `#[tokio::test]` runtimes of a binary ([`ApiServer::shared`]).

mod gc;
mod http;
mod kinds;
mod merge;
mod selector;
mod store;
mod util;
mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use kinds::ResourceMeta;
use store::{Fault, Server, WriteCtx};

/// Tunables. `Default` is what tests want; benchmarks may raise the limits.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Changes kept per resource for watch resumption; older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// Interval of BOOKMARK events on watches with `allowWatchBookmarks=true`.
    pub bookmark_interval: Duration,
    /// Events queued per watcher before it is closed as too slow (the client re-watches).
    pub watch_buffer: usize,
    /// Namespaced objects need an existing, non-terminating namespace (`default`,
    /// `kube-system`, `kube-public` and `kube-node-lease` exist from the start).
    pub strict_namespaces: bool,
    /// Deleting a pod bound to a node sets `deletionTimestamp` + grace period and keeps it until
    /// it is deleted again with grace 0 (what the kubelet does); unbound or terminal pods go at
    /// once.
    pub pod_graceful_deletion: bool,
    /// The GC deletes objects whose owners (of kinds served here) do not exist.
    pub gc_dangling_owner_references: bool,
    /// Register the apps.kruise.io/v1alpha1 kinds nodeward serves (ContainerRecreateRequest,
    /// ImagePullJob, ImageListPullJob, NodeImage, NodePodProbe, PodProbeMarker; v1alpha1 only:
    /// nodeward's clients speak it) and create the `nodeward-system` namespace:
    /// packaging/kubernetes applied.
    pub kruise_crds: bool,
    /// Worker threads of the server's own runtime.
    pub worker_threads: usize,
    /// Requests kept in the log (the oldest are dropped); 0 disables the log.
    pub request_log_limit: usize,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            watch_buffer: 100_000,
            strict_namespaces: true,
            pod_graceful_deletion: true,
            gc_dangling_owner_references: true,
            kruise_crds: true,
            worker_threads: 2,
            request_log_limit: 1_000_000,
        }
    }
}

/// A resource to serve (see [`ApiServer::register_resource`]).
#[derive(Debug, Clone)]
pub struct ResourceSpec {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Serve a `/status` subresource (and split status from the main resource).
    pub status_subresource: bool,
    pub short_names: Vec<String>,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string (still percent-encoded).
    pub query: String,
    pub content_type: Option<String>,
    /// apiserver's verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    pub version: String,
    /// Plural resource name (`pods`), empty for discovery paths.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    /// The object's name; for a create, the created object's (as in an audit event's objectRef).
    pub name: Option<String>,
    pub field_manager: Option<String>,
    pub user_agent: Option<String>,
    /// The bearer token's user (a service account of the packaged RBAC); `None` for the tests'
    /// own clients, which are cluster-admin.
    pub user: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// When the request arrived.
    pub received: SystemTime,
    /// When the answer was ready (for a write: after it was stored and sent to the watchers).
    pub answered: SystemTime,
}

impl RequestRecord {
    /// create, update, patch, delete or deletecollection.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// Selects requests for [`ApiServer::fail_next`] and [`ApiServer::count_requests`]. Unset
/// fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatcher {
    pub method: Option<String>,
    pub verb: Option<String>,
    pub group: Option<String>,
    pub resource: Option<String>,
    /// `Some(None)`: only the main resource; `Some(Some("status"))`: only `/status`.
    pub subresource: Option<Option<String>>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The authenticated user (a service account's `system:serviceaccount:…` name).
    pub user: Option<String>,
}

impl RequestMatcher {
    /// Matches every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// HTTP method (`PATCH`), case-insensitive.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// apiserver verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …).
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_owned());
        self
    }

    /// `pods` (the main resource only), `pods/status`, or `pods/*` (any subresource). A
    /// group may be given as `leases.coordination.k8s.io`.
    pub fn resource(mut self, resource: &str) -> Self {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, "*")) => (r, None),
            Some((r, s)) => (r, Some(Some(s.to_owned()))),
            None => (resource, Some(None)),
        };
        let (plural, group) = match resource.split_once('.') {
            Some((p, g)) => (p, Some(g.to_owned())),
            None => (resource, None),
        };
        self.resource = Some(plural.to_owned());
        self.group = group;
        self.subresource = sub;
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    pub fn matches(&self, r: &RequestRecord) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| r.method.eq_ignore_ascii_case(m))
            && self.verb.as_ref().is_none_or(|v| *v == r.verb)
            && self.group.as_ref().is_none_or(|g| *g == r.group)
            && self.resource.as_ref().is_none_or(|x| *x == r.resource)
            && self
                .subresource
                .as_ref()
                .is_none_or(|s| *s == r.subresource)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| Some(n) == r.namespace.as_ref())
            && self
                .name
                .as_ref()
                .is_none_or(|n| Some(n) == r.name.as_ref())
            && self
                .user
                .as_ref()
                .is_none_or(|u| Some(u) == r.user.as_ref())
    }
}

/// The name of the API server's runtime threads.
pub const APISERVER_THREAD: &str = "fake-apiserver";

/// A running fake API server. Dropping it stops it (open connections are closed).
pub struct ApiServer {
    server: Arc<Server>,
    addr: SocketAddr,
    runtime: Mutex<Option<Runtime>>,
}

impl ApiServer {
    /// Starts a server with default options on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> Result<ApiServer> {
        Self::start_with(ApiServerOptions::default()).await
    }

    pub async fn start_with(opts: ApiServerOptions) -> Result<ApiServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            .thread_name(APISERVER_THREAD)
            .enable_all()
            .build()
            .context("building the API server's runtime")?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the API server to 127.0.0.1")?;
        listener
            .set_nonblocking(true)
            .context("making the API server's listener non-blocking")?;
        let addr = listener
            .local_addr()
            .context("reading the API server's address")?;
        let (gc_tx, gc_rx) = tokio::sync::mpsc::unbounded_channel();
        let server = Arc::new(Server::new(opts.clone(), gc_tx));
        for meta in kinds::builtin_resources() {
            server.register(meta);
        }
        if opts.kruise_crds {
            for meta in kinds::kruise_resources() {
                server.register(meta);
            }
        }
        let namespaces = server
            .resource("", "v1", "namespaces")
            .context("the namespaces resource is registered")?;
        let mut initial = vec!["default", "kube-system", "kube-public", "kube-node-lease"];
        if opts.kruise_crds {
            initial.push(super::rbac::NAMESPACE);
        }
        for ns in initial {
            server
                .create(
                    &namespaces,
                    None,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                    &WriteCtx::internal("kube-apiserver"),
                    None,
                )
                .map_err(|e| anyhow::anyhow!("creating namespace {ns}: {e}"))?;
        }
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let app = http::router(server.clone());
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        runtime.spawn(gc::run(server.clone(), gc_rx));
        ready_rx
            .await
            .context("the API server task ended before listening")?
            .context("registering the API server's listener")?;
        Ok(ApiServer {
            server,
            addr,
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// Starts a server from synchronous code or from within any runtime (the start runs on a
    /// helper thread).
    pub fn start_blocking() -> Result<ApiServer> {
        std::thread::Builder::new()
            .name("apiserver-start".into())
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a runtime to start the API server")?;
                rt.block_on(ApiServer::start())
            })
            .context("spawning the API server's start thread")?
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the API server's start thread panicked")))
    }

    /// [`ApiServer::start_blocking`] for `OnceLock::get_or_init` in a test binary that shares
    /// one server between its tests. Panics when the server cannot start.
    pub fn shared_blocking() -> ApiServer {
        ApiServer::start_blocking()
            .unwrap_or_else(|e| panic!("the shared API server failed to start: {e:#}"))
    }

    /// One server per process, started on first use, usable from any runtime. Panics when it
    /// cannot start (it is meant for tests and benchmarks).
    pub fn shared() -> &'static ApiServer {
        static SHARED: OnceLock<Result<ApiServer, String>> = OnceLock::new();
        let server =
            SHARED.get_or_init(|| ApiServer::start_blocking().map_err(|e| format!("{e:#}")));
        match server {
            Ok(s) => s,
            Err(e) => panic!("the shared API server failed to start: {e}"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client config for this server: no auth, default namespace `default`, kube's default
    /// retry policy (it retries 429/503/504 with backoff; set `default_retry = false` to see
    /// such errors at once).
    pub fn config(&self) -> kube::Config {
        let uri = self
            .url()
            .parse()
            .unwrap_or_else(|e| panic!("{} is a valid URI: {e}", self.url()));
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        config
    }

    /// A client for this server. Must be called within a tokio runtime (kube spawns its
    /// request buffer there).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config())
            .unwrap_or_else(|e| panic!("building a kube client for {}: {e}", self.url()))
    }

    /// A kubeconfig for the server; with `service_account` (one of the packaged RBAC's, e.g.
    /// [`rbac::AGENT`](super::rbac::AGENT)) every request is authorized as that account.
    fn kubeconfig_yaml_as(&self, service_account: Option<&str>) -> String {
        let user = match service_account {
            Some(sa) => format!("{{token: \"{}\"}}", super::rbac::user(sa)),
            None => "{}".into(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {user}\npreferences: {{}}\n",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        self.write_kubeconfig_as(path, None)
    }

    /// [`kubeconfig_yaml_as`](Self::kubeconfig_yaml_as) written to `path`.
    fn write_kubeconfig_as(
        &self,
        path: impl AsRef<Path>,
        service_account: Option<&str>,
    ) -> Result<()> {
        let path = path.as_ref();
        // Written aside and renamed: parallel tests may write the same file while a process
        // reads it.
        let tmp = path.with_extension(format!("tmp-{:?}", std::thread::current().id()));
        std::fs::write(&tmp, self.kubeconfig_yaml_as(service_account))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing the kubeconfig {}", path.display()))
    }

    /// A kubeconfig acting as service account `sa` of the packaged RBAC, written as
    /// `dir/kubeconfig-<sa>`; returns its path.
    pub fn service_account_kubeconfig(&self, dir: &Path, sa: &str) -> Result<PathBuf> {
        let path = dir.join(format!("kubeconfig-{sa}"));
        self.write_kubeconfig_as(&path, Some(sa))?;
        Ok(path)
    }

    /// Requests refused to a service account's token (401, 403), as messages.
    pub fn denials(&self) -> Vec<String> {
        self.server
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Panics listing the requests refused to a service account's token, if any: a call the
    /// code makes that the packaged RBAC does not allow.
    pub fn assert_no_denials(&self) {
        let denied = self.denials();
        assert!(denied.is_empty(), "the packaged RBAC denied: {denied:#?}");
    }

    /// Serves a custom resource kind (with a status subresource), as a CRD would.
    pub fn register_crd(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        self.register_resource(ResourceSpec {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: true,
            short_names: Vec::new(),
        });
    }

    /// Serves a resource. Kinds in the core or a k8s.io group get built-in semantics where
    /// the server has them; others behave as custom resources.
    pub fn register_resource(&self, spec: ResourceSpec) {
        let custom = !(spec.group.is_empty() || spec.group.ends_with("k8s.io"));
        self.server.register(ResourceMeta {
            singular: spec.kind.to_lowercase(),
            group: spec.group,
            version: spec.version,
            kind: spec.kind,
            plural: spec.plural,
            namespaced: spec.namespaced,
            status: spec.status_subresource,
            short_names: spec.short_names,
            custom,
        });
    }

    /// While set, every request answers 503 ServiceUnavailable; setting it closes open
    /// watches.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.server.unavailable.store(unavailable, Ordering::SeqCst);
        if unavailable {
            self.close_watches();
        }
    }

    /// Ends every open watch stream cleanly (clients re-watch from their last
    /// resourceVersion).
    pub fn close_watches(&self) {
        self.server.epoch.send_modify(|e| *e += 1);
    }

    /// The next `count` requests matching `matcher` answer `status_code` with a `Status` body
    /// (reason from the code: 409 Conflict, 500 InternalError, …) without being applied.
    pub fn fail_next(&self, matcher: RequestMatcher, status_code: u16, count: usize) {
        self.server.add_fault(Fault {
            matcher,
            code: status_code,
            remaining: count,
        });
    }

    pub fn clear_failures(&self) {
        self.server.clear_faults();
    }

    /// Every request served so far (including failed and injected ones), in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.server.requests()
    }

    pub fn clear_requests(&self) {
        self.server.clear_requests();
    }

    pub fn count_requests(&self, matcher: &RequestMatcher) -> usize {
        self.server.count_requests(matcher)
    }

    /// Forgets the watch history: a watch from any older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.server.compact();
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.server.current_rv()
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.server.open_watches.load(Ordering::SeqCst)
    }

    /// An object as stored, without going through HTTP. `resource` is `pods`,
    /// `leases.coordination.k8s.io`, `nodeimages.apps.kruise.io`, …
    pub fn object(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = self.server.find(resource)?;
        self.server
            .get(&res, namespace.unwrap_or(""), name)
            .ok()
            .map(|s| s.value.clone())
    }

    /// Objects of a resource (in a namespace, or all), in key order.
    pub fn objects(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(res) = self.server.find(resource) else {
            return Vec::new();
        };
        let st = res.lock();
        st.range(namespace, None)
            .map(|(_, o)| o.value.clone())
            .collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rt) = runtime {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url())
            .finish()
    }
}
