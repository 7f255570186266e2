//! Pure decisions of the ImagePullJob controller (upstream `imagepulljob_controller.go` and
//! `imagepulljob_utils.go`, with its weak points fixed): webhook defaults and validation, what a
//! job asks of each NodeImage, where each node stands, the job status, and the secret copy
//! bookkeeping. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use crate::api::kruise::{
    ANNOTATION_SECRET_REFERENCES, API_VERSION, CompletionPolicyType, DEFAULT_PULL_BACKOFF_LIMIT,
    DEFAULT_PULL_TIMEOUT_SECONDS, IMAGE_PULL_JOB_MESSAGE_COMPLETED,
    IMAGE_PULL_JOB_MESSAGE_DEADLINE_EXCEEDED, ImagePullJob, ImagePullJobSpec, ImagePullJobStatus,
    ImagePullJobTemplate, ImagePullPhase, ImagePullPolicy, ImageSpec, ImageTagPullPolicy,
    ImageTagSpec, NodeImage, NodeImageSpec, NodeImageStatus, ReferenceObject, SandboxConfig,
    image_pull_job_progress_message,
};
use crate::imagepull::reference::ImageRef;

/// Kind of the owner references the controller puts on NodeImage tags.
pub const OWNER_KIND: &str = "ImagePullJob";
/// A `Never` job's tag TTL: 24 h (± [`NEVER_TTL_JITTER_SECONDS`]).
const NEVER_TTL_SECONDS: i32 = 24 * 3600;
const NEVER_TTL_JITTER_SECONDS: i32 = 600;
/// Smallest `activeDeadlineSeconds` of a `Never` job's tag.
const NEVER_MIN_DEADLINE_SECONDS: i64 = 1800;
/// Upper bound of the random part of an `Always` job's tag TTL.
const ALWAYS_TTL_JITTER_SECONDS: i32 = 300;
/// The agent's backoff between attempts: 1 s doubling up to this.
const MAX_BACKOFF_SECONDS: i64 = 30;

/// The job spec with upstream's mutating-webhook defaults applied.
pub fn with_defaults(spec: &ImagePullJobSpec) -> ImagePullJobSpec {
    let mut spec = spec.clone();
    spec.apply_webhook_defaults();
    spec
}

/// Upstream's validating webhook, as a `status.message` on failure.
pub fn validate(spec: &ImagePullJobSpec) -> Result<ImageRef, String> {
    let image = ImageRef::parse(&spec.image).map_err(|e| e.to_string())?;
    validate_template(&spec.template)?;
    Ok(image)
}

/// The rules upstream's validating webhooks share for both job kinds: the node or pod
/// selection, parallelism, the pull policy and the completion policy.
pub fn validate_template(template: &ImagePullJobTemplate) -> Result<(), String> {
    if let Some(sel) = &template.selector {
        if template.pod_selector.is_some() {
            return Err("selector and podSelector can not be set at the same time".into());
        }
        let has_labels = sel
            .label_selector
            .match_labels
            .as_ref()
            .is_some_and(|m| !m.is_empty())
            || sel
                .label_selector
                .match_expressions
                .as_ref()
                .is_some_and(|m| !m.is_empty());
        if !sel.names.is_empty() && has_labels {
            return Err(
                "can not set both names and labelSelector in this template.selector".into(),
            );
        }
        let mut seen = BTreeSet::new();
        if let Some(dup) = sel.names.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(format!("duplicated name {dup:?} in selector names"));
        }
        Selector::try_from(sel.label_selector.clone())
            .map_err(|e| format!("invalid selector: {e}"))?;
    }
    if let Some(ps) = &template.pod_selector {
        Selector::try_from(ps.clone()).map_err(|e| format!("invalid podSelector: {e}"))?;
    }
    match &template.parallelism {
        Some(IntOrString::String(s)) => {
            return Err(format!("parallelism must be an integer, got {s:?}"));
        }
        Some(IntOrString::Int(n)) if *n < 0 => {
            return Err(format!("parallelism must be >= 0, got {n}"));
        }
        _ => {}
    }
    let pull = template.pull_policy.clone().unwrap_or_default();
    let timeout = pull.timeout_seconds.unwrap_or(DEFAULT_PULL_TIMEOUT_SECONDS);
    if timeout <= 0 {
        return Err(format!(
            "pullPolicy.timeoutSeconds must be > 0, got {timeout}"
        ));
    }
    if let Some(b) = pull.backoff_limit.filter(|b| *b < 0) {
        return Err(format!("pullPolicy.backoffLimit must be >= 0, got {b}"));
    }
    let cp = &template.completion_policy;
    match template.completion_policy_type() {
        CompletionPolicyType::Never => {
            if cp.active_deadline_seconds.is_some() || cp.ttl_seconds_after_finished.is_some() {
                return Err("activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType".into());
            }
        }
        CompletionPolicyType::Always => {
            if let Some(d) = cp.active_deadline_seconds
                && d < i64::from(timeout)
            {
                return Err(format!(
                    "completionPolicy.activeDeadlineSeconds ({d}) must be >= pullPolicy.timeoutSeconds ({timeout})"
                ));
            }
            if let Some(t) = cp.ttl_seconds_after_finished.filter(|t| *t < 0) {
                return Err(format!(
                    "completionPolicy.ttlSecondsAfterFinished must be >= 0, got {t}"
                ));
            }
        }
    }
    Ok(())
}

