//! The pod probe controllers' writes: NodePodProbes (created, deleted, spec replaced), the marks
//! on pods (one `pods/status` patch each), and a PodProbeMarker's finalizer and status. Every
//! read-modify-write carries the resourceVersion read and is retried on a conflict.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::core::Selector;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use super::Error;
use super::decide::{self, Marks};
use crate::api::kruise::{
    NodePodProbe, NodePodProbeSpec, POD_PROBE_MARKER_FINALIZER, PodProbeMarker,
};
use crate::cluster::{is_already_exists, is_conflict, is_not_found, retry_on_conflict};

/// Tries of one read-modify-write before the pass fails (and is retried with backoff).
const TRIES: usize = 5;

pub async fn create_node_pod_probe(client: &kube::Client, node: &str) -> Result<(), Error> {
    let api: Api<NodePodProbe> = Api::all(client.clone());
    let npp = NodePodProbe {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            ..Default::default()
        },
        spec: NodePodProbeSpec::default(),
        status: None,
    };
    match api.create(&PostParams::default(), &npp).await {
        Ok(_) => info!(node, "node pod probe created"),
        Err(e) if is_already_exists(&e) => {}
        Err(e) => return Err(Error::kube(format!("create NodePodProbe {node}"))(e)),
    }
    Ok(())
}

