//! `NodePodProbe`: one per node (same name), listing the probes the node's agent runs for its
//! pods (spec, written by the PodProbeMarker controller) and their results (status, written by
//! the agent). Upstream: `apis/apps/v1alpha1/node_pod_probe_types.go` (v1alpha1 only, served by
//! every release v1.4 → master).

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// NodePodProbeSpec defines the desired state of NodePodProbe.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "NodePodProbe",
    plural = "nodepodprobes",
    singular = "nodepodprobe",
    status = "NodePodProbeStatus",
    derive = "PartialEq",
    doc = "NodePodProbe is the Schema for the nodepodprobes API"
)]
#[serde(rename_all = "camelCase")]
pub struct NodePodProbeSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_probes: Vec<PodProbe>,
}

/// The probes of one pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodProbe {
    /// pod name
    pub name: String,
    /// pod namespace
    pub namespace: String,
    /// pod uid
    pub uid: String,
    /// pod ip (upstream's JSON name is `IP`)
    #[serde(rename = "IP")]
    pub ip: String,
    /// Custom container probe, supports Exec, Tcp, and returns the result to Pod yaml
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ContainerProbe>,
}

/// One probe of one container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProbe {
    /// Name is podProbeMarker.Name#probe.Name
    pub name: String,
    /// container name
    pub container_name: String,
    /// container probe spec (a core/v1 Probe: exec, httpGet or tcpSocket, and its timing)
    pub probe: Probe,
}

/// NodePodProbeStatus defines the observed state of NodePodProbe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodePodProbeStatus {
    /// pod probe results
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_probe_statuses: Vec<PodProbeStatus>,
}

/// The probe results of one pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodProbeStatus {
    /// pod name
    pub name: String,
    /// pod namespace
    pub namespace: String,
    /// pod uid
    pub uid: String,
    /// pod probe result
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_states: Vec<ContainerProbeState>,
}

/// The result of one probe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProbeState {
    /// Name is podProbeMarker.Name#probe.Name
    pub name: String,
    /// container probe exec state, True or False
    pub state: ProbeState,
    /// Last time we probed the condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Last time the condition transitioned from one status to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// If Status=True, Message records the return result of Probe.
    /// If Status=False, Message records Probe's error message
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A probe's state. Upstream's is a plain string: anything else (or `""`) reads as `Unknown`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, JsonSchema, PartialEq, Eq, Hash)]
pub enum ProbeState {
    Succeeded,
    Failed,
    #[default]
    #[serde(other)]
    Unknown,
}

impl ProbeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }
}
