//! The `KruisePodReady` condition that several writers share (upstream `pkg/util/podreadiness`):
//! each writer holds a key in the condition's message while it keeps the pod not ready (a CRR
//! restarting containers, a CloneSet's lifecycle hook with `markPodNotReady`); the condition is
//! True again when no key is left. Only pods with the `KruisePodReady` readiness gate are
//! touched: for the others the condition would change nothing.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::kruise::POD_CONDITION_KRUISE_POD_READY;

/// One entry of the `KruisePodReady` condition's message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotReadyKey {
    pub user_agent: String,
    pub key: String,
}

/// Whether the pod's spec names the readiness gate `condition_type`.
pub fn has_readiness_gate(pod: &Pod, condition_type: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|gates| gates.iter().any(|g| g.condition_type == condition_type))
}

/// Whether the pod's spec names the `KruisePodReady` readiness gate.
pub fn has_gate(pod: &Pod) -> bool {
    has_readiness_gate(pod, POD_CONDITION_KRUISE_POD_READY)
}

fn current(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == POD_CONDITION_KRUISE_POD_READY)
        })
}

/// The pod's `KruisePodReady` condition with `key` added (`add`) or removed; `None` when that
/// changes nothing. Status is False while any key is held, True when none is.
pub fn condition(pod: &Pod, key: &NotReadyKey, add: bool) -> Option<PodCondition> {
    let mut keys: Vec<NotReadyKey> = current(pod)
        .and_then(|c| c.message.as_deref())
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let had = keys.contains(key);
    if had == add {
        return None;
    }
    if add {
        keys.push(key.clone());
    } else {
        keys.retain(|k| k != key);
    }
    keys.sort();
    let (status, message) = if keys.is_empty() {
        ("True", None)
    } else {
        ("False", serde_json::to_string(&keys).ok())
    };
    Some(PodCondition {
        type_: POD_CONDITION_KRUISE_POD_READY.into(),
        status: status.into(),
        message,
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    })
}

/// Hold (`hold`) or release `key` in the pod's `KruisePodReady` condition; while any key is
/// held the pod's `Ready` condition is False too. Whether anything was written (nothing for a
/// pod without the readiness gate or already as asked). `pod` may be a cached copy: when it
/// says a write is due, the condition is computed again from the pod as the API server has it
/// and written with its resourceVersion (retried on conflict), so that another writer's key is
/// never lost.
pub async fn hold(
    pods: &Api<Pod>,
    pod: &Pod,
    key: &NotReadyKey,
    hold: bool,
) -> Result<bool, kube::Error> {
    write_fresh(pods, pod, |fresh| condition(fresh, key, hold)).await
}

/// Set the `KruisePodReady` condition True on a pod with the gate and no condition yet (the
/// gate's first value, which upstream's pod-readiness controller writes). Whether written.
pub async fn start(pods: &Api<Pod>, pod: &Pod) -> Result<bool, kube::Error> {
    write_fresh(pods, pod, |fresh| {
        current(fresh).is_none().then(|| PodCondition {
            type_: POD_CONDITION_KRUISE_POD_READY.into(),
            status: "True".into(),
            last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        })
    })
    .await
}

/// Write the condition `next` gives for the pod, when the cached `pod` and then the fresh one
/// both say it changes something.
async fn write_fresh(
    pods: &Api<Pod>,
    pod: &Pod,
    next: impl Fn(&Pod) -> Option<PodCondition>,
) -> Result<bool, kube::Error> {
    if !has_gate(pod) || next(pod).is_none() {
        return Ok(false);
    }
    let name = pod.name_any();
    crate::cluster::retry_on_conflict(5, || async {
        let fresh = pods.get(&name).await?;
        let Some(cond) = next(&fresh) else {
            return Ok(false);
        };
        let mut conditions = vec![json!(cond)];
        if cond.status == "False" {
            conditions.push(json!({
                "type": "Ready",
                "status": "False",
                "reason": "ReadinessGatesNotReady",
                "message": format!("the status of pod readiness gate {:?} is not \"True\"", cond.type_),
                "lastTransitionTime": cond.last_transition_time,
            }));
        }
        let patch = json!({
            "metadata": {"resourceVersion": fresh.resource_version()},
            "status": {"conditions": conditions},
        });
        pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map(|_| true)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_held_and_released() {
        let key = |user_agent: &str, key: &str| NotReadyKey {
            user_agent: user_agent.into(),
            key: key.into(),
        };
        let (k1, k2) = (
            key("Lifecycle", "preDeleteHook"),
            key("ContainerRecreateRequest", "default/b"),
        );
        let mut p = Pod::default();
        let with = |p: &mut Pod, c: PodCondition| {
            p.status.get_or_insert_default().conditions = Some(vec![c]);
        };
        let cond = condition(&p, &k1, true).unwrap();
        assert_eq!(cond.status, "False");
        assert_eq!(
            cond.message.as_deref(),
            Some(r#"[{"userAgent":"Lifecycle","key":"preDeleteHook"}]"#)
        );
        with(&mut p, cond);
        assert_eq!(condition(&p, &k1, true), None, "already held");
        let both = condition(&p, &k2, true).unwrap();
        assert!(
            both.message
                .as_deref()
                .unwrap()
                .starts_with(r#"[{"userAgent":"ContainerRecreateRequest","key":"default/b"}"#),
            "sorted"
        );
        with(&mut p, both);
        let one = condition(&p, &k2, false).unwrap();
        assert_eq!(one.status, "False");
        with(&mut p, one);
        let none = condition(&p, &k1, false).unwrap();
        assert_eq!((none.status.as_str(), none.message), ("True", None));
    }
}
