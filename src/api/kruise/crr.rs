//! `ContainerRecreateRequest` (CRR): restart some containers of a Pod in place, on its node.

use std::fmt;

use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, LifecycleHandler, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::go;
use super::{
    ANNOTATION_CRR_SYNC_CONTAINER_STATUSES, ANNOTATION_CRR_UNREADY_ACQUIRED, CRR_ACTIVE_VALUE,
    DEFAULT_CRR_FAILURE_POLICY, LABEL_CRR_ACTIVE, LABEL_CRR_NODE_NAME, LABEL_CRR_POD_UID,
};

/// ContainerRecreateRequestSpec defines the desired state of ContainerRecreateRequest.
/// Immutable after creation (webhook).
// Clippy reads the repeated `type_ = ...` of the printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ContainerRecreateRequest",
    plural = "containerrecreaterequests",
    singular = "containerrecreaterequest",
    namespaced,
    shortname = "crr",
    status = "ContainerRecreateRequestStatus",
    derive = "PartialEq",
    doc = "ContainerRecreateRequest is the Schema for the containerrecreaterequests API",
    printcolumn(
        name = "PHASE",
        type_ = "string",
        json_path = ".status.phase",
        description = "Phase of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "POD",
        type_ = "string",
        json_path = ".spec.podName",
        description = "Pod name of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "NODE",
        type_ = "string",
        json_path = r".metadata.labels.crr\.apps\.kruise\.io/node-name",
        description = "Node name of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.podName == oldSelf.podName", "message": "podName is immutable"},
    {"rule": "self.containers.map(c, c.name) == oldSelf.containers.map(c, c.name)", "message": "the containers to recreate are immutable"},
]))]
pub struct ContainerRecreateRequestSpec {
    /// PodName is name of the Pod that owns the recreated containers.
    #[schemars(length(min = 1))]
    pub pod_name: String,
    /// Containers contains the containers that need to recreate in the Pod.
    #[schemars(length(min = 1, max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub containers: Vec<ContainerRecreateRequestContainer>,
    /// Strategy defines strategies for containers recreation. The webhook defaults it to {}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ContainerRecreateRequestStrategy>,
    /// ActiveDeadlineSeconds is the deadline duration of this ContainerRecreateRequest, counted
    /// from its creation. The webhook rejects values below 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 31_536_000))]
    pub active_deadline_seconds: Option<i64>,
    /// TTLSecondsAfterFinished is the TTL duration after this ContainerRecreateRequest has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// ContainerRecreateRequestContainer defines the container that need to recreate.
/// Everything except the name is filled in by the webhook from the Pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainer {
    /// Name of the container that need to recreate.
    /// It must be existing in the real pod.Spec.Containers.
    pub name: String,
    /// PreStop is synced from the real container in Pod spec during this ContainerRecreateRequest creating.
    /// Populated by the system.
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<CrrProbeHandler>,
    /// Ports is synced from the real container in Pod spec during this ContainerRecreateRequest creating
    /// (only when preStop is an httpGet). Populated by the system.
    /// Read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// StatusContext is synced from the real Pod status during this ContainerRecreateRequest creating.
    /// Populated by the system.
    /// Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_context: Option<ContainerRecreateRequestContainerContext>,
}

/// The preStop hook copied from the container (`ProbeHandler` in upstream v1alpha1, renamed
/// `CRRProbeHandler` in v1beta1): exactly one of the handlers is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[schemars(
    description = "ProbeHandler defines a specific action that should be taken. One and only one of exec, httpGet and tcpSocket should be specified."
)]
#[serde(rename_all = "camelCase")]
pub struct CrrProbeHandler {
    /// Exec specifies the action to take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// HTTPGet specifies the http request to perform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HTTPGetAction>,
    /// TCPSocket specifies an action involving a TCP port (not run as a hook upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TCPSocketAction>,
}

