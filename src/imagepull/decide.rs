//! Pure decisions of the image puller: which pull tasks to start and stop for a NodeImage spec,
//! the status document reported for it, the retry schedule, and when a status write is urgent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;

use super::PULLING_IMAGE_BY_NODEWARD;
use super::reference::{ImageRef, InvalidReference};
use crate::api::clamp;
use crate::api::kruise::{
    ANNOTATION_PULLING_IMAGE_BY, ImagePullPhase, ImagePullPolicy, ImageStatus, ImageTagStatus,
    NodeImageSpec, NodeImageStatus, ReferenceObject,
};

/// First and longest wait between two attempts of a pull.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One tag of one image in a NodeImage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagKey {
    /// The NodeImage key (familiar image name).
    pub image: String,
    pub tag: String,
}

impl TagKey {
    pub fn new(image: &str, tag: &str) -> Self {
        Self {
            image: image.into(),
            tag: tag.into(),
        }
    }
}

impl std::fmt::Display for TagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.image, self.tag)
    }
}

/// Everything a worker needs to pull one (image, tag, version).
#[derive(Clone, Debug, PartialEq)]
pub struct PullTask {
    pub key: TagKey,
    pub version: i64,
    /// The parsed reference, or why it does not parse (the task then fails at once).
    pub reference: Result<ImageRef, InvalidReference>,
    pub policy: ImagePullPolicy,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// `backoffLimit + 1`.
    pub attempts: u32,
    /// `activeDeadlineSeconds`, counted from the start of pulling.
    pub deadline: Option<Duration>,
    /// Sandbox config of the CRI pull: the image's `sandboxConfig` labels, and its annotations
    /// plus `apps.kruise.io/pulling-image-by: nodeward`.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub pull_secrets: Vec<ReferenceObject>,
    /// The ImagePullJobs that asked for this tag (failure Events go to them too).
    pub owners: Vec<ObjectReference>,
}

/// What to change in the running workers.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Workers to start (their tag status becomes `Waiting`).
    pub start: Vec<PullTask>,
    /// Workers to stop: tag removed, or its version changed.
    pub stop: Vec<TagKey>,
    /// Statuses to drop: their tag is no longer in the spec.
    pub forget: Vec<TagKey>,
}

fn spec_tags(spec: &NodeImageSpec) -> BTreeMap<TagKey, i64> {
    spec.images
        .iter()
        .flat_map(|(image, s)| {
            s.tags
                .iter()
                .map(move |t| (TagKey::new(image, &t.tag), t.version))
        })
        .collect()
}

/// Decide the workers for `spec`, given the known tag statuses and the running workers (by
/// version). A tag needs a worker unless one runs for its version or its status for that version
/// is finished (so completed tags are not pulled again after a restart).
pub fn plan(
    spec: &NodeImageSpec,
    statuses: &BTreeMap<TagKey, ImageTagStatus>,
    running: &BTreeMap<TagKey, i64>,
) -> Plan {
    let wanted = spec_tags(spec);
    let mut plan = Plan::default();
    for (key, version) in running {
        if wanted.get(key) != Some(version) {
            plan.stop.push(key.clone());
        }
    }
    for key in statuses.keys() {
        if !wanted.contains_key(key) {
            plan.forget.push(key.clone());
        }
    }
    for (image, image_spec) in &spec.images {
        for tag in &image_spec.tags {
            let key = TagKey::new(image, &tag.tag);
            if running.get(&key) == Some(&tag.version) {
                continue;
            }
            let done = statuses
                .get(&key)
                .is_some_and(|s| s.version == tag.version && s.phase.is_finished());
            if done {
                continue;
            }
            let policy = tag.pull_policy.clone().unwrap_or_default();
            let mut annotations = image_spec
                .sandbox_config
                .as_ref()
                .map(|c| c.annotations.clone())
                .unwrap_or_default();
            annotations.insert(
                ANNOTATION_PULLING_IMAGE_BY.to_string(),
                PULLING_IMAGE_BY_NODEWARD.to_string(),
            );
            plan.start.push(PullTask {
                reference: ImageRef::from_node_image(image, &tag.tag),
                key,
                version: tag.version,
                policy: tag.image_pull_policy_or_default(),
                timeout: clamp::seconds(i64::from(policy.timeout_seconds_or_default()).max(1)),
                attempts: u32::try_from(policy.backoff_limit_or_default()).unwrap_or(0) + 1,
                deadline: policy
                    .active_deadline_seconds
                    .filter(|s| *s > 0)
                    .map(clamp::seconds),
                labels: image_spec
                    .sandbox_config
                    .as_ref()
                    .map(|c| c.labels.clone())
                    .unwrap_or_default(),
                annotations,
                pull_secrets: image_spec.pull_secrets.clone(),
                owners: tag.owner_references.clone(),
            });
        }
    }
    plan
}

