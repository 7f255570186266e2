//! The ImagePullJob and ImageListPullJob webhooks' answers (served by
//! [`crate::controller::webhook`] on every replica), as kruise-manager's: the mutating ones apply
//! the defaults (`completionPolicy.type` Always, `pullPolicy` 600 s / 3 tries; an ImagePullJob
//! also `imagePullPolicy` IfNotPresent and on a create the `apps.kruise.io/deletion-protection`
//! finalizer), so the object Create returns is OpenKruise's; the validating ones refuse what
//! [`decide::validate`](super::job::decide::validate) and
//! [`list::decide::validate`](super::list::decide::validate) refuse, with their messages, instead
//! of the job failing later. An update that leaves the spec alone, and a job being deleted,
//! always pass: a job stored invalid before the webhook keeps a finalizer the controller must be
//! able to remove.

use kube::core::admission::{AdmissionReview, Operation};
use kube::core::{DynamicObject, ObjectMeta};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::job::decide;
use super::list::decide as list_decide;
use crate::api::kruise::{FINALIZER_DELETION_PROTECTION, ImageListPullJob, ImagePullJob};
use crate::controller::webhook;

/// Paths of the webhooks, as kruise-manager serves them.
pub const MUTATE_PATH: &str = "/mutate-apps-kruise-io-imagepulljob";
pub const VALIDATE_PATH: &str = "/validate-apps-kruise-io-imagepulljob";
pub const LIST_MUTATE_PATH: &str = "/mutate-apps-kruise-io-imagelistpulljob";
pub const LIST_VALIDATE_PATH: &str = "/validate-apps-kruise-io-imagelistpulljob";

/// What the webhooks need of either job kind.
trait Job: DeserializeOwned + Serialize {
    const KIND: &'static str;
    fn meta(&mut self) -> &mut ObjectMeta;
    /// The defaults of upstream's mutating webhook (and at a create its finalizer, if any).
    fn default(&mut self, operation: &Operation);
    /// Whether two versions have the same spec.
    fn same_spec(&self, other: &Self) -> bool;
    /// What the validating webhook refuses, with its message.
    fn check(&self) -> Result<(), String>;
}

impl Job for ImagePullJob {
    const KIND: &'static str = "ImagePullJob";
    fn meta(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn default(&mut self, operation: &Operation) {
        self.spec.apply_webhook_defaults();
        if *operation == Operation::Create {
            let finalizers = self.metadata.finalizers.get_or_insert_with(Vec::new);
            if !finalizers
                .iter()
                .any(|f| f == FINALIZER_DELETION_PROTECTION)
            {
                finalizers.push(FINALIZER_DELETION_PROTECTION.into());
            }
        }
    }
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn check(&self) -> Result<(), String> {
        decide::validate(&decide::with_defaults(&self.spec)).map(|_| ())
    }
}

impl Job for ImageListPullJob {
    const KIND: &'static str = "ImageListPullJob";
    fn meta(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn default(&mut self, _: &Operation) {
        self.spec.apply_webhook_defaults();
    }
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn check(&self) -> Result<(), String> {
        let mut spec = self.spec.clone();
        spec.apply_webhook_defaults();
        list_decide::validate(&spec)
    }
}

/// ImagePullJob defaults (and on a create the finalizer), as a JSON patch of the object as sent.
pub fn mutate(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    mutate_as::<ImagePullJob>(review)
}

/// Refuse an ImagePullJob the controller would fail, with the reason it would give.
pub fn validate(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    validate_as::<ImagePullJob>(review)
}

/// ImageListPullJob defaults (no finalizer, no `imagePullPolicy`: upstream's).
pub fn mutate_list(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    mutate_as::<ImageListPullJob>(review)
}

/// Refuse an ImageListPullJob the controller would not run.
pub fn validate_list(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    validate_as::<ImageListPullJob>(review)
}

fn mutate_as<J: Job>(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    webhook::answer(review, |req, resp| {
        // What cannot be read is left to the validating webhook and the schema; a job being
        // deleted is left as it is (its finalizer must always be able to leave).
        let Ok((mut job, raw)) = webhook::typed::<J>(req.object.as_ref(), "object", J::KIND) else {
            return resp;
        };
        if job.meta().deletion_timestamp.is_some() {
            return resp;
        }
        job.default(&req.operation);
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

fn validate_as<J: Job>(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    webhook::answer(review, |req, resp| {
        let typed = |obj| webhook::typed::<J>(obj, "object", J::KIND);
        // An update that leaves the spec alone (a finalizer, a label) passes, or a job stored
        // before the webhook could never be deleted.
        if req.operation == Operation::Update
            && let (Ok((mut new, _)), Ok((old, _))) =
                (typed(req.object.as_ref()), typed(req.old_object.as_ref()))
            && (new.same_spec(&old) || new.meta().deletion_timestamp.is_some())
        {
            return resp;
        }
        match typed(req.object.as_ref()).and_then(|(job, _)| job.check()) {
            Ok(()) => resp,
            Err(message) => webhook::deny(req, resp, J::KIND, message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review(operation: &str, spec: Value) -> AdmissionReview<DynamicObject> {
        review_of("ImagePullJob", operation, spec)
    }

    fn review_of(kind: &str, operation: &str, spec: Value) -> AdmissionReview<DynamicObject> {
        let resource = format!("{}s", kind.to_lowercase());
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": operation, "name": "j", "namespace": "ns",
                "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": resource},
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": kind,
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

    #[test]
    fn a_list_gets_the_shared_defaults_only() {
        let spec = json!({"images": ["busybox:1"], "completionPolicy": {}});
        let r = mutate_list(review_of("ImageListPullJob", "CREATE", spec.clone()))
            .response
            .unwrap();
        assert!(r.allowed);
        let patch: json_patch::Patch = serde_json::from_slice(&r.patch.unwrap()).unwrap();
        let mut obj = json!({"metadata": {"name": "j", "namespace": "ns"}, "spec": spec});
        json_patch::patch(&mut obj, &patch).unwrap();
        assert_eq!(
            obj["spec"],
            json!({"images": ["busybox:1"], "completionPolicy": {"type": "Always"},
                   "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}})
        );
        assert_eq!(obj["metadata"].get("finalizers"), None);
    }

    #[test]
    fn a_list_its_jobs_would_fail_is_refused() {
        let table = [
            (
                json!({"images": ["busybox:1", "nginx"], "completionPolicy": {}}),
                None,
            ),
            (
                json!({"images": ["nginx", "nginx:latest"], "completionPolicy": {}}),
                Some("images cannot have duplicate values"),
            ),
            (
                json!({"images": ["nginx"], "completionPolicy": {"activeDeadlineSeconds": 10}}),
                Some(
                    "completionPolicy.activeDeadlineSeconds (10) must be >= pullPolicy.timeoutSeconds (600)",
                ),
            ),
        ];
        for (spec, want) in table {
            let r = response(validate_list(review_of(
                "ImageListPullJob",
                "CREATE",
                spec.clone(),
            )));
            assert_eq!(r["allowed"], want.is_none(), "{spec}");
            if let Some(want) = want {
                assert_eq!(r["status"]["message"], want, "{spec}");
            }
        }
    }
}
