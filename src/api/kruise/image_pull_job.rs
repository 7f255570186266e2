//! `ImagePullJob`: pull one image on a set of nodes (fanned out by the manager into NodeImages).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::go;
use super::{
    DEFAULT_COMPLETION_POLICY_TYPE, DEFAULT_IMAGE_PULL_POLICY, DEFAULT_PARALLELISM,
    DEFAULT_PULL_BACKOFF_LIMIT, DEFAULT_PULL_TIMEOUT_SECONDS, ImagePullPolicy, SandboxConfig,
};

/// ImagePullJobSpec defines the desired state of ImagePullJob.
// Clippy reads the repeated `type_ = ...` of the printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ImagePullJob",
    plural = "imagepulljobs",
    singular = "imagepulljob",
    namespaced,
    status = "ImagePullJobStatus",
    derive = "PartialEq",
    doc = "ImagePullJob is the Schema for the imagepulljobs API",
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of all nodes matched by this job"
    ),
    printcolumn(
        name = "ACTIVE",
        type_ = "integer",
        json_path = ".status.active",
        description = "Number of image pull task active"
    ),
    printcolumn(
        name = "SUCCEED",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "Number of image pull task succeeded"
    ),
    printcolumn(
        name = "FAILED",
        type_ = "integer",
        json_path = ".status.failed",
        description = "Number of image pull tasks failed"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    ),
    printcolumn(
        name = "MESSAGE",
        type_ = "string",
        json_path = ".status.message",
        description = "Summary of status when job is failed"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobSpec {
    /// Image is the image to be pulled by the job
    pub image: String,
    /// What an ImagePullJob shares with the jobs an ImageListPullJob makes (inline).
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

/// ImagePullJobTemplate is everything of an ImagePullJob's spec but its image: the part an
/// ImageListPullJob copies into each ImagePullJob it makes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobTemplate {
    /// ImagePullSecrets is an optional list of references to secrets in the same namespace to use for pulling the image.
    /// If specified, these secrets will be passed to individual puller implementations for them to use.  For example,
    /// in the case of docker, only DockerConfig type secrets are honored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
    /// Selector is a query over nodes that should match the job.
    /// nil to match all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ImagePullJobNodeSelector>,
    /// PodSelector is a query over pods that should pull image on nodes of these pods.
    /// Mutually exclusive with Selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Parallelism is the requested parallelism, it can be set to any non-negative value. If it is unspecified,
    /// it defaults to 1. If it is specified as 0, then the Job is effectively paused until it is increased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<IntOrString>,
    /// PullPolicy is an optional field to set parameters of the pulling task. If not specified,
    /// the system will use the default values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// CompletionPolicy indicates the completion policy of the job.
    /// Default is Always CompletionPolicyType.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub completion_policy: CompletionPolicy,
    /// SandboxConfig support attach metadata in PullImage CRI interface during ImagePulljobs
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,
    /// Image pull policy.
    /// One of Always, IfNotPresent. Defaults to IfNotPresent.
    #[serde(
        default,
        deserialize_with = "go::empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_pull_policy: Option<ImagePullPolicy>,
}

/// ImagePullJobNodeSelector is a selector over nodes: names, or a label selector over NodeImages
/// (whose labels mirror the node's), not both.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobNodeSelector {
    /// Names specify a set of nodes to execute the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// LabelSelector is a label query over nodes that should match the job (inline:
    /// `matchLabels`, `matchExpressions`).
    #[serde(flatten)]
    pub label_selector: LabelSelector,
}

/// PullPolicy defines the policy of the pulling task on each node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullPolicy {
    /// Specifies the timeout of the pulling task.
    /// Defaults to 600
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub timeout_seconds: Option<i32>,
    /// Specifies the number of retries before marking the pulling task failed.
    /// Defaults to 3
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
}

