//! `CloneSet`: a set of identical pods, scaled and updated (recreated or in place) by the
//! controller (upstream `apis/apps/v1alpha1/cloneset_types.go`, `apis/apps/pub/lifecycle.go`).
//! The pod template and the volume claim templates are schemaless in the CRD, as upstream's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimTemplate, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::go;

/// The label carrying a CloneSet pod's (and its PVCs') instance id.
pub const CLONESET_INSTANCE_ID_LABEL: &str = "apps.kruise.io/cloneset-instance-id";
/// A pod carrying this label (any value) is deleted by its CloneSet first.
pub const SPECIFIED_DELETE_LABEL: &str = "apps.kruise.io/specified-delete";
/// The lifecycle state of a CloneSet pod.
pub const LIFECYCLE_STATE_LABEL: &str = "lifecycle.apps.kruise.io/state";
/// When the lifecycle state last changed (RFC 3339).
pub const LIFECYCLE_TIMESTAMP_ANNOTATION: &str = "lifecycle.apps.kruise.io/timestamp";
/// The revision label of pods (the ControllerRevision's name).
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The short revision hash label of pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Default `updateStrategy.maxUnavailable`.
pub const DEFAULT_CLONESET_MAX_UNAVAILABLE: &str = "20%";
/// Default `revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// A CloneSet pod's lifecycle state (`lifecycle.apps.kruise.io/state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleState {
    PreparingNormal,
    Normal,
    PreparingUpdate,
    Updating,
    Updated,
    PreparingDelete,
}

impl LifecycleState {
    pub const ALL: [LifecycleState; 6] = [
        LifecycleState::PreparingNormal,
        LifecycleState::Normal,
        LifecycleState::PreparingUpdate,
        LifecycleState::Updating,
        LifecycleState::Updated,
        LifecycleState::PreparingDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::PreparingNormal => "PreparingNormal",
            LifecycleState::Normal => "Normal",
            LifecycleState::PreparingUpdate => "PreparingUpdate",
            LifecycleState::Updating => "Updating",
            LifecycleState::Updated => "Updated",
            LifecycleState::PreparingDelete => "PreparingDelete",
        }
    }

    pub fn parse(s: &str) -> Option<LifecycleState> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// CloneSetSpec defines the desired state of CloneSet