/// What one job asks of every NodeImage it targets.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTarget {
    pub image: ImageRef,
    pub owner: ObjectReference,
    pub pull_policy: ImageTagPullPolicy,
    pub image_pull_policy: ImagePullPolicy,
    pub sandbox_config: Option<SandboxConfig>,
    /// The pull secrets as the agent reads them (copies in its namespace).
    pub secrets: Vec<ReferenceObject>,
}

/// The owner reference a job puts on its tags.
pub fn owner_ref(job: &ImagePullJob) -> ObjectReference {
    ObjectReference {
        api_version: Some(API_VERSION.into()),
        kind: Some(OWNER_KIND.into()),
        namespace: job.metadata.namespace.clone(),
        name: job.metadata.name.clone(),
        uid: job.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Seconds the agent may spend on `backoff_limit + 1` attempts of `timeout` seconds each, with
/// its backoff sleeps in between.
fn all_attempts_seconds(timeout: i32, backoff_limit: i32) -> i64 {
    let retries = i64::from(backoff_limit.max(0));
    // Sleeps double (1, 2, 4 … s) up to the cap, then stay there: no loop over `backoffLimit`.
    let (mut sleeps, mut doubling) = (0i64, 0i64);
    while doubling < retries && (1i64 << doubling) < MAX_BACKOFF_SECONDS {
        sleeps += 1i64 << doubling;
        doubling += 1;
    }
    let capped = (retries - doubling).saturating_mul(MAX_BACKOFF_SECONDS);
    i64::from(timeout)
        .saturating_mul(retries + 1)
        .saturating_add(sleeps)
        .saturating_add(capped)
}

/// A tag's pull policy for a (defaulted) job spec. `jitter` in `[0, 1)` spreads the TTLs:
/// `Never` → TTL 24 h ± 10 min and a deadline long enough for every attempt (upstream took
/// `max(1800, timeout)`, cutting the retries short, #2071); `Always` → TTL = (job TTL, else
/// deadline, else timeout × backoffLimit) + `default_ttl` + up to 300 s, deadline = the job's.
pub fn tag_pull_policy(
    spec: &ImagePullJobSpec,
    default_ttl: i32,
    jitter: f64,
) -> ImageTagPullPolicy {
    let pull = spec.template.pull_policy.clone().unwrap_or_default();
    let timeout = pull.timeout_seconds.unwrap_or(DEFAULT_PULL_TIMEOUT_SECONDS);
    let backoff = pull.backoff_limit.unwrap_or(DEFAULT_PULL_BACKOFF_LIMIT);
    let jitter = jitter.clamp(0.0, 1.0);
    let (ttl, deadline) = match spec.template.completion_policy_type() {
        CompletionPolicyType::Never => {
            let spread = (jitter * f64::from(2 * NEVER_TTL_JITTER_SECONDS)) as i32;
            (
                NEVER_TTL_SECONDS - NEVER_TTL_JITTER_SECONDS + spread,
                Some(NEVER_MIN_DEADLINE_SECONDS.max(all_attempts_seconds(timeout, backoff))),
            )
        }
        CompletionPolicyType::Always => {
            let cp = &spec.template.completion_policy;
            let base = cp
                .ttl_seconds_after_finished
                .map(i64::from)
                .or(cp.active_deadline_seconds)
                .unwrap_or(i64::from(timeout) * i64::from(backoff));
            let extra =
                i64::from(default_ttl) + (jitter * f64::from(ALWAYS_TTL_JITTER_SECONDS)) as i64;
            (
                // A stored deadline may be any i64 (found by tests/fuzz.rs).
                i32::try_from(base.saturating_add(extra)).unwrap_or(i32::MAX),
                cp.active_deadline_seconds,
            )
        }
    };
    ImageTagPullPolicy {
        timeout_seconds: Some(timeout),
        backoff_limit: Some(backoff),
        ttl_seconds_after_finished: Some(ttl),
        active_deadline_seconds: deadline,
    }
}

/// Where a node stands for a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeProgress {
    /// The NodeImage lacks the job's tag (or one of its secrets): to be written.
    NotSynced,
    Pulling,
    Succeeded,
    Failed,
}

fn owned_tag<'a>(image: &'a ImageSpec, tag: &str, uid: Option<&str>) -> Option<&'a ImageTagSpec> {
    image
        .tags
        .iter()
        .find(|t| t.tag == tag && t.owner_references.iter().any(|o| o.uid.as_deref() == uid))
}

