//! Job sidecar terminator against a real containerd: one shared test bed and one shared agent for
//! this binary; every scenario uses its own pod and asserts on the agent's log lines for that pod.

use nodeward_testkit as support;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::agent::AgentProcess;
use support::kubelet::{ContainerSpec, Kubelet, PodHandle, PodSpec, RestartPolicy};
use support::testbed::TestBed;

const SIDECAR_ENV: (&str, &str) = ("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true");
/// A sidecar that exits 0 on SIGTERM, as the upstream docs ask of sidecars.
const POLITE_SIDECAR: &str = "trap 'exit 0' TERM; sleep 100000 & wait";
/// A sidecar that ignores SIGTERM: only SIGKILL after the grace stops it.
const STUBBORN_SIDECAR: &str = "trap '' TERM; while true; do sleep 1; done";

fn agent() -> &'static AgentProcess {
    static AGENT: OnceLock<AgentProcess> = OnceLock::new();
    AGENT.get_or_init(|| {
        // Spawned from a thread that lives as long as the process: the agent gets SIGKILL (parent
        // death signal) when this test binary exits.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(AgentProcess::spawn(TestBed::shared(), &[]));
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap().expect("start agent")
    })
}

async fn ready_agent() -> &'static AgentProcess {
    let a = agent();
    a.wait_ready().await.expect("agent ready");
    a
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn job(name: &str, policy: RestartPolicy, annotate_policy: bool, grace: i64) -> PodSpec {
    let spec = PodSpec::new(name)
        .restart_policy(policy)
        .grace_seconds(grace);
    if annotate_policy {
        spec.announce_restart_policy()
    } else {
        spec
    }
}

fn main_container(script: &str) -> ContainerSpec {
    ContainerSpec::sh("main", script)
}

fn sidecar(name: &str, script: &str) -> ContainerSpec {
    ContainerSpec::sh(name, script).env(SIDECAR_ENV.0, SIDECAR_ENV.1)
}

async fn run(spec: PodSpec) -> PodHandle {
    Kubelet::run_pod(TestBed::shared(), spec)
        .await
        .expect("run pod")
}

/// No `sidecar stopped` line for this pod.
fn no_stop_for(agent: &AgentProcess, pod: &PodHandle) -> bool {
    !agent
        .messages("sidecar stopped")
        .iter()
        .any(|v: &Value| v["pod_uid"] == pod.uid())
}

/// Wait for the main container to exit, then give the agent time it would need to (wrongly) act.
async fn main_exited_then_settle(pod: &PodHandle) {
    pod.wait_exited("main").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
}

/// The agent's `sidecar stopped` line for this pod's container.
async fn stopped(agent: &AgentProcess, pod: &PodHandle, container: &str) -> Value {
    agent
        .wait_stopped(pod.uid(), container, STOP_TIMEOUT)
        .await
        .unwrap()
}

