//! Connecting to a CRI runtime over its unix socket and detecting which runtime answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::VersionRequest;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// Socket paths probed under the runtime dir, in order (same list as kruise-daemon v1.8+).
pub const PROBE_ORDER: [&str; 6] = [
    "containerd.sock",
    "containerd/containerd.sock",
    "crio.sock",
    "crio/crio.sock",
    "cri-dockerd.sock",
    "cri-dockerd/cri-dockerd.sock",
];

/// CRI API version we speak.
pub const CRI_API_VERSION: &str = "v1";

/// Timeout for one probe of a candidate socket.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no CRI v1 runtime answered: {}", .0.join("; "))]
    NoRuntime(Vec<String>),
    #[error("CRI runtime at {path}: {reason}")]
    Unreachable { path: PathBuf, reason: String },
}

/// What the runtime reported about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub socket: PathBuf,
    pub name: String,
    pub version: String,
    pub api_version: String,
}

/// A lazily (re)connecting gRPC channel to a unix socket. tonic reconnects the channel on its own
/// after the runtime restarts; callers see errors while it is away.
pub fn channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    // The URI is required by tonic but ignored by the unix connector.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(PROBE_TIMEOUT)
        .connect_with_connector_lazy(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
}

/// Ask the runtime at `path` for its CRI v1 version.
pub async fn probe(path: &Path) -> Result<RuntimeInfo, ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable {
        path: path.to_path_buf(),
        reason,
    };
    match tokio::fs::symlink_metadata(path).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unreachable("no such file".into()));
        }
        Err(e) => return Err(unreachable(e.to_string())),
    }
    let mut client = RuntimeServiceClient::new(channel(path));
    let req = VersionRequest {
        version: CRI_API_VERSION.into(),
    };
    let resp = tokio::time::timeout(PROBE_TIMEOUT, client.version(req))
        .await
        .map_err(|_| unreachable(format!("no answer to CRI Version within {PROBE_TIMEOUT:?}")))?
        .map_err(|s| unreachable(describe_status(&s)))?
        .into_inner();
    Ok(RuntimeInfo {
        socket: path.to_path_buf(),
        name: resp.runtime_name,
        version: resp.runtime_version,
        api_version: resp.runtime_api_version,
    })
}

/// Use `socket` if given, else probe [`PROBE_ORDER`] under `runtime_dir` and take the first that answers.
pub async fn detect(
    socket: Option<&Path>,
    runtime_dir: &Path,
) -> Result<RuntimeInfo, ConnectError> {
    if let Some(socket) = socket {
        // A relative socket is taken relative to the runtime dir (kruise-daemon's --socket-file).
        let path = if socket.is_absolute() {
            socket.to_path_buf()
        } else {
            runtime_dir.join(socket)
        };
        return probe(&path).await;
    }
    let mut failures = Vec::new();
    for candidate in PROBE_ORDER {
        let path = runtime_dir.join(candidate);
        match probe(&path).await {
            Ok(info) => return Ok(info),
            Err(ConnectError::Unreachable { path, reason }) => {
                failures.push(format!("{}: {reason}", path.display()))
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(ConnectError::NoRuntime(failures))
}

/// One line for a gRPC error, without tonic's multi-line debug output.
pub fn describe_status(s: &tonic::Status) -> String {
    let msg = s.message().replace('\n', " ");
    if msg.is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {msg}", s.code())
    }
}
