//! nodeward on a real single-node Kubernetes (`scripts/cluster.sh`: kube-apiserver, etcd,
//! kube-controller-manager, kube-scheduler and a kubelet on containerd, built from the
//! k8s.io/kubernetes module): the shipped manifests applied as they are, the agent running as the
//! DaemonSet's pod and the controller as the Deployment's pods under the shipped RBAC, and each
//! API-facing capability exercised on real Jobs and Pods. Each test works in a namespace of its
//! own.

use nodeward_testkit as support;

use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ContainerState, ImageSpec, ImageStatusRequest, RemoveImageRequest};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use nodeward::api::kruise::{
    ANNOTATION_INPLACE_UPDATE_STATE, ANNOTATION_RUNTIME_CONTAINERS_META, LABEL_FAKE_NODE_IMAGE,
    POD_CONDITION_INPLACE_UPDATE_READY, RuntimeContainerMetaSet,
};
use nodeward::containermeta::decide;
use serde_json::{Value, json};
use support::cluster::events_for;
use support::k8s::{CLUSTER_TIMEOUT, NAMESPACE, RealCluster, teardown};
use support::wait;
use tokio::sync::RwLock;

/// Held exclusively by a test that disturbs what the others rely on (the leading controller).
static DISRUPTION: RwLock<()> = RwLock::const_new(());
const SIDECAR_ENV: &str = "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT";
/// A sidecar that exits 0 on SIGTERM, as a well-behaved proxy does.
const POLITE: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

/// The cluster with nodeward deployed, an admin client, and a fresh namespace named `ns`.
async fn setup(ns: &str) -> (&'static RealCluster, Client) {
    support::k8s::with_namespace(ns).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_manifests_run_nodeward_as_pods() {
    let _shared = DISRUPTION.read().await;
    let (cluster, client) = setup("rc-manifests").await;
    let image = cluster.deploy_nodeward();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "containerrecreaterequests.apps.kruise.io",
        "imagepulljobs.apps.kruise.io",
        "nodeimages.apps.kruise.io",
        "nodepodprobes.apps.kruise.io",
        "podprobemarkers.apps.kruise.io",
    ] {
        let crd = crds.get(name).await.unwrap();
        let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        assert!(established, "{name} not established");
    }

    let agents = cluster.nodeward_pods_of(&client, "nodeward-agent").await;
    assert_eq!(agents.len(), 1, "one agent pod on the single node");
    let agent = &agents[0];
    let spec = agent.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(cluster.node.as_str()));
    assert_eq!(spec.service_account_name.as_deref(), Some("nodeward-agent"));
    assert_eq!(spec.containers[0].image.as_deref(), Some(image.as_str()));
    assert!(is_ready(agent), "agent pod not ready: {:?}", agent.status);

    let controllers = cluster
        .nodeward_pods_of(&client, "nodeward-controller")
        .await;
    assert_eq!(controllers.len(), 2, "the Deployment's two replicas");
    for pod in &controllers {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some("nodeward-controller")
        );
        assert!(is_ready(pod), "controller pod not ready: {:?}", pod.status);
    }
    // One of them holds the Lease.
    let holder = wait::until("the controller Lease", 60, || lease_holder(&client)).await;
    assert!(
        controllers
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(holder.as_str())),
        "the Lease holder {holder} is not a controller pod"
    );
    teardown(&client, "rc-manifests").await;
}

fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready")
}

fn condition(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// A Job of one pod: `main` runs `script`, `proxy` is a sidecar marked with `sidecar_env`.
fn sidecar_job(
    cluster: &RealCluster,
    name: &str,
    policy: &str,
    script: &str,
    sidecar_env: &[(&str, &str)],
) -> Job {
    let env: Vec<Value> = sidecar_env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": policy,
                "terminationGracePeriodSeconds": 10,
                "containers": [
                    {"name": "main", "image": cluster.image("busybox:1"), "command": ["sh", "-c", script]},
                    {"name": "proxy", "image": cluster.image("busybox:1"), "command": ["sh", "-c", POLITE], "env": env},
                ],
            }},
        },
    }))
    .unwrap()
}

/// The Job's terminal condition type (`Complete` or `Failed`), once it has one.
async fn job_outcome(jobs: &Api<Job>, name: &str) -> String {
    wait::until(
        &format!("job {name} to finish"),
        CLUSTER_TIMEOUT.as_secs(),
        || {
            let jobs = jobs.clone();
            async move {
                let job = jobs.get(name).await.unwrap();
                job.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                    .map(|c| c.type_)
            }
        },
    )
    .await
}

async fn job_pod(client: &Client, ns: &str, job: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("job-name={job}"));
    let mut items = pods.list(&lp).await.unwrap().items;
    assert_eq!(items.len(), 1, "one pod for job {job}");
    items.remove(0)
}

fn terminated_exit_code(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_sidecars_are_terminated_on_real_jobs() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-sidecar";
    let (cluster, client) = setup(ns).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let marker = [(SIDECAR_ENV, "true")];
    // (job, restartPolicy, main script, the Job's end)
    let cases = [
        ("never-ok", "Never", "sleep 2; exit 0", "Complete"),
        ("never-fail", "Never", "sleep 2; exit 1", "Failed"),
        ("onfailure-ok", "OnFailure", "sleep 2; exit 0", "Complete"),
    ];
    for (name, policy, script, _) in cases {
        let job = sidecar_job(cluster, name, policy, script, &marker);
        jobs.create(&PostParams::default(), &job).await.unwrap();
    }
    for (name, _, script, outcome) in cases {
        assert_eq!(job_outcome(&jobs, name).await, outcome, "job {name}");
        let pod = job_pod(&client, ns, name).await;
        let main_exit = i32::from(script.ends_with("exit 1"));
        assert_eq!(
            terminated_exit_code(&pod, "main"),
            Some(main_exit),
            "{name}"
        );
        // The sidecar was stopped by the agent (SIGTERM, exit 0), not left running.
        assert_eq!(terminated_exit_code(&pod, "proxy"), Some(0), "{name}");
        assert!(
            condition(&pod, "SidecarTerminated"),
            "{name}: {:?}",
            pod.status
        );
        let uid = pod.metadata.uid.as_deref().unwrap();
        let events = events_for(&client, ns, uid, "SidecarTerminated").await;
        assert_eq!(events.len(), 1, "{name}: one SidecarTerminated Event");
    }
    teardown(&client, ns).await;
}

fn restart_count(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
        .map(|c| c.restart_count)
}

/// The holder of the controller's Lease.
async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    leases
        .get_opt("nodeward-controller")
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Wait until a packaged workload (`deployment/…`, `daemonset/…`) is fully rolled out.
fn rollout(cluster: &RealCluster, what: &str) {
    cluster
        .kubectl(&["-n", NAMESPACE, "rollout", "status", what, "--timeout=120s"])
        .unwrap();
}

/// A busybox container that exits 0 on SIGTERM, with `lifecycle` hooks if given.
fn polite_container(cluster: &RealCluster, name: &str, lifecycle: Option<Value>) -> Value {
    let mut container = json!({"name": name, "image": cluster.image("busybox:1"),
        "command": ["sh", "-c", POLITE]});
    if let Some(lifecycle) = lifecycle {
        container["lifecycle"] = lifecycle;
    }
    container
}

/// A pod of polite busybox containers, once Ready.
async fn ready_pod(
    cluster: &RealCluster,
    client: &Client,
    ns: &str,
    name: &str,
    containers: &[&str],
) -> Pod {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| polite_container(cluster, c, None))
        .collect();
    create_pod(client, ns, name, json!({"containers": containers})).await;
    until_ready(client, ns, name).await
}

/// Create the pod `name` of `spec` (terminationGracePeriodSeconds 10 unless set).
async fn create_pod(client: &Client, ns: &str, name: &str, mut spec: Value) {
    if spec.get("terminationGracePeriodSeconds").is_none() {
        spec["terminationGracePeriodSeconds"] = json!(10);
    }
    let pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn until_ready(client: &Client, ns: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait::until(&format!("{name} ready"), CLUSTER_TIMEOUT.as_secs(), || {
        let pods = pods.clone();
        async move { pods.get(name).await.ok().filter(is_ready) }
    })
    .await
}

/// A CRR `crr` recreating `container` of `pod`, as a user creates it; the CRR once it ended.
async fn recreate(
    client: &Client,
    ns: &str,
    crr: &str,
    pod: &str,
    container: &str,
) -> DynamicObject {
    let spec = json!({"podName": pod, "containers": [{"name": container}]});
    create_crr(client, ns, crr, spec).await;
    crr_end(client, ns, crr).await
}

/// Create the CRR `crr` of `spec`, as a user does.
async fn create_crr(client: &Client, ns: &str, crr: &str, spec: Value) {
    let crrs = kruise_api(client, Some(ns), "ContainerRecreateRequest");
    let object = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": {"name": crr, "namespace": ns},
        "spec": spec,
    }))
    .unwrap();
    crrs.create(&PostParams::default(), &object).await.unwrap();
}

/// The CRR `crr` once it ended (`Completed`, or `Failed`).
async fn crr_end(client: &Client, ns: &str, crr: &str) -> DynamicObject {
    let crrs = kruise_api(client, Some(ns), "ContainerRecreateRequest");
    wait::until(
        &format!("CRR {crr} to end"),
        CLUSTER_TIMEOUT.as_secs(),
        || {
            let crrs = crrs.clone();
            async move {
                let crr = crrs.get(crr).await.unwrap();
                let phase = crr.data["status"]["phase"].as_str().unwrap_or_default();
                (phase == "Completed" || phase == "Failed").then_some(crr)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crr_restarts_a_container_through_the_real_kubelet() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-crr";
    let (cluster, client) = setup(ns).await;
    let running = ready_pod(cluster, &client, ns, "web-0", &["app", "sidecar"]).await;
    assert_eq!(restart_count(&running, "app"), Some(0));
    let done = recreate(&client, ns, "crr-app", "web-0", "app").await;
    let status = &done.data["status"];
    assert_eq!(status["phase"], "Completed", "{status}");
    assert_eq!(
        status["containerRecreateStates"][0]["name"], "app",
        "{status}"
    );
    assert_eq!(
        status["containerRecreateStates"][0]["phase"], "Succeeded",
        "{status}"
    );
    let labels = &done.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("crr.apps.kruise.io/pod-uid"),
        running.metadata.uid.as_ref()
    );
    assert_eq!(
        labels.get("crr.apps.kruise.io/node-name"),
        Some(&cluster.node)
    );
    // The real kubelet restarted the container; the other one was left alone.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let restarted = wait::until("app restarted by the kubelet", 60, || {
        let pods = pods.clone();
        async move {
            pods.get("web-0")
                .await
                .ok()
                .filter(|p| restart_count(p, "app") == Some(1) && is_ready(p))
        }
    })
    .await;
    assert_eq!(restart_count(&restarted, "sidecar"), Some(0));
    teardown(&client, ns).await;
}

fn container_status<'a>(
    pod: &'a Pod,
    container: &str,
) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
        .unwrap_or_else(|| panic!("no status of {container}: {:?}", pod.status))
}

