//! The agent's settings ([`Config`]), built by `main.rs` from the flags and the config file.

use std::path::PathBuf;
use std::time::Duration;

use crate::gates::FeatureGates;
use crate::journal::Retention;

#[derive(Clone)]
pub struct Config {
    /// Explicit CRI socket; relative paths are taken under `runtime_dir`.
    pub cri_socket: Option<PathBuf>,
    pub runtime_dir: PathBuf,
    pub relist_interval: Duration,
    /// Liveness fails after this long without a successful relist (at least three intervals).
    pub stall_after: Duration,
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
    /// Which capabilities run.
    pub gates: FeatureGates,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cri_socket: None,
            runtime_dir: PathBuf::from("/var/run"),
            relist_interval: Duration::from_secs(10),
            stall_after: crate::telemetry::http::STALL_AFTER,
            pidfd: true,
            cgroup_events: true,
            pods_cgroups: vec!["kubepods".into(), "kubepods.slice".into()],
            proc_root: PathBuf::from("/proc"),
            node_name: String::new(),
            state_dir: PathBuf::from("/var/lib/nodeward"),
            retention: Retention::default(),
            api_socket: PathBuf::from("/run/nodeward/agent.sock"),
            addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 10221))),
            failpoint: None,
            cluster: None,
            max_concurrent_pulls: crate::imagepull::DEFAULT_MAX_CONCURRENT_PULLS,
            pull_secret_namespace: crate::api::kruise::KRUISE_DAEMON_CONFIG_NAMESPACE.into(),
            gates: FeatureGates::default(),
        }
    }
}
