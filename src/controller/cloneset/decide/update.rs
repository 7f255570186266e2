//! Pure decisions of the CloneSet controller's update half (upstream `sync/cloneset_update.go`;
//! behaviour in `docs/upstream/cloneset.md` §4): each pod's lifecycle refresh, which pods are
//! updated now, and how each is updated.

use std::cmp::Ordering;

use super::{Diffs, InPlaceChange, PodFacts, Rank, order};
use crate::api::kruise::{
    CloneSetUpdateStrategy, Lifecycle, LifecycleHook, LifecycleState, UPDATE_IN_PLACE_ONLY,
    UPDATE_RECREATE,
};

/// The lifecycle hooks as one pod meets them: `Some(all_on)` for a hook that is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HooksOn {
    /// `spec.lifecycle` is set at all.
    pub lifecycle: bool,
    pub pre_normal_all: Option<bool>,
    pub in_place_all: Option<bool>,
    /// Any label or finalizer of the inPlaceUpdate hook is on the pod (upstream `IsPodHooked`).
    pub in_place_any: bool,
}

/// The pod as the refresh sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    pub state: Option<LifecycleState>,
    pub scheduled: bool,
    /// At the update revision.
    pub updated: bool,
    /// Its in-place update (if any) is complete.
    pub in_place_done: bool,
}

/// The lifecycle state a pod moves to now, if any (upstream `refreshPodState`):
/// PreparingNormal → Normal once scheduled (no preNormal hook) or once the whole hook is on;
/// PreparingUpdate at the update revision (rolled back before it started) and a finished
/// Updating → Updated while the inPlaceUpdate hook is not all on again, else Normal; Updated →
/// Normal once it is (or without the hook).
pub fn next_state(pod: Refreshed, hooks: HooksOn) -> Option<LifecycleState> {
    use LifecycleState::*;
    let after_update = || {
        if hooks.lifecycle && hooks.in_place_all != Some(true) {
            Updated
        } else {
            Normal
        }
    };
    match pod.state? {
        PreparingNormal => match hooks.pre_normal_all {
            None if pod.scheduled => Some(Normal),
            Some(true) => Some(Normal),
            _ => None,
        },
        PreparingUpdate if pod.updated => Some(after_update()),
        Updating if pod.in_place_done => Some(after_update()),
        Updated if hooks.in_place_all.is_none_or(|all| all) => Some(Normal),
        _ => None,
    }
}

/// `userAgent` of the lifecycle hooks' keys in the `KruisePodReady` condition.
pub const HOOK_READINESS_USER_AGENT: &str = "Lifecycle";

/// The `KruisePodReady` key a pod entering `state` holds (`true`) or releases (`false`) by its
/// hooks' `markPodNotReady` (upstream `executePodNotReadyPolicy`): PreparingDelete holds
/// `preDeleteHook`, PreparingUpdate holds `preUpdateHook`, and Updated releases it. Normal
/// releases it too, and both release it whatever the hooks say now: upstream only releases on
/// Updated and while the hook still marks pods, so a pod whose hook was put back before its
/// update completed (Updating → Normal), or whose hook lost `markPodNotReady` meanwhile, would
/// stay not ready for good. (Releasing a key not held writes nothing.)
pub fn not_ready_key(
    state: LifecycleState,
    lifecycle: Option<&Lifecycle>,
) -> Option<(&'static str, bool)> {
    use LifecycleState::*;
    let marks = |hook: &Option<LifecycleHook>| hook.as_ref().is_some_and(|h| h.mark_pod_not_ready);
    match state {
        Updated | Normal => Some(("preUpdateHook", false)),
        PreparingDelete if marks(&lifecycle?.pre_delete) => Some(("preDeleteHook", true)),
        PreparingUpdate if marks(&lifecycle?.in_place_update) => Some(("preUpdateHook", true)),
        _ => None,
    }
}

/// Update order (k8s `ActivePods`): unscheduled, then Pending < Unknown < Running, not Ready
/// before Ready, Ready for less time first, more restarts first, newer first.
pub fn update_first(a: &Rank, b: &Rank) -> Ordering {
    a.scheduled
        .cmp(&b.scheduled)
        .then(a.phase.cmp(&b.phase))
        .then(a.ready.cmp(&b.ready))
        .then_with(|| super::ready_later_first(a, b))
        .then(b.restarts.cmp(&a.restarts))
        .then(b.created.cmp(&a.created))
}

