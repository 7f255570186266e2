//! Cluster mode end to end: the agent and the controller against the in-memory API server (real
//! kube client over HTTP) and a real containerd, with the kubelet fixture mirroring container
//! statuses into the Pod objects. The agents of this binary run one at a time (two agents would
//! both act on every pod). The happy paths (a sidecar stopped and reported once, the
//! ignore-exit-code verdict, the report after an API outage) run on the real cluster
//! (`tests/real_cluster.rs`); what stays here is what it does not cover: OnFailure with a failing
//! main, a verdict the API refuses at first, an agent started while the API is down, a server without the kruise CRDs, a node labelled
//! virtual after the controller started, and a graceful leader step-down.

use nodeward_testkit as support;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::agent::AgentProcess;
use support::apiserver::{ApiServer, ApiServerOptions};
use support::cluster::ClusterPod;
use support::kubelet::{ContainerSpec, PodSpec, RestartPolicy};
use support::rbac;
use support::testbed::TestBed;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());
const NODE: &str = "node-a";
const POLITE: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

fn api() -> &'static ApiServer {
    ApiServer::shared()
}

/// A kubeconfig acting as one of the packaged service accounts (the server enforces its RBAC).
fn kubeconfig(service_account: &str) -> PathBuf {
    api()
        .service_account_kubeconfig(TestBed::shared().dir(), service_account)
        .expect("kubeconfig")
}

fn cluster_agent() -> AgentProcess {
    let kc = kubeconfig(rbac::AGENT);
    AgentProcess::spawn(
        TestBed::shared(),
        &["--kubeconfig", kc.to_str().unwrap(), "--node-name", NODE],
    )
    .unwrap()
}

fn job(
    name: &str,
    policy: RestartPolicy,
    main: &str,
    sidecar: ContainerSpec,
    grace: i64,
) -> PodSpec {
    PodSpec::new(name)
        .restart_policy(policy)
        .grace_seconds(grace)
        .container(ContainerSpec::sh("main", main))
        .container(sidecar)
}

fn sidecar(script: &str) -> ContainerSpec {
    ContainerSpec::sh("proxy", script).env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true")
}

fn has_condition(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "SidecarTerminated" && c.status == "True")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onfailure_failed_main_leaves_sidecar() {
    let _serial = SERIAL.lock().await;
    let agent = cluster_agent();
    agent.wait_ready().await.unwrap();
    let tb = TestBed::shared();
    let pod = ClusterPod::run(
        tb,
        api().client(),
        NODE,
        job(
            "c-onfailure",
            RestartPolicy::OnFailure,
            "sleep 1; exit 1",
            sidecar(POLITE),
            30,
        ),
    )
    .await
    .unwrap();
    pod.handle.wait_restarts("main", 2).await.unwrap();
    assert!(pod.handle.container("proxy").await.unwrap().is_running());
    assert!(agent.messages("sidecar stopped").is_empty());
    assert!(!has_condition(&pod.object().await.unwrap()));
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// Until `pod` carries the `SidecarTerminated` condition (its report arrived).
async fn until_reported(pod: &ClusterPod, what: &str, secs: u64) {
    support::wait::until(what, secs, || async {
        pod.object().await.ok().filter(has_condition).map(|_| ())
    })
    .await;
}

/// Two finished Job pods whose sidecars the agent stops; the API answers `code` to every write of
/// the first one's condition. Returns once the second one's report arrived, with the first one's
/// still missing: the refused report did not hold back the one behind it.
async fn one_report_refused(code: u16) -> (AgentProcess, Vec<ClusterPod>) {
    let refused = support::apiserver::RequestMatcher::any()
        .verb("patch")
        .resource("pods/status")
        .name("c-refused")
        .user(&rbac::user(rbac::AGENT));
    api().fail_next(refused.clone(), code, 1000);
    let agent = cluster_agent();
    agent.wait_ready().await.unwrap();
    let tb = TestBed::shared();
    let mut pods = Vec::new();
    for name in ["c-refused", "c-behind"] {
        let spec = job(name, RestartPolicy::Never, "exit 0", sidecar(POLITE), 30);
        let pod = ClusterPod::run(tb, api().client(), NODE, spec)
            .await
            .unwrap();
        pod.handle.wait_exited("proxy").await.unwrap();
        pods.push(pod);
    }
    until_reported(&pods[1], "the report behind the refused one", 60).await;
    assert!(api().count_requests(&refused) >= 1);
    assert!(!has_condition(&pods[0].object().await.unwrap()));
    (agent, pods)
}

/// A report the API refuses for good (422 on the first pod's condition) is dropped with a
/// warning and counted; the next pod's report is delivered behind it, not held back forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_refused_for_good_does_not_hold_back_the_next() {
    let _serial = SERIAL.lock().await;
    let (agent, pods) = one_report_refused(422).await;
    assert_eq!(
        agent
            .messages("report refused by the API for good; dropped")
            .len(),
        1
    );
    api().clear_failures();
    agent.stop().await.unwrap();
    for pod in pods {
        pod.remove().await.unwrap();
    }
    api().assert_no_denials();
}

