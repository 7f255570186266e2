//! The CRR admission webhook's answer (served by [`crate::controller::webhook`] on every
//! replica): read the review, look the Pod up on a CREATE, let [`decide`] judge, and turn a
//! mutation into a JSON patch against the object exactly as the API server sent it.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tracing::{info, warn};

use super::Crr;
use super::decide::{self, Admission};
use crate::controller::webhook;

/// Path of the mutating webhook, as kruise-manager serves it.
pub const PATH: &str = "/mutate-apps-kruise-io-v1alpha1-containerrecreaterequest";

/// Answer one AdmissionReview.
pub async fn review(
    client: &kube::Client,
    review: AdmissionReview<DynamicObject>,
) -> AdmissionReview<DynamicObject> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(req) => req,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let resp = AdmissionResponse::from(&req);
    let name = format!(
        "{}/{}",
        req.namespace.as_deref().unwrap_or_default(),
        req.name
    );
    let (verdict, raw) = match judge(client, &req).await {
        Ok(v) => v,
        Err(message) => (Admission::Deny(message), None),
    };
    let resp = match (verdict, raw) {
        (Admission::Allow, _) => resp,
        (Admission::Deny(message), _) => {
            info!(crr = %name, operation = ?req.operation, user = %req.user_info.username.as_deref().unwrap_or_default(), reason = %message, "CRR denied at admission");
            resp.deny(message)
        }
        (Admission::Mutate(next), Some(raw)) => match webhook::patch(&raw, &next) {
            Ok(p) => {
                info!(crr = %name, pod = %next.spec.pod_name, pod_uid = %next.pod_uid().unwrap_or_default(), node = %next.node_name().unwrap_or_default(), "CRR admitted and filled from its Pod");
                match resp.clone().with_patch(p) {
                    Ok(r) => r,
                    Err(e) => resp.deny(format!("encoding the patch: {e}")),
                }
            }
            Err(e) => resp.deny(format!("encoding the patch: {e}")),
        },
        (Admission::Mutate(_), None) => resp.deny("no object to mutate"),
    };
    resp.into_review()
}

fn typed(obj: Option<&DynamicObject>, what: &str) -> Result<(Crr, serde_json::Value), String> {
    webhook::typed(obj, what, "ContainerRecreateRequest")
}

/// The verdict, and on a CREATE the object as sent (the base of the patch).
async fn judge(
    client: &kube::Client,
    req: &AdmissionRequest<DynamicObject>,
) -> Result<(Admission, Option<serde_json::Value>), String> {
    match req.operation {
        Operation::Create => {
            let (crr, raw) = typed(req.object.as_ref(), "object")?;
            let ns = req.namespace.clone().unwrap_or_default();
            let pod = if crr.spec.pod_name.is_empty() {
                None
            } else {
                let name = std::slice::from_ref(&crr.spec.pod_name);
                match webhook::lookup_pods(client, &ns, name).await.pop() {
                    Some((_, Ok(pod))) => pod,
                    Some((_, Err(e))) => {
                        warn!(namespace = %ns, pod = %crr.spec.pod_name, error = %e, "CRR admission: reading the Pod failed");
                        return Err(format!("reading Pod {}: {e}", crr.spec.pod_name));
                    }
                    None => None,
                }
            };
            Ok((decide::admit_create(&crr, pod.as_ref()), Some(raw)))
        }
        Operation::Update => {
            let (old, _) = typed(req.old_object.as_ref(), "old object")?;
            let (new, _) = typed(req.object.as_ref(), "object")?;
            Ok((decide::admit_update(&old, &new), None))
        }
        _ => Ok((Admission::Allow, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_patch_applies_to_the_object_as_sent() {
        let raw = json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
            "metadata": {"name": "r", "namespace": "default",
                         "labels": {"crr.apps.kruise.io/pod-uid": "forged", "team": "a"}},
            "spec": {"podName": "web-0", "containers": [{"name": "app"}]},
        });
        let mut next: Crr = serde_json::from_value(raw.clone()).unwrap();
        let labels = next.metadata.labels.as_mut().unwrap();
        labels.insert("crr.apps.kruise.io/pod-uid".into(), "real".into());
        labels.insert("crr.apps.kruise.io/active".into(), "true".into());
        next.spec.apply_webhook_defaults();
        let p = webhook::patch(&raw, &next).unwrap();
        let mut applied = raw.clone();
        json_patch::patch(&mut applied, &p).unwrap();
        assert_eq!(
            applied["metadata"]["labels"]["crr.apps.kruise.io/pod-uid"],
            "real"
        );
        assert_eq!(applied["metadata"]["labels"]["team"], "a");
        assert_eq!(
            applied["metadata"]["labels"]["crr.apps.kruise.io/active"],
            "true"
        );
        assert_eq!(applied["spec"]["strategy"]["failurePolicy"], "Fail");
        assert_eq!(applied["kind"], "ContainerRecreateRequest");
    }
}