/// The pods to update now, in order (upstream `Update` steps 3–6): pods not at the update
/// revision, not PreparingDelete, not waiting out an in-place grace period (unless Updated); in
/// the [`update_first`] order, then `strategy`'s priority and scatter order
/// ([`order::update_order`]), PreparingUpdate first; at most `d.update`, and no more than
/// `d.update_max_unavailable` unavailable meanwhile, counting those at the update revision that
/// are not available yet. Nothing while `d.update` is not positive (rolling back to an older
/// revision is upstream's `CloneSetPartitionRollback`, off by default, not here).
pub fn choose_updates(
    pods: &[PodFacts],
    d: &Diffs,
    strategy: &CloneSetUpdateStrategy,
) -> Vec<String> {
    use LifecycleState::*;
    if d.update <= 0 {
        return Vec::new();
    }
    let mut candidates: Vec<&PodFacts> = pods
        .iter()
        .filter(|p| !p.updated && p.state != Some(PreparingDelete))
        .filter(|p| !p.in_place_grace || p.state == Some(Updated))
        .collect();
    candidates.sort_by(|a, b| update_first(&a.rank, &b.rank));
    let mut candidates = order::update_order(candidates, pods, strategy);
    candidates.sort_by_key(|p| p.state != Some(PreparingUpdate));
    candidates.truncate(usize::try_from(d.update).unwrap_or(0));
    let mut unavailable = pods.iter().filter(|p| !p.available).count();
    let target_unavailable = pods.iter().filter(|p| !p.available && p.updated).count();
    let budget = usize::try_from(d.update_max_unavailable.max(0)).unwrap_or(0);
    let mut chosen = Vec::new();
    for p in candidates {
        if target_unavailable.saturating_add(chosen.len()) >= budget {
            break;
        }
        if p.available {
            if unavailable >= budget {
                break;
            }
            unavailable += 1;
        }
        chosen.push(p.name.clone());
    }
    chosen
}

/// How one chosen pod is updated (upstream `updatePod`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateHow {
    /// Mark it `apps.kruise.io/specified-delete`: the scale half replaces it.
    Recreate,
    /// Move it to PreparingUpdate: its inPlaceUpdate hook is on.
    PrepareUpdate,
    /// Put the inPlaceUpdate hook's labels and finalizers back and move it to PreparingUpdate
    /// (an Updated pod taken by a newer revision).
    RehookUpdate,
    /// Wait: its inPlaceUpdate hook is still on.
    Wait,
    /// Update it in place.
    InPlace(InPlaceChange),
    /// Cannot: the reason, as upstream words it.
    Refuse(String),
}

