//! `ImageListPullJob`: pull a list of images on a set of nodes, one ImagePullJob per image (made
//! by the manager from the shared [`ImagePullJobTemplate`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ImagePullJobTemplate;
use super::go;

/// ImageListPullJobSpec defines the desired state of ImageListPullJob
// Clippy reads the repeated `type_ = ...` of the printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ImageListPullJob",
    plural = "imagelistpulljobs",
    singular = "imagelistpulljob",
    namespaced,
    status = "ImageListPullJobStatus",
    derive = "PartialEq",
    doc = "ImageListPullJob is the Schema for the imagelistpulljobs API",
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of image pull job"
    ),
    printcolumn(
        name = "SUCCEEDED",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "Number of image pull job succeeded"
    ),
    printcolumn(
        name = "COMPLETED",
        type_ = "integer",
        json_path = ".status.completed",
        description = "Number of ImagePullJobs which are finished"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobSpec {
    /// Images is the image list to be pulled by the job
    pub images: Vec<String>,
    /// The settings every ImagePullJob of the list gets (inline).
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

/// ImageListPullJobStatus defines the observed state of ImageListPullJob
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobStatus {
    /// Represents time when the job was acknowledged by the job controller.
    /// It is not guaranteed to be set in happens-before order across separate operations.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Represents time when the all the image pull job was completed. It is not guaranteed to
    /// be set in happens-before order across separate operations.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The desired number of ImagePullJobs, this is typically equal to the number of len(spec.Images).
    pub desired: i32,
    /// The number of running ImagePullJobs which are acknowledged by the imagepulljob controller.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub active: i32,
    /// The number of ImagePullJobs which are finished
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub completed: i32,
    /// The number of image pull job which are finished and status.Succeeded==status.Desired.
    #[serde(default)]
    #[schemars(transform = go::no_default)]
    pub succeeded: i32,
    /// The status of ImagePullJob which has the failed nodes(status.Failed>0) .
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_image_statuses: Vec<FailedImageStatus>,
}

/// FailedImageStatus the state of ImagePullJob which has the failed nodes(status.Failed>0)
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedImageStatus {
    /// The name of ImagePullJob which has the failed nodes(status.Failed>0)
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_pull_job: String,
    /// Name of the image
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The text prompt for job running status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl ImageListPullJobSpec {
    /// Applies upstream's mutating-webhook defaults (`SetDefaultsImageListPullJob`): the
    /// template's, and no `imagePullPolicy` (each ImagePullJob gets its own default).
    pub fn apply_webhook_defaults(&mut self) {
        self.template.apply_webhook_defaults();
    }
}
