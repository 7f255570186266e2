//! The CloneSet's status (upstream `cloneset_status.go`) and revision history
//! (`truncateHistory`), beyond the counters of [`super::status_counts`].

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::kruise::{CloneSetCondition, CloneSetStatus};

/// Set the failure condition `type_` (`FailedScale`, `FailedUpdate`) True with `message`, unless
/// it is already True: the first message stays, as upstream (conditions are never removed).
pub fn set_failure(conditions: &mut Vec<CloneSetCondition>, type_: &str, message: &str, now: &str) {
    if conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
    {
        return;
    }
    conditions.retain(|c| c.type_ != type_);
    let at = now.parse().ok().map(Time);
    conditions.push(CloneSetCondition {
        type_: type_.to_string(),
        status: "True".into(),
        last_transition_time: at,
        message: message.to_string(),
        ..Default::default()
    });
}

/// The `Progressing` condition's reasons (upstream `CloneSetConditionReason`).
pub const PROGRESSING: &str = "Progressing";
pub const REASON_AVAILABLE: &str = "CloneSetAvailable";
pub const REASON_PAUSED: &str = "CloneSetPaused";
pub const REASON_PARTITION_AVAILABLE: &str = "ProgressPartitionAvailable";
pub const REASON_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
pub const REASON_UPDATED: &str = "CloneSetUpdated";

/// What the `Progressing` condition reads of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressSpec {
    /// `progressDeadlineSeconds`; `None` or `i32::MAX`: no condition.
    pub deadline_seconds: Option<i32>,
    pub paused: bool,
    /// `spec.replicas`.
    pub replicas: i32,
}

/// Set (or remove) the `Progressing` condition of `status`, whose counters and revisions are
/// already this pass's (upstream `calculateProgressingStatus`), `now` in seconds since the
/// epoch. First match wins: available, paused, the partition's pods available (all True), the
/// deadline passed since progress started (False, and it stays so until one of the first
/// three), else progressing (True). Returns when to look again for the deadline.
///
/// One difference from upstream: the deadline counts from the `CloneSetUpdated` condition's
/// `lastUpdateTime`, i.e. from when progress started. Upstream also measures it from an older
/// `CloneSetAvailable`/`Paused` condition kept in the status, so a CloneSet that was
/// available for longer than the deadline times out the moment a new revision arrives (its
/// own table test expects the timer to start anew, as here).
pub fn set_progressing(
    status: &mut CloneSetStatus,
    spec: ProgressSpec,
    now: i64,
) -> Option<Duration> {
    let Some(deadline) = spec.deadline_seconds.filter(|d| *d != i32::MAX) else {
        status.conditions.retain(|c| c.type_ != PROGRESSING);
        return None;
    };
    let replicas = spec.replicas;
    let old = status
        .conditions
        .iter()
        .find(|c| c.type_ == PROGRESSING)
        .cloned();
    let started = old
        .as_ref()
        .filter(|c| c.reason == REASON_UPDATED)
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0.as_second());
    let due = started.map(|s| s.saturating_add(i64::from(deadline)));
    let (state, reason, message) = if status.current_revision == status.update_revision
        && status.replicas == replicas
        && status.updated_replicas == replicas
        && status.updated_available_replicas == replicas
    {
        (
            "True",
            REASON_AVAILABLE,
            "CloneSet is available".to_string(),
        )
    } else if spec.paused {
        ("True", REASON_PAUSED, "CloneSet is paused".to_string())
    } else if status.expected_updated_replicas < replicas
        && status.expected_updated_replicas <= status.updated_available_replicas
    {
        (
            "True",
            REASON_PARTITION_AVAILABLE,
            "CloneSet has been paused due to partition ready".to_string(),
        )
    } else if old
        .as_ref()
        .is_some_and(|c| c.reason == REASON_DEADLINE_EXCEEDED)
        || due.is_some_and(|due| due < now)
    {
        (
            "False",
            REASON_DEADLINE_EXCEEDED,
            format!(
                "CloneSet revision {} has timed out progressing",
                status.update_revision
            ),
        )
    } else {
        (
            "True",
            REASON_UPDATED,
            "CloneSet is progressing".to_string(),
        )
    };
    set_condition(&mut status.conditions, state, reason, message, now);
    if reason != REASON_UPDATED {
        return None;
    }
    let due = due.unwrap_or_else(|| now.saturating_add(i64::from(deadline)));
    let after = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
    Some(Duration::from_secs(after.saturating_add(1)))
}

