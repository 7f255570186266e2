//! The controller's CRR decisions as plain functions: upstream's mutating webhook (defaulting and
//! validation, answered at admission and, for a CRR created while no webhook was configured, by
//! reconciliation), and the lifecycle of upstream's `containerrecreaterequest` controller (response timeout, deadline, status
//! sync, pod readiness, `active` label, TTL).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;

use crate::api::kruise::{
    ANNOTATION_CRR_SYNC_CONTAINER_STATUSES, ANNOTATION_CRR_UNREADY_ACQUIRED, CRR_ACTIVE_VALUE,
    CRR_MESSAGE_DAEMON_NOT_RESPONDED, CRR_MESSAGE_DEADLINE_EXCEEDED, CRR_MESSAGE_POD_GONE,
    CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX, CRR_MIN_ACTIVE_DEADLINE_SECONDS,
    CRR_POD_READINESS_USER_AGENT, CRR_RESPONSE_TIMEOUT_SECONDS, ContainerRecreateRequest,
    ContainerRecreateRequestContainerContext,
    ContainerRecreateRequestContainerRecreateState as State,
    ContainerRecreateRequestPhase as Phase,
    ContainerRecreateRequestSyncContainerStatus as SyncStatus, CrrProbeHandler,
    FINALIZER_CRR_UNREADY_ACQUIRED, LABEL_CRR_ACTIVE, LABEL_CRR_NODE_NAME, LABEL_CRR_POD_UID,
};
use crate::api::well_known::DEFAULT_TERMINATION_GRACE_SECONDS;
use crate::controller::readiness;

type Crr = ContainerRecreateRequest;

/// The Pod condition OpenKruise v1.6+ sets on Job pods whose sidecars it terminated; a CRR on
/// such a terminal pod is still accepted.
const POD_CONDITION_SIDECAR_TERMINATED: &str = "SidecarTerminated";

/// A CRR not seen by the defaulting yet: upstream's webhook always sets the pod-uid label.
pub fn needs_defaulting(crr: &Crr) -> bool {
    crr.pod_uid().is_none() && !is_finished(crr)
}

/// Completed (completionTime set) or deleting.
pub fn is_finished(crr: &Crr) -> bool {
    crr.metadata.deletion_timestamp.is_some()
        || crr
            .status
            .as_ref()
            .is_some_and(|s| s.completion_time.is_some())
}

/// Outcome of defaulting a new CRR.
#[derive(Clone, Debug, PartialEq)]
pub enum Defaulting {
    /// The CRR with labels, strategy defaults and the per-container copies from the Pod.
    Apply(Box<Crr>),
    /// What upstream's webhook would refuse, as the CRR's completion message.
    Reject(String),
}

fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn has_condition(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Upstream's CREATE webhook (`pkg/webhook/containerrecreaterequest/mutating`), applied by
/// reconciliation.
pub fn default_crr(crr: &Crr, pod: Option<&Pod>) -> Defaulting {
    let reject = |m: String| Defaulting::Reject(m);
    let spec = &crr.spec;
    if spec.pod_name.is_empty() {
        return reject("podName can not be empty".into());
    }
    if spec.containers.is_empty() {
        return reject("containers can not be empty".into());
    }
    if let Some(d) = spec.active_deadline_seconds
        && d < CRR_MIN_ACTIVE_DEADLINE_SECONDS
    {
        return reject(format!(
            "activeDeadlineSeconds must be at least {CRR_MIN_ACTIVE_DEADLINE_SECONDS}, got {d}"
        ));
    }
    let strategy = spec.strategy.clone().unwrap_or_default();
    if strategy
        .termination_grace_period_seconds
        .is_some_and(|g| g < 0)
    {
        return reject("terminationGracePeriodSeconds can not be negative".into());
    }
    if strategy.unready_grace_period_seconds.is_some_and(|g| g < 0) {
        return reject("unreadyGracePeriodSeconds can not be negative".into());
    }
    let Some(pod) = pod else {
        return reject(format!("no found Pod named {}", spec.pod_name));
    };
    if !pod_is_active(pod) && !has_condition(pod, POD_CONDITION_SIDECAR_TERMINATED) {
        return reject(format!(
            "not allowed to recreate containers in an inactive Pod {}",
            spec.pod_name
        ));
    }
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let node = pod_spec.node_name.clone().unwrap_or_default();
    if node.is_empty() {
        return reject(format!(
            "not allowed to recreate containers in a pending Pod {}",
            spec.pod_name
        ));
    }
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let mut out = crr.clone();
    let mut seen = HashSet::new();
    for c in &mut out.spec.containers {
        if !seen.insert(c.name.clone()) {
            return reject(format!("can not recreate {} multi times", c.name));
        }
        // Given values are accepted only when they are the Pod's truth: another mutating webhook
        // (kruise-manager's, kept during a migration) filled them from the same Pod first.
        let given = (
            c.pre_stop.take(),
            std::mem::take(&mut c.ports),
            c.status_context.take(),
        );
        let Some(pc) = pod_spec.containers.iter().find(|p| p.name == c.name) else {
            return reject(format!("not found {} container in Pod spec", c.name));
        };
        let Some(st) = statuses
            .iter()
            .find(|s| s.name == c.name)
            .filter(|s| s.container_id.as_deref().is_some_and(|id| !id.is_empty()))
        else {
            return reject(format!(
                "not found {} containerID in Pod status, maybe the container has not been initialized",
                c.name
            ));
        };
        c.pre_stop = pc
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(CrrProbeHandler::from_lifecycle);
        if c.pre_stop.as_ref().is_some_and(|p| p.http_get.is_some()) {
            c.ports = pc.ports.clone().unwrap_or_default();
        }
        c.status_context = Some(ContainerRecreateRequestContainerContext {
            container_id: st.container_id.clone().unwrap_or_default(),
            restart_count: st.restart_count,
        });
        let (pre_stop, ports, status_context) = given;
        let pod_ports = pc.ports.clone().unwrap_or_default();
        let forged = pre_stop.is_some_and(|p| Some(p) != c.pre_stop)
            || (!ports.is_empty() && ports != c.ports && ports != pod_ports)
            || status_context.is_some_and(|s| Some(s) != c.status_context);
        if forged {
            return reject(format!(
                "can not set preStop, ports or statusContext for container {}: they are copied from the Pod",
                c.name
            ));
        }
    }
    out.spec.apply_webhook_defaults();
    if let Some(s) = out.spec.strategy.as_mut()
        && s.termination_grace_period_seconds.is_none()
    {
        s.termination_grace_period_seconds = Some(
            pod_spec
                .termination_grace_period_seconds
                .unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS),
        );
    }
    let labels = out.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(
        LABEL_CRR_POD_UID.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_CRR_NODE_NAME.into(), node);
    labels.insert(LABEL_CRR_ACTIVE.into(), CRR_ACTIVE_VALUE.into());
    Defaulting::Apply(Box::new(out))
}

/// What admission answers to a CRR write (upstream's mutating webhook, which validates too).
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    Allow,
    /// Admit the CRR as given here (labels and per-container copies from its Pod, defaults).
    Mutate(Box<Crr>),
    Deny(String),
}

/// A new CRR: defaulted and filled from its Pod, or refused, as [`default_crr`] says. Whatever
/// the client set in the labels the agents trust is overwritten with the Pod's truth.
pub fn admit_create(crr: &Crr, pod: Option<&Pod>) -> Admission {
    match default_crr(crr, pod) {
        Defaulting::Apply(next) => Admission::Mutate(next),
        Defaulting::Reject(message) => Admission::Deny(message),
    }
}

