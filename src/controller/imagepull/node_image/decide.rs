//! Pure decisions of the NodeImage controller (upstream `nodeimage_controller.go`): when a Node
//! gets its NodeImage, the spec garbage collection, and the manager's part of the status (agent
//! response timeout, deadline, counters). No I/O here.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::kruise::{
    GROUP, ImagePullPhase, ImageTagStatus, LABEL_FAKE_NODE_IMAGE,
    NODE_IMAGE_MESSAGE_DEADLINE_EXCEEDED, NODE_IMAGE_MESSAGE_NOT_RESPONDED, NodeImage,
    NodeImageSpec, NodeImageStatus,
};
use crate::controller::imagepull::job::decide::OWNER_KIND;
use crate::controller::vk_sidecar::VIRTUAL_NODE_LABEL;

/// Whether (and when) a Node gets a NodeImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    /// Ready long enough: create it now.
    Now,
    /// Ready, but not for `delay` yet: look again after this.
    After(Duration),
    /// Not ready, being deleted, or a virtual node: nothing to do.
    No,
}

/// Create the NodeImage once the Node's `Ready` condition has been `True` for `delay`; never for
/// `type=virtual-kubelet` nodes.
pub fn creation(node: &Node, now: Timestamp, delay: Duration) -> Creation {
    let (k, v) = VIRTUAL_NODE_LABEL;
    if node.metadata.deletion_timestamp.is_some()
        || node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
            == Some(v)
    {
        return Creation::No;
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let Some(ready) = ready.filter(|c| c.status == "True") else {
        return Creation::No;
    };
    let Some(since) = &ready.last_transition_time else {
        return Creation::Now;
    };
    let elapsed_ms = (now.as_millisecond() - since.0.as_millisecond()).max(0);
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    if elapsed_ms >= delay_ms {
        Creation::Now
    } else {
        Creation::After(Duration::from_millis((delay_ms - elapsed_ms) as u64))
    }
}

/// True for test NodeImages without a Node, which are never deleted or relabelled.
pub fn is_fake(ni: &NodeImage) -> bool {
    ni.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_FAKE_NODE_IMAGE))
}

fn is_job_ref(o: &ObjectReference) -> bool {
    o.kind.as_deref() == Some(OWNER_KIND)
        && o.api_version
            .as_deref()
            .is_some_and(|v| v.split('/').next() == Some(GROUP))
}

fn seconds_since(t: &Time, now: Timestamp) -> i64 {
    now.as_second() - t.0.as_second()
}

/// Spec garbage collection (upstream `doUpdateNodeImage`): tags without `createdAt` go; owner
/// references to ImagePullJobs that do not exist (or have another UID) go, other kinds stay;
/// tags without owners go; finished tags (status version = spec version) go `ttlSecondsAfterFinished`
/// after their completion; images without tags go. `job_uid(namespace, name)` is the UID of an
/// existing job. Returns whether anything changed and the seconds until the next TTL expiry.
pub fn gc_spec(
    spec: &mut NodeImageSpec,
    status: Option<&NodeImageStatus>,
    job_uid: impl Fn(&str, &str) -> Option<String>,
    now: Timestamp,
) -> (bool, Option<i64>) {
    let before = spec.clone();
    let mut next: Option<i64> = None;
    for (name, image) in &mut spec.images {
        image.tags.retain_mut(|tag| {
            if tag.created_at.is_none() {
                return false;
            }
            tag.owner_references.retain(|o| {
                !is_job_ref(o)
                    || job_uid(
                        o.namespace.as_deref().unwrap_or_default(),
                        o.name.as_deref().unwrap_or_default(),
                    )
                    .is_some_and(|uid| o.uid.as_deref() == Some(uid.as_str()))
            });
            if tag.owner_references.is_empty() {
                return false;
            }
            let finished = status
                .and_then(|s| s.image_statuses.get(name))
                .and_then(|s| s.tags.iter().find(|s| s.tag == tag.tag))
                .filter(|s| s.version == tag.version && s.phase.is_finished())
                .and_then(|s| s.completion_time.as_ref());
            let ttl = tag
                .pull_policy
                .as_ref()
                .and_then(|p| p.ttl_seconds_after_finished);
            if let (Some(done), Some(ttl)) = (finished, ttl) {
                let left = i64::from(ttl) - seconds_since(done, now);
                if left <= 0 {
                    return false;
                }
                next = Some(next.map_or(left, |n| n.min(left)));
            }
            true
        });
    }
    spec.images.retain(|_, i| !i.tags.is_empty());
    (*spec != before, next)
}