/// When `container`'s previous instance stopped (the kubelet's record, whole seconds).
fn stopped_at(pod: &Pod, container: &str) -> k8s_openapi::jiff::Timestamp {
    let status = container_status(pod, container);
    status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .unwrap_or_else(|| panic!("{container} never stopped: {status:?}"))
        .0
}

fn timestamp(value: &Value) -> k8s_openapi::jiff::Timestamp {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

fn seconds(from: k8s_openapi::jiff::Timestamp, to: k8s_openapi::jiff::Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// The pod `name` once each container in `restarted` has restartCount 1 and the pod is Ready.
async fn restarted_and_ready(client: &Client, ns: &str, name: &str, restarted: &[&str]) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait::until(&format!("{name} restarted and ready"), 90, || {
        let pods = pods.clone();
        async move {
            pods.get(name)
                .await
                .ok()
                .filter(|p| is_ready(p) && restarted.iter().all(|c| restart_count(p, c) == Some(1)))
        }
    })
    .await
}

/// The CRR strategies of upstream's e2e suite (test/e2e/apps/v1alpha1/containerrecreate.go) on
/// real pods, all at once in one namespace: minStartedSeconds + TTL, unordered/ordered/forced
/// recreation of a container with a postStart hook, a preStop hook honoured, activeDeadlineSeconds,
/// and unreadyGracePeriodSeconds through the pod's `KruisePodReady` readiness gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crr_strategies_on_real_pods() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-crr-strategies";
    let (cluster, client) = setup(ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let post_start = json!({"postStart": {"exec": {"command": ["sleep", "5"]}}});
    let pre_stop = json!({"preStop": {"exec": {"command": ["sleep", "8"]}}});
    let two = |app: Option<Value>| {
        json!({"containers": [polite_container(cluster, "app", app),
            polite_container(cluster, "sidecar", None)]})
    };
    let mut gated = two(Some(pre_stop.clone()));
    gated["readinessGates"] = json!([{"conditionType": "KruisePodReady"}]);
    let specs = [
        ("simple", two(None)),
        ("unordered", two(Some(post_start.clone()))),
        ("ordered", two(Some(post_start.clone()))),
        ("ordered-force", two(Some(post_start))),
        ("prestop", two(Some(pre_stop.clone()))),
        ("deadline", two(Some(pre_stop))),
        ("unready", gated),
    ];
    for (name, spec) in &specs {
        create_pod(&client, ns, name, spec.clone()).await;
    }
    // A Kruise workload marks its pods KruisePodReady; here the test does.
    let ready_gate =
        json!({"status": {"conditions": [{"type": "KruisePodReady", "status": "True"}]}});
    wait::until("unready's status to take the gate", 60, || {
        let (pods, patch) = (pods.clone(), ready_gate.clone());
        async move {
            pods.patch_status("unready", &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let mut before = std::collections::HashMap::new();
    for (name, _) in &specs {
        before.insert(*name, until_ready(&client, ns, name).await);
    }

    let both = json!([{"name": "app"}, {"name": "sidecar"}]);
    let crrs = [
        (
            "simple",
            json!({"containers": [{"name": "app"}], "ttlSecondsAfterFinished": 3,
            "strategy": {"minStartedSeconds": 5}}),
        ),
        ("unordered", json!({"containers": both})),
        (
            "ordered",
            json!({"containers": both, "strategy": {"orderedRecreate": true}}),
        ),
        (
            "ordered-force",
            json!({"containers": both,
            "strategy": {"orderedRecreate": true, "forceRecreate": true}}),
        ),
        ("prestop", json!({"containers": [{"name": "app"}]})),
        (
            "deadline",
            json!({"containers": both, "activeDeadlineSeconds": 3}),
        ),
        (
            "unready",
            json!({"containers": both,
            "strategy": {"terminationGracePeriodSeconds": 3, "unreadyGracePeriodSeconds": 1}}),
        ),
    ];
    for (pod, spec) in &crrs {
        let mut spec = spec.clone();
        spec["podName"] = json!(pod);
        create_crr(&client, ns, pod, spec).await;
    }

    // unreadyGracePeriodSeconds: the controller takes the pod out of service first (the
    // readiness gate turns the real kubelet's Ready False) ...
    let key = format!(r#"[{{"userAgent":"ContainerRecreateRequest","key":"{ns}/unready"}}]"#);
    let unready = wait::until("unready's KruisePodReady False", 20, || {
        let pods = pods.clone();
        async move {
            pods.get("unready")
                .await
                .ok()
                .filter(|p| !condition(p, "KruisePodReady"))
        }
    })
    .await;
    let gate = unready
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .unwrap();
    let gate = gate.iter().find(|c| c.type_ == "KruisePodReady").unwrap();
    assert_eq!(gate.message.as_deref(), Some(key.as_str()), "{gate:?}");
    wait::until("unready's Ready False", 20, || {
        let pods = pods.clone();
        async move { pods.get("unready").await.ok().filter(|p| !is_ready(p)) }
    })
    .await;

    // The `active` label goes when the CRR completes, before its TTL (3 s) deletes it.
    let mut ended = std::collections::HashMap::new();
    ended.insert("simple", crr_end(&client, ns, "simple").await);
    let api = kruise_api(&client, Some(ns), "ContainerRecreateRequest");
    wait::until("simple's active label removed", 30, || {
        let api = api.clone();
        async move {
            let crr = api.get_opt("simple").await.unwrap()?;
            let labels = crr.metadata.labels.unwrap_or_default();
            (!labels.contains_key("crr.apps.kruise.io/active")).then_some(())
        }
    })
    .await;
    for (name, _) in &crrs[1..] {
        ended.insert(*name, crr_end(&client, ns, name).await);
    }
    let states = |name: &str| ended[name].data["status"]["containerRecreateStates"].clone();
    let created = |name: &str| {
        ended[name]
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap()
    };
    for name in [
        "simple",
        "unordered",
        "ordered",
        "ordered-force",
        "prestop",
        "unready",
    ] {
        let status = &ended[name].data["status"];
        assert_eq!(status["phase"], "Completed", "{name}: {status}");
        for state in states(name).as_array().unwrap() {
            assert_eq!(state["phase"], "Succeeded", "{name}: {status}");
            assert_eq!(state["isKilled"], true, "{name}: {status}");
        }
    }

    // simple: the controller defaulted failurePolicy and the status context from the pod; the
    // CRR completed no sooner than minStartedSeconds after the new container started; `active`
    // went; the TTL deleted it.
    let crr = &ended["simple"];
    assert_eq!(
        crr.data["spec"]["strategy"]["failurePolicy"], "Fail",
        "{:?}",
        crr.data
    );
    let old_id = container_status(&before["simple"], "app")
        .container_id
        .clone()
        .unwrap();
    assert_eq!(
        crr.data["spec"]["containers"][0]["statusContext"]["containerID"],
        old_id.as_str()
    );
    let pod = restarted_and_ready(&client, ns, "simple", &["app"]).await;
    assert_ne!(
        container_status(&pod, "app").container_id.as_deref(),
        Some(old_id.as_str())
    );
    assert_eq!(restart_count(&pod, "sidecar"), Some(0));
    let started = container_status(&pod, "app")
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .unwrap()
        .0;
    let completed = timestamp(&crr.data["status"]["completionTime"]);
    assert!(
        seconds(started, completed) >= 4.0,
        "completed {completed}, app started {started}"
    );
    wait::until("simple deleted by its TTL", 30, || {
        let api = api.clone();
        async move { api.get_opt("simple").await.unwrap().is_none().then_some(()) }
    })
    .await;

    // postStart: unordered, the sidecar stops right after the app; ordered (forced or not), only
    // once the app runs again, after its 5 s postStart hook.
    for (name, lower, upper) in [
        ("unordered", -1.0, 3.0),
        ("ordered", 4.0, 60.0),
        ("ordered-force", 4.0, 60.0),
    ] {
        let pod = restarted_and_ready(&client, ns, name, &["app", "sidecar"]).await;
        let gap = seconds(stopped_at(&pod, "app"), stopped_at(&pod, "sidecar"));
        assert!(
            lower <= gap && gap < upper,
            "{name}: the sidecar stopped {gap} s after the app"
        );
    }

    // preStop: the app stopped only after its 8 s hook.
    let pod = restarted_and_ready(&client, ns, "prestop", &["app"]).await;
    let gap = seconds(created("prestop"), stopped_at(&pod, "app"));
    assert!(gap >= 7.0, "prestop: the app stopped {gap} s after the CRR");

    // activeDeadlineSeconds 3 while the app's 8 s preStop runs: the controller ends the CRR at
    // the deadline, marking what had not finished Failed (upstream leaves those Pending or
    // Recreating: #2353); the stop already under way still restarts the app.
    let crr = &ended["deadline"];
    let status = &crr.data["status"];
    assert_eq!(status["phase"], "Completed", "{status}");
    assert_eq!(
        status["message"], "recreating has exceeded the activeDeadlineSeconds",
        "{status}"
    );
    let took = seconds(created("deadline"), timestamp(&status["completionTime"]));
    assert!(
        (2.0..10.0).contains(&took),
        "deadline: completed after {took} s"
    );
    for state in states("deadline").as_array().unwrap() {
        assert_eq!(state["phase"], "Failed", "{status}");
    }
    let pod = restarted_and_ready(&client, ns, "deadline", &["app"]).await;
    assert_eq!(
        restart_count(&pod, "sidecar"),
        Some(0),
        "deadline: the sidecar was stopped"
    );

    // unreadyGracePeriodSeconds: ... and back in service once done; the CRR's 3 s grace cut the
    // app's 8 s preStop short.
    let pod = restarted_and_ready(&client, ns, "unready", &["app", "sidecar"]).await;
    assert!(condition(&pod, "KruisePodReady"), "{:?}", pod.status);
    let gap = seconds(created("unready"), stopped_at(&pod, "app"));
    assert!(gap < 8.0, "unready: the app stopped {gap} s after the CRR");
    teardown(&client, ns).await;
}

/// The shipped MutatingWebhookConfiguration.
const WEBHOOK_CONFIGURATION: &str = "nodeward-crr";

/// The message of an API refusal; panics when the request was allowed.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("allowed: {other:?}"),
    }
}

/// The CRR admission webhook and the ValidatingAdmissionPolicy on the real kube-apiserver: what
/// Create returns is filled from the real Pod whatever labels the client set; what upstream's
/// webhook refuses is refused with its reason; once admitted, the spec and the labels the agents
/// select on change only through the controller, whose own writes (the active label, the status
/// annotations) pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crr_admission_on_the_real_apiserver() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-admission";
    let (cluster, client) = setup(ns).await;
    let pod = ready_pod(cluster, &client, ns, "target", &["app"]).await;
    let crrs = kruise_api(&client, Some(ns), "ContainerRecreateRequest");
    let crr = |name: &str, spec: Value, labels: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "ContainerRecreateRequest",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    };
    let app = json!([{"name": "app"}]);
    let forged = json!({
        "crr.apps.kruise.io/pod-uid": "uid-of-a-kube-system-pod",
        "crr.apps.kruise.io/node-name": "another-node",
        "team": "a",
    });

    // What Create returns (a server-side dry run: nothing is stored).
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let spec = json!({"podName": "target", "containers": app});
    let made = crrs
        .create(&dry, &crr("filled", spec.clone(), forged.clone()))
        .await
        .unwrap();
    let labels = made.labels();
    assert_eq!(labels["crr.apps.kruise.io/pod-uid"], pod.uid().unwrap());
    assert_eq!(labels["crr.apps.kruise.io/node-name"], cluster.node);
    assert_eq!(labels["crr.apps.kruise.io/active"], "true");
    assert_eq!(labels["team"], "a");
    let app_status = container_status(&pod, "app");
    let context = &made.data["spec"]["containers"][0]["statusContext"];
    assert_eq!(
        context["containerID"].as_str(),
        app_status.container_id.as_deref()
    );
    assert_eq!(made.data["spec"]["strategy"]["failurePolicy"], "Fail");
    assert_eq!(
        made.data["spec"]["strategy"]["terminationGracePeriodSeconds"],
        10
    );

    // What upstream's webhook refuses, refused with its reason.
    let hook = json!({"podName": "target", "containers": [
        {"name": "app", "preStop": {"exec": {"command": ["touch", "/x"]}}}]});
    let cases = [
        (hook, "can not set preStop, ports or statusContext"),
        (
            json!({"podName": "nobody", "containers": app}),
            "no found Pod named nobody",
        ),
        (
            json!({"podName": "target", "containers": [{"name": "nope"}]}),
            "not found nope container",
        ),
        (
            json!({"podName": "target", "containers": app, "activeDeadlineSeconds": 2}),
            "activeDeadlineSeconds",
        ),
        (
            json!({"podName": "target", "containers": [{"name": "app"}, {"name": "app"}]}),
            "multi times",
        ),
    ];
    for (spec, reason) in cases {
        let m = refusal(crrs.create(&dry, &crr("refused", spec, json!({}))).await);
        assert!(m.contains(reason), "{reason}: {m}");
    }

    // Admitted for real: the agent recreates the container, the controller completes the CRR
    // and removes its active label (its writes pass the webhook and the policy).
    crrs.create(&PostParams::default(), &crr("real", spec, forged))
        .await
        .unwrap();
    // The spec and the pod-uid label are the webhook's rules; the active label is the policy's,
    // which holds with no replica up.
    let changes = [
        (
            json!({"spec": {"activeDeadlineSeconds": 600}}),
            "spec of ContainerRecreateRequest is immutable",
        ),
        (
            json!({"metadata": {"labels": {"crr.apps.kruise.io/pod-uid": "another"}}}),
            "crr.apps.kruise.io/pod-uid is immutable",
        ),
        (
            json!({"metadata": {"labels": {"crr.apps.kruise.io/active": "false"}}}),
            "only the nodeward controller may change the labels",
        ),
    ];
    let mut refused = Vec::new();
    for (change, reason) in changes {
        let patch = Patch::Merge(&change);
        let m = refusal(crrs.patch("real", &PatchParams::default(), &patch).await);
        assert!(m.contains(reason), "{reason}: {m}");
        refused.push(m);
    }
    assert!(refused[2].contains("nodeward-crr-immutable"), "{refused:?}");
    let done = crr_end(&client, ns, "real").await;
    assert_eq!(done.data["status"]["phase"], "Completed", "{:?}", done.data);
    let crrs2 = crrs.clone();
    wait::until("the controller removes the active label", 60, || {
        let crrs = crrs2.clone();
        async move {
            let c = crrs.get("real").await.unwrap();
            (!c.labels().contains_key("crr.apps.kruise.io/active")).then_some(())
        }
    })
    .await;
    let pod = restarted_and_ready(&client, ns, "target", &["app"]).await;
    assert_eq!(restart_count(&pod, "app"), Some(1));
    teardown(&client, ns).await;
}

/// The agent's credentials, as its pod holds them: a token of its service account bound to the
/// agent's pod (and so to its node), as the kubelet mounts it.
async fn agent_client(cluster: &RealCluster, admin: &Client) -> Client {
    let agents = cluster.nodeward_pods_of(admin, "nodeward-agent").await;
    let agent = agents.first().expect("an agent pod");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), NAMESPACE);
    let request = serde_json::from_value(json!({"spec": {
        "audiences": [],
        "expirationSeconds": 600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
            "name": agent.name_any(), "uid": agent.uid()},
    }}))
    .unwrap();
    let token = accounts
        .create_token_request("nodeward-agent", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

/// The policy that confines each agent to its own node (`agent-policy.yaml`), with the agent's
/// own pod-bound token: it may write the status of a Pod on its node (and through it the
/// container meta annotation, no other annotation and no label), not of a Pod bound to another
/// node, nor another node's NodeImage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_writes_status_on_its_own_node_only() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-own-node";
    let (cluster, client) = setup(ns).await;
    let agent = agent_client(cluster, &client).await;
    let here = ready_pod(cluster, &client, ns, "here", &["app"]).await;
    let admin_pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let elsewhere = serde_json::from_value(json!({"metadata": {"name": "elsewhere"}, "spec": {
        "nodeName": "another-node",
        "containers": [{"name": "app", "image": cluster.image("busybox:1")}]}}))
    .unwrap();
    admin_pods
        .create(&PostParams::default(), &elsewhere)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(agent.clone(), ns);
    let condition = json!({"status": {"conditions": [
        {"type": "nodeward.io/Probe", "status": "True"}]}});
    let patch = Patch::Strategic(&condition);
    pods.patch_status(&here.name_any(), &PatchParams::default(), &patch)
        .await
        .unwrap();
    let m = refusal(
        pods.patch_status("elsewhere", &PatchParams::default(), &patch)
            .await,
    );
    assert!(m.contains("its own node's Pods only"), "{m}");
    // Through the status: the container meta annotation only, no label, no other annotation.
    let meta = json!({"metadata": {"annotations": {ANNOTATION_RUNTIME_CONTAINERS_META: "{\"containers\":[]}"}}});
    pods.patch_status(
        &here.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&meta),
    )
    .await
    .unwrap();
    let label = json!({"metadata": {"labels": {"nodeward.io/forged": "x"}}});
    let m = refusal(
        pods.patch_status(
            &here.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&label),
        )
        .await,
    );
    assert!(m.contains("may not change a Pod's labels"), "{m}");
    let other =
        json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-9"}}});
    let m = refusal(
        pods.patch_status(
            &here.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&other),
        )
        .await,
    );
    assert!(
        m.contains("only the apps.kruise.io/runtime-containers-meta annotation"),
        "{m}"
    );
    let images = kruise_api(&client, None, "NodeImage");
    // Marked fake (a NodeImage without a Node), or the controller, running for the shipped
    // manifests' test meanwhile, deletes it before the agent's write reaches the policy.
    let other = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodeImage",
        "metadata": {"name": "another-node", "labels": {LABEL_FAKE_NODE_IMAGE: "true"}},
        "spec": {}}))
    .unwrap();
    images.create(&PostParams::default(), &other).await.unwrap();
    let status =
        json!({"status": {"desired": 0, "succeeded": 0, "failed": 0, "pulling": 0, "waiting": 0}});
    let m = refusal(
        kruise_api(&agent, None, "NodeImage")
            .patch_status(
                "another-node",
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await,
    );
    assert!(m.contains("its own node's NodeImage only"), "{m}");
    images
        .delete("another-node", &DeleteParams::default())
        .await
        .ok();
    teardown(&client, ns).await;
}

