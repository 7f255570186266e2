//! A typed CRI client: the calls nodeward makes, each with its context in the error.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Container, ContainerFilter, ContainerStatus, ContainerStatusRequest, ExecSyncRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandbox, PodSandboxStatus,
    PodSandboxStatusRequest, StopContainerRequest, VersionRequest,
};
use serde::Deserialize;
use tonic::transport::Channel;

use super::connect::{CRI_API_VERSION, describe_status};
use crate::telemetry::metrics::Metrics;

/// The deadline of a CRI call that only reads or lists (the kubelet allows 2 min per runtime
/// request; a healthy runtime answers these in milliseconds).
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("CRI {method}{}: {}", target_suffix(.target), describe_status(.status))]
pub struct CriError {
    pub method: &'static str,
    pub target: String,
    #[source]
    pub status: tonic::Status,
}

fn target_suffix(target: &str) -> String {
    if target.is_empty() {
        String::new()
    } else {
        format!(" {target}")
    }
}

impl CriError {
    /// The runtime says the object does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.status.code() == tonic::Code::NotFound
    }
}

/// Fields of the verbose `ContainerStatus` info that nodeward uses. containerd and CRI-O both put a
/// JSON document under the key `info` with the init `pid` and the OCI `runtimeSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerboseInfo {
    pub pid: Option<u32>,
    pub env: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct RawInfo {
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default, rename = "runtimeSpec")]
    runtime_spec: Option<RawSpec>,
}

#[derive(Deserialize)]
struct RawSpec {
    #[serde(default)]
    process: Option<RawProcess>,
}

#[derive(Deserialize)]
struct RawProcess {
    #[serde(default)]
    env: Vec<String>,
}

