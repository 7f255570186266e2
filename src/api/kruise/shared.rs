//! Types shared by [`ImagePullJob`](super::ImagePullJob) and [`NodeImage`](super::NodeImage).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::go;

/// When kruise-daemon pulls an image (`ImagePullPolicy` upstream). Unset means
/// [`IfNotPresent`](Self::IfNotPresent) ([`DEFAULT_IMAGE_PULL_POLICY`](super::DEFAULT_IMAGE_PULL_POLICY)).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = go::no_description)]
pub enum ImagePullPolicy {
    /// Pull even when the image is already present on the node.
    Always,
    /// Pull only when the image is not present on the node.
    IfNotPresent,
}

impl ImagePullPolicy {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
        }
    }
}

impl fmt::Display for ImagePullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata attached to the CRI `PullImageRequest.sandbox_config` while pulling (`SandboxConfig`
/// upstream, v1.4+). kruise-daemon always adds the annotation
/// [`ANNOTATION_PULLING_IMAGE_BY`](super::ANNOTATION_PULLING_IMAGE_BY).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(
    description = "SandboxConfig support attach metadata in PullImage CRI interface during ImagePulljobs"
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    /// Labels of the pod sandbox config passed to the runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pod sandbox config passed to the runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