/// A CRR as an attacker writes it: the labels the agent selects on preset (so no defaulting
/// happens), naming `victim`'s uid and node, with a preStop hook of its own that would leave a
/// file in the victim's `/shared` volume, forced and failure-tolerant.
fn forged_crr(
    ns: &str,
    name: &str,
    pod_name: &str,
    victim: &Pod,
    node: &str,
    mark: &str,
) -> DynamicObject {
    let app = victim
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "app"))
        .and_then(|c| c.container_id.clone())
        .unwrap();
    serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": {"name": name, "namespace": ns, "labels": {
            "crr.apps.kruise.io/pod-uid": victim.metadata.uid,
            "crr.apps.kruise.io/node-name": node,
            "crr.apps.kruise.io/active": "true",
        }},
        "spec": {
            "podName": pod_name,
            "containers": [{"name": "app",
                "preStop": {"exec": {"command": ["sh", "-c", format!("touch /shared/{mark}")]}},
                "statusContext": {"containerID": app, "restartCount": 0}}],
            "strategy": {"forceRecreate": true, "failurePolicy": "Ignore"},
        },
    }))
    .unwrap()
}

/// The CRR trust model. Admission refuses both forgeries (the webhook finds no Pod of that name
/// in the attacker's namespace, and a CRR may not bring a preStop of its own). Then, with the
/// webhook configuration taken away (a cluster installed without it), only the agent's and the
/// controller's own checks stand between them and the victim: the agent acts only on the pod a
/// CRR names in its own namespace (as the kubelet labelled it), and runs only the Pod spec's own
/// preStop hook, never one the CRR carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_crrs_run_nothing() {
    // Exclusive: other tests create CRRs, which must pass the webhook.
    let _exclusive = DISRUPTION.write().await;
    let (ns, attacker) = ("rc-forged-victim", "rc-forged");
    let (cluster, client) = setup(ns).await;
    setup(attacker).await;
    let mut app = polite_container(cluster, "app", None);
    app["volumeMounts"] = json!([{"name": "shared", "mountPath": "/shared"}]);
    let spec = json!({"containers": [app], "volumes": [{"name": "shared", "emptyDir": {}}]});
    create_pod(&client, ns, "victim", spec).await;
    let victim = until_ready(&client, ns, "victim").await;
    let uid = victim.metadata.uid.clone().unwrap();
    let shared = cluster.dir.join(format!(
        "kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/shared"
    ));
    assert!(
        shared.is_dir(),
        "{} is not the victim's volume",
        shared.display()
    );

    let crrs = kruise_api(&client, Some(attacker), "ContainerRecreateRequest");
    let steal = forged_crr(
        attacker,
        "steal",
        "victim",
        &victim,
        &cluster.node,
        "stolen",
    );
    let victims = kruise_api(&client, Some(ns), "ContainerRecreateRequest");
    let hook = forged_crr(ns, "hook", "victim", &victim, &cluster.node, "hooked");
    // Admission: both refused, with the reason.
    let m = refusal(crrs.create(&PostParams::default(), &steal).await);
    assert!(m.contains("no found Pod named victim"), "{m}");
    let m = refusal(victims.create(&PostParams::default(), &hook).await);
    assert!(
        m.contains("can not set preStop, ports or statusContext"),
        "{m}"
    );

    // Without the webhook.
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let saved = configs.get(WEBHOOK_CONFIGURATION).await.unwrap();
    configs
        .delete(WEBHOOK_CONFIGURATION, &DeleteParams::default())
        .await
        .unwrap();
    let restore = || async {
        let mut again = saved.clone();
        again.metadata.resource_version = None;
        again.metadata.uid = None;
        again.metadata.creation_timestamp = None;
        again.metadata.managed_fields = None;
        configs
            .create(&PostParams::default(), &again)
            .await
            .unwrap();
    };

    // From another namespace, naming the victim's uid: refused, nothing runs. (The API server
    // drops a deleted webhook configuration a moment later: until then the webhook still answers.)
    wait::until("the CRR admitted without the webhook", 30, || {
        let (crrs, steal) = (crrs.clone(), steal.clone());
        async move {
            match crrs.create(&PostParams::default(), &steal).await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(s)) if s.message.contains("admission webhook") => None,
                Err(e) => panic!("creating the forged CRR: {e}"),
            }
        }
    })
    .await;
    let done = crr_end(&client, attacker, "steal").await;
    let message = done.data["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("refusing to act") || message == "pod has gone",
        "{:?}",
        done.data["status"]
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let now = pods.get("victim").await.unwrap();
    assert_eq!(
        restart_count(&now, "app"),
        Some(0),
        "the victim was stopped"
    );

    // In the victim's namespace, for the victim itself: the container is recreated (that is what
    // a CRR is for), but with the Pod's own preStop (none), not the CRR's.
    victims.create(&PostParams::default(), &hook).await.unwrap();
    restore().await;
    let done = crr_end(&client, ns, "hook").await;
    assert_eq!(done.data["status"]["phase"], "Completed", "{:?}", done.data);
    let pod = restarted_and_ready(&client, ns, "victim", &["app"]).await;
    assert_eq!(restart_count(&pod, "app"), Some(1));
    for mark in ["stolen", "hooked"] {
        assert!(
            !shared.join(mark).exists(),
            "a CRR's own preStop ran in the victim ({mark})"
        );
    }
    teardown(&client, attacker).await;
    teardown(&client, ns).await;
}

