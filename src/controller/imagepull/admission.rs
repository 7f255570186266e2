//! The ImagePullJob webhooks' answers (served by [`crate::controller::webhook`] on every replica),
//! as kruise-manager's: the mutating one applies the defaults (`completionPolicy.type` Always,
//! `pullPolicy` 600 s / 3 tries, `imagePullPolicy` IfNotPresent) and on a create the
//! `apps.kruise.io/deletion-protection` finalizer, so the object Create returns is OpenKruise's;
//! the validating one refuses what [`decide::validate`](super::job::decide::validate) refuses,
//! with its message, instead of the job failing later. An update that leaves the spec alone, and
//! a job being deleted, always pass: a job stored invalid before the webhook keeps a finalizer
//! the controller must be able to remove.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionReview, Operation};

use super::job::decide;
use crate::api::kruise::{FINALIZER_DELETION_PROTECTION, ImagePullJob};
use crate::controller::webhook;

/// Paths of the webhooks, as kruise-manager serves them.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-imagepulljob";
pub const VALIDATE_PATH: &str = "/validate-apps-kruise-io-imagepulljob";

fn typed(obj: Option<&DynamicObject>) -> Result<(ImagePullJob, serde_json::Value), String> {
    webhook::typed(obj, "object", "ImagePullJob")
}

/// The defaults (and on a create the finalizer), as a JSON patch of the object as sent.
pub fn mutate(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    webhook::answer(review, |req, resp| {
        // What cannot be read is left to the validating webhook and the schema; a job being
        // deleted is left as it is (its finalizer must always be able to leave).
        let Ok((mut job, raw)) = typed(req.object.as_ref()) else {
            return resp;
        };
        if job.metadata.deletion_timestamp.is_some() {
            return resp;
        }
        job.spec.apply_webhook_defaults();
        if req.operation == Operation::Create {
            let finalizers = job.metadata.finalizers.get_or_insert_with(Vec::new);
            if !finalizers
                .iter()
                .any(|f| f == FINALIZER_DELETION_PROTECTION)
            {
                finalizers.push(FINALIZER_DELETION_PROTECTION.into());
            }
        }
        match webhook::patch(&raw, &job) {
            Ok(p) if p.0.is_empty() => resp,
            Ok(p) => match resp.clone().with_patch(p) {
                Ok(r) => r,
                Err(e) => resp.deny(format!("encoding the patch: {e}")),
            },
            Err(e) => resp.deny(format!("encoding the patch: {e}")),
        }
    })
}

/// Refuse a job the controller would fail, with the reason it would give.
pub fn validate(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    webhook::answer(review, |req, resp| {
        // An update that leaves the spec alone (a finalizer, a label) passes, or a job stored
        // before the webhook could never be deleted.
        if req.operation == Operation::Update
            && let (Ok((new, _)), Ok((old, _))) =
                (typed(req.object.as_ref()), typed(req.old_object.as_ref()))
            && (new.spec == old.spec || new.metadata.deletion_timestamp.is_some())
        {
            return resp;
        }
        let verdict = typed(req.object.as_ref())
            .and_then(|(job, _)| decide::validate(&decide::with_defaults(&job.spec)).map(|_| ()));
        match verdict {
            Ok(()) => resp,
            Err(message) => webhook::deny(req, resp, "ImagePullJob", message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review(operation: &str, spec: Value) -> AdmissionReview<DynamicObject> {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": operation, "name": "j", "namespace": "ns",
                "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ImagePullJob"},
                "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "imagepulljobs"},
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                           "metadata": {"name": "j", "namespace": "ns"}, "spec": spec},
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn response(r: AdmissionReview<DynamicObject>) -> Value {
        serde_json::to_value(r).unwrap()["response"].clone()
    }

    #[test]
    fn a_create_gets_the_defaults_and_the_finalizer() {
        let r = mutate(review(
            "CREATE",
            json!({"image": "busybox:1", "completionPolicy": {}}),
        ))
        .response
        .unwrap();
        assert!(r.allowed);
        let patch: json_patch::Patch = serde_json::from_slice(&r.patch.unwrap()).unwrap();
        let mut obj = json!({"metadata": {"name": "j", "namespace": "ns"},
            "spec": {"image": "busybox:1", "completionPolicy": {}}});
        json_patch::patch(&mut obj, &patch).unwrap();
        assert_eq!(
            obj["spec"],
            json!({"image": "busybox:1", "completionPolicy": {"type": "Always"},
                   "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3},
                   "imagePullPolicy": "IfNotPresent"})
        );
        assert_eq!(
            obj["metadata"]["finalizers"],
            json!(["apps.kruise.io/deletion-protection"])
        );
        // An update that already has them all changes nothing.
        let done = json!({"image": "busybox:1", "completionPolicy": {"type": "Always"},
            "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}, "imagePullPolicy": "IfNotPresent"});
        let r = mutate(review("UPDATE", done)).response.unwrap();
        assert!(r.allowed);
        assert!(r.patch.is_none(), "{r:?}");
    }

    #[test]
    fn what_the_controller_would_fail_is_refused_with_its_reason() {
        let table = [
            (json!({"image": "busybox:1", "completionPolicy": {}}), None),
            (
                json!({"image": "busybox:1", "completionPolicy": {},
                       "selector": {"names": ["a"]}, "podSelector": {"matchLabels": {"a": "b"}}}),
                Some("selector and podSelector can not be set at the same time"),
            ),
            (
                json!({"image": "busybox:1", "completionPolicy": {}, "parallelism": -1}),
                Some("parallelism must be >= 0, got -1"),
            ),
        ];
        // An invalid job stored earlier: a metadata-only update (its finalizer leaving) passes.
        let bad = json!({"image": "busybox:1", "completionPolicy": {}, "parallelism": -1});
        let mut update = review("UPDATE", bad.clone());
        if let Some(req) = update.request.as_mut() {
            req.old_object = req.object.clone();
        }
        assert_eq!(response(validate(update))["allowed"], true);
        for (spec, want) in table {
            let r = response(validate(review("CREATE", spec.clone())));
            assert_eq!(r["allowed"], want.is_none(), "{spec}");
            if let Some(want) = want {
                assert_eq!(r["status"]["message"], want, "{spec}");
            }
        }
    }
}
