//! ContainerRecreateRequest end to end: the real `nodeward controller` and `nodeward agent`
//! against the in-memory API server, real containerd, and the kubelet fixture (restarts stopped
//! containers, runs postStart, mirrors statuses into the Pod objects). The upstream e2e scenarios
//! (`test/e2e/apps/v1alpha1/containerrecreate.go`: minStartedSeconds + TTL, two containers,
//! unordered/ordered/forced with a postStart hook, preStop) run on real pods in
//! `tests/real_cluster.rs`; what stays here is what it does not cover: forceRecreate of a container
//! still in postStart, an httpGet preStop, the late stop after activeDeadlineSeconds, the unready
//! grace before the kill, two CRRs in turn, bad requests, kill -9 of the agent mid-recreate, a
//! StopContainer the runtime never answers, and kruise-manager's SidecarTerminator CRR.

use nodeward_testkit as support;

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use nodeward::api::kruise::{
    ContainerRecreateRequest, ContainerRecreateRequestContainerRecreateState as State,
    ContainerRecreateRequestPhase as Phase,
};
use serde_json::{Value, json};
use support::agent::AgentProcess;
use support::apiserver::ApiServer;
use support::cluster::ClusterPod;
use support::cri_proxy::CriProxy;
use support::kubelet::{ContainerSpec, PodSpec, RestartPolicy};
use support::rbac;
use support::testbed::TestBed;
use support::wait::until;

const NODE: &str = "node-crr";
/// Exits at once on SIGTERM.
const POLITE: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

type Crr = ContainerRecreateRequest;

fn api() -> &'static ApiServer {
    ApiServer::shared()
}

/// A kubeconfig acting as one of the packaged service accounts (the server enforces its RBAC).
fn kubeconfig(service_account: &str) -> String {
    api()
        .service_account_kubeconfig(TestBed::shared().dir(), service_account)
        .expect("kubeconfig")
        .display()
        .to_string()
}

/// Spawned from a thread that lives as long as the process, so the child gets SIGKILL (parent
/// death signal) when this test binary exits.
fn spawn_for_process(
    f: impl FnOnce() -> anyhow::Result<AgentProcess> + Send + 'static,
) -> AgentProcess {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap().expect("start process")
}

fn agent() -> &'static AgentProcess {
    static AGENT: OnceLock<AgentProcess> = OnceLock::new();
    AGENT.get_or_init(|| {
        let kc = kubeconfig(rbac::AGENT);
        spawn_for_process(move || {
            AgentProcess::spawn(
                TestBed::shared(),
                &["--kubeconfig", &kc, "--node-name", NODE],
            )
        })
    })
}

fn controller() -> &'static AgentProcess {
    static CONTROLLER: OnceLock<AgentProcess> = OnceLock::new();
    CONTROLLER.get_or_init(|| {
        let kc = kubeconfig(rbac::CONTROLLER);
        spawn_for_process(move || {
            AgentProcess::spawn_controller(
                std::path::Path::new(&kc),
                &["--lease-name", "nodeward-crr-tests"],
            )
        })
    })
}

async fn ready() -> &'static AgentProcess {
    let a = agent();
    a.wait_ready().await.expect("agent ready");
    controller()
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("controller leads");
    a
}

fn crrs() -> Api<Crr> {
    Api::namespaced(api().client(), "default")
}

