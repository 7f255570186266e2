//! OpenKruise `apps.kruise.io/v1alpha1` kinds spoken by nodeward: [`ContainerRecreateRequest`],
//! [`ImagePullJob`], [`ImageListPullJob`], [`NodeImage`], [`NodePodProbe`] and
//! [`PodProbeMarker`], plus their well-known labels, annotations, finalizers and status messages;
//! and [`CloneSet`], whose type is here ahead of its controller (not yet among [`crds`]).
//!
//! The types are wire-compatible with upstream (`apis/apps/v1alpha1/*_types.go`, served by every
//! release v1.4 → master):
//!
//! * JSON names are upstream's (camelCase, `containerID`, `imageID`).
//! * Go pointer fields (`*int64`, `*Struct`) are `Option`s and are omitted when `None`.
//! * Go `omitempty` value fields (`bool`, `int32`, `string`, slices, maps) are plain Rust values
//!   that are omitted when zero/empty, exactly as Go's `encoding/json` does; Go value fields
//!   *without* `omitempty` (e.g. `ImagePullJobStatus::active`) are always written.
//! * Optional enum-typed strings also accept `""` on input (Go's zero value) and read it as `None`.
//!
//! So an object written by nodeward looks like one written by kruise-manager or kruise-daemon.
//!
//! **Versions.** nodeward's clients speak `v1alpha1`, which every release serves. Since v1.9,
//! OpenKruise stores ImagePullJob, ImageListPullJob and NodeImage as `v1beta1` (the same schema,
//! NodeImage's `pullSecrets[].mode` aside, which [`ReferenceObject`] carries): the CRDs here do the
//! same, so they can replace kruise's on a cluster that stored objects as `v1beta1`, and kruise's
//! v1.9 clients keep working against them.
//!
//! **Defaults.** Upstream's CRDs carry no OpenAPI `default`s: every default is applied by a
//! mutating webhook (or at the point of use), so the generated CRDs carry none either. The values
//! are exported as `DEFAULT_*` constants and applied by the `apply_webhook_defaults` methods,
//! which a controller re-implementing the webhook can call; the agent reads them through the
//! `*_or_default` accessors.
//!
//! [`crds`] / [`crds_yaml`] produce the six CustomResourceDefinitions (structural schemas,
//! printer columns and short names as upstream) for `nodeward crds`.

mod cloneset;
mod constants;
mod container_meta;
mod crr;
mod go;
mod image_list_pull_job;
mod image_pull_job;
mod node_image;
mod node_pod_probe;
mod pod_probe_marker;
mod shared;

pub use cloneset::*;
pub use constants::*;
pub use container_meta::*;
pub use crr::*;
pub use image_list_pull_job::*;
pub use image_pull_job::*;
pub use node_image::*;
pub use node_pod_probe::*;
pub use pod_probe_marker::*;
pub use shared::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, Resource};

/// API group of every OpenKruise kind here.
pub const GROUP: &str = "apps.kruise.io";
/// API version spoken by nodeward (served by every OpenKruise release, see the module docs).
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the objects: `apps.kruise.io/v1alpha1`.
pub const API_VERSION: &str = "apps.kruise.io/v1alpha1";
/// The version OpenKruise v1.9 stores ImagePullJob, ImageListPullJob and NodeImage as.
pub const VERSION_V1BETA1: &str = "v1beta1";

/// The CustomResourceDefinitions for the kinds nodeward uses, in a stable order
/// (ContainerRecreateRequest, ImagePullJob, ImageListPullJob, NodeImage, NodePodProbe,
/// PodProbeMarker).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ContainerRecreateRequest::crd(),
        stored_as_v1beta1(ImagePullJob::crd()),
        stored_as_v1beta1(ImageListPullJob::crd()),
        stored_as_v1beta1(NodeImage::crd()),
        NodePodProbe::crd(),
        PodProbeMarker::crd(),
        CloneSet::crd(),
    ]
}

/// The second version OpenKruise v1.9 gave the image kinds: `v1beta1`, the same schema, stored;
/// `v1alpha1` still served (nodeward's clients speak it, so every release's CRDs serve them).
/// No conversion webhook, as upstream: the API server only rewrites `apiVersion`. The printer
/// columns of v1beta1 as upstream's (no MESSAGE column, a shorter AGE description).
fn stored_as_v1beta1(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    const AGE: &str = "CreationTimestamp is a timestamp representing the server time when this object was created.";
    let Some(alpha) = crd.spec.versions.first_mut() else {
        return crd;
    };
    alpha.storage = false;
    let mut beta = alpha.clone();
    beta.name = VERSION_V1BETA1.into();
    beta.storage = true;
    let kind = crd.spec.names.kind.as_str();
    if let Some(columns) = beta.additional_printer_columns.as_mut()
        && kind != NodeImage::kind(&())
    {
        columns.retain(|c| c.name != "MESSAGE");
        for c in columns.iter_mut().filter(|c| c.name == "AGE") {
            c.description = Some(AGE.into());
        }
    }
    crd.spec.versions.push(beta);
    crd
}

/// [`crds`] as one multi-document YAML stream (`---` between documents), ready for
/// `kubectl apply -f -`. Byte-for-byte stable for a given build.
///
/// Rendering a CRD cannot fail in practice; should the YAML serializer ever reject one, that
/// document is written as JSON instead (a JSON document is valid YAML), so the output stays
/// complete and this function never panics. Use [`try_crds_yaml`] to get the error instead.
pub fn crds_yaml() -> String {
    try_crds_yaml().unwrap_or_else(|_| {
        crds()
            .iter()
            .map(|crd| {
                serde_json::to_string_pretty(crd).unwrap_or_else(|e| {
                    // Not a CRD: `kubectl apply` rejects it loudly instead of skipping it.
                    format!("error: {:?}", format!("cannot render CRD: {e}"))
                }) + "\n"
            })
            .collect::<Vec<_>>()
            .join("---\n")
    })
}

/// [`crds_yaml`], reporting a serializer error instead of falling back to JSON.
pub fn try_crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string_multiple(&crds())
}