/// CompletionPolicy indicates the completion policy for the job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CompletionPolicy {
    /// Type indicates the type of the CompletionPolicy.
    /// Default is Always.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "go::empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub type_: Option<CompletionPolicyType>,
    /// ActiveDeadlineSeconds specifies the duration in seconds relative to the startTime that the job may be active
    /// before the system tries to terminate it; value must be positive integer.
    /// Only works for Always type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub active_deadline_seconds: Option<i64>,
    /// ttlSecondsAfterFinished limits the lifetime of a Job that has finished
    /// execution (either Complete or Failed). If this field is set,
    /// ttlSecondsAfterFinished after the Job finishes, it is eligible to be
    /// automatically deleted. If this field is unset,
    /// the Job won't be automatically deleted. If this field is set to zero,
    /// the Job becomes eligible to be deleted immediately after it finishes.
    /// Only works for Always type
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// Whether a job finishes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = go::no_description)]
pub enum CompletionPolicyType {
    /// Finishes once every selected node succeeded or failed, or at `activeDeadlineSeconds`
    /// (the default).
    Always,
    /// Never finishes: nodes added later pull the image too.
    Never,
}

impl CompletionPolicyType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::Never => "Never",
        }
    }
}

impl fmt::Display for CompletionPolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ImagePullJobStatus defines the observed state of ImagePullJob (written by the manager).
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobStatus {
    /// Represents time when the job was acknowledged by the job controller.
    /// It is not guaranteed to be set in happens-before order across separate operations.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Represents time when the job was completed. It is not guaranteed to
    /// be set in happens-before order across separate operations.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The desired number of pulling tasks, this is typically equal to the number of nodes satisfied.
    pub desired: i32,
    /// The number of actively running pulling tasks.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub active: i32,
    /// The number of pulling tasks which reached phase Succeeded.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub succeeded: i32,
    /// The number of pulling tasks  which reached phase Failed.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub failed: i32,
    /// The text prompt for job running status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The nodes that failed to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_nodes: Vec<String>,
}

impl ImagePullJobSpec {
    /// Applies upstream's mutating-webhook defaults (`SetDefaultsImagePullJob`): the template's
    /// (see [`ImagePullJobTemplate::apply_webhook_defaults`]) and `imagePullPolicy`
    /// `IfNotPresent`. (The webhook also adds the
    /// [`FINALIZER_DELETION_PROTECTION`](super::FINALIZER_DELETION_PROTECTION) finalizer.)
    pub fn apply_webhook_defaults(&mut self) {
        self.template.apply_webhook_defaults();
        self.template
            .image_pull_policy
            .get_or_insert(DEFAULT_IMAGE_PULL_POLICY);
    }
}

impl ImagePullJobTemplate {
    /// Applies the defaults upstream's webhooks give both job kinds
    /// (`SetDefaultsImageListPullJob`): `completionPolicy.type` `Always`, `pullPolicy`
    /// `{timeoutSeconds: 600, backoffLimit: 3}`. `imagePullPolicy` is left to each ImagePullJob.
    pub fn apply_webhook_defaults(&mut self) {
        self.completion_policy
            .type_
            .get_or_insert(DEFAULT_COMPLETION_POLICY_TYPE);
        let pull = self.pull_policy.get_or_insert_with(Default::default);
        pull.timeout_seconds
            .get_or_insert(DEFAULT_PULL_TIMEOUT_SECONDS);
        pull.backoff_limit.get_or_insert(DEFAULT_PULL_BACKOFF_LIMIT);
    }

    /// `parallelism` as the manager reads it (Go `IntOrString.IntValue()`): an int as is, a
    /// string parsed as an int (0 when it is not one), [`DEFAULT_PARALLELISM`] when unset.
    pub fn parallelism_value(&self) -> i32 {
        match &self.parallelism {
            None => DEFAULT_PARALLELISM,
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(s)) => s.trim().parse().unwrap_or(0),
        }
    }

    /// `completionPolicy.type`, or `Always` when unset.
    pub fn completion_policy_type(&self) -> CompletionPolicyType {
        self.completion_policy
            .type_
            .unwrap_or(DEFAULT_COMPLETION_POLICY_TYPE)
    }
}
