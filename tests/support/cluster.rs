//! The kubelet's API side, for cluster-mode tests: a Pod object in the (in-memory) API server for
//! each fixture pod, bound to a node, and its status mirrored from CRI as the kubelet reports it
//! (container statuses, phase; a terminal phase set by someone else is kept, as the kubelet does).

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::kubelet::{ContainerInfo, Kubelet, PodHandle, PodSpec, RestartPolicy};
use super::testbed::TestBed;

/// The Events of namespace `ns` about the object with `uid`, with `reason`.
pub async fn events_for(client: &kube::Client, ns: &str, uid: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// A fixture pod that also exists as a Pod object.
pub struct ClusterPod {
    pub handle: PodHandle,
    pub api: Api<Pod>,
    pub name: String,
    mirror: JoinHandle<()>,
}

/// The Pod object for a fixture spec on `node`.
pub fn pod_object(tb: &TestBed, spec: &PodSpec, node: &str) -> Value {
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name,
                "image": tb.image(&c.image),
                "command": c.command,
                "args": c.args,
                "env": c.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            });
            if let Some(cmd) = &c.pre_stop_exec {
                v["lifecycle"]["preStop"] = json!({"exec": {"command": cmd}});
            }
            if let Some((port, path)) = &c.pre_stop_http_get {
                v["lifecycle"]["preStop"] = json!({"httpGet": {"port": port, "path": path}});
            }
            if let Some(cmd) = &c.post_start_exec {
                v["lifecycle"]["postStart"] = json!({"exec": {"command": cmd}});
            }
            v
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": spec.labels,
            "annotations": spec.annotations,
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": spec.restart_policy.as_str(),
            "terminationGracePeriodSeconds": spec.termination_grace_seconds.unwrap_or(30),
            "containers": containers,
            "readinessGates": spec.readiness_gates.iter().map(|t| json!({"conditionType": t})).collect::<Vec<_>>(),
        },
        "status": {"phase": "Pending"}
    })
}

fn rfc3339(nanos: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64),
    )
    .to_string()
}

fn container_status(c: &ContainerInfo) -> Value {
    let state = if c.is_exited() {
        json!({"terminated": {
            "exitCode": c.exit_code,
            "reason": if c.exit_code == 0 { "Completed" } else { "Error" },
            "startedAt": rfc3339(c.started_at),
            "finishedAt": rfc3339(c.finished_at),
            "containerID": format!("containerd://{}", c.id),
        }})
    } else if c.is_running() {
        json!({"running": {"startedAt": rfc3339(c.started_at)}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    json!({
        "name": c.name,
        "image": "",
        "imageID": "",
        "containerID": format!("containerd://{}", c.id),
        "ready": c.ready,
        "started": c.is_running(),
        "restartCount": c.restart_count,
        "state": state,
    })
}

/// The kubelet's phase for the containers' states (`getPhase`), for the policies tests use.
pub fn phase(policy: RestartPolicy, containers: &[ContainerInfo], expected: usize) -> &'static str {
    if containers.len() < expected || containers.iter().any(|c| !c.is_running() && !c.is_exited()) {
        return "Pending";
    }
    let all_exited = containers.iter().all(ContainerInfo::is_exited);
    let all_ok = containers.iter().all(|c| c.is_exited() && c.exit_code == 0);
    match policy {
        RestartPolicy::Never if all_exited => {
            if all_ok {
                "Succeeded"
            } else {
                "Failed"
            }
        }
        RestartPolicy::OnFailure if all_ok => "Succeeded",
        _ => "Running",
    }
}

impl ClusterPod {
    /// Create the Pod object on `node`, then run it through the CRI fixture with the uid the API
    /// server gave it, and mirror its status at each of the fixture's relists (every 100 ms).
    pub async fn run(
        tb: &'static TestBed,
        client: kube::Client,
        node: &str,
        spec: PodSpec,
    ) -> anyhow::Result<ClusterPod> {
        let api: Api<Pod> = Api::namespaced(client, &spec.namespace);
        let obj: Pod = serde_json::from_value(pod_object(tb, &spec, node))?;
        let created = api
            .create(&PostParams::default(), &obj)
            .await
            .context("creating the Pod object")?;
        let uid = created.metadata.uid.clone().context("pod uid")?;
        let mut spec = spec;
        spec.uid = uid;
        let name = spec.name.clone();
        let policy = spec.restart_policy;
        let expected = spec.containers.len();
        let handle = Kubelet::run_pod(tb, spec).await?;
        let mut status_source = handle.status_source(tb);
        let mirror_api = api.clone();
        let mirror_name = name.clone();
        let mirror = tb.background().spawn(async move {
            // Like the kubelet's status manager: write on a change only, after reading the Pod.
            let mut last = Value::Null;
            while let Some(containers) = status_source.next().await {
                let status = json!({
                    "phase": phase(policy, &containers, expected),
                    "containerStatuses": containers.iter().map(container_status).collect::<Vec<_>>(),
                });
                if status == last {
                    continue;
                }
                let Ok(current) = mirror_api.get_status(&mirror_name).await else {
                    continue;
                };
                let api_phase = current
                    .status
                    .and_then(|s| s.phase)
                    .unwrap_or_default();
                // Like the kubelet's status patch (the difference to the Pod just read), the
                // phase is sent only when it changes what the API has, and never out of a
                // terminal phase: a verdict written between the read and this patch stays.
                let mut patch = json!({"status": status});
                let keep = api_phase == status["phase"]
                    || api_phase == "Succeeded"
                    || api_phase == "Failed";
                if keep && let Some(status) = patch["status"].as_object_mut() {
                    status.remove("phase");
                }
                if mirror_api
                    .patch_status(&mirror_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    last = status;
                }
            }
        });
        Ok(ClusterPod {
            handle,
            api,
            name,
            mirror,
        })
    }

    pub fn uid(&self) -> &str {
        self.handle.uid()
    }

    /// The Pod object now.
    pub async fn object(&self) -> anyhow::Result<Pod> {
        Ok(self.api.get(&self.name).await?)
    }

    /// Remove the CRI pod and the Pod object.
    pub async fn remove(self) -> anyhow::Result<()> {
        self.mirror.abort();
        self.handle.remove().await?;
        // Graceful deletion first, then the kubelet's final delete with grace 0.
        let _ = self.api.delete(&self.name, &Default::default()).await;
        let _ = self
            .api
            .delete(
                &self.name,
                &kube::api::DeleteParams::default().grace_period(0),
            )
            .await;
        Ok(())
    }
}

/// Every NodeImage (name, spec, status) as pretty JSON: what a timed-out image-pull test shows.
pub async fn node_images_json(api: &Api<nodeward::api::kruise::NodeImage>) -> String {
    let items = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return format!("listing NodeImages failed: {e}"),
    };
    let state: Vec<Value> = items
        .iter()
        .map(|n| json!({"name": n.metadata.name, "spec": n.spec, "status": n.status}))
        .collect();
    serde_json::to_string_pretty(&state).unwrap_or_default()
}