/// A changed CRR: once admitted (it carries the pod-uid label) its spec, its pod-uid and
/// node-name labels and a set unready-acquired time never change. A CRR that was never admitted
/// (created while no webhook was configured) is left to the controller's defaulting; who may
/// change it is the ValidatingAdmissionPolicy's rule.
pub fn admit_update(old: &Crr, new: &Crr) -> Admission {
    if old.pod_uid().is_none() {
        return Admission::Allow;
    }
    if old.spec != new.spec {
        return Admission::Deny("spec of ContainerRecreateRequest is immutable".into());
    }
    for key in [LABEL_CRR_POD_UID, LABEL_CRR_NODE_NAME] {
        let label = |c: &Crr| c.metadata.labels.as_ref().and_then(|l| l.get(key).cloned());
        if label(old) != label(new) {
            return Admission::Deny(format!("label {key} is immutable"));
        }
    }
    let acquired = |c: &Crr| {
        c.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CRR_UNREADY_ACQUIRED).cloned())
            .filter(|v| !v.is_empty())
    };
    if let Some(was) = acquired(old)
        && acquired(new).as_ref() != Some(&was)
    {
        return Admission::Deny(format!(
            "annotation {ANNOTATION_CRR_UNREADY_ACQUIRED} is immutable once set"
        ));
    }
    Admission::Allow
}

/// One step of the lifecycle, carried out in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Take this CRR's key out of the pod's `KruisePodReady` condition and drop the finalizer.
    ReleaseUnready,
    /// Remove the `active` label: the agents stop seeing the CRR.
    RemoveActiveLabel,
    /// TTL after completion passed.
    Delete,
    /// Complete the CRR with this message; `states` replaces the container states when set.
    Complete {
        message: String,
        states: Option<Vec<State>>,
    },
    /// Write the `sync-container-statuses` annotation (JSON).
    SyncStatuses(String),
    /// Make the pod not-ready (when it has the `KruisePodReady` readiness gate: finalizer +
    /// condition) and record the time in the `unready-acquired` annotation.
    AcquireUnready { pod_condition: bool },
}

/// Steps to take now, and when to look again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub requeue: Option<Duration>,
}

fn secs(n: i64) -> Duration {
    crate::api::clamp::seconds(n)
}

fn left(since: SystemTime, after: Duration, now: SystemTime) -> Duration {
    (since + after).duration_since(now).unwrap_or_default()
}

fn min_requeue(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The lifecycle (upstream's CRR controller) for a defaulted CRR and its Pod (`None` when the Pod is gone).
pub fn lifecycle(crr: &Crr, pod: Option<&Pod>, now: SystemTime) -> Plan {
    let mut plan = lifecycle_steps(crr, pod, now);
    // A clock far from the CRR's timestamps would ask for a wait of years: look again within
    // the hour instead (every pass recomputes from the object).
    plan.requeue = plan.requeue.map(|r| r.min(MAX_REQUEUE));
    plan
}

/// The longest requeue of a CRR's lifecycle.
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);

fn lifecycle_steps(crr: &Crr, pod: Option<&Pod>, now: SystemTime) -> Plan {
    let mut plan = Plan::default();
    let has_finalizer = crr
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER_CRR_UNREADY_ACQUIRED);
    let status = crr.status.clone().unwrap_or_default();
    if is_finished(crr) {
        if has_finalizer {
            plan.steps.push(Step::ReleaseUnready);
        }
        if crr.metadata.deletion_timestamp.is_some() {
            return plan;
        }
        if crr.is_active() {
            plan.steps.push(Step::RemoveActiveLabel);
            return plan;
        }
        if let (Some(ttl), Some(done)) =
            (crr.spec.ttl_seconds_after_finished, &status.completion_time)
        {
            let rest = left(SystemTime::from(done.0), secs(i64::from(ttl)), now);
            if rest.is_zero() {
                plan.steps.push(Step::Delete);
            } else {
                plan.requeue = Some(rest);
            }
        }
        return plan;
    }
    let pod_uid = crr.pod_uid().unwrap_or_default();
    let pod = match pod {
        Some(p)
            if p.metadata.deletion_timestamp.is_none()
                && p.metadata.uid.as_deref() == Some(pod_uid) =>
        {
            p
        }
        _ => {
            plan.steps.push(Step::Complete {
                message: CRR_MESSAGE_POD_GONE.into(),
                states: None,
            });
            return plan;
        }
    };
    // The labels are the user's until admission rewrites them: a CRR whose node label is not
    // the pod's node is ended, not left for an agent (which checks the pod on its own too).
    let pod_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if crr.node_name() != pod_node {
        plan.steps.push(Step::Complete {
            message: format!(
                "{CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX}the {LABEL_CRR_NODE_NAME} label says {:?}, the pod runs on {:?}",
                crr.node_name().unwrap_or_default(),
                pod_node.unwrap_or_default()
            ),
            states: None,
        });
        return plan;
    }
    let created = crr
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| SystemTime::from(t.0))
        .unwrap_or(now);
    if status.phase.is_none() {
        let rest = left(created, secs(CRR_RESPONSE_TIMEOUT_SECONDS), now);
        if rest.is_zero() {
            plan.steps.push(Step::Complete {
                message: CRR_MESSAGE_DAEMON_NOT_RESPONDED.into(),
                states: None,
            });
            return plan;
        }
        plan.requeue = Some(rest);
    }
    if let Some(deadline) = crr.spec.active_deadline_seconds {
        let rest = left(created, secs(deadline), now);
        if rest.is_zero() {
            plan.steps.push(Step::Complete {
                message: CRR_MESSAGE_DEADLINE_EXCEEDED.into(),
                states: Some(failed_unfinished(crr, CRR_MESSAGE_DEADLINE_EXCEEDED)),
            });
            return plan;
        }
        plan.requeue = min_requeue(plan.requeue, rest);
    }
    if status.phase != Some(Phase::Recreating) {
        return plan;
    }
    let synced = serde_json::to_string(&sync_statuses(crr, pod)).unwrap_or_else(|_| "[]".into());
    let current = crr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CRR_SYNC_CONTAINER_STATUSES));
    if current != Some(&synced) {
        plan.steps.push(Step::SyncStatuses(synced));
    }
    let wants_unready = crr
        .spec
        .strategy
        .as_ref()
        .is_some_and(|s| s.unready_grace_period_seconds.is_some());
    let acquired = crr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CRR_UNREADY_ACQUIRED))
        .is_some_and(|v| !v.is_empty());
    if wants_unready && !acquired {
        plan.steps.push(Step::AcquireUnready {
            pod_condition: readiness::has_gate(pod),
        });
    }
    plan
}

