//! ImageListPullJob decisions, pure (upstream `imagelistpulljob_controller.go`): which
//! ImagePullJobs a list job should have (one per image, made from its template), which of its
//! jobs are stale (an image removed, the template changed), and the list's status from its
//! jobs'. No I/O: the reconciler in [`super`] reads the objects and carries the plan out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::kruise::{
    CompletionPolicyType, FailedImageStatus, ImageListPullJobSpec, ImageListPullJobStatus,
    ImagePullJob, ImagePullJobTemplate,
};
use crate::controller::imagepull::job::decide::validate_template;
use crate::hash::{fnv1a_32, safe_encode};
use crate::imagepull::reference::ImageRef;

/// The label on each ImagePullJob of a list: the hash of the template it was made from.
pub const TEMPLATE_HASH_LABEL: &str = "controller-revision-hash";
/// Upstream's limit on `spec.images`.
pub const MAX_IMAGES: usize = 255;
/// The message of a failed image, as upstream words it.
pub const FAILED_IMAGE_MESSAGE: &str =
    "Please check for details which nodes failed by 'kubectl get ImagePullJob <name>'.";

/// Upstream's validating webhook (its messages), and stricter in two ways: images that name the
/// same reference (`nginx`, `docker.io/library/nginx:latest`) are duplicates, and the template
/// must pass the ImagePullJob rules (upstream admitted a list whose jobs its ImagePullJob webhook
/// then refused, and retried creating them forever).
pub fn validate(spec: &ImageListPullJobSpec) -> Result<(), String> {
    validate_template(&spec.template)?;
    if spec.images.is_empty() {
        return Err("image can not be empty".into());
    }
    if spec.images.len() > MAX_IMAGES {
        return Err(format!(
            "the maximum number of images cannot > {MAX_IMAGES}"
        ));
    }
    let mut seen = BTreeSet::new();
    for image in &spec.images {
        let parsed = ImageRef::parse(image).map_err(|e| format!("invalid image {image}: {e}"))?;
        if !seen.insert(parsed.pull_ref()) {
            return Err("images cannot have duplicate values".into());
        }
    }
    Ok(())
}

/// A stable hash of the template: FNV-1a 32 of its JSON (field order fixed by the type, maps
/// sorted), written as apimachinery writes such numbers. Upstream hashes Go's in-memory dump of
/// the struct, which no other program can reproduce; only equality matters here.
pub fn template_hash(template: &ImagePullJobTemplate) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    safe_encode(&fnv1a_32(json).to_string())
}

/// The name of the ImagePullJob of `image` made from the template hashed `hash`:
/// `<list>-<suffix>`, the suffix a hash of both. Upstream lets the server generate a suffix;
/// a name that follows from what the job is makes a create that a lagging cache repeats fail
/// with AlreadyExists instead of making a second job.
pub fn job_name(list: &str, image: &str, hash: &str) -> String {
    let key = format!("{image}\n{hash}");
    let suffix = safe_encode(&fnv1a_32(key.bytes()).to_string());
    let prefix: String = list.chars().take(253 - 1 - suffix.len()).collect();
    format!("{prefix}-{suffix}")
}

/// What one pass does: ImagePullJobs to create (images) and to delete (names), and the status.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
    pub status: ImageListPullJobStatus,
}

/// One pass over a (defaulted, valid) list job and the ImagePullJobs it controls.
///
/// A job is current when its image is listed and it was made from this template (its
/// [`TEMPLATE_HASH_LABEL`], or, without the label, an equal template); every other job of the
/// list is deleted, and a listed image without a current job gets one. Jobs being deleted are
/// neither current nor deleted again.
///
/// The status counts the current jobs only (upstream counted the jobs about to be deleted too,
/// and could complete a list in the pass that created a job for a new image): a job the
/// ImagePullJob controller has not acknowledged yet (no `startTime`) counts as not done; one
/// whose nodes all finished is `completed`, and `succeeded` when none failed (a job selecting no
/// node counts as both, as upstream); jobs with failed nodes are listed by image. `Always` lists
/// complete when every image's job completed.
pub fn plan(
    spec: &ImageListPullJobSpec,
    previous: Option<&ImageListPullJobStatus>,
    hash: &str,
    jobs: &[&ImagePullJob],
    now: Timestamp,
) -> Plan {
    let listed: BTreeSet<&str> = spec.images.iter().map(String::as_str).collect();
    let mut current: BTreeMap<&str, &ImagePullJob> = BTreeMap::new();
    let mut delete = Vec::new();
    let mut sorted: Vec<&ImagePullJob> = jobs
        .iter()
        .copied()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for job in sorted {
        let image = job.spec.image.as_str();
        let label = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEMPLATE_HASH_LABEL));
        let same_template = match label {
            Some(h) => h == hash,
            None => job.spec.template == spec.template,
        };
        if listed.contains(image) && same_template && !current.contains_key(image) {
            current.insert(image, job);
        } else if let Some(name) = &job.metadata.name {
            delete.push(name.clone());
        }
    }
    let create = spec
        .images
        .iter()
        .filter(|i| !current.contains_key(i.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut status = ImageListPullJobStatus {
        start_time: Some(
            previous
                .and_then(|p| p.start_time.clone())
                .unwrap_or(Time(now)),
        ),
        desired: i32::try_from(listed.len()).unwrap_or(i32::MAX),
        ..Default::default()
    };
    for (image, job) in &current {
        let Some(s) = job.status.as_ref().filter(|s| s.start_time.is_some()) else {
            continue;
        };
        if s.active > 0 {
            status.active += 1;
        }
        if s.failed > 0 {
            status.failed_image_statuses.push(FailedImageStatus {
                image_pull_job: job.metadata.name.clone().unwrap_or_default(),
                name: (*image).to_string(),
                message: FAILED_IMAGE_MESSAGE.into(),
            });
        }
        if i64::from(s.desired) == i64::from(s.failed) + i64::from(s.succeeded) {
            status.completed += 1;
        }
        if s.desired == s.succeeded {
            status.succeeded += 1;
        }
    }
    status.completion_time = previous
        .and_then(|p| p.completion_time.clone())
        .or_else(|| {
            (spec.template.completion_policy_type() != CompletionPolicyType::Never
                && status.completed == status.desired)
                .then_some(Time(now))
        });
    Plan {
        create,
        delete,
        status,
    }
}

#[cfg(test)]
mod tests;
