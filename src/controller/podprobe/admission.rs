//! The PodProbeMarker validating webhook's answer (served by [`crate::controller::webhook`] on
//! every replica): the object (and on an update the old one) judged by [`validate`]; a refusal
//! lists every error, as the API server's field errors read.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tracing::info;

use super::decide::validate::validate;
use crate::api::kruise::PodProbeMarker;

/// Path of the validating webhook, as kruise-manager serves it.
pub const PATH: &str = "/validate-apps-kruise-io-podprobemarker";

/// Answer one AdmissionReview.
pub fn review(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(req) => req,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let resp = AdmissionResponse::from(&req);
    let errors = match judge(&req) {
        Ok(errors) => errors,
        Err(e) => vec![e],
    };
    if errors.is_empty() {
        return resp.into_review();
    }
    let message = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    info!(
        namespace = %req.namespace.as_deref().unwrap_or_default(),
        name = %req.name,
        operation = ?req.operation,
        user = %req.user_info.username.as_deref().unwrap_or_default(),
        reason = %message,
        "PodProbeMarker denied at admission"
    );
    resp.deny(message).into_review()
}

fn typed(obj: Option<&DynamicObject>, what: &str) -> Result<PodProbeMarker, String> {
    let obj = obj.ok_or_else(|| format!("the request has no {what}"))?;
    let raw = serde_json::to_value(obj).map_err(|e| format!("reading the {what}: {e}"))?;
    serde_json::from_value(raw).map_err(|e| format!("not a valid PodProbeMarker: {e}"))
}

fn judge(req: &AdmissionRequest<DynamicObject>) -> Result<Vec<String>, String> {
    match req.operation {
        Operation::Create => Ok(validate(&typed(req.object.as_ref(), "object")?, None)),
        Operation::Update => {
            let old = typed(req.old_object.as_ref(), "old object")?;
            let new = typed(req.object.as_ref(), "object")?;
            // Only the spec is judged: the finalizer's removal from a marker that is invalid
            // today (stored before these rules) must not be refused.
            if new.spec == old.spec {
                return Ok(Vec::new());
            }
            Ok(validate(&new, Some(&old)))
        }
        _ => Ok(Vec::new()),
    }
}
