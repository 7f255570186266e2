//! The agent's own lifecycle against a real containerd: started after the main already exited
//! (relist path), the runtime restarted or down while the agent runs, and runtime detection.
//! Each test here starts and stops its own agent, so the tests of this binary run one at a time.

use nodeward_testkit as support;

use std::time::Duration;

use support::agent::AgentProcess;
use support::kubelet::{ContainerSpec, Kubelet, PodSpec, RestartPolicy};
use support::testbed::TestBed;
use support::wait;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

fn job(name: &str, main_script: &str) -> PodSpec {
    PodSpec::new(name)
        .restart_policy(RestartPolicy::Never)
        .announce_restart_policy()
        .container(ContainerSpec::sh("main", main_script))
        .container(
            ContainerSpec::sh("proxy", "trap 'exit 0' TERM; sleep 100000 & wait")
                .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_started_after_main_exited_uses_relist() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let pod = Kubelet::run_pod(tb, job("late-agent", "exit 0"))
        .await
        .unwrap();
    pod.wait_exited("main").await.unwrap();
    let agent = AgentProcess::spawn(tb, &[]).unwrap();
    let line = agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(line["sidecar_exit_code"], 0, "{line}");
    assert!(pod.container("proxy").await.unwrap().is_exited());
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_restart_while_agent_runs() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let agent = AgentProcess::spawn(tb, &["--relist-interval", "1s"]).unwrap();
    agent.wait_ready().await.unwrap();
    let pod = Kubelet::run_pod(tb, job("restart-runtime", "sleep 6"))
        .await
        .unwrap();
    tb.restart_containerd().await.unwrap();
    // The main exits after the restart; the agent must still see it and stop the sidecar.
    let line = agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(line["sidecar_exit_code"], 0, "{line}");
    pod.remove().await.unwrap();
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_exits_while_containerd_is_down() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let agent = AgentProcess::spawn(tb, &["--relist-interval", "1s"]).unwrap();
    agent.wait_ready().await.unwrap();
    let pod = Kubelet::run_pod(tb, job("runtime-down", "sleep 3"))
        .await
        .unwrap();
    pod.wait_until(
        |p| p.containers.iter().all(|c| c.is_running()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    tb.stop_containerd().await.unwrap();
    agent
        .wait_for("runtime unreachable", Duration::from_secs(20), |v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("unreachable"))
        })
        .await
        .unwrap();
    // The main exits (after ~3 s) while the runtime is down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    tb.start_containerd().await.unwrap();
    let line = agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(line["sidecar_exit_code"], 0, "{line}");
    pod.remove().await.unwrap();
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_runtime_dir_and_waits_for_a_runtime_naming_every_path() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    // Probing finds <runtime-dir>/containerd/containerd.sock.
    let dir = tb.runtime_dir();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let sock = state.path().join("agent.sock");
    let common = [
        "--state-dir",
        state_dir,
        "--api-socket",
        sock.to_str().unwrap(),
        "--addr",
        "off",
    ];
    let agent = AgentProcess::spawn_args(
        &[&["--runtime-dir", dir.to_str().unwrap()][..], &common[..]].concat(),
    )
    .unwrap();
    let line = agent
        .wait_for("runtime connected", Duration::from_secs(10), |v| {
            v["message"] == "connected to container runtime"
        })
        .await
        .unwrap();
    assert_eq!(line["runtime"], "containerd", "{line}");
    agent.stop().await.unwrap();

    // None answers (a node booting, the runtime not up yet): the agent stays, alive but not
    // ready, names every path it tried, and connects once a runtime appears.
    let empty = tempfile::tempdir().unwrap();
    let agent = AgentProcess::spawn_args(
        &[
            &["--runtime-dir", empty.path().to_str().unwrap()][..],
            &common[..common.len() - 2],
            &["--addr", "127.0.0.1:0"][..],
        ]
        .concat(),
    )
    .unwrap();
    let line = agent
        .wait_for("waiting for a runtime", Duration::from_secs(10), |v| {
            v["message"] == "no container runtime yet; waiting"
        })
        .await
        .unwrap();
    let error = line["error"].as_str().unwrap_or_default();
    for p in nodeward::cri::connect::PROBE_ORDER {
        assert!(
            error.contains(&format!("{}: no such file", empty.path().join(p).display())),
            "{line}"
        );
    }
    assert_eq!(agent.http_get("/healthz").await.unwrap().0, 200);
    let (code, body) = agent.http_get("/readyz").await.unwrap();
    assert_eq!((code, body.as_str()), (503, "runtime not connected"));
    std::os::unix::fs::symlink(tb.socket(), empty.path().join("containerd.sock")).unwrap();
    agent
        .wait_for("runtime connected", Duration::from_secs(60), |v| {
            v["message"] == "connected to container runtime"
        })
        .await
        .unwrap();
    wait::until("ready", 30, || async {
        (agent.http_get("/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    agent.stop().await.unwrap();
}
