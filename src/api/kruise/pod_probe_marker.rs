//! `PodProbeMarker`: custom probes for the pods its selector matches, run by the agents of their
//! nodes (through each node's [`NodePodProbe`](super::NodePodProbe)), and what a result writes on
//! the pod (a condition, labels and annotations). Upstream:
//! `apis/apps/v1alpha1/pod_probe_marker_types.go` (v1alpha1 only).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ProbeState, go};

/// Finalizer the controller keeps on a PodProbeMarker until no NodePodProbe runs its probes.
pub const POD_PROBE_MARKER_FINALIZER: &str = "kruise.io/node-pod-probe-cleanup";

/// PodProbeMarkerSpec defines the desired state of PodProbeMarker
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "PodProbeMarker",
    plural = "podprobemarkers",
    singular = "podprobemarker",
    namespaced,
    status = "PodProbeMarkerStatus",
    derive = "PartialEq",
    doc = "PodProbeMarker is the Schema for the PodProbeMarker API"
)]
#[serde(rename_all = "camelCase")]
pub struct PodProbeMarkerSpec {
    /// Selector is a label query over pods that should exec custom probe
    /// It must match the pod template's labels.
    pub selector: LabelSelector,
    /// Custom container probe, current only support Exec().
    /// Probe Result will record in Pod.Status.Conditions, and condition.type=probe.name.
    /// condition.status=True indicates probe success
    /// condition.status=False indicates probe fails
    pub probes: Vec<PodContainerProbe>,
}

/// One probe of one container, and what its result marks on the pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodContainerProbe {
    /// probe name, unique within the Pod(Even between different containers within the same pod)
    pub name: String,
    /// container name
    pub container_name: String,
    /// container probe spec
    pub probe: Probe,
    /// According to the execution result of ContainerProbe, perform specific actions,
    /// such as: patch Pod labels, annotations, ReadinessGate Condition
    /// It cannot be null at the same time as PodConditionType.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = go::no_default)]
    pub marker_policy: Vec<ProbeMarkerPolicy>,
    /// If it is not empty, the Probe execution result will be recorded on the Pod condition.
    /// It cannot be null at the same time as MarkerPolicy.
    /// For example PodConditionType=game.kruise.io/healthy, Pod.Status.Conditions.Type = 'game.kruise.io/healthy'
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(transform = go::no_default)]
    pub pod_condition_type: String,
}

/// Labels and annotations a probe's state sets on the pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeMarkerPolicy {
    /// probe status, True or False
    /// For example: State=Succeeded, annotations[controller.kubernetes.io/pod-deletion-cost] = '10'.
    /// State=Failed, annotations[controller.kubernetes.io/pod-deletion-cost] = '-10'.
    /// In addition, if State=Failed is not defined, Exec execution fails, and the annotations[controller.kubernetes.io/pod-deletion-cost] will be Deleted
    pub state: ProbeState,
    /// Patch Labels pod.labels
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = go::no_default)]
    pub labels: BTreeMap<String, String>,
    /// Patch annotations pod.annotations
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = go::no_default)]
    pub annotations: BTreeMap<String, String>,
}

/// PodProbeMarkerStatus defines the observed state of PodProbeMarker
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodProbeMarkerStatus {
    /// observedGeneration is the most recent generation observed for this PodProbeMarker. It corresponds to the
    /// PodProbeMarker's generation, which is updated on mutation by the API Server.
    pub observed_generation: i64,
    /// matched Pods
    #[serde(default, skip_serializing_if = "go::is_zero_i64")]
    #[schemars(transform = go::no_default)]
    pub matched_pods: i64,
}