impl VerboseInfo {
    /// Decode the verbose info map; unknown or malformed content yields an empty value.
    pub fn parse(info: &HashMap<String, String>) -> Self {
        let Some(raw) = info.get("info") else {
            return Self::default();
        };
        let Ok(raw) = serde_json::from_str::<RawInfo>(raw) else {
            return Self::default();
        };
        let env = raw
            .runtime_spec
            .and_then(|s| s.process)
            .map(|p| {
                p.env
                    .into_iter()
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv, String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            pid: raw.pid.filter(|p| *p > 0),
            env,
        }
    }
}

/// CRI timeouts are whole seconds: round up, so a grace is never cut short.
pub fn grace_seconds(grace: Duration) -> i64 {
    let secs = grace.as_secs() as i64;
    if grace.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// Cheap to clone: clones share one HTTP/2 connection.
#[derive(Clone)]
pub struct CriClient {
    rt: RuntimeServiceClient<Channel>,
    /// The image service (`super::image`).
    pub(super) img: ImageServiceClient<Channel>,
    metrics: Option<Metrics>,
}

impl CriClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            rt: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(16 * 1024 * 1024),
            img: ImageServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024),
            metrics: None,
        }
    }

    /// Count every request and its duration by method and gRPC code.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Run one CRI call on `target` (an id, an image, or "") with a deadline (a hung runtime
    /// answers `DeadlineExceeded`, never leaves the caller waiting), counting it in the metrics.
    pub(super) async fn observed<T>(
        &self,
        method: &'static str,
        target: &str,
        deadline: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        let start = Instant::now();
        let res = match tokio::time::timeout(deadline, call).await {
            Ok(res) => res,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "the runtime did not answer {method} within {deadline:?}"
            ))),
        };
        if let Some(m) = &self.metrics {
            let code = match &res {
                Ok(_) => "OK".to_string(),
                Err(s) => format!("{:?}", s.code()),
            };
            m.cri_request(method, &code, start.elapsed().as_secs_f64());
        }
        res.map(tonic::Response::into_inner)
            .map_err(|status| CriError {
                method,
                target: target.to_string(),
                status,
            })
    }

    pub async fn version(&self) -> Result<k8s_cri::v1::VersionResponse, CriError> {
        let req = VersionRequest {
            version: CRI_API_VERSION.into(),
        };
        self.observed("Version", "", CALL_DEADLINE, self.rt.clone().version(req))
            .await
    }

    pub async fn list_sandboxes(&self) -> Result<Vec<PodSandbox>, CriError> {
        let req = ListPodSandboxRequest { filter: None };
        Ok(self
            .observed(
                "ListPodSandbox",
                "",
                CALL_DEADLINE,
                self.rt.clone().list_pod_sandbox(req),
            )
            .await?
            .items)
    }

    pub async fn list_containers(&self) -> Result<Vec<Container>, CriError> {
        let req = ListContainersRequest { filter: None };
        Ok(self
            .observed(
                "ListContainers",
                "",
                CALL_DEADLINE,
                self.rt.clone().list_containers(req),
            )
            .await?
            .containers)
    }

    /// Every container (any state) the kubelet created for the pod with this uid.
    pub async fn list_pod_containers(&self, pod_uid: &str) -> Result<Vec<Container>, CriError> {
        let filter = ContainerFilter {
            label_selector: HashMap::from([(
                crate::api::well_known::LABEL_POD_UID.to_string(),
                pod_uid.to_string(),
            )]),
            ..Default::default()
        };
        let req = ListContainersRequest {
            filter: Some(filter),
        };
        Ok(self
            .observed(
                "ListContainers",
                pod_uid,
                CALL_DEADLINE,
                self.rt.clone().list_containers(req),
            )
            .await?
            .containers)
    }

    pub async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, CriError> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        self.observed(
            "PodSandboxStatus",
            id,
            CALL_DEADLINE,
            self.rt.clone().pod_sandbox_status(req),
        )
        .await?
        .status
        .ok_or_else(|| CriError {
            method: "PodSandboxStatus",
            target: id.to_string(),
            status: tonic::Status::internal("runtime returned no status"),
        })
    }

    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, VerboseInfo), CriError> {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose,
        };
        let resp = self
            .observed(
                "ContainerStatus",
                id,
                CALL_DEADLINE,
                self.rt.clone().container_status(req),
            )
            .await?;
        let status = resp.status.ok_or_else(|| CriError {
            method: "ContainerStatus",
            target: id.to_string(),
            status: tonic::Status::internal("runtime returned no status"),
        })?;
        Ok((status, VerboseInfo::parse(&resp.info)))
    }

    /// Stop a container: the runtime sends the stop signal and SIGKILL after `grace`.
    /// Stopping an already stopped container succeeds (CRI requires idempotency).
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), CriError> {
        let req = StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_seconds(grace),
        };
        // The runtime waits up to the grace, then kills and waits for the exit.
        let deadline = grace.saturating_add(CALL_DEADLINE);
        self.observed(
            "StopContainer",
            id,
            deadline,
            self.rt.clone().stop_container(req),
        )
        .await?;
        Ok(())
    }

    /// Run `cmd` in the container and wait at most `timeout`. Returns the command's exit code.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<k8s_cri::v1::ExecSyncResponse, CriError> {
        let req = ExecSyncRequest {
            container_id: id.to_string(),
            cmd,
            timeout: timeout.as_secs().max(1) as i64,
        };
        let deadline = timeout.saturating_add(Duration::from_secs(2));
        let mut request = tonic::Request::new(req);
        request.set_timeout(deadline);
        self.observed("ExecSync", id, deadline, self.rt.clone().exec_sync(request))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_the_runtime_never_answers_ends_at_its_deadline() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let client = CriClient::new(channel);
        let hung = std::future::pending::<Result<tonic::Response<()>, tonic::Status>>();
        let err = client
            .observed("Version", "", Duration::from_millis(50), hung)
            .await
            .unwrap_err();
        assert_eq!(err.status.code(), tonic::Code::DeadlineExceeded);
        assert!(err.status.message().contains("Version"), "{err}");
    }

    #[test]
    fn verbose_info_containerd_shape() {
        let mut m = HashMap::new();
        m.insert(
            "info".to_string(),
            r#"{"sandboxID":"x","pid":4242,"runtimeSpec":{"process":{"env":["PATH=/bin","A=b=c","NOVAL"]}}}"#
                .to_string(),
        );
        let v = VerboseInfo::parse(&m);
        assert_eq!(v.pid, Some(4242));
        assert_eq!(
            v.env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("A".into(), "b=c".into()),
                ("NOVAL".into(), String::new())
            ]
        );
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(grace_seconds(Duration::from_secs(30)), 30);
        assert_eq!(grace_seconds(Duration::from_millis(29_990)), 30);
        assert_eq!(grace_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn verbose_info_garbage_is_empty() {
        let mut m = HashMap::new();
        m.insert("info".to_string(), "{not json".to_string());
        assert_eq!(VerboseInfo::parse(&m), VerboseInfo::default());
        m.insert("info".to_string(), r#"{"pid":0}"#.to_string());
        assert_eq!(VerboseInfo::parse(&m).pid, None);
        assert_eq!(VerboseInfo::parse(&HashMap::new()), VerboseInfo::default());
    }
}
