//! Swapping the sidecar images of a pod on a virtual node, and the Event that says so.

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tracing::info;

use super::decide;
use crate::cluster::events::EventType;
use crate::cluster::retry_on_conflict;
use crate::controller::record_event;

/// Swap the images on a fresh copy of the pod, retrying on conflict, then record an Event.
pub async fn swap_images(client: &kube::Client, pod: &Pod) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let swapped = retry_on_conflict(5, || async {
        let Some(mut fresh) = api.get_opt(&name).await? else {
            return Ok(None);
        };
        let swaps = decide::decide(&fresh);
        if swaps.is_empty() {
            return Ok(None);
        }
        if let Some(spec) = fresh.spec.as_mut() {
            for s in &swaps {
                if let Some(c) = spec.containers.iter_mut().find(|c| c.name == s.container) {
                    c.image = Some(s.image.clone());
                }
            }
        }
        let written = api.replace(&name, &PostParams::default(), &fresh).await?;
        Ok(Some((written, swaps)))
    })
    .await?;
    let Some((written, swaps)) = swapped else {
        return Ok(());
    };
    let names: Vec<&str> = swaps.iter().map(|s| s.container.as_str()).collect();
    info!(pod = %name, namespace = %ns, sidecars = ?names, "sidecar images swapped for the quick-exit image");
    let msg = format!("nodeward is terminating sidecar {names:?} using in-place update");
    let uid = written.uid();
    let pod_ref = crate::cluster::events::pod_reference(&ns, &name, uid.as_deref());
    record_event(
        client,
        &pod_ref,
        EventType::Normal,
        decide::EVENT_REASON,
        "UpdateContainerImage",
        &msg,
    )
    .await;
    Ok(())
}
