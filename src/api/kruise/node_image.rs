//! `NodeImage`: one per node (same name), listing the images the node should pull (spec, written
//! by the manager) and how pulling went (status, written by the agent).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::go;
use super::{
    DEFAULT_IMAGE_PULL_POLICY, DEFAULT_PULL_BACKOFF_LIMIT, DEFAULT_PULL_TIMEOUT_SECONDS,
    ImagePullPolicy, SandboxConfig,
};

/// NodeImageSpec defines the desired state of NodeImage.
// Clippy reads the repeated `type_ = ...` of the printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "NodeImage",
    plural = "nodeimages",
    singular = "nodeimage",
    status = "NodeImageStatus",
    derive = "PartialEq",
    doc = "NodeImage is the Schema for the nodeimages API",
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of all images on this node"
    ),
    printcolumn(
        name = "PULLING",
        type_ = "integer",
        json_path = ".status.pulling",
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
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageSpec {
    /// Specifies images to be pulled on this node, keyed by familiar image name without tag
    /// (nginx, ghcr.io/org/app). It can not be more than 256 for each NodeImage.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageSpec>,
}

/// ImageSpec defines the pulling spec of an image (all its tags).
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// PullSecrets is an optional list of references to secrets to use for pulling the image
    /// (normally in kruise-daemon-config). Missing secrets are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<ReferenceObject>,
    /// Tags is a list of versions of this image, sorted by tag.
    pub tags: Vec<ImageTagSpec>,
    /// SandboxConfig support attach metadata in PullImage CRI interface during ImagePulljobs
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,
}

/// ReferenceObject comprises a resource name, with a mandatory namespace,
/// rendered as `<namespace>/<name>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceObject {
    /// Namespace of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// How the object is managed: `batch` for a pull secret copied for ImagePullJobs (v1beta1;
    /// kept on a read-modify-write of an object written by kruise-manager v1.9).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// ImageTagSpec defines the pulling spec of an image tag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagSpec {
    /// Specifies the image tag (or a digest, sha256:...).
    pub tag: String,
    /// Specifies the create time of this tag. The agent must report within 10 minutes of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// PullPolicy is an optional field to set parameters of the pulling task. If not specified,
    /// the system will use the default values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<ImageTagPullPolicy>,
    /// List of objects depended by this object. If this image is managed by a controller,
    /// then an entry in this list will point to this controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<ObjectReference>,
    /// Internal version of this tag, bumped to request a new pull round. Populated by the system.
    #[serde(default, skip_serializing_if = "go::is_zero_i64")]
    pub version: i64,
    /// Image pull policy.
    /// One of Always, IfNotPresent. Defaults to IfNotPresent.
    #[serde(
        default,
        deserialize_with = "go::empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_pull_policy: Option<ImagePullPolicy>,
}

/// ImageTagPullPolicy defines the policy of the pulling task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagPullPolicy {
    /// Specifies the timeout of the pulling task.
    /// Defaults to 600
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub timeout_seconds: Option<i32>,
    /// Specifies the number of retries before marking the pulling task failed.
    /// Defaults to 3
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// TTLSecondsAfterFinished limits the lifetime of a pulling task that has finished execution (either Complete or Failed).
    /// If this field is set, ttlSecondsAfterFinished after the task finishes, it is eligible to be automatically deleted.
    /// If this field is unset, the task won't be automatically deleted.
    /// If this field is set to zero, the task becomes eligible to be deleted immediately after it finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// ActiveDeadlineSeconds specifies the duration in seconds relative to the startTime that the task may be active
    /// before the system tries to terminate it; value must be positive integer.
    /// if not specified, the system will never terminate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub active_deadline_seconds: Option<i64>,
}

impl ImageTagPullPolicy {
    /// Applies upstream's webhook defaults (`SetDefaultsImageTagPullPolicy`): timeout 600 s,
    /// backoff limit 3.
    pub fn apply_webhook_defaults(&mut self) {
        self.timeout_seconds
            .get_or_insert(DEFAULT_PULL_TIMEOUT_SECONDS);
        self.backoff_limit.get_or_insert(DEFAULT_PULL_BACKOFF_LIMIT);
    }

    /// Per-attempt timeout in seconds; 600 when unset.
    pub fn timeout_seconds_or_default(&self) -> i32 {
        self.timeout_seconds.unwrap_or(DEFAULT_PULL_TIMEOUT_SECONDS)
    }