/// Delete this NodePodProbe (its uid a precondition: never one made again meanwhile).
pub async fn delete_node_pod_probe(client: &kube::Client, npp: &NodePodProbe) -> Result<(), Error> {
    let node = npp.name_any();
    let node = node.as_str();
    let api: Api<NodePodProbe> = Api::all(client.clone());
    let dp = DeleteParams {
        preconditions: npp.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(node, &dp).await {
        Ok(_) => info!(node, "node gone; node pod probe deleted"),
        Err(e) if is_not_found(&e) || is_conflict(&e) => {}
        Err(e) => return Err(Error::kube(format!("delete NodePodProbe {node}"))(e)),
    }
    Ok(())
}

/// Replace the NodePodProbe's spec with `spec` unless it already is that.
pub async fn write_spec(
    client: &kube::Client,
    cached: &NodePodProbe,
    spec: NodePodProbeSpec,
) -> Result<(), Error> {
    if cached.spec == spec {
        return Ok(());
    }
    let name = cached.name_any();
    let api: Api<NodePodProbe> = Api::all(client.clone());
    let mut first = Some(cached.clone());
    let written = retry_on_conflict(TRIES, || {
        let (api, spec, name) = (&api, spec.clone(), &name);
        let cached = first.take();
        async move {
            let mut obj = match cached {
                Some(obj) => obj,
                None => match api.get_opt(name).await? {
                    Some(obj) => obj,
                    None => return Ok(false),
                },
            };
            if obj.spec == spec {
                return Ok(false);
            }
            obj.spec = spec;
            api.replace(name, &PostParams::default(), &obj).await?;
            Ok(true)
        }
    })
    .await
    .map_err(Error::kube(format!("write NodePodProbe {name} spec")))?;
    if written {
        let probes: usize = spec.pod_probes.iter().map(|p| p.probes.len()).sum();
        info!(node = %name, pods = spec.pod_probes.len(), probes, "node pod probe spec written");
    }
    Ok(())
}

/// Bring `pod` to `marks` with one `pods/status` patch (labels, annotations and conditions);
/// nothing when it already shows them. A conflict reads the pod again and decides again.
pub async fn mark_pod(client: &kube::Client, listed: &Pod, marks: &Marks) -> Result<(), Error> {
    let (ns, name) = (listed.namespace().unwrap_or_default(), listed.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut first = Some(listed.clone());
    let uid = listed.uid();
    let patched = retry_on_conflict(TRIES, || {
        let (api, name, uid) = (&api, &name, &uid);
        let listed = first.take();
        async move {
            let pod = match listed {
                Some(pod) => pod,
                None => match api.get_opt(name).await? {
                    Some(pod) if pod.uid() == *uid => pod,
                    _ => return Ok(None),
                },
            };
            let Some(patch) = decide::pod_patch(&pod, marks) else {
                return Ok(None);
            };
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => Ok(Some(patch)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        }
    })
    .await
    .map_err(Error::kube(format!("mark pod {ns}/{name}")))?;
    if let Some(patch) = patched {
        info!(
            pod_namespace = %ns,
            pod_name = %name,
            pod_uid = %uid.unwrap_or_default(),
            labels = %patch["metadata"].get("labels").unwrap_or(&json!({})),
            annotations = %patch["metadata"].get("annotations").unwrap_or(&json!({})),
            conditions = %patch.get("status").unwrap_or(&json!({})),
            "pod marked from its probe results"
        );
    }
    Ok(())
}

/// Set the marker's finalizers to `finalizers`, guarded by the resourceVersion read.
async fn set_finalizers(
    client: &kube::Client,
    ppm: &PodProbeMarker,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch = json!({"metadata": {
        "resourceVersion": ppm.resource_version(),
        "finalizers": finalizers,
    }});
    patch_marker(client, ppm, false, patch, "set the finalizers of").await
}

/// Merge-patch the marker (or its status); a marker that is gone is done.
async fn patch_marker(
    client: &kube::Client,
    ppm: &PodProbeMarker,
    status: bool,
    patch: serde_json::Value,
    what: &str,
) -> Result<(), Error> {
    let (ns, name) = (ppm.namespace().unwrap_or_default(), ppm.name_any());
    let api: Api<PodProbeMarker> = Api::namespaced(client.clone(), &ns);
    let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
    let written = if status {
        api.patch_status(&name, &pp, &patch).await
    } else {
        api.patch(&name, &pp, &patch).await
    };
    match written {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube(format!("{what} PodProbeMarker {ns}/{name}"))(e)),
    }
}

pub async fn add_finalizer(client: &kube::Client, ppm: &PodProbeMarker) -> Result<(), Error> {
    let mut finalizers = ppm.finalizers().to_vec();
    finalizers.push(POD_PROBE_MARKER_FINALIZER.into());
    set_finalizers(client, ppm, finalizers).await
}

pub async fn remove_finalizer(client: &kube::Client, ppm: &PodProbeMarker) -> Result<(), Error> {
    let finalizers = ppm
        .finalizers()
        .iter()
        .filter(|f| *f != POD_PROBE_MARKER_FINALIZER)
        .cloned()
        .collect();
    set_finalizers(client, ppm, finalizers).await?;
    info!(
        namespace = %ppm.namespace().unwrap_or_default(),
        name = %ppm.name_any(),
        "no node runs the marker's probes any more; finalizer removed"
    );
    Ok(())
}

/// The pods the marker probes (upstream `matchedPods`): listed by its selector, probed, and on a
/// node `node_ok` accepts (virtual nodes are left out).
pub async fn count_matched(
    client: &kube::Client,
    ppm: &PodProbeMarker,
    node_ok: impl Fn(&str) -> bool,
) -> Result<i64, Error> {
    let ns = ppm.namespace().unwrap_or_default();
    let Ok(selector) = Selector::try_from(ppm.spec.selector.clone()) else {
        return Ok(0);
    };
    if selector.selects_all() {
        return Ok(0);
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = api
        .list(&ListParams::default().labels_from(&selector))
        .await
        .map_err(Error::kube(format!(
            "list the pods of PodProbeMarker {ns}/{}",
            ppm.name_any()
        )))?;
    let n = pods
        .items
        .iter()
        .filter(|p| decide::is_probed(p))
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(&node_ok)
        })
        .count();
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Record the generation seen and the matched pods, unless the status already says so.
pub async fn write_status(
    client: &kube::Client,
    ppm: &PodProbeMarker,
    matched: i64,
) -> Result<(), Error> {
    let generation = ppm.metadata.generation.unwrap_or_default();
    if ppm
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == generation && s.matched_pods == matched)
    {
        return Ok(());
    }
    let patch = json!({"status": {"observedGeneration": generation, "matchedPods": matched}});
    patch_marker(client, ppm, true, patch, "write the status of").await
}