/// A report the API refuses for a reason of its own that may pass (here 403: a permission an
/// operator can grant) waits alone with its own backoff: the report behind it is delivered
/// meanwhile, and the refused one arrives once the API lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_refused_for_now_waits_alone() {
    let _serial = SERIAL.lock().await;
    let (agent, pods) = one_report_refused(403).await;
    api().clear_failures();
    until_reported(&pods[0], "the refused report once the API lets it", 90).await;
    agent.stop().await.unwrap();
    for pod in pods {
        pod.remove().await.unwrap();
    }
}

/// The ignore-exit-code verdict must land before the sidecar is stopped: once the kubelet has
/// written Failed from the sidecar's exit code, the verdict cannot change it. The API refuses the
/// agent's first two verdict writes (500); the agent retries them before stopping, so the Job's
/// pod ends Succeeded although its sidecar exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_is_retried_before_the_sidecar_stops() {
    let _serial = SERIAL.lock().await;
    let verdict = support::apiserver::RequestMatcher::any()
        .verb("patch")
        .resource("pods/status")
        .name("c-verdict")
        .user(&rbac::user(rbac::AGENT));
    api().fail_next(verdict.clone(), 500, 2);
    let agent = cluster_agent();
    agent.wait_ready().await.unwrap();
    let proxy = sidecar("trap 'exit 1' TERM; sleep 100000 & wait")
        .env("KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE", "true");
    let spec = job("c-verdict", RestartPolicy::Never, "exit 0", proxy, 30);
    let pod = ClusterPod::run(TestBed::shared(), api().client(), NODE, spec)
        .await
        .unwrap();
    pod.handle.wait_exited("proxy").await.unwrap();
    sidecar_exit_in_api(&pod).await;
    let object = pod.object().await.unwrap();
    let phase = object.status.as_ref().and_then(|s| s.phase.as_deref());
    assert_eq!(phase, Some("Succeeded"), "{:?}", object.status);
    assert!(has_condition(&object));
    assert!(api().count_requests(&verdict) >= 3);
    assert!(
        agent
            .messages("job verdict not written before stopping")
            .is_empty()
    );
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// The kubelet's status reconcile writes its cached phase (Running) back over a verdict it has not
/// seen in a container exit yet; the agent writes the verdict again while the sidecar stops, so
/// the kubelet judges the exit with it in view. Here the test plays the reconcile while the
/// sidecar takes 4 s to exit; the pod still ends Succeeded although the sidecar exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_the_kubelet_reverts_is_written_again_before_the_sidecar_exits() {
    let _serial = SERIAL.lock().await;
    let agent = cluster_agent();
    agent.wait_ready().await.unwrap();
    let proxy = sidecar("trap 'sleep 4; exit 1' TERM; sleep 100000 & wait")
        .env("KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE", "true");
    let spec = job("c-reverted", RestartPolicy::Never, "exit 0", proxy, 30);
    let pod = ClusterPod::run(TestBed::shared(), api().client(), NODE, spec)
        .await
        .unwrap();
    let phase = |object: &Pod| {
        object
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    support::wait::until("the verdict in the Pod", 30, || async {
        let object = pod.object().await.ok()?;
        (phase(&object) == "Succeeded").then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(api().client(), "default");
    let reconcile = json!({"status": {"phase": "Running"}});
    pods.patch_status(
        "c-reverted",
        &PatchParams::default(),
        &Patch::Merge(&reconcile),
    )
    .await
    .unwrap();
    support::wait::until("the verdict written again", 30, || async {
        let object = pod.object().await.ok()?;
        (phase(&object) == "Succeeded").then_some(())
    })
    .await;
    let proxy = pod.handle.container("proxy").await.unwrap();
    assert!(
        proxy.is_running(),
        "the verdict came back only after the exit"
    );
    pod.handle.wait_exited("proxy").await.unwrap();
    sidecar_exit_in_api(&pod).await;
    let object = pod.object().await.unwrap();
    assert_eq!(phase(&object), "Succeeded", "{:?}", object.status);
    assert_eq!(
        agent
            .messages("job verdict replaced by the kubelet's cached phase; writing it again")
            .len(),
        1
    );
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// Wait until the Pod shows its sidecar `proxy` terminated.
async fn sidecar_exit_in_api(pod: &ClusterPod) {
    support::wait::until("the sidecar's exit code in the Pod", 30, || async {
        let pod = pod.object().await.ok()?;
        let statuses = pod.status?.container_statuses?;
        let proxy = statuses.into_iter().find(|c| c.name == "proxy")?;
        proxy.state?.terminated.map(|_| ())
    })
    .await;
}

/// Wait at most `secs` seconds for the agent's `/readyz` to answer 200.
async fn wait_readyz(agent: &AgentProcess, secs: u64) {
    support::wait::until("/readyz 200", secs, || async {
        let (status, _) = agent.http_get("/readyz").await.unwrap();
        (status == 200).then_some(())
    })
    .await;
}

/// The node side starts without the API (what systemd's READY=1 waits for); `/readyz` waits for
/// the first list of each watch too, and says which are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_lists_but_the_agent_starts_without_the_api() {
    let _serial = SERIAL.lock().await;
    /// Ends the outage however the test ends: the API server is shared.
    struct Outage;
    impl Drop for Outage {
        fn drop(&mut self) {
            api().set_unavailable(false);
        }
    }
    let outage = Outage;
    api().set_unavailable(true);
    let agent = cluster_agent();
    agent.wait_ready().await.unwrap();
    let during_outage = agent.http_get("/readyz").await.unwrap();
    drop(outage);
    assert_eq!(
        during_outage,
        (
            503,
            "waiting for: Pods list, ContainerRecreateRequests list, NodeImage list, NodePodProbe list"
                .into()
        )
    );
    wait_readyz(&agent, 30).await;
    agent.stop().await.unwrap();
    api().assert_no_denials();
}

/// Without the kruise CRDs (CRR and NodeImage not served) the agent still becomes ready: the
/// sidecar terminator needs only Pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_without_the_kruise_crds() {
    let server = ApiServer::start_with(ApiServerOptions {
        kruise_crds: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = server
        .service_account_kubeconfig(dir.path(), rbac::AGENT)
        .unwrap();
    let agent = AgentProcess::spawn(
        TestBed::shared(),
        &[
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--node-name",
            "no-crds",
        ],
    )
    .unwrap();
    agent.wait_ready().await.unwrap();
    wait_readyz(&agent, 20).await;
    agent.stop().await.unwrap();
    server.assert_no_denials();
}

const QUICK_EXIT: &str = "127.0.0.1:5000/quick-exit:1";

/// A Job pod on `node` whose main container has exited while its sidecar (to be swapped for
/// [`QUICK_EXIT`]) runs, as the virtual node reports it.
async fn finished_vk_pod(pods: &Api<Pod>, name: &str, node: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [
            {"name": "main", "image": "app"},
            {"name": "proxy", "image": "envoy",
             "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE", "value": QUICK_EXIT}]}
        ]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "containerStatuses": [
        {"name": "main", "image": "app", "imageID": "", "ready": false, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0}}},
        {"name": "proxy", "image": "envoy", "imageID": "", "ready": true, "restartCount": 0,
         "state": {"running": {}}}
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn wait_swapped(pods: &Api<Pod>, name: &str) {
    support::wait::until(&format!("{name}'s sidecar image swapped"), 10, || async {
        let p = pods.get(name).await.unwrap();
        (p.spec.unwrap().containers[1].image.as_deref() == Some(QUICK_EXIT)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_swaps_sidecar_image_on_virtual_node() {
    let _serial = SERIAL.lock().await;
    let kc = kubeconfig(rbac::CONTROLLER);
    let client = api().client();
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, labels) in [
        ("vk-1", json!({"type": "virtual-kubelet"})),
        ("vk-2", json!({})),
    ] {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        let _ = nodes.create(&PostParams::default(), &node).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Finished before the controller starts, on a node not yet known as virtual.
    finished_vk_pod(&pods, "vk-early", "vk-2").await;
    let ctrl = AgentProcess::spawn_controller(&kc, &[]).unwrap();
    ctrl.wait_leader(Duration::from_secs(20)).await.unwrap();
    finished_vk_pod(&pods, "vk-job", "vk-1").await;
    wait_swapped(&pods, "vk-job").await;
    // The Event is recorded after the swap.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    support::wait::until("the SidecarTerminator Event", 10, || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        evs.iter()
            .any(|e| {
                e.reason.as_deref() == Some("SidecarTerminator")
                    && e.involved_object.name.as_deref() == Some("vk-job")
            })
            .then_some(())
    })
    .await;
    // A node that becomes virtual later: its pods are looked at then, not only on their next change.
    let early = pods.get("vk-early").await.unwrap();
    assert_eq!(
        early.spec.unwrap().containers[1].image.as_deref(),
        Some("envoy")
    );
    nodes
        .patch(
            "vk-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"type": "virtual-kubelet"}}})),
        )
        .await
        .unwrap();
    wait_swapped(&pods, "vk-early").await;
    ctrl.stop().await.unwrap();
    for name in ["vk-job", "vk-early"] {
        pods.delete(name, &Default::default()).await.unwrap();
    }
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_leader_failover() {
    let _serial = SERIAL.lock().await;
    let kc = kubeconfig(rbac::CONTROLLER);
    let start = |id: &str| {
        AgentProcess::spawn_controller(
            &kc,
            &[
                "--lease-name",
                "failover-test",
                "--lease-duration",
                "4s",
                "--identity",
                id,
            ],
        )
        .unwrap()
    };
    let a = start("ctrl-a");
    a.wait_leader(Duration::from_secs(20)).await.unwrap();
    let b = start("ctrl-b");
    b.wait_for("b waits", Duration::from_secs(10), |v| {
        v["message"] == "waiting for leadership"
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        b.messages("became the leader; starting reconcilers")
            .is_empty()
    );
    let killed = std::time::Instant::now();
    a.kill9();
    b.wait_leader(Duration::from_secs(15)).await.unwrap();
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "took over after {took:?} (lease 4 s)"
    );
    // A graceful step-down hands over at once.
    let c = start("ctrl-c");
    c.wait_for("c waits", Duration::from_secs(10), |v| {
        v["message"] == "waiting for leadership"
    })
    .await
    .unwrap();
    b.stop().await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    c.stop().await.unwrap();
    api().assert_no_denials();
}