/// The status for `spec` from the tag statuses: `desired` = number of tags in the spec, one
/// counter per phase, statuses grouped by image and sorted by tag. Statuses of tags not in the
/// spec are left out.
pub fn status_document(
    spec: &NodeImageSpec,
    statuses: &BTreeMap<TagKey, ImageTagStatus>,
) -> NodeImageStatus {
    let wanted = spec_tags(spec);
    let mut doc = NodeImageStatus {
        desired: i32::try_from(wanted.len()).unwrap_or(i32::MAX),
        ..Default::default()
    };
    for key in wanted.keys() {
        let Some(status) = statuses.get(key) else {
            continue;
        };
        match status.phase {
            ImagePullPhase::Waiting => doc.waiting += 1,
            ImagePullPhase::Pulling => doc.pulling += 1,
            ImagePullPhase::Succeeded => doc.succeeded += 1,
            ImagePullPhase::Failed => doc.failed += 1,
        }
        doc.image_statuses
            .entry(key.image.clone())
            .or_insert_with(|| ImageStatus { tags: Vec::new() })
            .tags
            .push(status.clone());
    }
    for image in doc.image_statuses.values_mut() {
        image.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    }
    doc
}

/// The known tag statuses of a status document (what an agent restarting finds).
pub fn tag_statuses(status: &NodeImageStatus) -> BTreeMap<TagKey, ImageTagStatus> {
    status
        .image_statuses
        .iter()
        .flat_map(|(image, s)| {
            s.tags
                .iter()
                .map(move |t| (TagKey::new(image, &t.tag), t.clone()))
        })
        .collect()
}

/// Waits before attempts 2, 3, …: 1 s doubling to at most 30 s, for `attempts - 1` retries.
pub fn backoff_schedule(attempts: u32) -> impl Iterator<Item = Duration> {
    crate::backoff::exponential(BACKOFF_MIN, BACKOFF_MAX).take(attempts.saturating_sub(1) as usize)
}

/// How soon a status write should go out, the changes before it coalesced into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteWhen {
    /// Nothing is left unfinished: the jobs waiting on this node complete with this write.
    Now,
    /// The set of acknowledged (tag, version) pairs changed (new tasks, removed tags, version
    /// bumps): soon, so that a burst of spec changes (one per ImagePullJob created at once)
    /// costs one write of the rate limit, not one each.
    Soon,
    /// Progress within known tasks.
    Later,
}

impl WriteWhen {
    /// The longest a change waits for later ones to join its write.
    pub fn coalesce(self) -> Duration {
        match self {
            WriteWhen::Now => Duration::ZERO,
            WriteWhen::Soon => Duration::from_millis(250),
            WriteWhen::Later => Duration::from_secs(2),
        }
    }
}