/// The node's progress (upstream `calculateStatus`, per NodeImage).
pub fn node_progress(ni: &NodeImage, t: &JobTarget) -> NodeProgress {
    let Some(image) = ni.spec.images.get(&t.image.name) else {
        return NodeProgress::NotSynced;
    };
    if !t.secrets.iter().all(|s| image.pull_secrets.contains(s)) {
        return NodeProgress::NotSynced;
    }
    let Some(tag) = owned_tag(image, &t.image.tag, t.owner.uid.as_deref()) else {
        return NodeProgress::NotSynced;
    };
    let status = ni
        .status
        .as_ref()
        .and_then(|s| s.image_statuses.get(&t.image.name))
        .and_then(|s| s.tags.iter().find(|s| s.tag == tag.tag));
    match status {
        Some(s) if s.version == tag.version => match s.phase {
            ImagePullPhase::Succeeded => NodeProgress::Succeeded,
            ImagePullPhase::Failed => NodeProgress::Failed,
            _ => NodeProgress::Pulling,
        },
        _ => NodeProgress::Pulling,
    }
}

fn policy_differs(a: &ImageTagPullPolicy, b: &ImageTagPullPolicy) -> bool {
    a.timeout_seconds != b.timeout_seconds
        || a.backoff_limit != b.backoff_limit
        || a.active_deadline_seconds != b.active_deadline_seconds
}

fn is_stale(name: &str, tag: &str, t: &JobTarget) -> bool {
    name != t.image.name || tag != t.image.tag
}

/// True when the job still owns a tag of another image or tag (its image was edited).
fn owns_stale_tags(spec: &NodeImageSpec, t: &JobTarget) -> bool {
    let uid = t.owner.uid.as_deref();
    spec.images.iter().any(|(name, image)| {
        image.tags.iter().any(|tag| {
            is_stale(name, &tag.tag, t)
                && tag.owner_references.iter().any(|o| o.uid.as_deref() == uid)
        })
    })
}

/// True when the NodeImage carries the job's tag with an outdated pull policy, image pull policy
/// or sandbox config, or still carries the job's previous image: edits of the job propagate
/// (upstream ignored them, #2221).
pub fn needs_update(ni: &NodeImage, t: &JobTarget) -> bool {
    let Some(image) = ni.spec.images.get(&t.image.name) else {
        return false;
    };
    let Some(tag) = owned_tag(image, &t.image.tag, t.owner.uid.as_deref()) else {
        return false;
    };
    owns_stale_tags(&ni.spec, t)
        || image.sandbox_config != t.sandbox_config
        || tag.image_pull_policy != Some(t.image_pull_policy)
        || tag
            .pull_policy
            .as_ref()
            .is_none_or(|p| policy_differs(p, &t.pull_policy))
}

fn status_tag<'a>(
    status: Option<&'a NodeImageStatus>,
    name: &str,
    tag: &str,
) -> Option<&'a crate::api::kruise::ImageTagStatus> {
    status?
        .image_statuses
        .get(name)?
        .tags
        .iter()
        .find(|s| s.tag == tag)
}