/// Set a condition as upstream's `SetCloneSetCondition`: the same status and reason leave it
/// untouched (timestamps kept); the same status with another reason keeps its
/// lastTransitionTime; the new one goes to the end of the list.
fn set_condition(
    conditions: &mut Vec<CloneSetCondition>,
    state: &str,
    reason: &str,
    message: String,
    now: i64,
) {
    let old = conditions.iter().find(|c| c.type_ == PROGRESSING);
    if old.is_some_and(|c| c.status == state && c.reason == reason) {
        return;
    }
    let at = Timestamp::from_second(now).ok().map(Time);
    let transition = old
        .filter(|c| c.status == state)
        .map_or(at.clone(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != PROGRESSING);
    conditions.push(CloneSetCondition {
        type_: PROGRESSING.to_string(),
        status: state.to_string(),
        last_update_time: at,
        last_transition_time: transition,
        reason: reason.to_string(),
        message,
    });
}

/// Whether `next` says something `old` does not (upstream writes on a newer generation, or
/// another counter, revision or selector; here also on other conditions).
pub fn differs(old: Option<&CloneSetStatus>, next: &CloneSetStatus) -> bool {
    let Some(old) = old else { return true };
    next.observed_generation > old.observed_generation
        || (
            old.replicas,
            old.ready_replicas,
            old.available_replicas,
            old.updated_replicas,
            old.updated_ready_replicas,
            old.updated_available_replicas,
            old.expected_updated_replicas,
        ) != (
            next.replicas,
            next.ready_replicas,
            next.available_replicas,
            next.updated_replicas,
            next.updated_ready_replicas,
            next.updated_available_replicas,
            next.expected_updated_replicas,
        )
        || old.update_revision != next.update_revision
        || old.current_revision != next.current_revision
        || old.label_selector != next.label_selector
        || old.collision_count != next.collision_count
        || old.conditions != next.conditions
}

/// `next` as a merge patch over `old`: a field `next` leaves out (a zero, an empty list) is
/// `null`, so the stored status does not keep it.
pub fn merge_patch(old: Option<&CloneSetStatus>, next: &CloneSetStatus) -> serde_json::Value {
    let mut patch = serde_json::to_value(next).unwrap_or_default();
    let old = old
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or_default();
    if let (Some(patch), Some(old)) = (patch.as_object_mut(), old.as_object()) {
        for key in old.keys() {
            patch.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    patch
}

/// The revisions to delete (upstream `truncateHistory`): of `history` (name, number), those not
/// `live` beyond the newest `limit`, oldest first.
pub fn old_revisions(
    history: &[(String, i64)],
    live: &BTreeSet<String>,
    limit: i32,
) -> Vec<String> {
    let mut old: Vec<&(String, i64)> = history.iter().filter(|(n, _)| !live.contains(n)).collect();
    old.sort_by_key(|(_, number)| *number);
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    let extra = old.len().saturating_sub(keep);
    old.into_iter()
        .take(extra)
        .map(|(n, _)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_stays() {
        let mut c = Vec::new();
        set_failure(&mut c, "FailedScale", "first", "2026-12-07T00:00:00Z");
        set_failure(&mut c, "FailedScale", "second", "2026-12-07T00:00:01Z");
        set_failure(&mut c, "FailedUpdate", "other", "2026-12-07T00:00:01Z");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].message, "first");
        assert!(c[0].last_transition_time.is_some());
    }

    #[test]
    fn status_writes_only_when_it_says_something_new() {
        let old = CloneSetStatus {
            observed_generation: 2,
            replicas: 3,
            ..Default::default()
        };
        assert!(differs(None, &old));
        assert!(!differs(Some(&old), &old.clone()));
        let newer = CloneSetStatus {
            observed_generation: 3,
            ..old.clone()
        };
        assert!(differs(Some(&old), &newer));
        let counted = CloneSetStatus {
            ready_replicas: 1,
            ..old.clone()
        };
        assert!(differs(Some(&old), &counted));
    }

    #[test]
    fn a_field_gone_from_the_status_is_removed() {
        let old = CloneSetStatus {
            replicas: 2,
            updated_available_replicas: 2,
            ..Default::default()
        };
        let next = CloneSetStatus {
            replicas: 2,
            ..Default::default()
        };
        let patch = merge_patch(Some(&old), &next);
        assert_eq!(patch["updatedAvailableReplicas"], serde_json::Value::Null);
        assert!(patch.get("updatedAvailableReplicas").is_some());
        assert_eq!(patch["replicas"], 2);
    }

    fn progress(
        counts: (i32, i32, i32, i32),
        revisions: (&str, &str),
        old: Option<(&str, &str, i64)>,
    ) -> CloneSetStatus {
        let (replicas, updated, updated_available, expected_updated) = counts;
        CloneSetStatus {
            replicas,
            updated_replicas: updated,
            updated_available_replicas: updated_available,
            expected_updated_replicas: expected_updated,
            current_revision: revisions.0.into(),
            update_revision: revisions.1.into(),
            conditions: old
                .map(|(state, reason, at)| CloneSetCondition {
                    type_: PROGRESSING.into(),
                    status: state.into(),
                    reason: reason.into(),
                    last_update_time: Timestamp::from_second(at).ok().map(Time),
                    last_transition_time: Timestamp::from_second(at).ok().map(Time),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn progressing_as_upstream_says_it() {
        let spec = |deadline, paused| ProgressSpec {
            deadline_seconds: deadline,
            paused,
            replicas: 4,
        };
        let rolling = (4, 2, 1, 4);
        // (status before, spec, now) → (status, reason, lastUpdateTime, lastTransitionTime, requeue)
        let cases = [
            // No deadline, or MaxInt32: the condition goes.
            (
                progress(rolling, ("a", "b"), Some(("True", REASON_UPDATED, 0))),
                spec(None, false),
                5,
                None,
            ),
            (
                progress(rolling, ("a", "b"), None),
                spec(Some(i32::MAX), false),
                5,
                None,
            ),
            // Available.
            (
                progress((4, 4, 4, 4), ("b", "b"), Some(("True", REASON_UPDATED, 0))),
                spec(Some(10), false),
                5,
                Some(("True", REASON_AVAILABLE, 5, 0, None)),
            ),
            (
                progress(rolling, ("a", "b"), None),
                spec(Some(10), true),
                5,
                Some(("True", REASON_PAUSED, 5, 5, None)),
            ),
            // Partition 2: two updated and available.
            (
                progress((4, 2, 2, 2), ("a", "b"), None),
                spec(Some(10), false),
                5,
                Some(("True", REASON_PARTITION_AVAILABLE, 5, 5, None)),
            ),
            // A new revision after a long-available one: the timer starts now.
            (
                progress(rolling, ("a", "b"), Some(("True", REASON_AVAILABLE, 0))),
                spec(Some(10), false),
                100,
                Some(("True", REASON_UPDATED, 100, 0, Some(11))),
            ),
            // Still within the deadline: untouched, looked at again when it passes.
            (
                progress(rolling, ("a", "b"), Some(("True", REASON_UPDATED, 100))),
                spec(Some(10), false),
                104,
                Some(("True", REASON_UPDATED, 100, 100, Some(7))),
            ),
            (
                progress(rolling, ("a", "b"), Some(("True", REASON_UPDATED, 100))),
                spec(Some(10), false),
                111,
                Some(("False", REASON_DEADLINE_EXCEEDED, 111, 111, None)),
            ),
            // Exceeded stays exceeded until available.
            (
                progress(
                    rolling,
                    ("a", "b"),
                    Some(("False", REASON_DEADLINE_EXCEEDED, 111)),
                ),
                spec(Some(10), false),
                200,
                Some(("False", REASON_DEADLINE_EXCEEDED, 111, 111, None)),
            ),
        ];
        for (before, spec, now, want) in cases {
            let mut status = before.clone();
            let requeue = set_progressing(&mut status, spec, now);
            let got = status
                .conditions
                .iter()
                .find(|c| c.type_ == PROGRESSING)
                .map(|c| {
                    (
                        c.status.as_str(),
                        c.reason.as_str(),
                        c.last_update_time.as_ref().map_or(-1, |t| t.0.as_second()),
                        c.last_transition_time
                            .as_ref()
                            .map_or(-1, |t| t.0.as_second()),
                        requeue.map(|d| d.as_secs()),
                    )
                });
            assert_eq!(got, want, "{before:?} {spec:?} now={now}");
        }
        let mut exceeded = progress(rolling, ("a", "b"), Some(("True", REASON_UPDATED, 0)));
        set_progressing(&mut exceeded, spec(Some(10), false), 11);
        assert_eq!(
            exceeded.conditions[0].message,
            "CloneSet revision b has timed out progressing"
        );
    }

    #[test]
    fn history_keeps_live_revisions_and_the_newest_old_ones() {
        let history: Vec<(String, i64)> = (1..=6).map(|i| (format!("r{i}"), i)).collect();
        let live: BTreeSet<String> = ["r6".to_string(), "r2".to_string()].into();
        assert_eq!(old_revisions(&history, &live, 2), ["r1", "r3"]);
        assert!(old_revisions(&history, &live, 10).is_empty());
        assert_eq!(old_revisions(&history, &live, 0).len(), 4);
    }
}