/// A tag the controller marked failed, for the `PullImageFailed` events.
#[derive(Clone, Debug, PartialEq)]
pub struct FailedTag {
    pub image: String,
    pub tag: String,
    pub message: String,
    pub owners: Vec<ObjectReference>,
}

/// The manager's status pass (upstream `updateNodeImageStatus`).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusCheck {
    pub status: NodeImageStatus,
    pub failed: Vec<FailedTag>,
    /// Seconds until the next timeout may fire.
    pub next: Option<i64>,
}

/// A tag the agent has not reported on (for the spec version) `response_timeout` after its
/// `createdAt` fails with "node has not responded for a long time"; an unfinished tag past
/// `activeDeadlineSeconds + response_timeout` fails with "pulling exceeds the
/// activeDeadlineSeconds". The counters are recounted.
pub fn check_status(ni: &NodeImage, now: Timestamp, response_timeout: Duration) -> StatusCheck {
    let timeout = i64::try_from(response_timeout.as_secs()).unwrap_or(i64::MAX);
    let mut status = ni.status.clone().unwrap_or_default();
    let mut failed = Vec::new();
    let mut next: Option<i64> = None;
    let mut wake = |left: i64| next = Some(next.map_or(left, |n: i64| n.min(left)));
    let mut desired = 0;
    for (name, image) in &ni.spec.images {
        for tag in &image.tags {
            desired += 1;
            let Some(created) = &tag.created_at else {
                continue;
            };
            let age = seconds_since(created, now);
            let current = status
                .image_statuses
                .get(name)
                .and_then(|s| s.tags.iter().find(|s| s.tag == tag.tag))
                .filter(|s| s.version == tag.version);
            let message = match current {
                None if age >= timeout => NODE_IMAGE_MESSAGE_NOT_RESPONDED,
                None => {
                    wake(timeout - age);
                    continue;
                }
                Some(s) if s.phase.is_finished() => continue,
                Some(_) => {
                    let Some(deadline) = tag
                        .pull_policy
                        .as_ref()
                        .and_then(|p| p.active_deadline_seconds)
                    else {
                        continue;
                    };
                    let limit = deadline.saturating_add(timeout);
                    if age < limit {
                        wake(limit - age);
                        continue;
                    }
                    NODE_IMAGE_MESSAGE_DEADLINE_EXCEEDED
                }
            };
            let entry = status.image_statuses.entry(name.clone()).or_default();
            let new = ImageTagStatus {
                tag: tag.tag.clone(),
                phase: ImagePullPhase::Failed,
                progress: 0,
                start_time: None,
                completion_time: Some(Time(now)),
                version: tag.version,
                image_id: String::new(),
                message: message.to_string(),
            };
            match entry.tags.iter_mut().find(|s| s.tag == tag.tag) {
                Some(s) => {
                    s.phase = ImagePullPhase::Failed;
                    s.completion_time = Some(Time(now));
                    s.version = tag.version;
                    s.message = message.to_string();
                }
                None => {
                    entry.tags.push(new);
                    entry.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
                }
            }
            failed.push(FailedTag {
                image: name.clone(),
                tag: tag.tag.clone(),
                message: message.to_string(),
                owners: tag.owner_references.clone(),
            });
        }
    }
    status.desired = desired;
    status.succeeded = 0;
    status.failed = 0;
    status.pulling = 0;
    status.waiting = 0;
    for s in status.image_statuses.values().flat_map(|i| &i.tags) {
        match s.phase {
            ImagePullPhase::Succeeded => status.succeeded += 1,
            ImagePullPhase::Failed => status.failed += 1,
            ImagePullPhase::Pulling => status.pulling += 1,
            ImagePullPhase::Waiting => status.waiting += 1,
        }
    }
    StatusCheck {
        status,
        failed,
        next,
    }
}

#[cfg(test)]
mod tests;