impl CrrProbeHandler {
    /// The handler the webhook copies from a container's `lifecycle.preStop`: exec, httpGet and
    /// tcpSocket are kept; `sleep` (K8s 1.29+) has no place in the v1alpha1 schema and is dropped.
    /// `None` when nothing is left.
    pub fn from_lifecycle(handler: &LifecycleHandler) -> Option<Self> {
        let copied = Self {
            exec: handler.exec.clone(),
            http_get: handler.http_get.clone(),
            tcp_socket: handler.tcp_socket.clone(),
        };
        (!copied.is_empty()).then_some(copied)
    }

    /// True when no handler is set.
    pub fn is_empty(&self) -> bool {
        self.exec.is_none() && self.http_get.is_none() && self.tcp_socket.is_none()
    }
}

/// ContainerRecreateRequestContainerContext contains context status of the container that need to recreate,
/// as it was when the CRR was created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainerContext {
    /// Container's ID in the format `<runtime>://<container_id>`, e.g. `containerd://4f1e...`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The number of times the container had been restarted when the CRR was created.
    pub restart_count: i32,
}

/// ContainerRecreateRequestStrategy contains the strategies for containers recreation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestStrategy {
    /// FailurePolicy decides whether to continue if one container fails to recreate.
    /// Unset means Fail (the webhook writes it).
    #[serde(
        default,
        deserialize_with = "go::empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_policy: Option<ContainerRecreateRequestFailurePolicy>,
    /// OrderedRecreate indicates whether to recreate the next container only if the previous one has recreated completely.
    #[serde(default, skip_serializing_if = "go::is_false")]
    pub ordered_recreate: bool,
    /// ForceRecreate indicates whether to force kill the container even if the previous container is starting.
    #[serde(default, skip_serializing_if = "go::is_false")]
    pub force_recreate: bool,
    /// TerminationGracePeriodSeconds is the optional duration in seconds to wait the container terminating gracefully.
    /// Value must be non-negative integer. The value zero indicates delete immediately.
    /// If this value is nil, we will use pod.Spec.TerminationGracePeriodSeconds as default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub termination_grace_period_seconds: Option<i64>,
    /// UnreadyGracePeriodSeconds is the optional duration in seconds to mark Pod as not ready over this duration before
    /// executing preStop hook and stopping the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub unready_grace_period_seconds: Option<i64>,
    /// Minimum number of seconds for which a newly created container should be started and ready
    /// without any of its container crashing, for it to be considered Succeeded.
    /// Defaults to 0 (container will be considered Succeeded as soon as it is started and ready)
    #[serde(default, skip_serializing_if = "go::is_zero_i32")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub min_started_seconds: i32,
}

impl ContainerRecreateRequestStrategy {
    /// `failurePolicy`, or the webhook's default `Fail` when unset.
    pub fn failure_policy_or_default(&self) -> ContainerRecreateRequestFailurePolicy {
        self.failure_policy.unwrap_or(DEFAULT_CRR_FAILURE_POLICY)
    }
}

/// Whether the CRR goes on after a container failed to be recreated.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = go::no_description)]
pub enum ContainerRecreateRequestFailurePolicy {
    /// Complete the CRR as soon as a container failed (the default).
    Fail,
    /// Go on with the other containers.
    Ignore,
}

impl ContainerRecreateRequestFailurePolicy {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

impl fmt::Display for ContainerRecreateRequestFailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ContainerRecreateRequestStatus defines the observed state of ContainerRecreateRequest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestStatus {
    /// Phase of this ContainerRecreateRequest, e.g. Pending, Recreating, Completed.
    ///
    /// `None` (also read from `""`) before any agent picked it up. Upstream's CRD requires the
    /// field, so a full status write (PUT) must set it.
    #[schemars(
        description = "Phase of this ContainerRecreateRequest, e.g. Pending, Recreating, Completed"
    )]
    #[serde(
        default,
        deserialize_with = "go::empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub phase: Option<ContainerRecreateRequestPhase>,
    /// Represents time when the ContainerRecreateRequest was completed. It is not guaranteed to
    /// be set in happens-before order across separate operations.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// A human readable message indicating details about this ContainerRecreateRequest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// ContainerRecreateStates contains the recreation states of the containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_recreate_states: Vec<ContainerRecreateRequestContainerRecreateState>,
}