/// When the status `desired` should be written over `written` (`None`: nothing written yet).
pub fn write_when(desired: &NodeImageStatus, written: Option<&NodeImageStatus>) -> WriteWhen {
    let tasks = |s: &NodeImageStatus| -> BTreeSet<(String, String, i64)> {
        s.image_statuses
            .iter()
            .flat_map(|(image, st)| {
                st.tags
                    .iter()
                    .map(move |t| (image.clone(), t.tag.clone(), t.version))
            })
            .collect()
    };
    if desired.waiting == 0 && desired.pulling == 0 {
        WriteWhen::Now
    } else if written.is_none_or(|w| tasks(w) != tasks(desired)) {
        WriteWhen::Soon
    } else {
        WriteWhen::Later
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kruise::{ImageSpec, ImageTagPullPolicy, ImageTagSpec, SandboxConfig};

    fn tag(tag: &str, version: i64) -> ImageTagSpec {
        ImageTagSpec {
            tag: tag.into(),
            version,
            ..Default::default()
        }
    }

    fn spec(images: &[(&str, Vec<ImageTagSpec>)]) -> NodeImageSpec {
        NodeImageSpec {
            images: images
                .iter()
                .map(|(name, tags)| {
                    (
                        name.to_string(),
                        ImageSpec {
                            tags: tags.clone(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        }
    }

    fn key(image: &str, tag: &str) -> TagKey {
        TagKey::new(image, tag)
    }

    fn status(tag: &str, phase: ImagePullPhase, version: i64) -> ImageTagStatus {
        ImageTagStatus {
            tag: tag.into(),
            phase,
            progress: 0,
            start_time: None,
            completion_time: None,
            version,
            image_id: String::new(),
            message: String::new(),
        }
    }

    fn started(p: &Plan) -> Vec<String> {
        p.start.iter().map(|t| t.key.to_string()).collect()
    }

    #[test]
    fn new_tags_start_workers_with_their_parameters() {
        let mut s = spec(&[("r.io/app", vec![tag("1", 0), tag("2", 3)])]);
        let image = s.images.get_mut("r.io/app").unwrap();
        image.sandbox_config = Some(SandboxConfig {
            labels: BTreeMap::from([("app".into(), "web".into())]),
            annotations: BTreeMap::from([("team".into(), "x".into())]),
        });
        image.tags[1].pull_policy = Some(ImageTagPullPolicy {
            timeout_seconds: Some(5),
            backoff_limit: Some(1),
            active_deadline_seconds: Some(20),
            ttl_seconds_after_finished: None,
        });
        image.tags[1].image_pull_policy = Some(ImagePullPolicy::Always);
        let p = plan(&s, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(started(&p), ["r.io/app:1", "r.io/app:2"]);
        let (a, b) = (&p.start[0], &p.start[1]);
        assert_eq!(
            (a.timeout, a.attempts, a.deadline),
            (Duration::from_secs(600), 4, None)
        );
        assert_eq!(a.policy, ImagePullPolicy::IfNotPresent);
        assert_eq!(a.labels["app"], "web");
        assert_eq!(a.annotations["team"], "x");
        assert_eq!(a.annotations[ANNOTATION_PULLING_IMAGE_BY], "nodeward");
        assert_eq!(a.reference.as_ref().unwrap().pull_ref(), "r.io/app:1");
        assert_eq!(
            (b.timeout, b.attempts, b.deadline, b.version),
            (Duration::from_secs(5), 2, Some(Duration::from_secs(20)), 3)
        );
        assert_eq!(b.policy, ImagePullPolicy::Always);
        assert!(p.stop.is_empty() && p.forget.is_empty());
    }

    #[test]
    fn extreme_pull_policies_are_clamped() {
        let mut s = spec(&[("r.io/app", vec![tag("1", 0)])]);
        s.images.get_mut("r.io/app").unwrap().tags[0].pull_policy = Some(ImageTagPullPolicy {
            timeout_seconds: Some(i32::MAX),
            backoff_limit: Some(i32::MAX),
            active_deadline_seconds: Some(i64::MAX),
            ttl_seconds_after_finished: Some(i32::MAX),
        });
        let p = plan(&s, &BTreeMap::new(), &BTreeMap::new());
        let year = crate::api::clamp::seconds(i64::MAX);
        let t = &p.start[0];
        assert_eq!((t.timeout, t.deadline), (year, Some(year)));
        // A task's clock arithmetic cannot overflow.
        let _ = std::time::Instant::now() + t.timeout + year;
    }

    #[test]
    fn finished_tags_of_the_same_version_are_not_pulled_again() {
        let s = spec(&[(
            "app",
            vec![
                tag("done", 1),
                tag("failed", 0),
                tag("half", 0),
                tag("old", 2),
            ],
        )]);
        let statuses = BTreeMap::from([
            (
                key("app", "done"),
                status("done", ImagePullPhase::Succeeded, 1),
            ),
            (
                key("app", "failed"),
                status("failed", ImagePullPhase::Failed, 0),
            ),
            (
                key("app", "half"),
                status("half", ImagePullPhase::Pulling, 0),
            ),
            (
                key("app", "old"),
                status("old", ImagePullPhase::Succeeded, 1),
            ),
        ]);
        let p = plan(&s, &statuses, &BTreeMap::new());
        assert_eq!(started(&p), ["app:half", "app:old"]);
    }

    #[test]
    fn running_workers_are_kept_stopped_or_replaced() {
        let s = spec(&[("app", vec![tag("same", 0), tag("bumped", 2)])]);
        let running = BTreeMap::from([
            (key("app", "same"), 0),
            (key("app", "bumped"), 1),
            (key("app", "removed"), 0),
        ]);
        let statuses = BTreeMap::from([
            (
                key("app", "removed"),
                status("removed", ImagePullPhase::Pulling, 0),
            ),
            (key("gone", "x"), status("x", ImagePullPhase::Succeeded, 0)),
        ]);
        let p = plan(&s, &statuses, &running);
        assert_eq!(p.stop, [key("app", "bumped"), key("app", "removed")]);
        assert_eq!(p.forget, [key("app", "removed"), key("gone", "x")]);
        assert_eq!(started(&p), ["app:bumped"]);
        assert_eq!(p.start[0].version, 2);
    }

    #[test]
    fn bad_references_become_tasks_that_fail() {
        let s = spec(&[("Bad Image!!", vec![tag("1", 0)])]);
        let p = plan(&s, &BTreeMap::new(), &BTreeMap::new());
        let e = p.start[0].reference.as_ref().unwrap_err();
        assert!(e.to_string().contains("invalid image reference"), "{e}");
    }

    #[test]
    fn status_document_counts_and_sorts() {
        let s = spec(&[
            ("a", vec![tag("3", 0), tag("1", 0), tag("2", 0)]),
            ("b", vec![tag("x", 0), tag("unreported", 0)]),
        ]);
        let statuses = BTreeMap::from([
            (key("a", "3"), status("3", ImagePullPhase::Failed, 0)),
            (key("a", "1"), status("1", ImagePullPhase::Succeeded, 0)),
            (key("a", "2"), status("2", ImagePullPhase::Pulling, 0)),
            (key("b", "x"), status("x", ImagePullPhase::Waiting, 0)),
            (key("stale", "1"), status("1", ImagePullPhase::Succeeded, 0)),
        ]);
        let doc = status_document(&s, &statuses);
        assert_eq!(
            (
                doc.desired,
                doc.succeeded,
                doc.failed,
                doc.pulling,
                doc.waiting
            ),
            (5, 1, 1, 1, 1)
        );
        let tags: Vec<&str> = doc.image_statuses["a"]
            .tags
            .iter()
            .map(|t| t.tag.as_str())
            .collect();
        assert_eq!(tags, ["1", "2", "3"]);
        assert!(!doc.image_statuses.contains_key("stale"));
        assert_eq!(tag_statuses(&doc).len(), 4);
        assert_eq!(
            status_document(&NodeImageSpec::default(), &statuses),
            NodeImageStatus::default()
        );
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let secs: Vec<u64> = backoff_schedule(9).map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff_schedule(1).count(), 0);
        assert_eq!(backoff_schedule(0).count(), 0);
    }

    #[test]
    fn write_timing() {
        let s = spec(&[("a", vec![tag("1", 0), tag("2", 0)])]);
        let mut st = BTreeMap::from([
            (key("a", "1"), status("1", ImagePullPhase::Waiting, 0)),
            (key("a", "2"), status("2", ImagePullPhase::Waiting, 0)),
        ]);
        let waiting = status_document(&s, &st);
        let cases: Vec<(&str, NodeImageStatus, Option<NodeImageStatus>, WriteWhen)> = vec![
            ("first write", waiting.clone(), None, WriteWhen::Soon),
            (
                "new tasks",
                waiting.clone(),
                Some(NodeImageStatus::default()),
                WriteWhen::Soon,
            ),
            (
                "progress only",
                {
                    st.insert(key("a", "1"), status("1", ImagePullPhase::Pulling, 0));
                    status_document(&s, &st)
                },
                Some(waiting.clone()),
                WriteWhen::Later,
            ),
            (
                "one done, one pulling",
                {
                    st.insert(key("a", "1"), status("1", ImagePullPhase::Succeeded, 0));
                    st.insert(key("a", "2"), status("2", ImagePullPhase::Pulling, 0));
                    status_document(&s, &st)
                },
                Some(waiting.clone()),
                WriteWhen::Later,
            ),
            (
                "all settled",
                {
                    st.insert(key("a", "2"), status("2", ImagePullPhase::Failed, 0));
                    status_document(&s, &st)
                },
                Some(waiting.clone()),
                WriteWhen::Now,
            ),
            (
                "version bump",
                {
                    st.insert(key("a", "2"), status("2", ImagePullPhase::Waiting, 1));
                    status_document(&s, &st)
                },
                Some(waiting.clone()),
                WriteWhen::Soon,
            ),
        ];
        for (name, desired, written, want) in cases {
            assert_eq!(write_when(&desired, written.as_ref()), want, "{name}");
        }
        assert!(WriteWhen::Now.coalesce() < WriteWhen::Soon.coalesce());
        assert!(WriteWhen::Soon.coalesce() < WriteWhen::Later.coalesce());
    }
}