/// How to update the pod `name` in `state` from its revision's template to the target's:
/// `change` is [`super::in_place_change`] of the two (`None`: not possible in place, or the
/// pod's revision is unknown).
pub fn update_how(
    strategy: &str,
    name: &str,
    state: Option<LifecycleState>,
    change: Option<InPlaceChange>,
    hooks: HooksOn,
    has_in_place_hook: bool,
) -> UpdateHow {
    use LifecycleState::*;
    let change = change.filter(|_| strategy != UPDATE_RECREATE);
    let Some(change) = change else {
        if strategy == UPDATE_IN_PLACE_ONLY {
            return UpdateHow::Refuse(format!(
                "find Pod {name} update strategy is InPlaceOnly but can not update in-place"
            ));
        }
        return UpdateHow::Recreate;
    };
    match state {
        None | Some(PreparingNormal | Normal) if hooks.in_place_any => UpdateHow::PrepareUpdate,
        None | Some(PreparingNormal | Normal | Updating) => UpdateHow::InPlace(change),
        Some(Updated) if has_in_place_hook => UpdateHow::RehookUpdate,
        Some(Updated) => UpdateHow::InPlace(change),
        Some(PreparingUpdate) if hooks.in_place_any => UpdateHow::Wait,
        Some(PreparingUpdate) => UpdateHow::InPlace(change),
        Some(other) => UpdateHow::Refuse(format!(
            "not allowed to in-place update pod {name} in state {}",
            other.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::*;

    #[test]
    fn hooks_hold_readiness_only_with_mark_pod_not_ready() {
        let hook = |mark| {
            Some(LifecycleHook {
                mark_pod_not_ready: mark,
                ..Default::default()
            })
        };
        let both = Lifecycle {
            pre_delete: hook(true),
            in_place_update: hook(true),
            pre_normal: hook(true),
        };
        let unmarked = Lifecycle {
            pre_delete: hook(false),
            in_place_update: hook(false),
            ..Default::default()
        };
        let cases = [
            (PreparingDelete, Some(&both), Some(("preDeleteHook", true))),
            (PreparingUpdate, Some(&both), Some(("preUpdateHook", true))),
            (Updated, Some(&both), Some(("preUpdateHook", false))),
            (Normal, Some(&both), Some(("preUpdateHook", false))),
            (PreparingNormal, Some(&both), None),
            (Updating, Some(&both), None),
            (PreparingDelete, Some(&unmarked), None),
            (PreparingUpdate, None, None),
            // A key held before the hook changed is released all the same.
            (Updated, Some(&unmarked), Some(("preUpdateHook", false))),
            (Normal, None, Some(("preUpdateHook", false))),
        ];
        for (state, lifecycle, want) in cases {
            assert_eq!(not_ready_key(state, lifecycle), want, "{state:?}");
        }
    }

    #[test]
    fn lifecycle_refresh() {
        let pod = |state, scheduled, updated, done| Refreshed {
            state,
            scheduled,
            updated,
            in_place_done: done,
        };
        let none = HooksOn::default();
        let lifecycle = HooksOn {
            lifecycle: true,
            ..none
        };
        let pre_normal = |all| HooksOn {
            lifecycle: true,
            pre_normal_all: Some(all),
            ..none
        };
        let in_place = |all| HooksOn {
            lifecycle: true,
            in_place_all: Some(all),
            ..none
        };
        let cases = [
            (
                pod(Some(PreparingNormal), true, true, true),
                none,
                Some(Normal),
            ),
            (pod(Some(PreparingNormal), false, true, true), none, None),
            (
                pod(Some(PreparingNormal), true, true, true),
                pre_normal(false),
                None,
            ),
            (
                pod(Some(PreparingNormal), false, true, true),
                pre_normal(true),
                Some(Normal),
            ),
            (pod(Some(Normal), true, true, true), none, None),
            (pod(None, true, true, true), none, None),
            (
                pod(Some(PreparingDelete), true, true, true),
                pre_normal(true),
                None,
            ),
            // Rolled back while waiting for the hook: no update to make.
            (
                pod(Some(PreparingUpdate), true, true, true),
                none,
                Some(Normal),
            ),
            (pod(Some(PreparingUpdate), true, false, true), none, None),
            (
                pod(Some(PreparingUpdate), true, true, true),
                lifecycle,
                Some(Updated),
            ),
            (pod(Some(Updating), true, true, false), none, None),
            (pod(Some(Updating), true, true, true), none, Some(Normal)),
            (
                pod(Some(Updating), true, true, true),
                in_place(false),
                Some(Updated),
            ),
            (
                pod(Some(Updating), true, true, true),
                in_place(true),
                Some(Normal),
            ),
            (pod(Some(Updated), true, true, true), in_place(false), None),
            (
                pod(Some(Updated), true, true, true),
                in_place(true),
                Some(Normal),
            ),
            (
                pod(Some(Updated), true, true, true),
                lifecycle,
                Some(Normal),
            ),
        ];
        for (pod, hooks, want) in cases {
            assert_eq!(next_state(pod, hooks), want, "{pod:?} {hooks:?}");
        }
    }

    fn facts(name: &str, updated: bool, available: bool, created: i64) -> PodFacts {
        PodFacts {
            name: name.into(),
            updated,
            state: Some(Normal),
            available,
            ready: available,
            running_ready: available,
            rank: Rank {
                scheduled: true,
                phase: 2,
                available,
                ready: available,
                created,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn diffs(update: i32, max_unavailable: i32) -> Diffs {
        Diffs {
            update,
            update_max_unavailable: max_unavailable,
            ..Default::default()
        }
    }

    #[test]
    fn updates_go_within_the_unavailability_budget() {
        let choose_updates = |pods: &[PodFacts], d: &Diffs| {
            choose_updates(pods, d, &CloneSetUpdateStrategy::default())
        };
        let pods = [
            facts("a", false, true, 1),
            facts("b", false, true, 2),
            facts("c", false, false, 3),
            facts("d", false, true, 4),
        ];
        // The unavailable pod first (updating it costs nothing), then one available (newest).
        assert_eq!(choose_updates(&pods, &diffs(4, 2)), ["c", "d"]);
        assert_eq!(choose_updates(&pods, &diffs(4, 1)), ["c"]);
        assert_eq!(choose_updates(&pods, &diffs(1, 3)), ["c"]);
        assert!(choose_updates(&pods, &diffs(0, 3)).is_empty());
        // An updated pod not available yet holds the budget.
        let mut waiting = pods.to_vec();
        waiting.push(facts("e", true, false, 5));
        assert_eq!(choose_updates(&waiting, &diffs(4, 2)), ["c"]);
        // PreparingDelete is skipped; PreparingUpdate goes first; a grace period waits.
        let mut states = pods.to_vec();
        states[0].state = Some(PreparingUpdate);
        states[2].state = Some(PreparingDelete);
        states[3].in_place_grace = true;
        assert_eq!(choose_updates(&states, &diffs(4, 4)), ["a", "b"]);
    }

    #[test]
    fn the_strategy_orders_the_updates() {
        let mut pods: Vec<PodFacts> = ["a", "b", "c", "d", "e", "f"]
            .into_iter()
            .zip(1..)
            .map(|(name, created)| facts(name, false, true, created))
            .collect();
        let strategy =
            |v: serde_json::Value| -> CloneSetUpdateStrategy { serde_json::from_value(v).unwrap() };
        let none = CloneSetUpdateStrategy::default();
        // The default order: newest first.
        assert_eq!(
            choose_updates(&pods, &diffs(6, 6), &none),
            ["f", "e", "d", "c", "b", "a"]
        );
        // The scatter sort spreads the pods of zone x (counted among all the CloneSet's pods).
        for p in pods.iter_mut().filter(|p| p.name == "f" || p.name == "e") {
            p.labels.insert("zone".into(), "x".into());
        }
        let scatter =
            strategy(serde_json::json!({"scatterStrategy": [{"key": "zone", "value": "x"}]}));
        assert_eq!(
            choose_updates(&pods, &diffs(6, 6), &scatter),
            ["f", "d", "c", "b", "a", "e"]
        );
        // The priority sort goes before it; PreparingUpdate first after both.
        let priority = strategy(serde_json::json!({"priorityStrategy": {"weightPriority": [
            {"weight": 10, "matchSelector": {"matchLabels": {"zone": "x"}}}]}}));
        pods[0].labels.insert("zone".into(), "x".into());
        assert_eq!(
            choose_updates(&pods, &diffs(6, 6), &priority),
            ["f", "e", "a", "d", "c", "b"]
        );
        pods[2].state = Some(PreparingUpdate);
        assert_eq!(
            choose_updates(&pods, &diffs(3, 6), &priority),
            ["c", "f", "e"]
        );
    }

    #[test]
    fn how_each_pod_is_updated() {
        let image = InPlaceChange::default();
        let hooked = HooksOn {
            lifecycle: true,
            in_place_any: true,
            ..Default::default()
        };
        let free = HooksOn::default();
        let how = |strategy, state, change: Option<InPlaceChange>, hooks, has_hook| {
            update_how(strategy, "p", state, change, hooks, has_hook)
        };
        assert_eq!(
            how(
                UPDATE_RECREATE,
                Some(Normal),
                Some(image.clone()),
                free,
                false
            ),
            UpdateHow::Recreate
        );
        assert_eq!(
            how("InPlaceIfPossible", Some(Normal), None, free, false),
            UpdateHow::Recreate
        );
        assert!(matches!(
            how(UPDATE_IN_PLACE_ONLY, Some(Normal), None, free, false),
            UpdateHow::Refuse(m) if m.contains("InPlaceOnly")
        ));
        assert_eq!(
            how(
                "InPlaceIfPossible",
                Some(Normal),
                Some(image.clone()),
                free,
                false
            ),
            UpdateHow::InPlace(image.clone())
        );
        assert_eq!(
            how(
                "InPlaceIfPossible",
                Some(Normal),
                Some(image.clone()),
                hooked,
                true
            ),
            UpdateHow::PrepareUpdate
        );
        assert_eq!(
            how(
                "InPlaceIfPossible",
                Some(PreparingUpdate),
                Some(image.clone()),
                hooked,
                true
            ),
            UpdateHow::Wait
        );
        assert_eq!(
            how(
                "InPlaceIfPossible",
                Some(PreparingUpdate),
                Some(image.clone()),
                free,
                true
            ),
            UpdateHow::InPlace(image.clone())
        );
        assert_eq!(
            how(
                "InPlaceIfPossible",
                Some(Updated),
                Some(image.clone()),
                free,
                true
            ),
            UpdateHow::RehookUpdate
        );
        assert!(matches!(
            how("InPlaceIfPossible", Some(PreparingDelete), Some(image), free, false),
            UpdateHow::Refuse(m) if m.contains("PreparingDelete")
        ));
    }
}