// Clippy reads the repeated `type_ = ...` of the printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "CloneSet",
    plural = "clonesets",
    singular = "cloneset",
    shortname = "clone",
    namespaced,
    status = "CloneSetStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.labelSelector"
    ),
    doc = "CloneSet is the Schema for the clonesets API",
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "The desired number of pods."
    ),
    printcolumn(
        name = "UPDATED",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        description = "The number of pods updated."
    ),
    printcolumn(
        name = "UPDATED_READY",
        type_ = "integer",
        json_path = ".status.updatedReadyReplicas",
        description = "The number of pods updated and ready."
    ),
    printcolumn(
        name = "UPDATED_AVAILABLE",
        type_ = "integer",
        json_path = ".status.updatedAvailableReplicas",
        description = "The number of pods updated and available."
    ),
    printcolumn(
        name = "READY",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "The number of pods ready."
    ),
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "The number of currently all pods."
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    ),
    printcolumn(
        name = "CONTAINERS",
        type_ = "string",
        priority = 1,
        json_path = ".spec.template.spec.containers[*].name",
        description = "The containers of currently cloneset."
    ),
    printcolumn(
        name = "IMAGES",
        type_ = "string",
        priority = 1,
        json_path = ".spec.template.spec.containers[*].image",
        description = "The images of currently cloneset."
    ),
    printcolumn(
        name = "SELECTOR",
        type_ = "string",
        priority = 1,
        json_path = ".status.labelSelector",
        description = "The selector of currently cloneset."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetSpec {
    /// Replicas is the desired number of replicas of the given Template. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selector is a label query over pods that should match the replica count. It must match
    /// the pod template's labels.
    pub selector: LabelSelector,
    /// Template describes the pods that will be created.
    #[schemars(schema_with = "go::preserve_unknown_object")]
    pub template: PodTemplateSpec,
    /// VolumeClaimTemplates is a list of claims that pods are allowed to reference: one PVC per
    /// template and instance, named `<template>-<cloneset>-<instance id>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "go::preserve_unknown_array")]
    pub volume_claim_templates: Vec<PersistentVolumeClaimTemplate>,
    /// ScaleStrategy indicates the ScaleStrategy that will be employed to create and delete Pods
    /// in the CloneSet.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub scale_strategy: CloneSetScaleStrategy,
    /// UpdateStrategy indicates the UpdateStrategy that will be employed to update Pods in the
    /// CloneSet when a revision is made to Template.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub update_strategy: CloneSetUpdateStrategy,
    /// RevisionHistoryLimit is the maximum number of revisions that will be maintained in the
    /// CloneSet's revision history. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Minimum number of seconds for which a newly created pod should be ready without any of
    /// its container crashing, for it to be considered available. Defaults to 0.
    #[serde(default, skip_serializing_if = "go::is_zero_i32")]
    pub min_ready_seconds: i32,
    /// Lifecycle defines the lifecycle hooks for Pods pre-available(pre-normal), pre-delete,
    /// in-place update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// The maximum time in seconds for a CloneSet to make progress before it is considered to
    /// be failed progressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
}

/// CloneSetScaleStrategy defines strategies for pods scale.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetScaleStrategy {
    /// PodsToDelete is the names of Pod should be deleted. Note that this list will be
    /// truncated for non-existing pod names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods_to_delete: Vec<String>,
    /// The maximum number of pods that can be unavailable during scaling (an absolute number or
    /// a percentage of desired pods); unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Indicate if cloneset will reuse already existed pvc to rebuild a new pod
    #[serde(
        default,
        rename = "disablePVCReuse",
        skip_serializing_if = "go::is_false"
    )]
    pub disable_pvc_reuse: bool,
}

/// CloneSetUpdateStrategy defines strategies for pods update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetUpdateStrategy {
    /// Type indicates the type of the CloneSetUpdateStrategy. Default is ReCreate.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// Partition is the desired number (or percentage) of pods in old revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<IntOrString>,
    /// The maximum number of pods that can be unavailable during update (default 20%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// The maximum number of pods that can be scheduled above the desired replicas during
    /// update (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Paused indicates that the CloneSet is paused.
    #[serde(default, skip_serializing_if = "go::is_false")]
    pub paused: bool,
    /// Priorities are the rules for calculating the priority of updating pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "go::preserve_unknown_object")]
    pub priority_strategy: Option<UpdatePriorityStrategy>,
    /// ScatterStrategy defines the scatter rules to make pods been scattered when update.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "go::preserve_unknown_array")]
    pub scatter_strategy: Vec<UpdateScatterTerm>,
    /// InPlaceUpdateStrategy contains strategies for in-place update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update_strategy: Option<InPlaceUpdateStrategy>,
}

/// UpdatePriorityStrategy is the strategy to define priority for pods update (upstream
/// `apis/apps/pub/update_priority.go`). Only one of orderPriority and weightPriority can be set.
///
/// Schemaless in the CRD, so its fields read `null` as unset, as Go does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityStrategy {
    /// Order priority terms, pods will be sorted by the value of orderedKey.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub order_priority: Vec<UpdatePriorityOrderTerm>,
    /// Weight priority terms, pods will be sorted by the sum of all terms weight.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub weight_priority: Vec<UpdatePriorityWeightTerm>,
}

/// UpdatePriorityOrderTerm defines order priority.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityOrderTerm {
    /// Calculate priority by value of this key: the integer its value ends with (5 in `5`, 10
    /// in `sts-10`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub ordered_key: String,
}

/// UpdatePriorityWeightTerm defines weight priority.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePriorityWeightTerm {
    /// Weight associated with matching the corresponding matchExpressions, in the range 1-100.
    #[serde(default, deserialize_with = "null_as_default")]
    pub weight: i32,
    /// MatchSelector is used to select by pod's labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub match_selector: LabelSelector,
}