const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_main_exit_0_stops_sidecar() {
    let agent = ready_agent().await;
    let pod = run(job("never-ok", RestartPolicy::Never, true, 30)
        .container(main_container("sleep 1; exit 0"))
        .container(sidecar("proxy", POLITE_SIDECAR)))
    .await;
    let line = stopped(agent, &pod, "proxy").await;
    assert_eq!(line["sidecar_exit_code"], 0, "{line}");
    assert_eq!(line["pod_namespace"], "default", "{line}");
    assert_eq!(line["grace_s"], 30, "the pod's full grace: {line}");
    // Seen through the kernel (pidfd or cgroup events), not the 10 s relist.
    assert!(line["exit_to_stop_ms"].as_f64().unwrap() < 500.0, "{line}");
    let side = pod.container("proxy").await.unwrap();
    assert!(side.is_exited(), "{side:?}");
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_main_exit_1_stops_sidecar() {
    let agent = ready_agent().await;
    let pod = run(job("never-fail", RestartPolicy::Never, true, 30)
        .container(main_container("sleep 1; exit 1"))
        .container(sidecar("proxy", POLITE_SIDECAR)))
    .await;
    stopped(agent, &pod, "proxy").await;
    let main = pod.container("main").await.unwrap();
    assert_eq!(main.exit_code, 1);
    assert_eq!(main.restart_count, 0, "Never: no restart");
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onfailure_main_exit_0_stops_sidecar() {
    let agent = ready_agent().await;
    let pod = run(job("onfailure-ok", RestartPolicy::OnFailure, true, 30)
        .container(main_container("sleep 1; exit 0"))
        .container(sidecar("proxy", POLITE_SIDECAR)))
    .await;
    let line = stopped(agent, &pod, "proxy").await;
    assert_eq!(line["sidecar_exit_code"], 0, "{line}");
    // The sidecar exited 0, so the kubelet (fixture) does not restart it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let side = pod.container("proxy").await.unwrap();
    assert!(side.is_exited() && side.restart_count == 0, "{side:?}");
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onfailure_main_exit_1_leaves_sidecar_and_main_restarts() {
    let agent = ready_agent().await;
    let pod = run(job("onfailure-fail", RestartPolicy::OnFailure, true, 30)
        .container(main_container("sleep 1; exit 1"))
        .container(sidecar("proxy", POLITE_SIDECAR)))
    .await;
    pod.wait_restarts("main", 2)
        .await
        .expect("the fixture restarts the failed main");
    let side = pod.container("proxy").await.unwrap();
    assert!(side.is_running(), "sidecar must not be stopped: {side:?}");
    assert!(no_stop_for(agent, &pod));
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_both_stopped() {
    let agent = ready_agent().await;
    let pod = run(job("two-sidecars", RestartPolicy::Never, true, 30)
        .container(main_container("sleep 1"))
        .container(sidecar("proxy", POLITE_SIDECAR))
        .container(sidecar("logs", POLITE_SIDECAR)))
    .await;
    stopped(agent, &pod, "proxy").await;
    stopped(agent, &pod, "logs").await;
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_ignoring_sigterm_is_killed_after_grace() {
    let agent = ready_agent().await;
    let pod = run(job("stubborn", RestartPolicy::Never, true, 2)
        .container(main_container("sleep 1"))
        .container(sidecar("proxy", STUBBORN_SIDECAR)))
    .await;
    let line = stopped(agent, &pod, "proxy").await;
    assert_eq!(
        line["sidecar_exit_code"], 137,
        "SIGKILL after the grace: {line}"
    );
    assert_eq!(line["grace_s"], 2, "{line}");
    let took = line["exit_to_sidecar_exit_ms"].as_f64().unwrap();
    assert!(
        (1900.0..10_000.0).contains(&took),
        "killed after ~2 s grace, took {took} ms"
    );
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_image_without_shell() {
    let agent = ready_agent().await;
    let pod = run(job("noshell", RestartPolicy::Never, true, 2)
        .container(main_container("sleep 1"))
        .container(
            ContainerSpec::new("proxy", "noshell")
                .command(["/sleep", "100000"])
                .env(SIDECAR_ENV.0, SIDECAR_ENV.1),
        ))
    .await;
    let line = stopped(agent, &pod, "proxy").await;
    // `/sleep` is PID 1 without a SIGTERM handler: only SIGKILL after the 2 s grace ends it.
    assert_eq!(line["sidecar_exit_code"], 137, "{line}");
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_without_sidecars_untouched() {
    let agent = ready_agent().await;
    let pod = run(job("plain", RestartPolicy::Never, true, 30)
        .container(main_container("sleep 1"))
        .container(ContainerSpec::sh("helper", "sleep 100000")))
    .await;
    main_exited_then_settle(&pod).await;
    assert!(pod.container("helper").await.unwrap().is_running());
    assert!(no_stop_for(agent, &pod));
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_policy_main_failed_leaves_sidecar() {
    let agent = ready_agent().await;
    let pod = run(job("unknown-fail", RestartPolicy::Never, false, 30)
        .container(main_container("sleep 1; exit 3"))
        .container(sidecar("proxy", POLITE_SIDECAR)))
    .await;
    main_exited_then_settle(&pod).await;
    assert!(pod.container("proxy").await.unwrap().is_running());
    assert!(no_stop_for(agent, &pod));
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_policy_main_succeeded_stops_sidecar() {
    let agent = ready_agent().await;
    let pod = run(job("unknown-ok", RestartPolicy::Never, false, 30)
        .container(main_container("sleep 1"))
        .container(sidecar("proxy", POLITE_SIDECAR)))
    .await;
    stopped(agent, &pod, "proxy").await;
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_exit_code_sidecar_is_recorded() {
    let agent = ready_agent().await;
    let pod = run(job("ignore-code", RestartPolicy::Never, true, 2)
        .container(main_container("sleep 1"))
        .container(
            sidecar("proxy", STUBBORN_SIDECAR)
                .env("KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE", "true"),
        ))
    .await;
    let line = stopped(agent, &pod, "proxy").await;
    assert_eq!(line["exit_code_ignored"], true, "{line}");
    assert_eq!(line["sidecar_exit_code"], 137, "{line}");
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestop_exec_runs_before_stop() {
    let agent = ready_agent().await;
    let pod = run(job("prestop", RestartPolicy::Never, true, 30)
        .container(main_container("sleep 1"))
        .container(sidecar("proxy", POLITE_SIDECAR).pre_stop_exec(sh("sleep 1; exit 0"))))
    .await;
    let line = stopped(agent, &pod, "proxy").await;
    assert_eq!(line["prestop"], "exit 0", "{line}");
    assert!(
        line["exit_to_stop_ms"].as_f64().unwrap() >= 1000.0,
        "{line}"
    );
    let grace = line["grace_s"].as_u64().unwrap();
    assert!(
        (27..=29).contains(&grace),
        "grace minus the preStop time: {line}"
    );
    pod.remove().await.unwrap();
}