/// Every container not yet Succeeded/Failed becomes Failed with `message` (upstream leaves them
/// Pending/Recreating: #2353).
pub fn failed_unfinished(crr: &Crr, message: &str) -> Vec<State> {
    let current = crr
        .status
        .as_ref()
        .map(|s| s.container_recreate_states.clone())
        .unwrap_or_default();
    crr.spec
        .containers
        .iter()
        .map(|c| match current.iter().find(|s| s.name == c.name) {
            Some(s) if matches!(s.phase, Phase::Succeeded | Phase::Failed) => s.clone(),
            other => State {
                name: c.name.clone(),
                phase: Phase::Failed,
                message: message.into(),
                is_killed: other.is_some_and(|s| s.is_killed),
            },
        })
        .collect()
}

/// The Pod's view of the CRR's containers that run a new instance: the ID differs from the
/// statusContext or the restart count grew. Upstream compares `startedAt` with the CRR's
/// creation time instead, which breaks under clock skew between node and API server (#895).
pub fn sync_statuses(crr: &Crr, pod: &Pod) -> Vec<SyncStatus> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    crr.spec
        .containers
        .iter()
        .filter_map(|c| {
            let st = statuses.iter().find(|s| s.name == c.name)?;
            st.state.as_ref()?.running.as_ref()?;
            let id = st.container_id.clone().unwrap_or_default();
            let renewed = c
                .status_context
                .as_ref()
                .is_none_or(|ctx| id != ctx.container_id || st.restart_count > ctx.restart_count);
            renewed.then(|| SyncStatus {
                name: c.name.clone(),
                ready: st.ready,
                restart_count: st.restart_count,
                container_id: id,
            })
        })
        .collect()
}

/// `<namespace>/<name>` of the CRR, as the readiness key.
pub fn readiness_key(crr: &Crr) -> readiness::NotReadyKey {
    readiness::NotReadyKey {
        user_agent: CRR_POD_READINESS_USER_AGENT.into(),
        key: format!(
            "{}/{}",
            crr.metadata.namespace.as_deref().unwrap_or_default(),
            crr.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests;