/// One scatter rule (upstream `apis/apps/v1alpha1/scatter_strategy.go`): pods labelled
/// `key=value` are spread among the others when updated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateScatterTerm {
    /// The label's key.
    #[serde(default, deserialize_with = "null_as_default")]
    pub key: String,
    /// The label's value.
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: String,
}

/// Reads `null` as the zero value, as Go's `encoding/json` does (for the fields of schemaless
/// objects, where the API server keeps a `null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The three update strategy types upstream accepts.
pub const UPDATE_RECREATE: &str = "ReCreate";
pub const UPDATE_IN_PLACE_IF_POSSIBLE: &str = "InPlaceIfPossible";
pub const UPDATE_IN_PLACE_ONLY: &str = "InPlaceOnly";

/// InPlaceUpdateStrategy defines the strategies for in-place update.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceUpdateStrategy {
    /// GracePeriodSeconds is the timespan between set Pod status to not-ready and update
    /// images in Pod spec when in-place update a Pod.
    #[serde(default, skip_serializing_if = "go::is_zero_i32")]
    pub grace_period_seconds: i32,
}

/// Lifecycle contains the hooks for Pod lifecycle.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// PreDelete is the hook before Pod to be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_delete: Option<LifecycleHook>,
    /// InPlaceUpdate is the hook before Pod to update and after Pod has been updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place_update: Option<LifecycleHook>,
    /// PreNormal is the hook after Pod to be created and ready to be Normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_normal: Option<LifecycleHook>,
}

impl Lifecycle {
    /// Whether a hook makes its pods not ready (`KruisePodReady` False) while it holds them:
    /// `markPodNotReady` on preDelete or inPlaceUpdate (preNormal's has no effect upstream).
    pub fn marks_pod_not_ready(&self) -> bool {
        [&self.pre_delete, &self.in_place_update]
            .into_iter()
            .flatten()
            .any(|h| h.mark_pod_not_ready)
    }
}

/// A lifecycle hook: the labels and finalizers that hold a pod in its state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHook {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_handler: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers_handler: Vec<String>,
    /// MarkPodNotReady = true means: the pod is set not ready while in the hooked state.
    #[serde(default, skip_serializing_if = "go::is_false")]
    pub mark_pod_not_ready: bool,
}

impl LifecycleHook {
    /// Whether any of the hook's labels or finalizers is on the pod (upstream `IsPodHooked`).
    pub fn any_on(&self, labels: &BTreeMap<String, String>, finalizers: &[String]) -> bool {
        self.finalizers_handler
            .iter()
            .any(|f| finalizers.contains(f))
            || self
                .labels_handler
                .iter()
                .any(|(k, v)| labels.get(k) == Some(v))
    }