    /// Retries after the first attempt; 3 when unset or negative (as kruise-daemon reads it).
    pub fn backoff_limit_or_default(&self) -> i32 {
        match self.backoff_limit {
            Some(n) if n >= 0 => n,
            _ => DEFAULT_PULL_BACKOFF_LIMIT,
        }
    }
}

impl ImageTagSpec {
    /// `imagePullPolicy`, or `IfNotPresent` when unset.
    pub fn image_pull_policy_or_default(&self) -> ImagePullPolicy {
        self.image_pull_policy.unwrap_or(DEFAULT_IMAGE_PULL_POLICY)
    }
}

impl NodeImageSpec {
    /// Applies upstream's webhook defaults (`SetDefaultsNodeImage`) to every tag: `createdAt`
    /// `now` when unset and the pull policy defaults.
    pub fn apply_webhook_defaults(&mut self, now: &Time) {
        for tag in self
            .images
            .values_mut()
            .flat_map(|image| image.tags.iter_mut())
        {
            tag.created_at.get_or_insert_with(|| now.clone());
            tag.pull_policy
                .get_or_insert_with(Default::default)
                .apply_webhook_defaults();
        }
    }
}

/// NodeImageStatus defines the observed state of NodeImage (written by the agent; the manager
/// marks unreported tags failed). The counters are always written, as upstream does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageStatus {
    /// The desired number of pulling tasks, this is typically equal to the number of images in spec.
    pub desired: i32,
    /// The number of pulling tasks which reached phase Succeeded.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub succeeded: i32,
    /// The number of pulling tasks  which reached phase Failed.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub failed: i32,
    /// The number of pulling tasks which are not finished.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub pulling: i32,
    /// The number of pulling tasks which are waiting (v1.9+; older CRDs prune it).
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub waiting: i32,
    /// all statuses of active image pulling tasks
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_statuses: BTreeMap<String, ImageStatus>,
    /// The first of all job has finished on this node. Defined upstream, never written by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sync_status: Option<SyncStatus>,
}

/// ImageStatus defines the pulling status of an image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// Represents statuses of pulling tasks on this node, sorted by tag.
    pub tags: Vec<ImageTagStatus>,
}

/// ImageTagStatus defines the pulling status of an image tag.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagStatus {
    /// Represents the image tag.
    pub tag: String,
    /// Represents the image pulling task phase.
    pub phase: ImagePullPhase,
    /// Represents the pulling progress of this tag, which is between 0-100. There is no guarantee
    /// of monotonic consistency, and it may be a rollback due to retry during pulling.
    #[serde(default, skip_serializing_if = "go::is_zero_i32")]
    pub progress: i32,
    /// Represents time when the pulling task was acknowledged by the image puller.
    /// It is not guaranteed to be set in happens-before order across separate operations.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Represents time when the pulling task was completed. It is not guaranteed to
    /// be set in happens-before order across separate operations.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Represents the internal version of this tag that the daemon handled.
    #[serde(default, skip_serializing_if = "go::is_zero_i64")]
    pub version: i64,
    /// Represents the ID of this image: `<spec image name>@<CRI image id>`.
    #[serde(rename = "imageID", default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    /// Represents the summary information of this node (the last pull error on failure).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Phase of one tag's pull.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = go::no_description)]
pub enum ImagePullPhase {
    /// The task has not started (queued behind the node's worker limit).
    Waiting,
    /// The task has been started, but not completed.
    Pulling,
    /// The image is present.
    Succeeded,
    /// The task has failed.
    Failed,
}

impl ImagePullPhase {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "Waiting",
            Self::Pulling => "Pulling",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// True for `Succeeded` and `Failed`.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl fmt::Display for ImagePullPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SyncStatus is summary of the status of all images pulling tasks on the node (never written by
/// upstream).
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the node finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_at: Option<Time>,
    /// Succeeded when every task succeeded, else Failed.
    #[serde(
        default,
        deserialize_with = "go::empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<SyncStatusPhase>,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Outcome in a [`SyncStatus`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = go::no_description)]
pub enum SyncStatusPhase {
    /// All tasks succeeded on this node.
    Succeeded,
    /// Some task failed on this node.
    Failed,
}
