//! The container meta of in-place updates (`apis/apps/pub/inplace_update.go`): the pod annotation
//! `apps.kruise.io/runtime-containers-meta` that the node agent writes and kruise-manager's
//! in-place update reads, and the names around it. Facts: `docs/upstream/container-meta.md`.

use serde::{Deserialize, Serialize};

/// Pod annotation: the running containers as the runtime knows them ([`RuntimeContainerMetaSet`]).
pub const ANNOTATION_RUNTIME_CONTAINERS_META: &str = "apps.kruise.io/runtime-containers-meta";
/// Pod annotation of an in-place update in progress (written by kruise-manager).
pub const ANNOTATION_INPLACE_UPDATE_STATE: &str = "apps.kruise.io/inplace-update-state";
/// Pod annotation a SidecarSet injection leaves (only its presence counts).
pub const ANNOTATION_SIDECARSET_HASH: &str = "kruise.io/sidecarset-hash";
/// Pod condition (and readiness gate) that is `False` while an in-place update runs.
pub const POD_CONDITION_INPLACE_UPDATE_READY: &str = "InPlaceUpdateReady";
/// Env names a SidecarSet injects from annotations: never part of the env-from-metadata hash.
pub const ENV_SIDECARSET_VERSION: &str = "SIDECARSET_VERSION";
pub const ENV_SIDECARSET_VERSION_ALT: &str = "SIDECARSET_VERSION_ALT";

/// The annotation's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeContainerMetaSet {
    #[serde(default)]
    pub containers: Vec<RuntimeContainerMeta>,
}

/// One container, as the runtime reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainerMeta {
    #[serde(default)]
    pub name: String,
    /// `<runtime>://<id>`, as in the Pod's `containerStatuses`.
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default)]
    pub hashes: RuntimeContainerHashes,
}

/// The container's hashes (32-bit FNV values, stored as Go `uint64`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContainerHashes {
    /// The kubelet's container hash (its CRI annotation `io.kubernetes.container.hash`).
    #[serde(default)]
    pub plain_hash: u64,
    /// The hash of the env taken from labels and annotations, as the running container sees it;
    /// omitted (Go `omitempty`) until it is known.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extracted_env_from_metadata_hash: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RuntimeContainerMetaSet {
    /// The annotation's value read back; `None` when absent or unreadable (then it is rewritten).
    pub fn parse(value: Option<&str>) -> Option<Self> {
        serde_json::from_str(value?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_upstreams_shape() {
        let upstream = r#"{"containers":[{"name":"nginx","containerID":"containerd://0f1e","restartCount":0,"hashes":{"plainHash":1281589684,"extractedEnvFromMetadataHash":27323935}}]}"#;
        let set = RuntimeContainerMetaSet::parse(Some(upstream)).unwrap();
        assert_eq!(set.containers[0].hashes.plain_hash, 1281589684);
        assert_eq!(serde_json::to_string(&set).unwrap(), upstream);
        let mut unknown = set.clone();
        unknown.containers[0]
            .hashes
            .extracted_env_from_metadata_hash = 0;
        assert!(
            !serde_json::to_string(&unknown)
                .unwrap()
                .contains("extracted")
        );
        assert_eq!(RuntimeContainerMetaSet::parse(Some("{oops")), None);
        assert_eq!(RuntimeContainerMetaSet::parse(None), None);
    }
}