/// A Job whose pod is `pod_spec` (restartPolicy Never unless set), backoffLimit 0.
fn job_of(name: &str, mut pod_spec: Value) -> Job {
    if pod_spec.get("restartPolicy").is_none() {
        pod_spec["restartPolicy"] = json!("Never");
    }
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_variants_on_real_jobs() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-sidecar-variants";
    let (cluster, client) = setup(ns).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let busybox = cluster.image("busybox:1");
    // Only the `_WITH_IMAGE` env on a normal node: a sidecar there too (upstream v1.4's isSidecar
    // checks both envs); the agent stops it.
    let with_image = sidecar_job(
        cluster,
        "with-image",
        "Never",
        "sleep 2",
        &[(
            "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE",
            &cluster.image("busybox:1"),
        )],
    );
    // A Kubernetes native sidecar (init container, restartPolicy Always) carrying the env: the
    // kubelet stops it, nodeward leaves it alone.
    let native = job_of(
        "native",
        json!({
            "initContainers": [{"name": "proxy", "image": busybox, "restartPolicy": "Always",
                "command": ["sh", "-c", POLITE], "env": [{"name": SIDECAR_ENV, "value": "true"}]}],
            "containers": [{"name": "main", "image": busybox, "command": ["sh", "-c", "sleep 2"]}],
        }),
    );
    // A sidecar that ignores SIGTERM (killed after its 2 s grace: exit 137), with the
    // ignore-exit-code env: the agent writes the verdict Succeeded from the main containers.
    let ignore = job_of(
        "ignore-exit-code",
        json!({
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {"name": "main", "image": busybox, "command": ["sh", "-c", "sleep 2"]},
                {"name": "proxy", "image": busybox,
                 "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
                 "env": [{"name": SIDECAR_ENV, "value": "true"},
                         {"name": "KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE", "value": "true"}]},
            ],
        }),
    );
    for job in [&with_image, &native, &ignore] {
        jobs.create(&PostParams::default(), job).await.unwrap();
    }

    assert_eq!(job_outcome(&jobs, "with-image").await, "Complete");
    let pod = job_pod(&client, ns, "with-image").await;
    assert_eq!(terminated_exit_code(&pod, "proxy"), Some(0));
    assert!(condition(&pod, "SidecarTerminated"), "{:?}", pod.status);

    assert_eq!(job_outcome(&jobs, "native").await, "Complete");
    let pod = job_pod(&client, ns, "native").await;
    assert!(!condition(&pod, "SidecarTerminated"), "{:?}", pod.status);
    let uid = pod.metadata.uid.as_deref().unwrap();
    assert!(
        events_for(&client, ns, uid, "SidecarTerminated")
            .await
            .is_empty()
    );

    // The pod's phase as the real kubelet and apiserver leave it: the agent's verdict stays (a
    // terminal phase never changes), so the Job completes although the sidecar exited 137.
    assert_eq!(job_outcome(&jobs, "ignore-exit-code").await, "Complete");
    let pod = job_pod(&client, ns, "ignore-exit-code").await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    assert_eq!(terminated_exit_code(&pod, "proxy"), Some(137));
    teardown(&client, ns).await;
}

fn kruise_api(client: &Client, ns: Option<&str>, kind: &str) -> Api<DynamicObject> {
    support::k8s::kruise_api(client, ns, kind, "v1alpha1")
}

/// Whether the cluster's containerd has `image`.
async fn image_on_node(cluster: &RealCluster, image: &str) -> bool {
    let socket = cluster.runtime_dir.join("containerd/containerd.sock");
    let mut images = ImageServiceClient::new(nodeward::cri::channel(&socket));
    let req = ImageStatusRequest {
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        verbose: false,
    };
    images
        .image_status(req)
        .await
        .unwrap()
        .into_inner()
        .image
        .is_some()
}

/// Remove `image` from the cluster's containerd (left by an earlier run).
async fn remove_image(cluster: &RealCluster, image: &str) {
    let socket = cluster.runtime_dir.join("containerd/containerd.sock");
    let mut images = ImageServiceClient::new(nodeward::cri::channel(&socket));
    let req = RemoveImageRequest {
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
    };
    images.remove_image(req).await.unwrap();
    assert!(!image_on_node(cluster, image).await);
}

/// An image no pod uses, pushed to the registry under `name` and absent from the node.
async fn fresh_image(cluster: &RealCluster, name: &str) -> String {
    let image = cluster.image(name);
    let (src, dst) = (
        format!("docker://{}", cluster.image("busybox:1")),
        format!("docker://{image}"),
    );
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .args([&src, &dst])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    remove_image(cluster, &image).await;
    image
}

/// Wait for the node's NodeImage: the controller makes it once the node has been Ready for 30 s
/// (as upstream); a job created before targets no node and completes at once with `desired: 0`.
async fn node_image_ready(cluster: &RealCluster, client: &Client) {
    let node_images = kruise_api(client, None, "NodeImage");
    wait::until("the node's NodeImage", 90, || {
        let node_images = node_images.clone();
        async move {
            node_images
                .get_opt(&cluster.node)
                .await
                .unwrap()
                .map(|_| ())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_job_pulls_on_the_node() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-imagepull";
    let (cluster, client) = setup(ns).await;
    let image = fresh_image(cluster, "rc-pulled:v1").await;

    // A real pull Secret (the registry takes no credentials; the controller copies the Secret
    // into the agent's namespace, the agent reads it there).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let auth = json!({"auths": {cluster.registry.as_str(): {"username": "u", "password": "p", "auth": "dTpw"}}});
    let secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": auth.to_string()},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    node_image_ready(cluster, &client).await;
    let node_images = kruise_api(&client, None, "NodeImage");
    let jobs = kruise_api(&client, Some(ns), "ImagePullJob");
    let job: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ImagePullJob",
        "metadata": {"name": "warm", "namespace": ns},
        "spec": {
            "image": image,
            "pullSecrets": ["regcred"],
            "parallelism": 1,
            "pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 1},
            "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 120, "ttlSecondsAfterFinished": 5},
            "sandboxConfig": {"labels": {"io.kubernetes.pod.namespace": ns}},
        },
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let done = wait::until(
        "the ImagePullJob to complete",
        CLUSTER_TIMEOUT.as_secs(),
        || {
            let jobs = jobs.clone();
            async move {
                let job = jobs.get_opt("warm").await.unwrap()?;
                job.data["status"]["completionTime"]
                    .is_string()
                    .then_some(job)
            }
        },
    )
    .await;
    let status = &done.data["status"];
    assert_eq!(status["succeeded"], 1, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    assert!(
        image_on_node(cluster, &image).await,
        "{image} not on the node"
    );

    // The node's NodeImage carried the tag with the copied Secret's reference.
    let node_image = node_images.get(&cluster.node).await.unwrap();
    let (name, _) = image.rsplit_once(':').unwrap();
    let spec = &node_image.data["spec"]["images"][name];
    assert_eq!(spec["tags"][0]["tag"], "v1", "{spec}");
    assert_eq!(
        spec["sandboxConfig"]["labels"]["io.kubernetes.pod.namespace"], ns,
        "{spec}"
    );
    let secret_ref = &spec["pullSecrets"][0];
    assert_eq!(
        secret_ref["namespace"], "kruise-daemon-config",
        "{secret_ref}"
    );

    // ttlSecondsAfterFinished: the job goes.
    wait::until("the ImagePullJob deleted after its TTL", 60, || {
        let jobs = jobs.clone();
        async move { jobs.get_opt("warm").await.unwrap().is_none().then_some(()) }
    })
    .await;
    teardown(&client, ns).await;
}

/// Upstream's e2e "create an always job to pull two images on all real nodes": the webhook's
/// defaults (no imagePullPolicy) and refusals, one ImagePullJob per image controlled by the
/// list, the list's status from theirs, both images on the node, the list deleted after its TTL
/// and its jobs with it (the real garbage collector).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_list_pull_job_pulls_each_image_on_the_node() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-imagelist";
    let (cluster, client) = setup(ns).await;
    let images = [
        fresh_image(cluster, "rc-listed-a:v1").await,
        fresh_image(cluster, "rc-listed-b:v1").await,
    ];
    node_image_ready(cluster, &client).await;
    let lists = kruise_api(&client, Some(ns), "ImageListPullJob");
    let list = |name: &str, images: Value, completion: Value| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImageListPullJob",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"images": images, "parallelism": 4,
                     "pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 1},
                     "completionPolicy": completion}}))
        .unwrap()
    };
    let dup = json!([images[0].clone(), images[0].clone()]);
    let m = refusal(
        lists
            .create(&PostParams::default(), &list("dup", dup, json!({})))
            .await,
    );
    assert!(m.contains("images cannot have duplicate values"), "{m}");
    let completion = json!({"activeDeadlineSeconds": 120, "ttlSecondsAfterFinished": 10});
    let created = lists
        .create(
            &PostParams::default(),
            &list("warm", json!(images), completion),
        )
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["completionPolicy"]["type"], "Always", "{spec}");
    assert!(spec.get("imagePullPolicy").is_none(), "{spec}");
    let uid = created.metadata.uid.clone().unwrap();

    let jobs = kruise_api(&client, Some(ns), "ImagePullJob");
    let children = wait::until("an ImagePullJob per image", 30, || {
        let jobs = jobs.clone();
        async move {
            let all = jobs.list(&ListParams::default()).await.unwrap().items;
            (all.len() == 2).then_some(all)
        }
    })
    .await;
    let mut pulled: Vec<String> = Vec::new();
    for job in &children {
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ImageListPullJob", uid.as_str())
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(job.data["spec"]["parallelism"], 4);
        assert_eq!(job.data["spec"]["imagePullPolicy"], "IfNotPresent");
        pulled.push(job.data["spec"]["image"].as_str().unwrap().to_string());
    }
    pulled.sort();
    assert_eq!(pulled, images.to_vec());

    let done = wait::until("the list to complete", CLUSTER_TIMEOUT.as_secs(), || {
        let lists = lists.clone();
        async move {
            let list = lists.get_opt("warm").await.unwrap()?;
            list.data["status"]["completionTime"]
                .is_string()
                .then_some(list)
        }
    })
    .await;
    let status = &done.data["status"];
    assert_eq!(
        (
            &status["desired"],
            &status["completed"],
            &status["succeeded"]
        ),
        (&json!(2), &json!(2), &json!(2)),
        "{status}"
    );
    for image in &images {
        assert!(
            image_on_node(cluster, image).await,
            "{image} not on the node"
        );
    }
    let events = events_for(&client, ns, &uid, "Successful create ImagePullJob").await;
    let messages: Vec<_> = events.iter().map(|e| e.message.as_deref()).collect();
    assert_eq!(messages, vec![Some("Create 2 ImagePullJob")]);

    wait::until("the list and its jobs gone after its TTL", 90, || {
        let (lists, jobs) = (lists.clone(), jobs.clone());
        async move {
            let list = lists.get_opt("warm").await.unwrap();
            let left = jobs.list(&ListParams::default()).await.unwrap().items;
            (list.is_none() && left.is_empty()).then_some(())
        }
    })
    .await;
    teardown(&client, ns).await;
}