    /// Whether all of the hook's labels and finalizers are on the pod (upstream
    /// `IsPodAllHooked`).
    pub fn all_on(&self, labels: &BTreeMap<String, String>, finalizers: &[String]) -> bool {
        self.finalizers_handler
            .iter()
            .all(|f| finalizers.contains(f))
            && self
                .labels_handler
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// CloneSetStatus defines the observed state of CloneSet
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetStatus {
    /// ObservedGeneration is the most recent generation observed for this CloneSet.
    #[serde(default, skip_serializing_if = "go::is_zero_i64")]
    pub observed_generation: i64,
    /// Replicas is the number of Pods created by the CloneSet controller.
    pub replicas: i32,
    /// ReadyReplicas is the number of Pods created by the CloneSet controller that have a Ready
    /// Condition.
    pub ready_replicas: i32,
    /// AvailableReplicas is the number of Pods created by the CloneSet controller that have a
    /// Ready Condition for at least minReadySeconds.
    pub available_replicas: i32,
    /// UpdatedReplicas is the number of Pods created by the CloneSet controller from the
    /// CloneSet version indicated by updateRevision.
    pub updated_replicas: i32,
    /// UpdatedReadyReplicas is the number of Pods created by the CloneSet controller from the
    /// CloneSet version indicated by updateRevision and have a Ready Condition.
    pub updated_ready_replicas: i32,
    /// UpdatedAvailableReplicas is the number of Pods created by the CloneSet controller from
    /// the CloneSet version indicated by updateRevision and have a Ready Condition for at least
    /// minReadySeconds.
    #[serde(default, skip_serializing_if = "go::is_zero_i32")]
    pub updated_available_replicas: i32,
    /// ExpectedUpdatedReplicas is the number of Pods that should be updated by CloneSet
    /// controller. This field is calculated via Replicas - Partition.
    #[serde(default, skip_serializing_if = "go::is_zero_i32")]
    pub expected_updated_replicas: i32,
    /// UpdateRevision, if not empty, indicates the current version of the CloneSet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_revision: String,
    /// currentRevision, if not empty, indicates the current revision version of the CloneSet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_revision: String,
    /// CollisionCount is the count of hash collisions for the CloneSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// Conditions represents the latest available observations of a CloneSet's current state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CloneSetCondition>,
    /// LabelSelector is label selectors for query over pods that should match the replica
    /// count used by HPA.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
}

/// CloneSetCondition describes the state of a CloneSet at a certain point.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloneSetCondition {
    /// Type of CloneSet condition.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition, one of True, False, Unknown.
    pub status: String,
    /// Last time the condition transitioned from one status to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The last time this condition was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// The reason for the condition's last transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A human readable message indicating details about the transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    /// A CloneSet as upstream's docs write one, read and written back unchanged.
    #[test]
    fn an_upstream_cloneset_round_trips() {
        let upstream = json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "CloneSet",
            "metadata": {"name": "sample", "namespace": "default"},
            "spec": {
                "replicas": 5,
                "selector": {"matchLabels": {"app": "sample"}},
                "template": {
                    "metadata": {"labels": {"app": "sample"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:alpine"}]}
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data-vol"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "20Gi"}}}
                }],
                "scaleStrategy": {"podsToDelete": ["sample-9m4hp"], "maxUnavailable": 1,
                                  "disablePVCReuse": true},
                "updateStrategy": {"type": "InPlaceIfPossible", "partition": "20%",
                                   "maxUnavailable": "20%", "maxSurge": 1, "paused": true,
                                   "inPlaceUpdateStrategy": {"gracePeriodSeconds": 10},
                                   "priorityStrategy": {"weightPriority": [{"weight": 50,
                                       "matchSelector": {"matchLabels": {"test-key": "foo"}}}]},
                                   "scatterStrategy": [{"key": "foo", "value": "bar"}]},
                "revisionHistoryLimit": 5,
                "minReadySeconds": 3,
                "lifecycle": {
                    "preDelete": {"finalizersHandler": ["example.com/unready-blocker"],
                                  "markPodNotReady": true},
                    "inPlaceUpdate": {"labelsHandler": {"example.com/unready-blocker": "true"}},
                    "preNormal": {"finalizersHandler": ["example.com/ready"]}
                },
                "progressDeadlineSeconds": 600
            },
            "status": {
                "observedGeneration": 2, "replicas": 5, "readyReplicas": 5,
                "availableReplicas": 5, "updatedReplicas": 5, "updatedReadyReplicas": 5,
                "updatedAvailableReplicas": 5, "expectedUpdatedReplicas": 4,
                "updateRevision": "sample-d4d4fb5bd", "currentRevision": "sample-d4d4fb5bd",
                "collisionCount": 0, "labelSelector": "app=sample",
                "conditions": [{"type": "Progressing", "status": "True",
                                "lastTransitionTime": "2026-12-07T10:00:00Z",
                                "lastUpdateTime": "2026-12-07T10:00:00Z",
                                "reason": "CloneSetAvailable", "message": "CloneSet is available"}]
            }
        });
        let cs: CloneSet = serde_json::from_value(upstream.clone()).unwrap();
        assert_eq!(cs.spec.replicas, Some(5));
        assert!(cs.spec.scale_strategy.disable_pvc_reuse);
        assert_eq!(cs.spec.update_strategy.type_, UPDATE_IN_PLACE_IF_POSSIBLE);
        let lifecycle = cs.spec.lifecycle.as_ref().unwrap();
        assert!(lifecycle.pre_delete.as_ref().unwrap().mark_pod_not_ready);
        assert_eq!(serde_json::to_value(&cs).unwrap(), upstream);
    }

