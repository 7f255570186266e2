//! The I/O of container meta: read a container's env through CRI, write the pod's annotation
//! through `pods/status`, and stop a stale container through the one kill path with its decision
//! in the journal.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::Restarted;
use super::decide::Restart;
use super::report;
use crate::api::kruise::ANNOTATION_RUNTIME_CONTAINERS_META;
use crate::cri::CriClient;
use crate::cri::kill::{Kill, PreStopOutcome};
use crate::cri::kubelet::PodRef;
use crate::journal::{self, Commits, Recorded};
use crate::node::view::ContainerView;

/// The `env` read gets this long (upstream's 3 s).
pub const ENV_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The annotation write gets this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// At most this much of `env`'s output is read.
const ENV_OUTPUT_LIMIT: usize = 1 << 20;

/// Run `env` in the container: its output, or why not.
pub async fn read_env(cri: &CriClient, container_id: &str) -> Result<String, String> {
    let resp = cri
        .exec_sync(container_id, vec!["env".into()], ENV_READ_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if resp.exit_code != 0 {
        return Err(format!(
            "env exited with {}: {}",
            resp.exit_code,
            crate::cri::kill::quoted_output(&resp.stderr)
        ));
    }
    let out = &resp.stdout[..resp.stdout.len().min(ENV_OUTPUT_LIMIT)];
    Ok(String::from_utf8_lossy(out).into_owned())
}

/// Write the annotation on the pod through its status (as kruise-daemon: the agent may not
/// patch Pods). The uid in the patch makes the API refuse it for another pod of the same name.
pub async fn write_annotation(
    client: &kube::Client,
    pod: &PodRef,
    value: &str,
) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let patch = json!({"metadata": {"uid": pod.uid,
        "annotations": {ANNOTATION_RUNTIME_CONTAINERS_META: value}}});
    let (params, patch) = (PatchParams::default(), Patch::Strategic(patch));
    let write = api.patch_status(&pod.name, &params, &patch);
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
    }
}

/// The journal key of a restart: once per container instance.
pub fn restart_key(container_id: &str) -> String {
    format!("{}/{container_id}", journal::KIND_RESTART_FOR_METADATA_ENV)
}

/// Stop the container (preStop, then StopContainer with the rest of its grace) so that the
/// kubelet starts it again with the pod's metadata now. The decision is in the journal before
/// the hook runs: after a crash the stop is finished without a second preStop, and a stop
/// completed once is never repeated for that container.
pub async fn restart(
    cri: &CriClient,
    commits: &Commits,
    events: &crate::cluster::events::EventWriter,
    pod: &PodRef,
    target: &Restart,
    container: &ContainerView,
) -> Restarted {
    let key = restart_key(&target.id);
    let action = journal::Action {
        kind: journal::KIND_RESTART_FOR_METADATA_ENV.into(),
        pod: journal::PodInfo {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        },
        containers: vec![journal::ContainerRef {
            name: target.container.clone(),
            id: target.id.clone(),
        }],
        decided_at: SystemTime::now(),
        reason: "env from pod metadata is stale during an in-place update".into(),
        inputs: json!({"running_hash": target.running, "expected_hash": target.expected}),
    };
    let decided_at = action.decided_at;
    let resumed = match commits.decide(key.clone(), action).await {
        Ok(Recorded::New(_)) => false,
        Ok(Recorded::Pending) => true,
        Ok(Recorded::AlreadyDone) => return Restarted::AlreadyDone,
        Err(e) => return Restarted::Failed(format!("journal: {e}")),
    };
    let kill = Kill {
        container_id: &target.id,
        sandbox_id: &target.sandbox_id,
        pre_stop: container.pre_stop.as_ref().filter(|_| !resumed),
        ports: &container.ports,
        grace: container.grace,
        decided_at,
    };
    events.spawn(report::killing(pod, target));
    let pre_stop = if resumed {
        PreStopOutcome::NotRerun
    } else {
        kill.run_pre_stop(cri).await
    };
    if let Some(why) = pre_stop.failure() {
        events.spawn(report::failed_pre_stop(pod, &target.container, why));
    }
    let stopped = kill.stop(cri).await;
    let restarted = match &stopped.result {
        Ok(()) => Restarted::Stopped,
        Err(e) => Restarted::Failed(e.to_string()),
    };
    report::restart_finished(pod, target, &pre_stop, stopped.grace, &restarted);
    // A failed stop stays pending: its retry finishes it without a second preStop.
    if restarted == Restarted::Stopped {
        let outcome = journal::Outcome {
            result: journal::RESULT_STOPPED.into(),
            message: String::new(),
            containers: vec![journal::ContainerOutcome {
                name: target.container.clone(),
                id: target.id.clone(),
                prestop: pre_stop.to_string(),
                ..Default::default()
            }],
            finished_at: SystemTime::now(),
        };
        if let Err(e) = commits.complete(key, outcome).await {
            tracing::warn!(pod = %pod, container = %target.container, error = %e,
                "recording the restart in the journal failed");
        }
    }
    restarted
}

/// Close a restart left pending by a failed stop once the container no longer needs one.
pub async fn abandon(commits: &Commits, container_id: &str, why: &str) {
    let outcome = journal::Outcome {
        result: journal::RESULT_SKIPPED.into(),
        message: why.into(),
        containers: Vec::new(),
        finished_at: SystemTime::now(),
    };
    if let Err(e) = commits.complete(restart_key(container_id), outcome).await {
        tracing::warn!(container_id, error = %e, "closing a pending restart in the journal failed");
    }
}