/// Phase of a CRR (`Pending`, `Recreating`, `Completed`) or of one container in it (`Pending`,
/// `Recreating`, `Succeeded`, `Failed`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = go::no_description)]
pub enum ContainerRecreateRequestPhase {
    /// Waiting: another CRR of the Pod runs first (CRR), or not stopped yet (container).
    Pending,
    /// The agent is working on it (CRR), or the container was stopped and is restarting (container).
    Recreating,
    /// The new container is running and ready (container only).
    Succeeded,
    /// Stopping the container failed (container only).
    Failed,
    /// The CRR is finished; `completionTime` is set (CRR only).
    Completed,
}

impl ContainerRecreateRequestPhase {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Recreating => "Recreating",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Completed => "Completed",
        }
    }
}

impl fmt::Display for ContainerRecreateRequestPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ContainerRecreateRequestContainerRecreateState contains the recreation state of the container.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainerRecreateState {
    /// Name of the container.
    pub name: String,
    /// Phase indicates the recreation phase of the container.
    pub phase: ContainerRecreateRequestPhase,
    /// A human readable message indicating details about this state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Containers are killed by kruise daemon
    #[serde(default, skip_serializing_if = "go::is_false")]
    pub is_killed: bool,
}

/// One entry of the [`ANNOTATION_CRR_SYNC_CONTAINER_STATUSES`] annotation (JSON list), written
/// by the manager from the Pod status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestSyncContainerStatus {
    /// Container name.
    pub name: String,
    /// Specifies whether the container has passed its readiness probe.
    pub ready: bool,
    /// The number of times the container has been restarted.
    pub restart_count: i32,
    /// Container's ID in the format `<runtime>://<container_id>`.
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
}

impl ContainerRecreateRequestSpec {
    /// Applies the pod-independent defaults of upstream's mutating webhook: `strategy` `{}` and
    /// `strategy.failurePolicy` `Fail`. (The webhook also copies `terminationGracePeriodSeconds`,
    /// preStop, ports and status context from the Pod.)
    pub fn apply_webhook_defaults(&mut self) {
        let strategy = self.strategy.get_or_insert_with(Default::default);
        strategy
            .failure_policy
            .get_or_insert(DEFAULT_CRR_FAILURE_POLICY);
    }
}

impl ContainerRecreateRequest {
    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// UID of the target Pod ([`LABEL_CRR_POD_UID`]).
    pub fn pod_uid(&self) -> Option<&str> {
        self.label(LABEL_CRR_POD_UID)
    }

    /// Node of the target Pod ([`LABEL_CRR_NODE_NAME`]).
    pub fn node_name(&self) -> Option<&str> {
        self.label(LABEL_CRR_NODE_NAME)
    }

    /// True while the CRR carries [`LABEL_CRR_ACTIVE`]`=true`.
    pub fn is_active(&self) -> bool {
        self.label(LABEL_CRR_ACTIVE) == Some(CRR_ACTIVE_VALUE)
    }

    /// The manager's [`ANNOTATION_CRR_SYNC_CONTAINER_STATUSES`]; empty when absent.
    pub fn sync_container_statuses(
        &self,
    ) -> Result<Vec<ContainerRecreateRequestSyncContainerStatus>, serde_json::Error> {
        match self.annotation(ANNOTATION_CRR_SYNC_CONTAINER_STATUSES) {
            None | Some("") => Ok(Vec::new()),
            Some(json) => serde_json::from_str(json),
        }
    }

    /// When the manager made the Pod not-ready ([`ANNOTATION_CRR_UNREADY_ACQUIRED`], RFC 3339);
    /// `None` while not acquired.
    pub fn unready_acquired_at(
        &self,
    ) -> Option<Result<k8s_openapi::jiff::Timestamp, k8s_openapi::jiff::Error>> {
        self.annotation(ANNOTATION_CRR_UNREADY_ACQUIRED)
            .filter(|s| !s.is_empty())
            .map(str::parse)
    }
}