/// Puts the job's tag on a NodeImage spec (upstream `syncNodeImages`, per NodeImage). Returns
/// whether the spec changed.
///
/// * tag owned by the job: secrets merged; an edited pull policy is written and, unless the node
///   already succeeded with this version, the version is bumped so the agent pulls again with it;
/// * tag owned by other jobs: the job is added as owner and the version bumped (a new round);
/// * no such tag: added with version = the status version + 1 (0 without status);
/// * tags of the job's previous image (an edited `image`) lose the job as owner, and go when it
///   was their last.
pub fn apply_to_spec(
    spec: &mut NodeImageSpec,
    status: Option<&NodeImageStatus>,
    t: &JobTarget,
    now: &Time,
) -> bool {
    let before = spec.clone();
    if let Some(uid) = t.owner.uid.as_deref() {
        for (name, image) in &mut spec.images {
            image.tags.retain_mut(|tag| {
                if !is_stale(name, &tag.tag, t) {
                    return true;
                }
                let owners = tag.owner_references.len();
                tag.owner_references
                    .retain(|o| o.uid.as_deref() != Some(uid));
                owners == tag.owner_references.len() || !tag.owner_references.is_empty()
            });
        }
        spec.images.retain(|_, i| !i.tags.is_empty());
    }
    let image = spec.images.entry(t.image.name.clone()).or_default();
    image.sandbox_config.clone_from(&t.sandbox_config);
    for s in &t.secrets {
        if !image.pull_secrets.contains(s) {
            image.pull_secrets.push(s.clone());
        }
    }
    let uid = t.owner.uid.as_deref();
    let st = status_tag(status, &t.image.name, &t.image.tag);
    match image.tags.iter_mut().find(|x| x.tag == t.image.tag) {
        Some(tag) if tag.owner_references.iter().any(|o| o.uid.as_deref() == uid) => {
            let outdated = tag.image_pull_policy != Some(t.image_pull_policy)
                || tag
                    .pull_policy
                    .as_ref()
                    .is_none_or(|p| policy_differs(p, &t.pull_policy));
            if outdated {
                let succeeded = st.is_some_and(|s| {
                    s.version == tag.version && s.phase == ImagePullPhase::Succeeded
                });
                tag.pull_policy = Some(t.pull_policy.clone());
                tag.image_pull_policy = Some(t.image_pull_policy);
                if !succeeded {
                    tag.version += 1;
                    tag.created_at = Some(now.clone());
                }
            }
        }
        Some(tag) => {
            tag.version += 1;
            tag.owner_references.push(t.owner.clone());
            tag.created_at = Some(now.clone());
            tag.image_pull_policy = Some(t.image_pull_policy);
            tag.pull_policy = Some(t.pull_policy.clone());
        }
        None => image.tags.push(ImageTagSpec {
            tag: t.image.tag.clone(),
            created_at: Some(now.clone()),
            pull_policy: Some(t.pull_policy.clone()),
            owner_references: vec![t.owner.clone()],
            version: st.map_or(0, |s| s.version + 1),
            image_pull_policy: Some(t.image_pull_policy),
        }),
    }
    image.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    *spec != before
}

/// Removes a job (by UID) from a NodeImage spec: its owner references go, tags left without
/// owners go, images left without tags go. Returns whether the spec changed.
pub fn remove_owner(spec: &mut NodeImageSpec, uid: &str) -> bool {
    let before = spec.clone();
    for image in spec.images.values_mut() {
        for tag in &mut image.tags {
            tag.owner_references
                .retain(|o| o.uid.as_deref() != Some(uid));
        }
        image.tags.retain(|t| !t.owner_references.is_empty());
    }
    spec.images.retain(|_, i| !i.tags.is_empty());
    *spec != before
}

/// True when the NodeImage lists the job (by UID) as an owner of some tag.
pub fn is_owner(ni: &NodeImage, uid: &str) -> bool {
    ni.spec.images.values().any(|i| {
        i.tags.iter().any(|t| {
            t.owner_references
                .iter()
                .any(|o| o.uid.as_deref() == Some(uid))
        })
    })
}

/// True when the job's selection may include this NodeImage (always for `podSelector`, which
/// depends on pods).
pub fn may_target(spec: &ImagePullJobSpec, ni: &NodeImage) -> bool {
    if spec.template.pod_selector.is_some() {
        return true;
    }
    let Some(sel) = &spec.template.selector else {
        return true;
    };
    let name = ni.metadata.name.as_deref().unwrap_or_default();
    if !sel.names.is_empty() {
        return sel.names.iter().any(|n| n == name);
    }
    let labels = ni.metadata.labels.clone().unwrap_or_default();
    Selector::try_from(sel.label_selector.clone()).is_ok_and(|s| s.matches(&labels))
}

