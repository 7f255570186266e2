//! This node's Pods from the API: watched with the field selector `spec.nodeName=<node>` and
//! reduced to the facts the node model keeps of them (restart policy, roles, init containers).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;

use super::model::PodSpecFacts;
use crate::api::role::Role;
use crate::cri::kubelet::{PodRef, RestartPolicy};

/// A change to this node's Pods.
#[derive(Clone, Debug, PartialEq)]
pub enum PodUpdate {
    Upsert {
        pod: PodRef,
        phase: String,
        spec: PodSpecFacts,
        /// The whole Pod, for capabilities that read more than the facts (container meta).
        object: Arc<Pod>,
    },
    Remove {
        uid: String,
    },
    /// A (re)list finished: pods not upserted since the last `Resync` are gone.
    Resync {
        uids: Vec<String>,
    },
}

/// What the sidecar terminator needs from a Pod object. `None` for a Pod without a uid or spec.
pub fn facts(pod: &Pod) -> Option<(PodRef, String, PodSpecFacts)> {
    let spec = pod.spec.as_ref()?;
    let uid = pod.uid()?;
    let restart_policy = spec
        .restart_policy
        .as_deref()
        .and_then(RestartPolicy::parse)
        .unwrap_or(RestartPolicy::Always);
    let facts = PodSpecFacts {
        restart_policy,
        containers: spec
            .containers
            .iter()
            .map(|c| (c.name.clone(), Role::of_container(c)))
            .collect(),
        init_containers: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect(),
    };
    let pod_ref = PodRef {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid,
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    Some((pod_ref, phase, facts))
}

fn upsert(mut object: Pod) -> Option<PodUpdate> {
    let (pod, phase, spec) = facts(&object)?;
    // Kept by container meta for its pods: the field managers are of no use to anyone here.
    object.metadata.managed_fields = None;
    Some(PodUpdate::Upsert {
        pod,
        phase,
        spec,
        object: Arc::new(object),
    })
}

/// Watch this node's Pods until `updates` closes. The watcher relists and resumes on its own
/// after API outages (with backoff), so no pod is missed.
pub async fn watch(client: kube::Client, node: String, updates: mpsc::UnboundedSender<PodUpdate>) {
    use kube::runtime::WatchStreamExt;
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    let mut uids: Vec<String> = Vec::new();
    while let Some(ev) = stream.next().await {
        let update = match ev {
            Ok(watcher::Event::Apply(object)) => upsert(object),
            Ok(watcher::Event::InitApply(object)) => upsert(object).inspect(|u| {
                if let PodUpdate::Upsert { pod, .. } = u {
                    uids.push(pod.uid.clone());
                }
            }),
            Ok(watcher::Event::Delete(pod)) => pod.uid().map(|uid| PodUpdate::Remove { uid }),
            Ok(watcher::Event::Init) => {
                uids.clear();
                None
            }
            Ok(watcher::Event::InitDone) => Some(PodUpdate::Resync {
                uids: std::mem::take(&mut uids),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "pod watch interrupted; retrying");
                None
            }
        };
        if let Some(u) = update
            && updates.send(u).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn facts_from_a_job_pod() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "job-x", "namespace": "batch", "uid": "u-1"},
            "spec": {
                "restartPolicy": "OnFailure",
                "initContainers": [
                    {"name": "init"},
                    {"name": "native-proxy", "restartPolicy": "Always",
                     "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "value": "true"}]}
                ],
                "containers": [
                    {"name": "main"},
                    {"name": "proxy", "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "value": "True"}]},
                    {"name": "logs", "env": [
                        {"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "value": "true"},
                        {"name": "KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE", "value": "true"}]},
                    {"name": "vk", "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE", "value": "quick-exit:1"}]},
                    {"name": "from-ref", "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
                ]
            },
            "status": {"phase": "Running"}
        }));
        let (r, phase, f) = facts(&p).unwrap();
        assert_eq!(r.to_string(), "batch/job-x");
        assert_eq!(phase, "Running");
        assert_eq!(f.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(
            f.containers,
            vec![
                ("main".to_string(), Role::Main),
                (
                    "proxy".to_string(),
                    Role::Sidecar {
                        ignore_exit_code: false
                    }
                ),
                (
                    "logs".to_string(),
                    Role::Sidecar {
                        ignore_exit_code: true
                    }
                ),
                (
                    "vk".to_string(),
                    Role::Sidecar {
                        ignore_exit_code: false
                    }
                ),
                ("from-ref".to_string(), Role::Main),
            ]
        );
        assert_eq!(f.init_containers, ["init", "native-proxy"]);
    }

    #[test]
    fn defaults_and_missing_parts() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c"}]}
        }));
        let (_, phase, f) = facts(&p).unwrap();
        assert_eq!(f.restart_policy, RestartPolicy::Always);
        assert_eq!(phase, "");
        assert!(facts(&pod(serde_json::json!({"metadata": {"name": "p"}}))).is_none());
    }
}