/// Create a CRR as a user would (no labels, no status context); returns the time just before.
async fn create(name: &str, pod: &str, containers: &[&str], extra: Value) -> SystemTime {
    let mut obj = json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "podName": pod,
            "containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>(),
        },
    });
    if let (Some(spec), Some(extra)) = (obj["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    let crr: Crr = serde_json::from_value(obj).unwrap();
    let t = SystemTime::now();
    crrs().create(&PostParams::default(), &crr).await.unwrap();
    t
}

async fn wait_crr(name: &str, what: &str, timeout: Duration, pred: impl Fn(&Crr) -> bool) -> Crr {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(c) = crrs().get(name).await {
            if pred(&c) {
                return c;
            }
            last = Some(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("CRR {name}: timed out waiting for {what}; last: {last:#?}");
}

/// Wait at most `secs` seconds for CRR `name` to complete.
async fn wait_completed(name: &str, secs: u64) -> Crr {
    wait_crr(name, "Completed", Duration::from_secs(secs), completed).await
}

fn phase(c: &Crr) -> Option<Phase> {
    c.status.as_ref().and_then(|s| s.phase)
}

fn states(c: &Crr) -> Vec<State> {
    c.status
        .as_ref()
        .map(|s| s.container_recreate_states.clone())
        .unwrap_or_default()
}

fn completed(c: &Crr) -> bool {
    phase(c) == Some(Phase::Completed)
}

fn state(name: &str, phase: Phase, is_killed: bool) -> State {
    State {
        name: name.into(),
        phase,
        message: String::new(),
        is_killed,
    }
}

fn two_containers(name: &str, app: ContainerSpec) -> PodSpec {
    PodSpec::new(name)
        .container(app)
        .container(ContainerSpec::sh("sidecar", POLITE))
}

async fn run_pod(spec: PodSpec) -> ClusterPod {
    ClusterPod::run(TestBed::shared(), api().client(), NODE, spec)
        .await
        .expect("run pod")
}

/// Wait until the Pod object reports every container running with a containerID (the CRR's
/// defaulting needs them).
async fn wait_pod_running(pod: &ClusterPod) -> Pod {
    for _ in 0..200 {
        let p = pod.object().await.unwrap();
        let statuses = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        if !statuses.is_empty()
            && statuses
                .iter()
                .all(|s| s.ready && s.state.as_ref().is_some_and(|st| st.running.is_some()))
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pod {} never ran", pod.name);
}

/// When the agent's log says it finished stopping `container` for `crr` ("default/<name>").
fn log_time(agent: &AgentProcess, message: &str, crr: &str, container: &str) -> Option<SystemTime> {
    agent
        .messages(message)
        .into_iter()
        .find(|v| v["crr"] == format!("default/{crr}") && v["container"] == container)
        .and_then(|v| humantime::parse_rfc3339_weak(v["timestamp"].as_str()?).ok())
}

async fn wait_log(agent: &AgentProcess, message: &str, crr: &str, container: &str) -> SystemTime {
    let (c, k) = (format!("default/{crr}"), container.to_string());
    let m = message.to_string();
    agent
        .wait_for(
            &format!("{message} {crr}/{container}"),
            Duration::from_secs(30),
            move |v| {
                v["message"] == m.as_str() && v["crr"] == c.as_str() && v["container"] == k.as_str()
            },
        )
        .await
        .unwrap();
    log_time(agent, message, crr, container).expect("timestamp")
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a)
        .map(|d| d.as_secs_f64())
        .unwrap_or_else(|e| -e.duration().as_secs_f64())
}

/// forceRecreate kills once even a container that is still in its postStart hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_recreate_kills_a_starting_container() {
    let agent = ready().await;
    let app = ContainerSpec::sh("app", POLITE).post_start_exec(["sleep", "4"]);
    let pod = run_pod(PodSpec::new("crr-force-starting").container(app)).await;
    wait_pod_running(&pod).await;
    // A first CRR restarts app; while its new instance sits in postStart, a forced one comes.
    create("crr-force-a", "crr-force-starting", &["app"], json!({})).await;
    wait_log(
        agent,
        "container stop for CRR finished",
        "crr-force-a",
        "app",
    )
    .await;
    pod.handle
        .wait_until(
            |s| {
                s.container("app")
                    .is_some_and(|c| c.restart_count == 1 && c.is_running())
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // Plain CRR on the still-starting container: it is "already recreating", no kill.
    let starting = pod.handle.container("app").await.unwrap();
    assert!(!starting.ready, "still in postStart");
    create(
        "crr-force-b",
        "crr-force-starting",
        &["app"],
        json!({"strategy": {"forceRecreate": true}}),
    )
    .await;
    let done = wait_completed("crr-force-b", 60).await;
    assert_eq!(states(&done), vec![state("app", Phase::Succeeded, true)]);
    wait_completed("crr-force-a", 30).await;
    let app = pod.handle.container("app").await.unwrap();
    assert_eq!(app.restart_count, 2, "killed once by each CRR");
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// An httpGet preStop is sent to the pod IP (here a host-network pod: 127.0.0.1), which
/// kruise-daemon cannot do (it has no pod IPs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_pre_stop_reaches_the_pod() {
    let agent = ready().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "mkdir -p /tmp/www && echo bye > /tmp/www/quit && exec httpd -f -v -p 127.0.0.1:{port} -h /tmp/www"
    );
    let app = ContainerSpec::sh("app", &script).pre_stop_http_get(port, "/quit");
    let pod = run_pod(PodSpec::new("crr-http").grace_seconds(5).container(app)).await;
    wait_pod_running(&pod).await;
    create("crr-http", "crr-http", &["app"], json!({})).await;
    wait_log(agent, "container stop for CRR finished", "crr-http", "app").await;
    let line = agent
        .messages("container stop for CRR finished")
        .into_iter()
        .find(|v| v["crr"] == "default/crr-http")
        .unwrap();
    assert_eq!(line["prestop"], "ran", "{line}");
    wait_completed("crr-http", 30).await;
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// activeDeadlineSeconds 3 with an 8 s preStop: the controller completes the CRR on time and
/// marks the unfinished containers Failed (upstream leaves them Pending/Recreating: #2353); the
/// stop in flight still happens and its late result does not overwrite the final states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_completes_and_fails_unfinished() {
    let agent = ready().await;
    let app = ContainerSpec::sh("app", POLITE).pre_stop_exec(["sleep", "8"]);
    let pod = run_pod(two_containers("crr-deadline", app)).await;
    wait_pod_running(&pod).await;
    let t0 = create(
        "crr-deadline",
        "crr-deadline",
        &["app", "sidecar"],
        json!({"activeDeadlineSeconds": 3}),
    )
    .await;
    let done = wait_completed("crr-deadline", 10).await;
    let took = secs_between(
        t0,
        done.status
            .as_ref()
            .unwrap()
            .completion_time
            .as_ref()
            .unwrap()
            .0
            .into(),
    );
    assert!(took < 5.0, "completed {took:.1} s after creation");
    assert_eq!(
        done.status.as_ref().unwrap().message,
        "recreating has exceeded the activeDeadlineSeconds"
    );
    let final_states = states(&done);
    assert!(
        final_states.iter().all(|s| s.phase == Phase::Failed),
        "{final_states:?}"
    );
    wait_log(
        agent,
        "container stop for CRR finished",
        "crr-deadline",
        "app",
    )
    .await;
    pod.handle
        .wait_until(
            |s| s.container("app").is_some_and(|c| c.restart_count == 1),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // No TTL: the CRR stays, and its final states must be those the controller wrote.
    let after = crrs().get("crr-deadline").await.unwrap();
    assert_eq!(
        states(&after),
        final_states,
        "the late stop did not overwrite the final states"
    );
    assert_eq!(
        pod.handle.container("sidecar").await.unwrap().restart_count,
        0,
        "sidecar untouched"
    );
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

fn kruise_pod_ready(pod: &Pod) -> Option<(String, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "KruisePodReady")
        .map(|c| (c.status.clone(), c.message.clone()))
}

/// unreadyGracePeriodSeconds 1 with terminationGracePeriodSeconds 3 and an 8 s preStop: the pod is
/// made not-ready first, the grace cuts the preStop, readiness comes back after completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_grace_then_grace_cuts_pre_stop() {
    let agent = ready().await;
    let app = ContainerSpec::sh("app", POLITE).pre_stop_exec(["sleep", "8"]);
    let pod = run_pod(two_containers("crr-unready", app).readiness_gate("KruisePodReady")).await;
    wait_pod_running(&pod).await;
    let t0 = create(
        "crr-unready",
        "crr-unready",
        &["app", "sidecar"],
        json!({"strategy": {"terminationGracePeriodSeconds": 3, "unreadyGracePeriodSeconds": 1}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let p = pod.object().await.unwrap();
        if let Some((status, message)) = kruise_pod_ready(&p)
            && status == "False"
        {
            assert_eq!(
                message.as_deref(),
                Some(r#"[{"userAgent":"ContainerRecreateRequest","key":"default/crr-unready"}]"#)
            );
            break;
        }
        assert!(Instant::now() < deadline, "pod not made unready within 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = wait_log(
        agent,
        "container stop for CRR finished",
        "crr-unready",
        "app",
    )
    .await;
    let killing = log_time(agent, "stopping container for CRR", "crr-unready", "app").unwrap();
    assert!(
        secs_between(t0, stopped) < 8.0,
        "grace 3 s cut the 8 s preStop: stopped after {:.1} s",
        secs_between(t0, stopped)
    );
    let done = wait_completed("crr-unready", 40).await;
    // The annotation has whole seconds, as upstream's: the grace runs from that time.
    let acquired: SystemTime = done
        .unready_acquired_at()
        .expect("unready-acquired annotation")
        .unwrap()
        .into();
    assert!(
        secs_between(acquired, killing) >= 1.0,
        "kill started {:.2} s after the pod was made not-ready (grace 1 s)",
        secs_between(acquired, killing)
    );
    assert_eq!(
        states(&done),
        vec![
            state("app", Phase::Succeeded, true),
            state("sidecar", Phase::Succeeded, true)
        ]
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let p = pod.object().await.unwrap();
        if kruise_pod_ready(&p).is_some_and(|(s, _)| s == "True") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness not released: {:?}",
            kruise_pod_ready(&p)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_crr(
        "crr-unready",
        "finalizer released",
        Duration::from_secs(5),
        |c| c.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()),
    )
    .await;
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// Two CRRs for one pod run one after the other: the second starts as soon as the first
/// completes, without any further event (upstream leaves it Pending: #1626).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_crrs_for_one_pod_run_in_turn() {
    ready().await;
    let pod = run_pod(two_containers("crr-pair", ContainerSpec::sh("app", POLITE))).await;
    wait_pod_running(&pod).await;
    create(
        "crr-pair-1",
        "crr-pair",
        &["app"],
        json!({"strategy": {"minStartedSeconds": 2}}),
    )
    .await;
    create("crr-pair-2", "crr-pair", &["sidecar"], json!({})).await;
    let second = wait_crr(
        "crr-pair-2",
        "Pending while the first runs",
        Duration::from_secs(10),
        |c| phase(c).is_some(),
    )
    .await;
    assert_eq!(phase(&second), Some(Phase::Pending));
    wait_completed("crr-pair-1", 40).await;
    let done = wait_completed("crr-pair-2", 30).await;
    assert_eq!(
        states(&done),
        vec![state("sidecar", Phase::Succeeded, true)]
    );
    for c in ["app", "sidecar"] {
        assert_eq!(
            pod.handle.container(c).await.unwrap().restart_count,
            1,
            "{c}"
        );
    }
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// Bad input completes with a clear message: a container the pod does not have (rejected by the
/// defaulting), and a CRR already labelled by an upstream webhook whose statusContext names
/// another runtime (completed by the agent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_complete_with_a_message() {
    ready().await;
    let pod = run_pod(PodSpec::new("crr-bad").container(ContainerSpec::sh("app", POLITE))).await;
    wait_pod_running(&pod).await;
    create("crr-bad-name", "crr-bad", &["nope"], json!({})).await;
    let done = wait_completed("crr-bad-name", 10).await;
    assert_eq!(
        done.status.unwrap().message,
        "not found nope container in Pod spec"
    );
    let labelled: Crr = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": {"name": "crr-bad-runtime", "namespace": "default", "labels": {
            "crr.apps.kruise.io/pod-uid": pod.uid(),
            "crr.apps.kruise.io/node-name": NODE,
            "crr.apps.kruise.io/active": "true",
        }},
        "spec": {"podName": "crr-bad", "containers": [
            {"name": "app", "statusContext": {"containerID": "cri-o://abc", "restartCount": 0}}
        ], "strategy": {"failurePolicy": "Fail"}},
    }))
    .unwrap();
    crrs()
        .create(&PostParams::default(), &labelled)
        .await
        .unwrap();
    let done = wait_completed("crr-bad-runtime", 10).await;
    let message = done.status.unwrap().message;
    assert!(
        message.starts_with("failed to find runtime service: "),
        "{message}"
    );
    assert!(message.contains("cri-o"), "{message}");
    assert_eq!(pod.handle.container("app").await.unwrap().restart_count, 0);
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// A pod on a node of its own, served by an agent whose state directory outlives a `kill -9`.
struct Kill9 {
    first: AgentProcess,
    pod: ClusterPod,
    args: Vec<String>,
}

impl Kill9 {
    /// Pod `name` with `app` on node `node-<name>`, running, with its agent ready.
    async fn start(name: &str, app: ContainerSpec) -> Kill9 {
        ready().await;
        let tb = TestBed::shared();
        let node = format!("node-{name}");
        let state_dir = tb.dir().join(format!("agent-{name}"));
        let args = vec![
            "--kubeconfig".to_owned(),
            kubeconfig(rbac::AGENT),
            "--node-name".to_owned(),
            node.clone(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let first = AgentProcess::spawn_in(tb, &state_dir, &argv).unwrap();
        first.wait_ready().await.unwrap();
        let pod = ClusterPod::run(tb, api().client(), &node, PodSpec::new(name).container(app))
            .await
            .unwrap();
        wait_pod_running(&pod).await;
        Kill9 { first, pod, args }
    }

    /// `kill -9` the first agent and start another on the same state; ready.
    async fn restart(&self) -> AgentProcess {
        self.first.kill9();
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let state_dir = self.first.state_dir().expect("spawned with a state dir");
        let second = AgentProcess::spawn_in(TestBed::shared(), state_dir, &argv).unwrap();
        second.wait_ready().await.unwrap();
        second
    }
}

/// kill -9 while the agent runs a preStop hook: the restarted agent finishes that stop (without
/// running the hook again), the container is restarted exactly once and the CRR completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill9_mid_recreate_neither_loses_nor_repeats() {
    let app = ContainerSpec::sh("app", POLITE).pre_stop_exec(["sleep", "3"]);
    let k9 = Kill9::start("crr-k9", app).await;
    create("crr-k9", "crr-k9", &["app"], json!({})).await;
    wait_log(&k9.first, "stopping container for CRR", "crr-k9", "app").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = k9.restart().await;
    let done = wait_completed("crr-k9", 40).await;
    assert_eq!(states(&done), vec![state("app", Phase::Succeeded, true)]);
    assert_eq!(
        k9.pod.handle.container("app").await.unwrap().restart_count,
        1,
        "stopped exactly once"
    );
    assert!(
        second
            .messages("finishing a stop decided before the agent restarted (preStop not run again)")
            .iter()
            .any(|v| v["crr"] == "default/crr-k9"),
        "the restarted agent resumed the journaled stop"
    );
    assert!(
        second.messages("stopping container for CRR").is_empty(),
        "no second kill"
    );
    second.stop().await.unwrap();
    k9.pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// kill -9 right after a plain stop (no preStop, not forced) was sent, whose journal record is
/// written alongside StopContainer rather than before it, while the container is still stopping
/// (it takes 2 s on SIGTERM): the restarted agent either resumes the recorded stop or, if the
/// record was lost, stops the same instance again (never the new one); either way the container
/// exits and is restarted exactly once and the CRR completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill9_after_a_plain_stop_restarts_once() {
    let app = ContainerSpec::sh("app", "trap 'sleep 2; exit 0' TERM; sleep 100000 & wait");
    let k9 = Kill9::start("crr-k9-plain", app).await;
    let before = k9.pod.handle.container("app").await.unwrap().id;
    create("crr-k9-plain", "crr-k9-plain", &["app"], json!({})).await;
    wait_log(
        &k9.first,
        "stopping container for CRR",
        "crr-k9-plain",
        "app",
    )
    .await;
    let second = k9.restart().await;
    let done = wait_completed("crr-k9-plain", 40).await;
    assert_eq!(states(&done), vec![state("app", Phase::Succeeded, true)]);
    for line in second.messages("stopping container for CRR") {
        assert_eq!(
            line["container_id"],
            before.as_str(),
            "only the old instance is stopped"
        );
    }
    let after = k9.pod.handle.container("app").await.unwrap();
    assert_ne!(after.id, before, "recreated");
    assert_eq!(after.restart_count, 1, "restarted exactly once");
    second.stop().await.unwrap();
    k9.pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// A StopContainer the runtime never answers ends the CRR's pass at its deadline (the grace +
/// 30 s) instead of holding the pod's queue: the container's state is Failed with the kill error
/// and, under failurePolicy Fail, the CRR completes (as upstream); the pod's next CRR runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_stop_ends_the_pass_and_the_next_crr_runs() {
    ready().await;
    let tb = TestBed::shared();
    let node = "node-crr-hung";
    let state_dir = tb
        .dir()
        .join(format!("agent-crr-hung-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir).unwrap();
    let proxy = CriProxy::start(&tb.socket(), &state_dir.join("cri.sock")).unwrap();
    proxy.hang("stop_container", Some(1));
    let kc = kubeconfig(rbac::AGENT);
    let args = ["--kubeconfig", kc.as_str(), "--node-name", node];
    let agent = AgentProcess::spawn_on(tb, proxy.socket(), &state_dir, &args).unwrap();
    agent.wait_ready().await.unwrap();
    let spec = PodSpec::new("crr-hung")
        .grace_seconds(2)
        .container(ContainerSpec::sh("app", POLITE));
    let pod = ClusterPod::run(tb, api().client(), node, spec)
        .await
        .unwrap();
    wait_pod_running(&pod).await;
    let fail = json!({"strategy": {"failurePolicy": "Fail"}});
    create("crr-hung", "crr-hung", &["app"], fail.clone()).await;
    let done = wait_completed("crr-hung", 90).await;
    assert_eq!(proxy.hung(), 1);
    let failed = states(&done);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].phase, Phase::Failed);
    assert!(
        failed[0].message.starts_with("kill container error: ")
            && failed[0].message.contains("did not answer"),
        "{failed:?}"
    );
    assert_eq!(pod.handle.container("app").await.unwrap().restart_count, 0);
    create("crr-hung-next", "crr-hung", &["app"], fail).await;
    let done = wait_completed("crr-hung-next", 30).await;
    assert_eq!(states(&done), vec![state("app", Phase::Succeeded, true)]);
    assert_eq!(pod.handle.container("app").await.unwrap().restart_count, 1);
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
    api().assert_no_denials();
}

/// A CRR as kruise-manager's SidecarTerminator creates it for a finished Job pod
/// (`sidecar-termination-<pod uid>`, forceRecreate, failurePolicy Ignore, owned by the Pod) is
/// accepted and executed; with restart policy Never the stop is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_terminator_crr_from_kruise_manager() {
    let agent = ready().await;
    let spec = PodSpec::new("crr-job")
        .restart_policy(RestartPolicy::Never)
        .container(ContainerSpec::sh("main", "exit 0"))
        .container(ContainerSpec::sh("sidecar", POLITE));
    let pod = run_pod(spec).await;
    // kruise-manager acts on the Pod object: main terminated, the sidecar running in the status.
    until("main terminated in the Pod status", 10, || async {
        let statuses = pod.object().await.ok()?.status?.container_statuses?;
        let main = statuses.iter().find(|s| s.name == "main")?;
        let sidecar = statuses.iter().find(|s| s.name == "sidecar")?;
        let running = sidecar.state.as_ref()?.running.is_some();
        (main.state.as_ref()?.terminated.is_some() && running).then_some(())
    })
    .await;
    let name = format!("sidecar-termination-{}", pod.uid());
    let crr: Crr = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": {"name": name, "namespace": "default", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Pod", "name": "crr-job", "uid": pod.uid(),
            "controller": true, "blockOwnerDeletion": true,
        }]},
        "spec": {"podName": "crr-job", "containers": [{"name": "sidecar"}],
                 "strategy": {"forceRecreate": true, "failurePolicy": "Ignore"}},
    }))
    .unwrap();
    crrs().create(&PostParams::default(), &crr).await.unwrap();
    wait_log(agent, "container stop for CRR finished", &name, "sidecar").await;
    let c = wait_crr(
        &name,
        "sidecar marked killed",
        Duration::from_secs(10),
        |c| states(c) == vec![state("sidecar", Phase::Recreating, true)],
    )
    .await;
    assert_eq!(
        phase(&c),
        Some(Phase::Recreating),
        "never completes: the kubelet does not restart it"
    );
    let sidecar = pod.handle.container("sidecar").await.unwrap();
    assert!(sidecar.is_exited());
    assert_eq!(sidecar.exit_code, 0);
    assert_eq!(sidecar.restart_count, 0);
    pod.remove().await.unwrap();
    api().assert_no_denials();
}