/// Upstream `calculateStatus` over the target nodes (in selection order). `not_synced` keeps
/// that order; `failedNodes` is sorted in every branch (upstream left it unsorted on deadline).
#[derive(Clone, Debug, PartialEq)]
pub struct Computed {
    pub status: ImagePullJobStatus,
    pub not_synced: Vec<String>,
}

pub fn calculate_status(
    spec: &ImagePullJobSpec,
    previous: Option<&ImagePullJobStatus>,
    nodes: &[(String, NodeProgress)],
    now: Timestamp,
) -> Computed {
    let start = previous
        .and_then(|p| p.start_time.clone())
        .unwrap_or(Time(now));
    let pick = |want: NodeProgress| -> Vec<String> {
        nodes
            .iter()
            .filter(|(_, p)| *p == want)
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (not_synced, pulling) = (pick(NodeProgress::NotSynced), pick(NodeProgress::Pulling));
    let (succeeded, mut failed) = (pick(NodeProgress::Succeeded), pick(NodeProgress::Failed));
    let desired = count(nodes.len());
    let mut status = ImagePullJobStatus {
        start_time: Some(start.clone()),
        desired,
        succeeded: count(succeeded.len()),
        ..Default::default()
    };
    let always = spec.template.completion_policy_type() == CompletionPolicyType::Always;
    let unfinished = !pulling.is_empty() || !not_synced.is_empty();
    let past_deadline = spec
        .template
        .completion_policy
        .active_deadline_seconds
        .is_some_and(|d| now.as_second() - start.0.as_second() >= d);
    if always && unfinished && past_deadline {
        failed.extend(pulling);
        failed.extend(not_synced);
        failed.sort();
        status.completion_time = Some(Time(now));
        status.failed = count(failed.len());
        status.failed_nodes = failed;
        status.message = IMAGE_PULL_JOB_MESSAGE_DEADLINE_EXCEEDED.into();
        return Computed {
            status,
            not_synced: Vec::new(),
        };
    }
    failed.sort();
    status.active = count(pulling.len());
    status.failed = count(failed.len());
    status.failed_nodes = failed;
    if always && !unfinished {
        status.completion_time = Some(Time(now));
        status.message = IMAGE_PULL_JOB_MESSAGE_COMPLETED.into();
    } else {
        status.message = image_pull_job_progress_message(status.succeeded + status.failed, desired);
    }
    Computed { status, not_synced }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// True when two statuses differ other than in the completion time stamped at computation.
pub fn status_changed(old: Option<&ImagePullJobStatus>, new: &ImagePullJobStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &ImagePullJobStatus| ImagePullJobStatus {
        completion_time: s
            .completion_time
            .as_ref()
            .map(|_| Time(Timestamp::UNIX_EPOCH)),
        ..s.clone()
    };
    strip(old) != strip(new)
}

/// `<namespace>/<name>` of a job, as kept in a secret copy's references.
pub fn job_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Name of the copy of secret `namespace/name` in the agent's namespace: `<name>-<6 hex>`, the
/// hex a hash of the source key, so concurrent reconciles agree on it.
pub fn secret_copy_name(namespace: &str, name: &str) -> String {
    // Folded to 24 bits.
    let hash = crate::hash::fnv1a_32(format!("{namespace}/{name}").bytes());
    let hex = (hash >> 24) ^ (hash & 0x00ff_ffff);
    let prefix: String = name.chars().take(253 - 7).collect();
    format!("{prefix}-{hex:06x}")
}

/// The job keys in a copy's references annotation.
pub fn references(annotations: &BTreeMap<String, String>) -> BTreeSet<String> {
    annotations
        .get(ANNOTATION_SECRET_REFERENCES)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The references annotation value with `key` added or removed (sorted, comma-joined).
pub fn references_with(
    annotations: &BTreeMap<String, String>,
    key: &str,
    present: bool,
) -> BTreeSet<String> {
    let mut refs = references(annotations);
    if present {
        refs.insert(key.to_string());
    } else {
        refs.remove(key);
    }
    refs
}

/// Joins references for the annotation.
pub fn join_references(refs: &BTreeSet<String>) -> String {
    refs.iter().cloned().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests;
