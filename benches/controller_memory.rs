//! The controller's memory at scale: the real `nodeward controller` (leading, every reconciler
//! running) against the in-memory API server holding N pods (`NODEWARD_BENCH_PODS`, default
//! 10 000) as `kubectl apply` and a kubelet leave them (a last-applied annotation, managedFields,
//! env, volumes, probes, container statuses) and M CRRs (`NODEWARD_BENCH_CRRS`, default 1 000),
//! beside the same controller against an empty API server (the floor), in one run. RSS is read
//! once the controller reconciled every CRR and settled; the peak is VmHWM (the initial lists).
//!
//! Prints `RESULT controller_memory pods=… crrs=… rss_mib=… peak_rss_mib=… floor_rss_mib=…
//! ratio=…` (ratio: rss over the floor). The shipped limit is 128 MiB.

use nodeward_testkit as support;

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use support::agent::AgentProcess;
use support::apiserver::ApiServer;
use support::bench::env_or;
use support::rbac;

const NAMESPACES: usize = 50;

fn pod(i: usize) -> Pod {
    let name = format!("web-{i}");
    let ns = format!("bench-{}", i % NAMESPACES);
    let env: Vec<Value> = (0..10)
        .map(|k| json!({"name": format!("SETTING_{k}"), "value": format!("value-{k}-{}", "x".repeat(24))}))
        .collect();
    let container = |c: &str| {
        json!({
            "name": c, "image": format!("registry.example.com/team/{c}:1.2.3"),
            "command": ["/bin/server"], "args": ["--port=8080", "--verbose"],
            "env": env, "ports": [{"name": "http", "containerPort": 8080}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}, {"name": "token", "mountPath": "/var/run/secrets/tokens"}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}, "periodSeconds": 10},
            "lifecycle": {"preStop": {"exec": {"command": ["/bin/drain", "--timeout=5s"]}}},
        })
    };
    let spec = json!({
        "nodeName": format!("node-{}", i % 100),
        "containers": [container("app"), container("proxy")],
        "volumes": [{"name": "config", "configMap": {"name": "app-config"}},
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        "terminationGracePeriodSeconds": 30,
    });
    let last_applied = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}).to_string();
    let status = |c: &str| {
        json!({"name": c, "ready": true, "restartCount": 0, "image": "registry.example.com/team/x:1.2.3",
               "imageID": format!("registry.example.com/team/x@sha256:{}", "ab".repeat(32)),
               "containerID": format!("containerd://{}{i:08}", "cd".repeat(28)),
               "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}})
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "labels": {"app": "web", "pod-template-hash": "5d8f9c7b6d", "team": "payments"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}, "f:labels": {".": {}, "f:app": {}, "f:team": {}}},
                                            "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {}, "f:name": {}}}}}},
                              {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                               "time": "2026-12-01T10:00:05Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {}, "f:phase": {}, "f:podIP": {}}}}],
        },
        "spec": spec,
        "status": {"phase": "Running", "podIP": format!("10.1.{}.{}", i / 250, i % 250), "hostIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
                   "containerStatuses": [status("app"), status("proxy")]},
    }))
    .expect("pod")
}

fn crr(i: usize) -> DynamicObject {
    let ns = format!("bench-{}", i % NAMESPACES);
    serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ContainerRecreateRequest",
        "metadata": {"name": format!("restart-{i}"), "namespace": ns, "labels": {
            "crr.apps.kruise.io/pod-uid": format!("00000000-0000-0000-0000-{i:012}"),
            "crr.apps.kruise.io/node-name": format!("node-{}", i % 100),
            "crr.apps.kruise.io/active": "true"}},
        "spec": {"podName": format!("web-{i}"), "containers": [{"name": "app",
            "statusContext": {"containerID": format!("containerd://{}{i:08}", "cd".repeat(28)), "restartCount": 0}}],
            "strategy": {"failurePolicy": "Fail", "terminationGracePeriodSeconds": 30}},
    }))
    .expect("crr")
}

/// The controller leading against `api`, once it reconciled `crrs` CRRs and settled; its RSS and
/// peak RSS in KiB.
async fn measure(
    api: &ApiServer,
    dir: &std::path::Path,
    crrs: usize,
) -> anyhow::Result<(u64, u64)> {
    let kc = api.service_account_kubeconfig(dir, rbac::CONTROLLER)?;
    let kc = kc.display().to_string();
    let args = [
        "controller",
        "--kubeconfig",
        &kc,
        "--lease-namespace",
        rbac::NAMESPACE,
        "--addr",
        "127.0.0.1:0",
    ];
    let controller = AgentProcess::spawn_nodeward(&args)?;
    controller.wait_leader(Duration::from_secs(60)).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, metrics) = controller.http_get("/metrics").await?;
        let done = metrics
            .lines()
            .find(|l| l.starts_with("nodeward_controller_reconciles_total{reconciler=\"crr\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if done >= crrs as f64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {crrs} CRRs reconciled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = controller.rss_kib().unwrap_or(0);
    let peak = controller.peak_rss_kib().unwrap_or(0);
    controller.stop().await?;
    Ok((rss, peak))
}

fn main() -> anyhow::Result<()> {
    let pods = env_or("NODEWARD_BENCH_PODS", 10_000usize);
    let crrs = env_or("NODEWARD_BENCH_CRRS", 1_000usize).min(pods);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let empty = ApiServer::start().await?;
        let (floor, _) = measure(&empty, dir.path(), 0).await?;
        drop(empty);

        let api = ApiServer::start().await?;
        let client = api.client();
        let started = Instant::now();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for n in 0..NAMESPACES {
            let ns = serde_json::from_value(json!({"metadata": {"name": format!("bench-{n}")}}))?;
            namespaces.create(&PostParams::default(), &ns).await?;
        }
        stream::iter(0..pods)
            .map(|i| {
                let client = client.clone();
                async move {
                    let p = pod(i);
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    Api::<Pod>::namespaced(client, &ns).create(&PostParams::default(), &p).await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        let gvk = GroupVersionKind::gvk("apps.kruise.io", "v1alpha1", "ContainerRecreateRequest");
        let resource = ApiResource::from_gvk(&gvk);
        stream::iter(0..crrs)
            .map(|i| {
                let (client, resource) = (client.clone(), resource.clone());
                async move {
                    let c = crr(i);
                    let ns = c.metadata.namespace.clone().unwrap_or_default();
                    Api::<DynamicObject>::namespaced_with(client, &ns, &resource)
                        .create(&PostParams::default(), &c)
                        .await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        eprintln!("controller_memory: {pods} pods and {crrs} CRRs stored in {:?}", started.elapsed());
        let (rss, peak) = measure(&api, dir.path(), crrs).await?;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "RESULT controller_memory pods={pods} crrs={crrs} rss_mib={:.1} peak_rss_mib={:.1} floor_rss_mib={:.1} ratio={:.2}",
            mib(rss),
            mib(peak),
            mib(floor),
            rss as f64 / floor.max(1) as f64
        );
        anyhow::Ok(())
    })
}