    #[test]
    fn a_minimal_cloneset_writes_only_what_it_has() {
        let cs: CloneSet = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "m"},
            "spec": {"selector": {"matchLabels": {"app": "m"}},
                     "template": {"metadata": {"labels": {"app": "m"}}}},
        }))
        .unwrap();
        let spec = serde_json::to_value(&cs.spec).unwrap();
        assert_eq!(
            spec,
            json!({"selector": {"matchLabels": {"app": "m"}},
                   "template": {"metadata": {"labels": {"app": "m"}}},
                   "scaleStrategy": {}, "updateStrategy": {}})
        );
    }

    /// The schemaless priority and scatter strategies read as Go's typed structs do: `null` is
    /// unset, unknown fields are dropped, a wrong type is refused.
    #[test]
    fn priority_and_scatter_read_as_go_reads_them() {
        let read = serde_json::from_value::<CloneSetUpdateStrategy>;
        let strategy = read(json!({
            "priorityStrategy": {"orderPriority": null, "other": 1,
                                 "weightPriority": [{"weight": null, "matchSelector": null}]},
            "scatterStrategy": [{"key": "a", "value": null}],
        }))
        .unwrap();
        let priority = strategy.priority_strategy.unwrap();
        assert_eq!(
            priority.weight_priority,
            [UpdatePriorityWeightTerm::default()]
        );
        assert!(priority.order_priority.is_empty());
        assert_eq!(
            strategy.scatter_strategy,
            [UpdateScatterTerm {
                key: "a".into(),
                value: String::new()
            }]
        );
        assert!(read(json!({"scatterStrategy": null})).is_ok());
        assert!(read(json!({"priorityStrategy": {"weightPriority": [{"weight": "5"}]}})).is_err());
        assert!(read(json!({"scatterStrategy": {"key": "a"}})).is_err());
        // Written back as Go writes them: the terms' fields always, empty lists never.
        assert_eq!(
            serde_json::to_value(UpdatePriorityStrategy {
                weight_priority: vec![UpdatePriorityWeightTerm::default()],
                order_priority: vec![UpdatePriorityOrderTerm::default()],
            })
            .unwrap(),
            json!({"orderPriority": [{"orderedKey": ""}],
                   "weightPriority": [{"weight": 0, "matchSelector": {}}]})
        );
        assert_eq!(
            serde_json::to_value(UpdatePriorityStrategy::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn the_crd_scales_and_keeps_the_templates_schemaless() {
        let crd = serde_json::to_value(CloneSet::crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["clone"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(
            version["subresources"]["scale"],
            json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                   "labelSelectorPath": ".status.labelSelector"})
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["template"],
            json!({"description": "Template describes the pods that will be created.",
                   "type": "object", "x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(
            spec["properties"]["volumeClaimTemplates"]["items"]["x-kubernetes-preserve-unknown-fields"],
            json!(true)
        );
        assert_eq!(spec["required"], json!(["selector", "template"]));
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
        for field in [
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "updatedReplicas",
        ] {
            assert!(
                status["required"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(field)),
                "{field}"
            );
        }
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "DESIRED",
                "UPDATED",
                "UPDATED_READY",
                "UPDATED_AVAILABLE",
                "READY",
                "TOTAL",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR"
            ]
        );
    }

    #[test]
    fn hooks_and_states() {
        let hook = LifecycleHook {
            labels_handler: [("a".to_string(), "1".to_string())].into(),
            finalizers_handler: vec!["f".into()],
            mark_pod_not_ready: false,
        };
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert!(hook.any_on(&labels, &[]));
        assert!(!hook.all_on(&labels, &[]));
        assert!(hook.all_on(&labels, &["f".into()]));
        assert!(!hook.any_on(&BTreeMap::new(), &["g".into()]));
        for state in LifecycleState::ALL {
            assert_eq!(LifecycleState::parse(state.as_str()), Some(state));
        }
        assert_eq!(LifecycleState::parse("Other"), None);
    }
}