/// Set which version of the image kinds the API server stores (the other one stays served).
async fn store_image_kinds_as(client: &Client, version: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for plural in ["imagepulljobs", "imagelistpulljobs", "nodeimages"] {
        let name = format!("{plural}.apps.kruise.io");
        let mut crd = crds.get(&name).await.unwrap();
        for v in &mut crd.spec.versions {
            v.storage = v.name == version;
        }
        crds.replace(&name, &PostParams::default(), &crd)
            .await
            .unwrap();
    }
}

/// OpenKruise v1.9's versions of the image kinds on the real API server: the shipped CRDs store
/// v1beta1; what is created as v1beta1 reads back as v1alpha1 (what nodeward's clients speak) and
/// the other way round, NodeImages too; and with either storage version an ImageListPullJob
/// created as v1beta1 is carried out to the image on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_kinds_read_back_in_either_version() {
    // Alone: it changes the storage version under every image test.
    let _alone = DISRUPTION.write().await;
    let ns = "rc-versions";
    let (cluster, client) = setup(ns).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("imagepulljobs.apps.kruise.io").await.unwrap();
    let stored: Vec<_> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(stored, ["v1beta1"]);
    node_image_ready(cluster, &client).await;

    let object = |version: &str, kind: &str, name: &str, spec: Value| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": format!("apps.kruise.io/{version}"), "kind": kind,
            "metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
    };
    let idle =
        json!({"image": cluster.image("busybox:1"), "parallelism": 0, "completionPolicy": {}});
    for (created_as, read_as) in [("v1alpha1", "v1beta1"), ("v1beta1", "v1alpha1")] {
        let name = format!("as-{created_as}");
        let created = support::k8s::kruise_api(&client, Some(ns), "ImagePullJob", created_as)
            .create(
                &PostParams::default(),
                &object(created_as, "ImagePullJob", &name, idle.clone()),
            )
            .await
            .unwrap();
        let read = support::k8s::kruise_api(&client, Some(ns), "ImagePullJob", read_as)
            .get(&name)
            .await
            .unwrap();
        let api_version = read.types.as_ref().map(|t| t.api_version.as_str());
        assert_eq!(
            api_version,
            Some(format!("apps.kruise.io/{read_as}").as_str())
        );
        assert_eq!(read.data["spec"], created.data["spec"], "{name}");
    }
    let node_images = |version| support::k8s::kruise_api(&client, None, "NodeImage", version);
    let alpha = node_images("v1alpha1").get(&cluster.node).await.unwrap();
    let beta = node_images("v1beta1").get(&cluster.node).await.unwrap();
    assert_eq!(alpha.data["spec"], beta.data["spec"]);

    for storage in ["v1alpha1", "v1beta1"] {
        store_image_kinds_as(&client, storage).await;
        let image = fresh_image(cluster, &format!("rc-stored-{storage}:v1")).await;
        let name = format!("stored-{storage}");
        let spec = json!({"images": [image], "pullPolicy": {"timeoutSeconds": 60, "backoffLimit": 1},
                          "completionPolicy": {"activeDeadlineSeconds": 120}});
        let lists = support::k8s::kruise_api(&client, Some(ns), "ImageListPullJob", "v1beta1");
        lists
            .create(
                &PostParams::default(),
                &object("v1beta1", "ImageListPullJob", &name, spec),
            )
            .await
            .unwrap();
        let done = wait::until(
            &format!("the list stored as {storage} to complete"),
            CLUSTER_TIMEOUT.as_secs(),
            || {
                let (lists, name) = (lists.clone(), name.clone());
                async move {
                    let list = lists.get_opt(&name).await.unwrap()?;
                    list.data["status"]["completionTime"]
                        .is_string()
                        .then_some(list)
                }
            },
        )
        .await;
        assert_eq!(
            done.data["status"]["succeeded"], 1,
            "{storage}: {}",
            done.data["status"]
        );
        assert!(
            image_on_node(cluster, &image).await,
            "{storage}: {image} not on the node"
        );
    }
    teardown(&client, ns).await;
}

/// `helm --kubeconfig … <args>` against the cluster; its stdout, or a panic with its stderr.
fn helm_on(cluster: &RealCluster, args: &[&str]) -> String {
    let kubeconfig = cluster.kubeconfig.to_str().unwrap();
    let (ok, out, err) = support::helm::run(&[&["--kubeconfig", kubeconfig], args].concat(), &[]);
    assert!(ok, "helm {args:?}: {out}{err}");
    out
}

/// `helm install nodeward` of the chart with `sets` and `extra` flags, waiting for its rollout.
fn helm_install(cluster: &RealCluster, sets: &str, extra: &[&str]) {
    let chart = support::helm::CHART;
    let args = [
        &["install", "nodeward", chart, "-n", NAMESPACE, "--set", sets],
        extra,
    ];
    helm_on(
        cluster,
        &[&args.concat()[..], &["--wait", "--timeout", "3m"]].concat(),
    );
}

/// The chart's values for this cluster: nodeward's image and the cluster's host paths.
fn chart_sets(cluster: &RealCluster, image: &str) -> String {
    let dir = cluster.dir.display();
    format!(
        "image.reference={image},agent.runtimeDir={dir}/run/containerd,agent.stateDir={dir}/nodeward/state,agent.runDir={dir}/nodeward/run"
    )
}

/// Remove the kubectl-deployed nodeward (all but its CRDs and namespaces): the objects the chart
/// makes with `sets`, which have the same names. Their list, in a file.
fn remove_nodeward(cluster: &RealCluster, sets: &str) -> String {
    let rendered = helm_on(
        cluster,
        &[
            "template",
            "nodeward",
            support::helm::CHART,
            "-n",
            NAMESPACE,
            "--set",
            sets,
        ],
    );
    let objects = cluster.dir.join("helm-objects.yaml");
    std::fs::write(&objects, &rendered).unwrap();
    let objects = objects.to_str().unwrap().to_owned();
    cluster
        .kubectl(&["delete", "--ignore-not-found", "--wait", "-f", &objects])
        .unwrap();
    objects
}

/// The Helm chart on the real cluster, as an OpenKruise user installs: the kubectl-deployed
/// nodeward removed (its CRDs and namespace kept), `helm install` → the agent and the controller
/// ready and a Job's sidecar stopped; `helm upgrade` with a feature gate → both roll with it;
/// `helm uninstall` → every object gone but the CRDs (kept, with the objects stored in them).
/// nodeward is deployed again from packaging/kubernetes for the other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_uninstall() {
    let _alone = DISRUPTION.write().await;
    let ns = "rc-helm";
    let (cluster, client) = setup(ns).await;
    let sets = chart_sets(cluster, &cluster.deploy_nodeward());
    let objects = remove_nodeward(cluster, &sets);
    let objects = objects.as_str();
    let chart = support::helm::CHART;

    helm_install(cluster, &sets, &[]);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = sidecar_job(
        cluster,
        "under-helm",
        "Never",
        "sleep 2; exit 0",
        &[(SIDECAR_ENV, "true")],
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(job_outcome(&jobs, "under-helm").await, "Complete");
    let pod = job_pod(&client, ns, "under-helm").await;
    assert_eq!(terminated_exit_code(&pod, "proxy"), Some(0));

    let gates = "--feature-gates=PodProbeMarkerGate=false";
    helm_on(
        cluster,
        &[
            "upgrade",
            "nodeward",
            chart,
            "-n",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "featureGates.PodProbeMarkerGate=false",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    let daemonsets: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::namespaced(client.clone(), NAMESPACE);
    let ds = daemonsets.get("nodeward-agent").await.unwrap();
    let args = ds.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.iter().any(|a| a == gates), "{args:?}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let controller = ListParams::default().labels("app.kubernetes.io/name=nodeward-controller");
    for p in pods.list(&controller).await.unwrap().items {
        let args = p.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.iter().any(|a| a == gates), "{args:?}");
    }
    let history = helm_on(
        cluster,
        &["history", "nodeward", "-n", NAMESPACE, "-o", "json"],
    );
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");

    helm_on(
        cluster,
        &["uninstall", "nodeward", "-n", NAMESPACE, "--wait"],
    );
    let left = cluster
        .kubectl(&["get", "--ignore-not-found", "-o", "name", "-f", objects])
        .unwrap();
    assert_eq!(left.trim(), "", "left after uninstall");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        crds.get_opt("nodeimages.apps.kruise.io")
            .await
            .unwrap()
            .is_some()
    );

    cluster.redeploy_nodeward();
    teardown(&client, ns).await;
}

