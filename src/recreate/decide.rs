//! The CRR executor's decisions, as plain functions over plain data: which CRR of a pod runs, the
//! per-container states (OpenKruise's `getCurrentCRRContainersRecreateStates`, v1.9), whether the
//! unready grace has passed, and what to do next.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::api::clamp;
use crate::api::kruise::{
    CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX, CRR_MESSAGE_RUNTIME_NOT_FOUND_PREFIX,
    CRR_STATE_MESSAGE_CONTAINER_NOT_FOUND, ContainerRecreateRequest,
    ContainerRecreateRequestContainerRecreateState as State,
    ContainerRecreateRequestFailurePolicy as FailurePolicy, ContainerRecreateRequestPhase as Phase,
    ContainerRecreateRequestSyncContainerStatus as SyncStatus, LABEL_CRR_POD_UID,
};
use crate::cri::kubelet::PodRef;

/// The newest runtime container of one name in the pod, as the kubelet would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeContainer {
    pub name: String,
    /// `<runtime>://<id>`, the form the Pod status and the CRR's statusContext use.
    pub id: String,
    pub exited: bool,
    pub restart_count: i32,
    /// `None` when never started, or not looked up (only a new instance needs it).
    pub started_at: Option<SystemTime>,
}

/// Order of the CRRs of one pod: Recreating first, then Pending, then new ones; oldest first
/// within a phase (upstream's `pickRecreateRequest`). Only CRRs that are not deleting and not
/// completed take part. Returns the one to run and the new ones to mark `Pending`.
pub fn pick(crrs: &[&ContainerRecreateRequest]) -> (Option<usize>, Vec<usize>) {
    let weight = |c: &ContainerRecreateRequest| match c.status.as_ref().and_then(|s| s.phase) {
        Some(Phase::Completed) => 1,
        Some(Phase::Recreating) => 2,
        Some(Phase::Pending) => 3,
        _ => 4,
    };
    let mut order: Vec<usize> = (0..crrs.len()).filter(|&i| is_open(crrs[i])).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (crrs[a], crrs[b]);
        weight(x)
            .cmp(&weight(y))
            .then_with(|| {
                x.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&y.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
            .then_with(|| x.metadata.name.cmp(&y.metadata.name))
    });
    let mut it = order.into_iter();
    let first = it.next();
    let mark = it
        .filter(|&i| crrs[i].status.as_ref().and_then(|s| s.phase).is_none())
        .collect();
    (first, mark)
}

/// Neither deleting nor completed.
pub fn is_open(crr: &ContainerRecreateRequest) -> bool {
    crr.metadata.deletion_timestamp.is_none()
        && crr
            .status
            .as_ref()
            .is_none_or(|s| s.completion_time.is_none())
}

/// Where a CRR with `unreadyGracePeriodSeconds` stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No grace, or the grace has passed: act.
    Go,
    /// The controller has not made the pod not-ready yet (annotation missing): wait for it.
    AwaitUnready,
    /// Not-ready since less than the grace: look again after this long.
    Until(Duration),
    /// The annotation does not parse: complete the CRR with this message.
    Invalid(String),
}

pub fn unready_gate(crr: &ContainerRecreateRequest, now: SystemTime) -> Gate {
    let Some(grace) = crr
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.unready_grace_period_seconds)
    else {
        return Gate::Go;
    };
    let since = match crr.unready_acquired_at() {
        None => return Gate::AwaitUnready,
        Some(Err(e)) => return Gate::Invalid(format!("failed to parse unready time: {e}")),
        Some(Ok(t)) => SystemTime::from(t),
    };
    let until = since + clamp::seconds(grace);
    match until.duration_since(now) {
        Ok(left) if !left.is_zero() => Gate::Until(left),
        _ => Gate::Go,
    }
}

/// The CRR may act only on the pod it names itself: the one in its own namespace called
/// `spec.podName` whose uid its `pod-uid` label carries. `found` is that uid's pod as the kubelet
/// labelled it on this node (`None`: no such pod here). The error is the CRR's final message.
/// The labels are user input until admission rewrites them: without this, a CRR in one namespace
/// could stop (and hook into) any pod on the node.
pub fn check_pod(crr: &ContainerRecreateRequest, found: Option<&PodRef>) -> Result<(), String> {
    let namespace = crr.metadata.namespace.as_deref().unwrap_or_default();
    let uid = crr.pod_uid().unwrap_or_default();
    match found {
        _ if uid.is_empty() => Err(format!(
            "{CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX}the CRR has no {LABEL_CRR_POD_UID} label"
        )),
        None => Err(format!(
            "{CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX}no pod with uid {uid:?} runs on this node"
        )),
        Some(p) if p.namespace == namespace && p.name == crr.spec.pod_name && p.uid == uid => {
            Ok(())
        }
        Some(p) => Err(format!(
            "{CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX}uid {uid:?} is pod {p}, not {namespace}/{}",
            crr.spec.pod_name
        )),
    }
}

/// Every container must name its runtime in `statusContext.containerID` (`<type>://<id>`), all
/// the same one, and it must be the runtime this agent speaks to. The error is the CRR's final
/// message.
pub fn check_runtime(crr: &ContainerRecreateRequest, runtime: &str) -> Result<(), String> {
    let fail = |why: String| Err(format!("{CRR_MESSAGE_RUNTIME_NOT_FOUND_PREFIX}{why}"));
    if crr.spec.containers.is_empty() {
        return fail("no containers in spec".into());
    }
    for c in &crr.spec.containers {
        let Some(ctx) = &c.status_context else {
            return fail(format!("container {} has no statusContext", c.name));
        };
        match ctx.container_id.split_once("://") {
            Some((kind, id)) if !kind.is_empty() && !id.is_empty() => {
                if kind != runtime {
                    return fail(format!(
                        "container {} runs on runtime {kind:?}, this node's runtime is {runtime:?}",
                        c.name
                    ));
                }
            }
            _ => {
                return fail(format!(
                    "container {} has an invalid containerID {:?}",
                    c.name, ctx.container_id
                ));
            }
        }
    }
    Ok(())
}

