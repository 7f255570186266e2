//! CloneSet's admission webhooks (upstream `pkg/webhook/cloneset`): the defaults as a JSON patch,
//! and the refusals of [`decide::validate`], in upstream's words. Served on every replica;
//! registered by `packaging/kubernetes/components/cloneset` (and the chart's gate) only.

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionReview, Operation};

use super::decide::validate;
use crate::api::kruise::CloneSet;
use crate::controller::webhook;

pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-v1alpha1-cloneset";
pub const VALIDATE_PATH: &str = "/validate-apps-kruise-io-v1alpha1-cloneset";
const KIND: &str = "CloneSet";

/// The defaults of a created CloneSet, or of one whose spec changed.
pub fn mutate(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    webhook::answer(review, |req, resp| {
        let Ok((mut cs, raw)) = webhook::typed::<CloneSet>(req.object.as_ref(), "object", KIND)
        else {
            return resp;
        };
        if cs.metadata.deletion_timestamp.is_some() {
            return resp;
        }
        validate::apply_defaults(&mut cs.spec);
        match webhook::patch(&raw, &cs) {
            Ok(p) if p.0.is_empty() => resp,
            Ok(p) => match resp.clone().with_patch(p) {
                Ok(r) => r,
                Err(e) => resp.deny(format!("encoding the patch: {e}")),
            },
            Err(e) => resp.deny(format!("encoding the patch: {e}")),
        }
    })
}

/// Refuse a CloneSet spec upstream refuses; an update that leaves the spec alone passes. The
/// pods a change adds to `podsToDelete` are looked up: each must be a live pod of this CloneSet.
pub async fn validate(
    client: &kube::Client,
    review: AdmissionReview<DynamicObject>,
) -> AdmissionReview<DynamicObject> {
    let lookups = pods_to_delete(client, &review).await;
    judge(review, &lookups)
}

/// The pods a CREATE or UPDATE adds to `podsToDelete`, as one lookup with one deadline finds
/// them (the review is read again by [`judge`]; admission is no hot path).
async fn pods_to_delete(
    client: &kube::Client,
    review: &AdmissionReview<DynamicObject>,
) -> Vec<(String, Result<Option<Pod>, String>)> {
    let Some(req) = review.request.as_ref() else {
        return Vec::new();
    };
    let typed = |obj| {
        webhook::typed::<CloneSet>(obj, "object", KIND)
            .ok()
            .map(|(cs, _)| cs)
    };
    let (Some(new), old) = (typed(req.object.as_ref()), typed(req.old_object.as_ref())) else {
        return Vec::new();
    };
    let names = validate::newly_named_pods(&new.spec, old.as_ref().map(|o| &o.spec));
    let ns = req.namespace.as_deref().unwrap_or_default();
    webhook::lookup_pods(client, ns, &names).await
}

/// The verdict on `review`, with the `podsToDelete` lookups made for it.
fn judge(
    review: AdmissionReview<DynamicObject>,
    lookups: &[(String, Result<Option<Pod>, String>)],
) -> AdmissionReview<DynamicObject> {
    webhook::answer(review, |req, resp| {
        let typed = |obj| webhook::typed::<CloneSet>(obj, "object", KIND);
        let new = match typed(req.object.as_ref()) {
            Ok((cs, _)) => cs,
            Err(_) if req.operation == Operation::Delete => return resp,
            Err(message) => return webhook::deny(req, resp, KIND, message),
        };
        let old = typed(req.old_object.as_ref()).ok().map(|(cs, _)| cs);
        if let Some(old) = &old
            && (old.spec == new.spec || new.metadata.deletion_timestamp.is_some())
        {
            return resp;
        }
        let mut errors = validate::validate(&new.spec, old.as_ref().map(|o| &o.spec));
        let uid = new.metadata.uid.as_deref().unwrap_or_default();
        errors.extend(lookups.iter().filter_map(|(name, found)| {
            validate::pod_to_delete_refusal(
                name,
                found.as_ref().map(Option::as_ref).map_err(String::clone),
                uid,
            )
        }));
        if errors.is_empty() {
            resp
        } else {
            webhook::deny(req, resp, KIND, errors.join("; "))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review(operation: &str, spec: Value, old: Option<Value>) -> AdmissionReview<DynamicObject> {
        let object = |spec: Value| {
            json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                "metadata": {"name": "web", "namespace": "ns"}, "spec": spec})
        };
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": operation, "name": "web", "namespace": "ns",
                "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "CloneSet"},
                "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "clonesets"},
                "userInfo": {"username": "u"},
                "object": object(spec),
                "oldObject": old.map(object),
            },
        }))
        .unwrap()
    }

    fn spec(template_app: &str) -> Value {
        json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": template_app}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}},
        })
    }

    fn response(review: AdmissionReview<DynamicObject>) -> Value {
        serde_json::to_value(review).unwrap()["response"].clone()
    }

    #[test]
    fn defaults_and_refusals() {
        let mutated = response(mutate(review("CREATE", spec("web"), None)));
        // kube serializes the patch as bytes.
        let bytes: Vec<u8> = serde_json::from_value(mutated["patch"].clone()).unwrap();
        let patch = String::from_utf8(bytes).unwrap();
        for default in ["\"ReCreate\"", "\"20%\"", "/spec/replicas"] {
            assert!(patch.contains(default), "{default} in {patch}");
        }
        let ok = response(judge(review("CREATE", spec("web"), None), &[]));
        assert_eq!(ok["allowed"], true);
        let refused = response(judge(review("CREATE", spec("api"), None), &[]));
        assert_eq!(refused["allowed"], false);
        let message = refused["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("`selector` does not match template `labels`"),
            "{message}"
        );
        // An update that leaves the spec alone passes, even one stored before the webhook.
        let same = response(judge(review("UPDATE", spec("api"), Some(spec("api"))), &[]));
        // A pod named for deletion that is not there.
        let mut named = spec("web");
        named["scaleStrategy"] = json!({"podsToDelete": ["gone"]});
        let gone = vec![("gone".to_string(), Ok(None))];
        let refused = response(judge(review("UPDATE", named, Some(spec("web"))), &gone));
        assert_eq!(refused["allowed"], false);
        assert!(
            refused["status"]["message"]
                .as_str()
                .unwrap()
                .contains("find pod gone failed")
        );
        assert_eq!(same["allowed"], true);
    }
}