/// The README's "Upgrading from kruise-daemon", tried on the real cluster: OpenKruise (its
/// kustomize manifests; kruise-manager and kruise-daemon built apart from its Go module, given by
/// NODEWARD_PEER_KRUISE_MANAGER, NODEWARD_PEER_KRUISE_DAEMON and the source tree by
/// NODEWARD_PEER_KRUISE_SOURCE) terminates a Job's sidecar; then kruise-daemon leaves the node by
/// node affinity (step 2), nodeward comes with the chart on the labelled node beside
/// kruise-manager (step 3), and nodeward's agent stops a Job's sidecar and carries out a CRR
/// (step 4). Run by hand: `cargo test --test real_cluster -- --ignored migrate_from_kruise_daemon`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OpenKruise built apart (NODEWARD_PEER_KRUISE_*)"]
async fn migrate_from_kruise_daemon() {
    let kruise = support::kruise::Kruise::from_env().unwrap();
    let _alone = DISRUPTION.write().await;
    let ns = "rc-migrate";
    let (cluster, client) = setup(ns).await;
    let sets = chart_sets(cluster, &cluster.deploy_nodeward());
    remove_nodeward(cluster, &sets);
    kruise.install(cluster).unwrap();

    // Under OpenKruise: kruise-manager's CRR for the finished Job pod, kruise-daemon's stop.
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let marker = [(SIDECAR_ENV, "true")];
    let job = sidecar_job(cluster, "under-kruise", "Never", "sleep 2; exit 0", &marker);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(job_outcome(&jobs, "under-kruise").await, "Complete");

    // Step 2: kruise-daemon off the nodes labelled for nodeward; step 3: nodeward on them.
    let label = "nodeward.io/agent";
    cluster
        .kubectl(&[
            "label",
            "node",
            &cluster.node,
            &format!("{label}=true"),
            "--overwrite",
        ])
        .unwrap();
    let away = json!([{"op": "add", "path": "/spec/template/spec/affinity", "value": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": label, "operator": "NotIn", "values": ["true"]}]}]}}}}]);
    cluster
        .kubectl(&[
            "-n",
            "kruise-system",
            "patch",
            "daemonset",
            "kruise-daemon",
            "--type=json",
            "-p",
            &away.to_string(),
        ])
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kruise-system");
    wait::until("kruise-daemon gone from the node", 120, || {
        let pods = pods.clone();
        async move {
            let lp = ListParams::default().labels("control-plane=daemon");
            pods.list(&lp).await.unwrap().items.is_empty().then_some(())
        }
    })
    .await;
    let on_labelled =
        format!("{sets},agent.nodeAffinity[0].key={label},agent.nodeAffinity[0].operator=In");
    // nodeward's CRDs replace kruise's (README step 3), which kubectl applied.
    let value = "agent.nodeAffinity[0].values[0]=true";
    helm_install(
        cluster,
        &on_labelled,
        &["--set-string", value, "--force-conflicts"],
    );

    // Step 4: nodeward's agent acts, kruise-manager still running.
    let job = sidecar_job(
        cluster,
        "under-nodeward",
        "Never",
        "sleep 2; exit 0",
        &marker,
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(job_outcome(&jobs, "under-nodeward").await, "Complete");
    let pod = job_pod(&client, ns, "under-nodeward").await;
    let uid = pod.metadata.uid.as_deref().unwrap();
    let events = events_for(&client, ns, uid, "SidecarTerminated").await;
    assert!(
        events
            .iter()
            .any(|e| e.reporting_component.as_deref() == Some("nodeward-agent")),
        "{events:?}"
    );
    ready_pod(cluster, &client, ns, "app", &["app"]).await;
    let crr = recreate(&client, ns, "after-migration", "app", "app").await;
    assert_eq!(crr.data["status"]["phase"], "Completed", "{:?}", crr.data);
    let app = until_ready(&client, ns, "app").await;
    assert_eq!(restart_count(&app, "app"), Some(1));

    // Back to the cluster the other tests expect: OpenKruise gone (its CRDs stay, nodeward's
    // applied over them), nodeward's chart, the label.
    kruise.uninstall(cluster).unwrap();
    helm_on(
        cluster,
        &["uninstall", "nodeward", "-n", NAMESPACE, "--wait"],
    );
    cluster
        .kubectl(&["label", "node", &cluster.node, &format!("{label}-")])
        .unwrap();
    cluster.redeploy_nodeward();
    teardown(&client, ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_leader_fails_over_on_real_leases() {
    // Alone: the other tests need a leading controller.
    let _alone = DISRUPTION.write().await;
    let ns = "rc-leader";
    let (cluster, client) = setup(ns).await;
    let leader = wait::until("a controller leading", 60, || lease_holder(&client)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let killed = std::time::Instant::now();
    pods.delete(&leader, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let successor = wait::until("the other replica leading", 60, || async {
        lease_holder(&client).await.filter(|h| *h != leader)
    })
    .await;
    let took = killed.elapsed();
    // The Deployment replaces the killed replica before anything else runs.
    rollout(cluster, "deployment/nodeward-controller");
    // The lease is 15 s: a replica takes over once it expires (a killed leader does not hand it
    // over): the one that waited, or the Deployment's replacement if it asks first.
    assert!(took < Duration::from_secs(25), "took over after {took:?}");
    assert!(
        pods.get_opt(&successor).await.unwrap().is_some(),
        "the new leader {successor} is not a controller pod"
    );
    // The new leader reconciles: a CRR is defaulted and completed.
    ready_pod(cluster, &client, ns, "web-0", &["app"]).await;
    let done = recreate(&client, ns, "after-failover", "web-0", "app").await;
    assert_eq!(done.data["status"]["phase"], "Completed");
    teardown(&client, ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_swaps_the_sidecar_image_on_a_virtual_node() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-virtual";
    let (cluster, client) = setup(ns).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = "rc-virtual-node";
    nodes.delete(node, &DeleteParams::default()).await.ok();
    let object = serde_json::from_value(json!({
        "metadata": {"name": node, "labels": {"type": "virtual-kubelet"}},
        "spec": {"taints": [{"key": "virtual-kubelet.io/provider", "value": "test", "effect": "NoSchedule"}]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &object).await.unwrap();
    let quick = cluster.image("quick-exit:1");
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = job_of(
        "on-vk",
        json!({
            "nodeName": node,
            "containers": [
                {"name": "main", "image": cluster.image("busybox:1")},
                {"name": "proxy", "image": cluster.image("busybox:1"),
                 "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE", "value": quick}]},
            ],
        }),
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pod = wait::until("the Job's pod", 60, || {
        let client = client.clone();
        async move {
            let pods: Api<Pod> = Api::namespaced(client, ns);
            let lp = ListParams::default().labels("job-name=on-vk");
            pods.list(&lp).await.unwrap().items.into_iter().next()
        }
    })
    .await;
    let name = pod.metadata.name.clone().unwrap();
    // What the virtual kubelet reports: main exited 0, the sidecar runs.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let busybox = cluster.image("busybox:1");
    let status = json!({"status": {"phase": "Running", "containerStatuses": [
        {"name": "main", "image": busybox, "imageID": "", "ready": false, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "proxy", "image": busybox, "imageID": "", "ready": true, "restartCount": 0,
         "state": {"running": {}}},
    ]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    // The real apiserver accepts the controller's image update of the running pod.
    wait::until("the sidecar image swapped", 60, || {
        let pods = pods.clone();
        let (name, quick) = (name.clone(), quick.clone());
        async move {
            let pod = pods.get(&name).await.unwrap();
            (pod.spec?.containers[1].image.as_deref() == Some(quick.as_str())).then_some(())
        }
    })
    .await;
    teardown(&client, ns).await;
    nodes.delete(node, &DeleteParams::default()).await.ok();
}

/// A Never Job `name` whose main runs `script` beside an env-marked sidecar; its pod once Ready.
async fn ready_sidecar_job(
    cluster: &RealCluster,
    client: &Client,
    ns: &str,
    name: &str,
    script: &str,
) -> Pod {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = sidecar_job(cluster, name, "Never", script, &[(SIDECAR_ENV, "true")]);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("job-name={name}");
    wait::until(
        &format!("job {name}'s pod ready"),
        CLUSTER_TIMEOUT.as_secs(),
        || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move {
                let lp = ListParams::default().labels(&selector);
                pods.list(&lp)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .find(is_ready)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_report_arrives_once_after_an_api_and_etcd_outage() {
    let _alone = DISRUPTION.write().await;
    let ns = "rc-outage";
    let (cluster, client) = setup(ns).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = ready_sidecar_job(cluster, &client, ns, "outage", "sleep 12").await;
    let uid = pod.metadata.uid.clone().unwrap();
    let agent = cluster.nodeward_pods_of(&client, "nodeward-agent").await[0].name_any();
    let leader = lease_holder(&client).await.unwrap();
    // A write the agent's watches do not see: the resource version they resume from after the
    // outage is older than what the restarted apiserver's watch cache starts at (410 Gone).
    let since = k8s_openapi::jiff::Timestamp::now().to_string();
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), ns);
    let bump = serde_json::from_value(json!({"metadata": {"name": "bump"}})).unwrap();
    configmaps
        .create(&PostParams::default(), &bump)
        .await
        .unwrap();
    // The control plane goes away while main still runs: the agent stops the sidecar on its own
    // and keeps the report (condition, Event) until the API is back.
    cluster.script(&["stop", "kube-apiserver"]).unwrap();
    cluster.script(&["stop", "etcd"]).unwrap();
    wait::until("the sidecar stopped during the outage", 60, || {
        let uid = uid.clone();
        async move {
            let statuses = cluster.runtime_statuses(&uid).await.unwrap();
            let exited = ContainerState::ContainerExited as i32;
            (statuses.get("proxy").map(|s| s.state) == Some(exited)).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.script(&["restart", "etcd"]).unwrap();
    cluster.script(&["restart", "kube-apiserver"]).unwrap();

    assert_eq!(job_outcome(&jobs, "outage").await, "Complete");
    let pod = wait::until("the SidecarTerminated condition", 60, || {
        let pods = pods.clone();
        let name = pod.metadata.name.clone().unwrap();
        async move {
            pods.get(&name)
                .await
                .ok()
                .filter(|p| condition(p, "SidecarTerminated"))
        }
    })
    .await;
    assert_eq!(terminated_exit_code(&pod, "proxy"), Some(0));
    wait::until("the SidecarTerminated Event", 60, || {
        let client = client.clone();
        let uid = uid.clone();
        async move {
            (!events_for(&client, ns, &uid, "SidecarTerminated")
                .await
                .is_empty())
            .then_some(())
        }
    })
    .await;
    // Exactly once, also a while later (a re-delivery would add a second Event).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        events_for(&client, ns, &uid, "SidecarTerminated")
            .await
            .len(),
        1
    );

    // Every watch got 410 Gone and resumed from a new list: the agent's (Pods, CRRs, its
    // NodeImage) and the leading controller's; a CRR made now runs through both to the end.
    let expired = |pod: &str, watch: &str| {
        let logs = cluster
            .kubectl(&["-n", NAMESPACE, "logs", pod, "--since-time", &since])
            .unwrap();
        let gone = logs.lines().any(|l| {
            l.contains(watch) && l.contains("too old resource version") && l.contains("Expired")
        });
        assert!(gone, "{pod}: no 410 Gone for its {watch}:\n{logs}");
    };
    for watch in ["pod watch", "CRR watch", "NodeImage watch"] {
        expired(&agent, watch);
    }
    expired(&leader, "node watch");
    ready_pod(cluster, &client, ns, "web-0", &["app"]).await;
    let done = recreate(&client, ns, "after-410", "web-0", "app").await;
    assert_eq!(done.data["status"]["phase"], "Completed", "{:?}", done.data);

    // The controllers lost their Lease renewals; the workloads are whole again before the next
    // test runs.
    rollout(cluster, "daemonset/nodeward-agent");
    rollout(cluster, "deployment/nodeward-controller");
    teardown(&client, ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_stopped_across_containerd_and_kubelet_restarts() {
    let _alone = DISRUPTION.write().await;
    let ns = "rc-runtime-restart";
    let (cluster, client) = setup(ns).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    ready_sidecar_job(cluster, &client, ns, "restarts", "sleep 20").await;
    // The runtime and the kubelet go away and come back while main still runs (the containers
    // live on in their shims); the agent reconnects and still stops the sidecar on main's exit.
    cluster.script(&["stop", "kubelet"]).unwrap();
    cluster.script(&["stop", "containerd"]).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.script(&["restart", "containerd"]).unwrap();
    cluster.script(&["restart", "kubelet"]).unwrap();
    assert_eq!(job_outcome(&jobs, "restarts").await, "Complete");
    let pod = job_pod(&client, ns, "restarts").await;
    assert_eq!(terminated_exit_code(&pod, "proxy"), Some(0));
    assert!(condition(&pod, "SidecarTerminated"), "{:?}", pod.status);
    let uid = pod.metadata.uid.as_deref().unwrap();
    assert_eq!(
        events_for(&client, ns, uid, "SidecarTerminated")
            .await
            .len(),
        1
    );
    rollout(cluster, "daemonset/nodeward-agent");
    rollout(cluster, "deployment/nodeward-controller");
    teardown(&client, ns).await;
}

/// The state and message of probe `name` of pod `uid` in the NodePodProbe's status.
fn probe_state(npp: &DynamicObject, uid: &str, name: &str) -> Option<(String, String)> {
    let pods = npp.data["status"]["podProbeStatuses"].as_array()?;
    let pod = pods.iter().find(|p| p["uid"] == uid)?;
    let state = pod["probeStates"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?;
    Some((
        state["state"].as_str()?.to_string(),
        state["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// A PodProbeMarker end to end, as OpenKruise's e2e drives it: the controller gives the node its
/// NodePodProbe and writes the spec (named ports as numbers, the pod's IP), the agent runs the
/// probes (exec through CRI, failing until the container creates its file, then succeeding;
/// tcpSocket and httpGet against the pod IP) and writes the results under the own-node policy, each change with its Event on the Pod; the
/// controller marks the pod (conditions, the policy's labels and annotations) and counts it in
/// the marker's status. A probe removed from the marker leaves the node's spec and status; a
/// marker deleted keeps its finalizer until no node runs its probes. The validating webhook
/// refuses what upstream's refuses (and a kubelet-owned condition), every reason at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_probe_markers_probe_and_mark_pods() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-podprobe";
    let (cluster, client) = setup(ns).await;
    let script = "mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && \
                  sleep 30 && echo ready > /tmp/healthy && exec sleep 100000";
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "probed", "labels": {"app": "probed"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "app", "image": cluster.image("busybox:1"), "command": ["sh", "-c", script],
            "ports": [{"name": "http", "containerPort": 8080}]}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = until_ready(&client, ns, "probed").await;
    let uid = pod.metadata.uid.clone().unwrap();
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    let cost = "controller.kubernetes.io/pod-deletion-cost";
    let probe = |name: &str, probe: Value| {
        json!({"name": name, "containerName": "app", "probe": probe,
               "podConditionType": format!("game.kruise.io/{name}")})
    };
    let mut exec = probe(
        "exec",
        json!({"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1}),
    );
    exec["markerPolicy"] = json!([
        {"state": "Succeeded", "labels": {"healthy": "yes"}, "annotations": {cost: "10"}},
        {"state": "Failed", "annotations": {cost: "-10"}}]);
    let all = vec![
        exec,
        probe(
            "tcp",
            json!({"tcpSocket": {"port": "http"}, "periodSeconds": 1}),
        ),
        probe(
            "http",
            json!({"httpGet": {"path": "/index.html", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 1}),
        ),
    ];
    let markers = kruise_api(&client, Some(ns), "PodProbeMarker");
    let marker = |probes: &[Value]| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "PodProbeMarker",
            "metadata": {"name": "ppm"},
            "spec": {"selector": {"matchLabels": {"app": "probed"}}, "probes": probes}}))
        .unwrap()
    };
    // The validating webhook refuses a probe aimed at another host (the agent would not run it
    // either) and a kubelet-owned condition, with every reason at once.
    let elsewhere = json!({"name": "elsewhere", "containerName": "app", "podConditionType": "Ready",
        "probe": {"tcpSocket": {"host": "127.0.0.1", "port": 10250}}});
    let m = refusal(
        markers
            .create(
                &PostParams::default(),
                &marker(&[all[0].clone(), elsewhere]),
            )
            .await,
    );
    assert!(m.contains("denied the request: [spec.probes[1].probe.tcpSocket.host: Invalid value: host field in probes is not allowed, spec.probes[1].podConditionType: Invalid value: Ready is the kubelet's or OpenKruise's own condition]"), "{m}");
    markers
        .create(&PostParams::default(), &marker(&all))
        .await
        .unwrap();

    let npps = kruise_api(&client, None, "NodePodProbe");
    let entry = wait::until("the pod in the node's NodePodProbe", 60, || async {
        let npp = npps.get(&cluster.node).await.ok()?;
        let pods = npp.data["spec"]["podProbes"].as_array()?.clone();
        pods.into_iter().find(|p| p["uid"] == uid.as_str())
    })
    .await;
    assert_eq!(entry["IP"], pod_ip.as_str());
    let names: Vec<&str> = entry["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["ppm#exec", "ppm#tcp", "ppm#http"]);
    assert_eq!(entry["probes"][1]["probe"]["tcpSocket"]["port"], 8080);

    let state = |name: &'static str| {
        let (npps, uid, node) = (npps.clone(), uid.clone(), cluster.node.clone());
        async move { probe_state(&npps.get(&node).await.ok()?, &uid, name) }
    };
    let marked = |condition: &'static str| {
        let pods = pods.clone();
        async move {
            let pod = pods.get("probed").await.ok()?;
            let c = pod
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == condition)?
                .clone();
            Some((pod, c))
        }
    };
    let (exec, message) = wait::until("the exec probe failing", 60, || async {
        state("ppm#exec").await.filter(|(s, _)| s == "Failed")
    })
    .await;
    assert_eq!(exec, "Failed");
    assert!(message.contains("/tmp/healthy"), "{message}");
    // (The agent's first state, Unknown, is a False condition too, without the Failed policy's
    // annotation.)
    let (failed, _) = wait::until("the pod marked failed", 60, || async {
        marked("game.kruise.io/exec").await.filter(|(pod, c)| {
            c.status == "False" && pod.annotations().get(cost).map(String::as_str) == Some("-10")
        })
    })
    .await;
    assert!(!failed.labels().contains_key("healthy"));
    wait::until("tcp and http succeeding, and marked", 60, || async {
        let tcp = state("ppm#tcp").await?;
        let http = state("ppm#http").await?;
        let (_, c) = marked("game.kruise.io/http").await?;
        (tcp.0 == "Succeeded"
            && http.0 == "Succeeded"
            && http.1.contains("ok")
            && c.status == "True")
            .then_some(())
    })
    .await;
    let (healthy, condition) = wait::until("the pod marked healthy", 90, || async {
        marked("game.kruise.io/exec")
            .await
            .filter(|(_, c)| c.status == "True")
    })
    .await;
    assert_eq!(condition.message.as_deref().map(str::trim), Some("ready"));
    assert_eq!(
        healthy.labels().get("healthy").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        healthy.annotations().get(cost).map(String::as_str),
        Some("10")
    );
    for reason in ["KruiseProbeFailed", "KruiseProbeSucceeded"] {
        assert!(
            !events_for(&client, ns, &uid, reason).await.is_empty(),
            "{reason}"
        );
    }
    let ppm = markers.get("ppm").await.unwrap();
    assert_eq!(
        ppm.metadata.finalizers.as_deref(),
        Some(&["kruise.io/node-pod-probe-cleanup".to_string()][..])
    );
    wait::until("the marker's status", 30, || async {
        let ppm = markers.get("ppm").await.ok()?;
        let generation = ppm.metadata.generation?;
        (ppm.data["status"]["observedGeneration"] == generation
            && ppm.data["status"]["matchedPods"] == 1)
            .then_some(())
    })
    .await;

    // The tcp probe leaves the marker: it leaves the node's spec, and its state the status.
    let fewer = json!({"spec": {"probes": [all[0], all[2]]}});
    markers
        .patch("ppm", &PatchParams::default(), &Patch::Merge(&fewer))
        .await
        .unwrap();
    wait::until("the tcp probe's state pruned", 30, || async {
        let npp = npps.get(&cluster.node).await.ok()?;
        (probe_state(&npp, &uid, "ppm#tcp").is_none()
            && probe_state(&npp, &uid, "ppm#http").is_some())
        .then_some(())
    })
    .await;

    // Deleted: gone once no node runs its probes.
    markers
        .delete("ppm", &DeleteParams::default())
        .await
        .unwrap();
    wait::until("the marker gone", 60, || async {
        markers.get_opt("ppm").await.ok()?.is_none().then_some(())
    })
    .await;
    let npp = npps.get(&cluster.node).await.unwrap();
    let left = npp.data["spec"]["podProbes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["namespace"] == ns)
        .count();
    assert_eq!(left, 0, "{:?}", npp.data["spec"]);
    teardown(&client, ns).await;
}

/// The ImagePullJob webhooks on the real kube-apiserver: what Create returns carries upstream's
/// defaults and the deletion-protection finalizer; what upstream's validating webhook refuses is
/// refused with its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_job_admission_as_upstream() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-ipj-admission";
    let (cluster, client) = setup(ns).await;
    let jobs = kruise_api(&client, Some(ns), "ImagePullJob");
    let job = |name: &str, extra: Value| {
        let mut spec = json!({"image": cluster.image("busybox:1"), "parallelism": 0,
                              "completionPolicy": {}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": name}, "spec": spec}))
        .unwrap()
    };
    let created = jobs
        .create(&PostParams::default(), &job("defaulted", json!({})))
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["completionPolicy"]["type"], "Always");
    assert_eq!(
        spec["pullPolicy"],
        json!({"timeoutSeconds": 600, "backoffLimit": 3})
    );
    assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        created.metadata.finalizers.as_deref(),
        Some(&["apps.kruise.io/deletion-protection".to_string()][..])
    );
    let both = json!({"selector": {"names": ["a"]}, "podSelector": {"matchLabels": {"a": "b"}}});
    let m = refusal(
        jobs.create(&PostParams::default(), &job("both", both))
            .await,
    );
    assert!(
        m.contains("denied the request: selector and podSelector can not be set at the same time"),
        "{m}"
    );
    let never = json!({"completionPolicy": {"type": "Never", "ttlSecondsAfterFinished": 10}});
    let m = refusal(
        jobs.create(&PostParams::default(), &job("never", never))
            .await,
    );
    assert!(
        m.contains("activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType"),
        "{m}"
    );
    jobs.delete("defaulted", &DeleteParams::default())
        .await
        .unwrap();
    wait::until("the job gone (its finalizer released)", 60, || async {
        jobs.get_opt("defaulted")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    teardown(&client, ns).await;
}

/// Durations above a year are refused by the CRDs' schemas on the real API server (upstream's
/// have no maximum; the agent and the controller clamp on ingest all the same, for objects
/// stored before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_above_a_year_are_refused_by_the_crds() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-maximums";
    let (cluster, client) = setup(ns).await;
    let jobs = kruise_api(&client, Some(ns), "ImagePullJob");
    let job = |deadline: i64| {
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": format!("deadline-{deadline}")},
            "spec": {"image": cluster.image("busybox:1"), "parallelism": 0,
                     "completionPolicy": {"type": "Always", "activeDeadlineSeconds": deadline}}}))
        .unwrap()
    };
    let m = refusal(
        jobs.create(&PostParams::default(), &job(10_000_000_000))
            .await,
    );
    assert!(m.contains("less than or equal to"), "{m}");
    jobs.create(&PostParams::default(), &job(31_536_000))
        .await
        .unwrap();
    // (A CRR meets the admission webhook before its schema: the webhook refuses a CRR naming no
    // Pod first.) A NodeImage has no webhook.
    let images = kruise_api(&client, None, "NodeImage");
    let image = serde_json::from_value::<DynamicObject>(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodeImage",
        "metadata": {"name": "rc-maximums", "labels": {LABEL_FAKE_NODE_IMAGE: "true"}},
        "spec": {"images": {"busybox": {"tags": [{"tag": "1", "version": 1,
                 "pullPolicy": {"activeDeadlineSeconds": 400_000_000}}]}}}}))
    .unwrap();
    let m = refusal(images.create(&PostParams::default(), &image).await);
    assert!(m.contains("less than or equal to"), "{m}");
    teardown(&client, ns).await;
}

/// The pod's container meta annotation, read.
fn containers_meta(pod: &Pod) -> Option<RuntimeContainerMetaSet> {
    RuntimeContainerMetaSet::parse(
        pod.annotations()
            .get(ANNOTATION_RUNTIME_CONTAINERS_META)
            .map(String::as_str),
    )
}

fn status_of<'a>(pod: &'a Pod, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == name))
        .unwrap()
}

/// Container meta as a CloneSet's in-place update meets it (OpenKruise's e2e
/// `containermeta.go`): a pod controlled by an `apps.kruise.io` object, with the
/// `InPlaceUpdateReady` readiness gate and `TEST_ENV` from its label `test-env`. The agent writes
/// `apps.kruise.io/runtime-containers-meta` (the real kubelet's container hash, the env hash
/// kruise-manager expects); a label changed by hand while the condition is True restarts
/// nothing; once the manager's steps are replayed (condition False, then the new label and the
/// in-place update state), the stale container alone is stopped and the kubelet starts it with
/// the new value (read with `env` through CRI), the annotation follows, a `Killing` Event is on
/// the pod, and nothing is stopped twice. A pod without a Kruise controller gets no annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_meta_restarts_stale_env_in_an_in_place_update() {
    let _shared = DISRUPTION.read().await;
    let ns = "rc-containermeta";
    let (cluster, client) = setup(ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // The controlling object: any apps.kruise.io kind counts (a marker that selects nothing).
    let markers = kruise_api(&client, Some(ns), "PodProbeMarker");
    let owner: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "PodProbeMarker",
        "metadata": {"name": "owner"},
        "spec": {"selector": {"matchLabels": {"selects": "nothing"}}, "probes": [
            {"name": "p", "containerName": "app", "podConditionType": "game.kruise.io/owner",
             "probe": {"exec": {"command": ["true"]}}}]}}))
    .unwrap();
    let owner = markers
        .create(&PostParams::default(), &owner)
        .await
        .unwrap();
    let mut app = polite_container(cluster, "app", None);
    app["env"] = json!([{"name": "TEST_ENV",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['test-env']"}}}]);
    let spec = json!({"terminationGracePeriodSeconds": 5,
        "readinessGates": [{"conditionType": POD_CONDITION_INPLACE_UPDATE_READY}],
        "containers": [app, polite_container(cluster, "side", None)]});
    let pod = |name: &str, owned: bool| {
        let mut metadata = json!({"name": name, "labels": {"test-env": "foo"}});
        if owned {
            metadata["ownerReferences"] = json!([{"apiVersion": "apps.kruise.io/v1alpha1",
                "kind": "PodProbeMarker", "name": "owner", "uid": owner.uid().unwrap(),
                "controller": true}]);
        }
        serde_json::from_value::<Pod>(json!({"metadata": metadata, "spec": spec.clone()})).unwrap()
    };
    pods.create(&PostParams::default(), &pod("cm", true))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("plain", false))
        .await
        .unwrap();
    let condition = |status: &str, reason: &str| {
        Patch::Strategic(
            json!({"status": {"conditions": [{"type": POD_CONDITION_INPLACE_UPDATE_READY,
            "status": status, "reason": reason}]}}),
        )
    };
    // As the manager marks a new pod of the workload.
    for name in ["cm", "plain"] {
        pods.patch_status(name, &PatchParams::default(), &condition("True", ""))
            .await
            .unwrap();
    }
    let before = until_ready(&client, ns, "cm").await;
    let app_id = status_of(&before, "app").container_id.clone().unwrap();
    let side_id = status_of(&before, "side").container_id.clone().unwrap();
    let spec_of = |pod: &Pod, name: &str| {
        pod.spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap()
    };

    let meta = wait::until("the container meta annotation", 60, || {
        let pods = pods.clone();
        async move {
            containers_meta(&pods.get("cm").await.ok()?).filter(|m| {
                m.containers.len() == 2
                    && m.containers
                        .iter()
                        .all(|c| c.hashes.extracted_env_from_metadata_hash > 0)
            })
        }
    })
    .await;
    let entry = |meta: &RuntimeContainerMetaSet, name: &str| {
        meta.containers
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap()
    };
    let a = entry(&meta, "app");
    assert_eq!(a.container_id, app_id);
    assert_eq!(a.restart_count, 0);
    // The real kubelet's hash is the one kruise-manager computes (name and image, since 1.31).
    assert_eq!(
        a.hashes.plain_hash,
        decide::kubelet_hash(&spec_of(&before, "app"))
    );
    // fnv32a of [{"name":"TEST_ENV","value":"foo"}], as upstream.
    assert_eq!(a.hashes.extracted_env_from_metadata_hash, 27_323_935);
    let s = entry(&meta, "side");
    assert_eq!(s.container_id, side_id);
    assert_eq!(
        s.hashes.extracted_env_from_metadata_hash,
        decide::NO_METADATA_ENV_HASH
    );
    // The pod without a Kruise controller ran as long: no annotation.
    let plain = until_ready(&client, ns, "plain").await;
    assert!(
        containers_meta(&plain).is_none(),
        "{:?}",
        plain.annotations()
    );

    // A label changed by hand while InPlaceUpdateReady is True restarts nothing.
    let label = |value: &str| Patch::Merge(json!({"metadata": {"labels": {"test-env": value}}}));
    pods.patch("cm", &PatchParams::default(), &label("bar"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = pods.get("cm").await.unwrap();
    assert_eq!(status_of(&now, "app").container_id.as_ref(), Some(&app_id));
    assert_eq!(status_of(&now, "app").restart_count, 0);

    // kruise-manager's in-place update of env from metadata: the condition False first, then
    // the new label and the update's state.
    pods.patch_status(
        "cm",
        &PatchParams::default(),
        &condition("False", "StartInPlaceUpdate"),
    )
    .await
    .unwrap();
    let state = json!({"revision": "cm-2", "updateTimestamp": "2026-12-07T00:00:00Z",
        "lastContainerStatuses": null, "updateEnvFromMetadata": true})
    .to_string();
    pods.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"test-env": "baz"},
            "annotations": {ANNOTATION_INPLACE_UPDATE_STATE: state}}})),
    )
    .await
    .unwrap();
    let after = wait::until("app restarted by the kubelet", 90, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("cm").await.ok()?;
            let app = status_of(&pod, "app");
            (app.restart_count == 1 && app.ready).then_some(pod)
        }
    })
    .await;
    let new_id = status_of(&after, "app").container_id.clone().unwrap();
    assert_ne!(new_id, app_id);
    assert_eq!(
        status_of(&after, "side").container_id.as_ref(),
        Some(&side_id)
    );
    assert_eq!(status_of(&after, "side").restart_count, 0);
    let runtime_id = new_id.split_once("://").unwrap().1;
    let env = cluster.exec(runtime_id, &["env"]).await.unwrap();
    assert!(env.lines().any(|l| l == "TEST_ENV=baz"), "{env}");

    // The annotation follows the new container, with the hash the manager now expects.
    let meta = wait::until("the new container in the annotation", 60, || {
        let pods = pods.clone();
        let new_id = new_id.clone();
        async move {
            let meta = containers_meta(&pods.get("cm").await.ok()?)?;
            meta.containers
                .iter()
                .any(|c| c.container_id == new_id && c.hashes.extracted_env_from_metadata_hash > 0)
                .then_some(meta)
        }
    })
    .await;
    let a = entry(&meta, "app");
    assert_eq!(a.restart_count, 1);
    let now = pods.get("cm").await.unwrap();
    assert_eq!(
        a.hashes.extracted_env_from_metadata_hash,
        decide::expected_hash(&spec_of(&now, "app"), &now)
    );
    assert_eq!(entry(&meta, "side").container_id, side_id);
    let uid = now.uid().unwrap();
    let killing = events_for(&client, ns, &uid, "Killing").await;
    let ours: Vec<_> = killing
        .iter()
        .filter(|e| e.reporting_component.as_deref() == Some(nodeward::cluster::COMPONENT))
        .collect();
    assert_eq!(ours.len(), 1, "{killing:?}");
    assert!(
        ours[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("container app"),
        "{ours:?}"
    );

    // Still within the update, the new container is not stopped again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let still = pods.get("cm").await.unwrap();
    assert_eq!(status_of(&still, "app").restart_count, 1);
    assert_eq!(
        status_of(&still, "app").container_id.as_ref(),
        Some(&new_id)
    );
    // The manager sees the hashes agree and ends the update; nothing is stopped afterwards.
    pods.patch_status("cm", &PatchParams::default(), &condition("True", ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let last = pods.get("cm").await.unwrap();
    assert_eq!(status_of(&last, "app").restart_count, 1);
    assert_eq!(status_of(&last, "app").container_id.as_ref(), Some(&new_id));
    teardown(&client, ns).await;
}