/// The new state of every spec container (upstream v1.9's state table, first match wins).
/// `killed` names the containers this agent has stopped for this CRR according to its journal:
/// they count as `isKilled` even when a crash lost the status write (a plain stop's record may
/// be lost with it; its container is then judged by its instance alone).
pub fn container_states(
    crr: &ContainerRecreateRequest,
    runtime: &[RuntimeContainer],
    synced: &[SyncStatus],
    killed: &HashSet<String>,
    now: SystemTime,
) -> Vec<State> {
    let strategy = crr.spec.strategy.clone().unwrap_or_default();
    let min_started = clamp::seconds(i64::from(strategy.min_started_seconds));
    let previous = crr
        .status
        .as_ref()
        .map(|s| s.container_recreate_states.as_slice())
        .unwrap_or_default();
    crr.spec
        .containers
        .iter()
        .map(|c| {
            let prev = previous.iter().find(|p| p.name == c.name);
            if let Some(p) = prev
                && matches!(p.phase, Phase::Succeeded | Phase::Failed)
            {
                return p.clone();
            }
            let was_killed = prev.is_some_and(|p| p.is_killed) || killed.contains(&c.name);
            let state = |phase, message: &str, is_killed| State {
                name: c.name.clone(),
                phase,
                message: message.to_string(),
                is_killed,
            };
            let Some(rt) = runtime.iter().find(|r| r.name == c.name) else {
                return state(
                    Phase::Pending,
                    CRR_STATE_MESSAGE_CONTAINER_NOT_FOUND,
                    was_killed,
                );
            };
            if rt.exited {
                return state(Phase::Recreating, "", was_killed);
            }
            if strategy.force_recreate && !was_killed {
                return state(Phase::Pending, "", false);
            }
            let restarted = c.status_context.as_ref().is_some_and(|ctx| {
                rt.id != ctx.container_id || rt.restart_count > ctx.restart_count
            });
            if restarted {
                let ready = synced
                    .iter()
                    .any(|s| s.name == c.name && s.container_id == rt.id && s.ready);
                let started_long_enough = rt.started_at.is_some_and(|t| {
                    let up = now.duration_since(t).unwrap_or_default();
                    up > min_started || min_started.is_zero()
                });
                let phase = if ready && started_long_enough {
                    Phase::Succeeded
                } else {
                    Phase::Recreating
                };
                return state(phase, "", was_killed);
            }
            state(Phase::Pending, "", was_killed)
        })
        .collect()
}

/// What to do after the states are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Stop this container (index into the spec and the states) now.
    Kill(usize),
    /// Every container is done, or one failed under `failurePolicy: Fail`.
    Complete,
    /// Waiting for the kubelet or the controller; look again after this long if set (the
    /// controller's status annotation also wakes the agent).
    Wait(Option<Duration>),
}

/// Walk the containers in spec order (upstream's `manage`): at most one kill per pass; with
/// `orderedRecreate` a container is killed only after the previous one succeeded. A container
/// that is recreating is marked `isKilled` in `states`, as upstream writes it back.
pub fn next(
    crr: &ContainerRecreateRequest,
    states: &mut [State],
    runtime: &[RuntimeContainer],
    now: SystemTime,
) -> Next {
    let strategy = crr.spec.strategy.clone().unwrap_or_default();
    let policy = strategy.failure_policy_or_default();
    let mut completed = 0;
    let mut blocked = false;
    for (i, st) in states.iter_mut().enumerate() {
        match st.phase {
            Phase::Succeeded => completed += 1,
            Phase::Failed => {
                completed += 1;
                if policy != FailurePolicy::Ignore {
                    return Next::Complete;
                }
            }
            Phase::Recreating => {
                st.is_killed = true;
                if strategy.ordered_recreate {
                    blocked = true;
                    break;
                }
            }
            Phase::Pending | Phase::Completed => {
                if runtime.iter().any(|r| r.name == st.name) {
                    return Next::Kill(i);
                }
                blocked = true;
                break;
            }
        }
    }
    if !blocked && completed == states.len() {
        return Next::Complete;
    }
    Next::Wait(min_started_left(crr, states, runtime, now))
}

/// The earliest time a recreating container may pass `minStartedSeconds`, plus 100 ms.
fn min_started_left(
    crr: &ContainerRecreateRequest,
    states: &[State],
    runtime: &[RuntimeContainer],
    now: SystemTime,
) -> Option<Duration> {
    let min = crr.spec.strategy.as_ref()?.min_started_seconds;
    if min <= 0 {
        return None;
    }
    states
        .iter()
        .filter(|s| s.phase == Phase::Recreating)
        .filter_map(|s| runtime.iter().find(|r| r.name == s.name)?.started_at)
        .map(|t| {
            (t + clamp::seconds(i64::from(min)))
                .duration_since(now)
                .unwrap_or_default()
                + Duration::from_millis(100)
        })
        .min()
}

/// The kill grace: `strategy.terminationGracePeriodSeconds` (the controller copies the pod's),
/// else 30 s.
pub fn grace(crr: &ContainerRecreateRequest) -> Duration {
    let secs = crr
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(crate::api::well_known::DEFAULT_TERMINATION_GRACE_SECONDS);
    clamp::seconds(secs)
}

#[cfg(test)]
mod tests;
