//! The CloneSet's status (upstream `cloneset_status.go`) and revision history
//! (`truncateHistory`), beyond the counters of [`super::status_counts`].

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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

    #[test]
    fn history_keeps_live_revisions_and_the_newest_old_ones() {
        let history: Vec<(String, i64)> = (1..=6).map(|i| (format!("r{i}"), i)).collect();
        let live: BTreeSet<String> = ["r6".to_string(), "r2".to_string()].into();
        assert_eq!(old_revisions(&history, &live, 2), ["r1", "r3"]);
        assert!(old_revisions(&history, &live, 10).is_empty());
        assert_eq!(old_revisions(&history, &live, 0).len(), 4);
    }
}
