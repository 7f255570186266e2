//! The PodProbeMarker validating webhook's answer (served by [`crate::controller::webhook`] on
//! every replica): the object (and on an update the old one) judged by [`validate`]; a refusal
//! lists every error, as the API server's field errors read.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};

use super::decide::validate::validate;
use crate::api::kruise::PodProbeMarker;
use crate::controller::webhook;

/// Path of the validating webhook, as kruise-manager serves it.
pub const PATH: &str = "/validate-apps-kruise-io-podprobemarker";

/// Answer one AdmissionReview.
pub fn review(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    webhook::answer(review, |req, resp| {
        let errors = judge(req).unwrap_or_else(|e| vec![e]);
        match errors.as_slice() {
            [] => resp,
            [one] => webhook::deny(req, resp, "PodProbeMarker", one.clone()),
            many => webhook::deny(
                req,
                resp,
                "PodProbeMarker",
                format!("[{}]", many.join(", ")),
            ),
        }
    })
}

fn typed(obj: Option<&DynamicObject>, what: &str) -> Result<PodProbeMarker, String> {
    webhook::typed(obj, what, "PodProbeMarker").map(|(m, _)| m)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review_of(operation: &str, probes: Value) -> AdmissionReview<DynamicObject> {
        let object = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "PodProbeMarker",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "probes": probes}});
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": operation, "name": "m", "namespace": "ns",
                "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "PodProbeMarker"},
                "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "podprobemarkers"},
                "userInfo": {"username": "alice"},
                "object": object, "oldObject": object, "dryRun": false
            }
        }))
        .unwrap()
    }

    #[test]
    fn every_reason_at_once_and_unchanged_specs_pass() {
        let bad = json!([{"name": "a#b", "containerName": "", "probe": {"exec": {"command": ["true"]}},
                          "podConditionType": "x"}]);
        let r = review(review_of("CREATE", bad.clone())).response.unwrap();
        assert!(!r.allowed);
        assert_eq!(
            r.result.message,
            "[spec.probes[0].name: Invalid value: probe name can't contains '#'., spec.probes[0].containerName: Required value: probe containerName can't be empty in PodProbeMarker.]"
        );
        // The same invalid spec on an update that changes nothing of it (a finalizer leaving).
        assert!(review(review_of("UPDATE", bad)).response.unwrap().allowed);
    }
}
