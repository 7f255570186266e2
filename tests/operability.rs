//! The agent's memory and voice against a real containerd: kill -9 at the worst moments, a
//! damaged journal, `nodeward ctl` with and without an agent, the API socket's permissions, and
//! /metrics parsed as Prometheus text. Each test runs its own agent(s) on the shared test bed, so
//! they take turns: two agents would both act on every pod.

use nodeward_testkit as support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::agent::{AgentProcess, agent_binary};
use support::cri_proxy::CriProxy;
use support::kubelet::{ContainerSpec, Kubelet, PodHandle, PodSpec, RestartPolicy};
use support::testbed::TestBed;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

fn job(name: &str, main: &str, sidecar: &str, grace: i64) -> PodSpec {
    PodSpec::new(name)
        .restart_policy(RestartPolicy::Never)
        .announce_restart_policy()
        .grace_seconds(grace)
        .container(ContainerSpec::sh("main", main))
        .container(
            ContainerSpec::sh("proxy", sidecar)
                .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true"),
        )
}

const STUBBORN: &str = "trap '' TERM; while true; do sleep 1; done";
const POLITE: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

/// `nodeward ctl <args>` → (success, stdout, stderr).
fn ctl(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(agent_binary())
        .arg("ctl")
        .arg("--api-socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run nodeward ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn events_json(socket: &Path) -> Vec<Value> {
    let (ok, out, err) = ctl(socket, &["events", "-o", "json"]);
    assert!(ok, "ctl events failed: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events_for(socket: &Path, pod_uid: &str) -> Vec<Value> {
    events_json(socket)
        .into_iter()
        .filter(|e| e["pod_uid"] == pod_uid)
        .collect()
}

/// Run `spec` under an agent, kill -9 the agent one second after it decided to stop the pod's
/// sidecar (which must still run then), and start a new agent on the same state; the pod, the
/// new agent and its state directory.
async fn kill9_once_decided(tb: &TestBed, spec: PodSpec) -> (PodHandle, AgentProcess, PathBuf) {
    let agent = AgentProcess::spawn(tb, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    let state = agent.state_dir().unwrap().to_path_buf();
    let pod = Kubelet::run_pod(tb, spec).await.unwrap();
    let uid = pod.uid().to_string();
    agent
        .wait_for("action decided", Duration::from_secs(20), |v| {
            v["message"] == "action decided" && v["pod_uid"] == uid.as_str()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pod.container("proxy").await.unwrap().is_running());
    agent.kill9();
    let agent = AgentProcess::spawn_in(tb, &state, &[]).unwrap();
    (pod, agent, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_grace_resumes_and_records_one_action() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    // In the middle of the grace period: the sidecar ignores SIGTERM and is still running.
    let (pod, agent, state) =
        kill9_once_decided(tb, job("kill-in-grace", "sleep 1", STUBBORN, 6)).await;
    let uid = pod.uid().to_string();
    agent
        .wait_for("resume", Duration::from_secs(20), |v| {
            v["message"] == "resuming an action decided before the restart"
                && v["pod_uid"] == uid.as_str()
        })
        .await
        .unwrap();
    let side = pod
        .wait_until(
            |p| p.container("proxy").is_some_and(|c| c.is_exited()),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(side.container("proxy").unwrap().exit_code, 137);
    let socket = agent.api_socket().unwrap();
    let mut events = Vec::new();
    for _ in 0..100 {
        events = events_for(&socket, &uid);
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 1, "exactly one action recorded: {events:?}");
    assert_eq!(events[0]["result"], "stopped");
    // Restarting again repeats nothing.
    agent.kill9();
    let agent = AgentProcess::spawn_in(tb, &state, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        agent
            .messages("resuming an action decided before the restart")
            .is_empty()
    );
    assert!(agent.messages("sidecar stopped").is_empty());
    assert_eq!(events_for(&agent.api_socket().unwrap(), &uid).len(), 1);
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

/// A kill -9 while the sidecar's preStop hook runs: the restarted agent finishes the stop with
/// the grace left but does not run the hook again (at most once, as the kubelet and the CRR
/// executor do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_the_prestop_hook_does_not_run_it_again() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let spec = PodSpec::new("kill-in-hook")
        .restart_policy(RestartPolicy::Never)
        .announce_restart_policy()
        .grace_seconds(40)
        .container(ContainerSpec::sh("main", "sleep 1"))
        .container(
            ContainerSpec::sh("proxy", POLITE)
                .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true")
                .pre_stop_exec(["sleep", "30"]),
        );
    // The hook (30 s) is running: the sidecar has not been signalled yet.
    let (pod, agent, _) = kill9_once_decided(tb, spec).await;
    let uid = pod.uid().to_string();
    let line = agent
        .wait_for("the resumed stop", Duration::from_secs(20), |v| {
            v["message"] == "sidecar stopped" && v["pod_uid"] == uid.as_str()
        })
        .await
        .unwrap();
    assert_eq!(line["prestop"], "not run again (resumed)", "{line}");
    let side = pod
        .wait_until(
            |p| p.container("proxy").is_some_and(|c| c.is_exited()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(side.container("proxy").unwrap().exit_code, 0);
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

/// The agent needs no capability (the proof behind the DaemonSet's `drop: [ALL]`, the hostpid
/// component and the unit's empty bounding set): as root with none, it reads the runtime socket,
/// opens pidfds of container processes, reads their cgroups and keeps its journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_capabilities_stops_sidecars_through_pidfds() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let agent = AgentProcess::spawn_without_capabilities(tb, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    let pod = Kubelet::run_pod(tb, job("nocaps", "sleep 3; exit 0", POLITE, 30))
        .await
        .unwrap();
    // Both containers are watched through pidfds while they run.
    let mut watched = 0.0;
    for _ in 0..50 {
        let (_, metrics) = agent.http_get("/metrics").await.unwrap();
        watched = metrics
            .lines()
            .find(|l| l.starts_with("nodeward_watched_containers{mechanism=\"pidfd\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if watched >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        watched >= 2.0,
        "{watched} containers watched through pidfds"
    );
    let line = agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(line["exit_to_stop_ms"].as_f64().unwrap() < 500.0, "{line}");
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_decision_and_stop_container() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let state = tb.dir().join("failpoint-agent");
    let agent =
        AgentProcess::spawn_in_env(tb, &state, &[], &[("NODEWARD_FAILPOINT", "after-decide")])
            .unwrap();
    agent.wait_ready().await.unwrap();
    let pod = Kubelet::run_pod(tb, job("kill-after-decide", "sleep 1", POLITE, 30))
        .await
        .unwrap();
    let status = agent.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(!status.success(), "the failpoint aborts the agent");
    assert!(pod.container("proxy").await.unwrap().is_running());

    let agent = AgentProcess::spawn_in(tb, &state, &[]).unwrap();
    let line = agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(line["sidecar_exit_code"], 0, "{line}");
    assert_eq!(
        agent
            .messages("resuming an action decided before the restart")
            .len(),
        1
    );
    assert_eq!(events_for(&agent.api_socket().unwrap(), pod.uid()).len(), 1);
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_journal_is_moved_aside() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    for (name, content) in [
        (
            "garbage",
            b"this is not a redb file at all, just garbage bytes".repeat(100),
        ),
        ("empty", Vec::new()),
    ] {
        let state = tb.dir().join(format!("damaged-{name}"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("journal.redb"), &content).unwrap();
        let agent = AgentProcess::spawn_in(tb, &state, &[]).unwrap();
        agent.wait_ready().await.unwrap();
        if !content.is_empty() {
            let line = agent
                .wait_for("moved aside", Duration::from_secs(5), |v| {
                    v["level"] == "ERROR" && v["message"].as_str().unwrap().contains("moved aside")
                })
                .await
                .unwrap();
            let moved = line["moved_to"].as_str().unwrap();
            assert_eq!(std::fs::read(moved).unwrap(), content);
        }
        agent.stop().await.unwrap();
    }
    // Truncated: a real journal cut in half.
    let state = tb.dir().join("damaged-truncated");
    let agent = AgentProcess::spawn_in(tb, &state, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    agent.stop().await.unwrap();
    let file = state.join("journal.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let agent = AgentProcess::spawn_in(tb, &state, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_against_live_agent_and_none() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let agent = AgentProcess::spawn(tb, &["--node-name", "node-a"]).unwrap();
    agent.wait_ready().await.unwrap();
    let socket = agent.api_socket().unwrap();
    // Root-only socket.
    assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);

    let pod = Kubelet::run_pod(tb, job("ctl-pod", "sleep 1", POLITE, 30))
        .await
        .unwrap();
    agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(20))
        .await
        .unwrap();

    let (ok, out, err) = ctl(&socket, &["status", "-o", "json"]);
    assert!(ok, "{err}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["node"], "node-a");
    assert_eq!(st["mode"], "standalone");
    assert_eq!(st["runtime_name"], "containerd");
    assert_eq!(st["ready"], true);
    let names: Vec<&str> = st["watchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pidfd", "cgroup", "relist"]);

    let (ok, out, _) = ctl(&socket, &["status"]);
    assert!(
        ok && out.contains("containerd") && out.contains("watch pidfd"),
        "{out}"
    );

    let (ok, out, err) = ctl(&socket, &["pods", "-o", "json"]);
    assert!(ok, "{err}");
    let pods: Value = serde_json::from_str(&out).unwrap();
    let p = pods
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["uid"] == pod.uid())
        .unwrap();
    assert_eq!(p["restart_policy"], "Never");
    let roles: Vec<(&str, &str)> = p["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("main", "main"), ("proxy", "sidecar")]);

    let (ok, out, _) = ctl(&socket, &["pods"]);
    assert!(
        ok && out.starts_with("NAMESPACE") && out.contains("ctl-pod"),
        "{out}"
    );

    let events = events_for(&socket, pod.uid());
    assert_eq!(events.len(), 1);
    let c = &events[0]["containers"][0];
    assert_eq!(c["name"], "proxy");
    assert_eq!(c["exit_code"], 0);
    assert!(c["exit_to_stop_ms"].as_f64().is_some());

    let (ok, out, _) = ctl(&socket, &["events"]);
    assert!(
        ok && out.starts_with("SEQ") && out.contains("default/ctl-pod"),
        "{out}"
    );

    // --follow streams the backlog, then new events; here: the backlog, then we stop it.
    let mut follow = Command::new(agent_binary())
        .args([
            "ctl",
            "--api-socket",
            socket.to_str().unwrap(),
            "events",
            "--follow",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(first.contains("stop_sidecar"), "{first}");

    // Not accessible to others.
    let (ok, _, err) = {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(agent_binary())
            .args(["ctl", "--api-socket", socket.to_str().unwrap(), "status"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!ok && err.contains("permission denied"), "{err}");

    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
    // The socket is removed on shutdown: a clear message, not a gRPC error.
    let (ok, _, err) = ctl(&socket, &["status"]);
    assert!(!ok && err.contains("not running"), "{err}");
    let (ok, _, err) = ctl(Path::new("/nonexistent/agent.sock"), &["pods"]);
    assert!(!ok && err.contains("not running"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let agent = AgentProcess::spawn(tb, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    let pod = Kubelet::run_pod(tb, job("metrics-pod", "sleep 1", POLITE, 30))
        .await
        .unwrap();
    agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        agent.http_get("/healthz").await.unwrap(),
        (200, "ok".into())
    );
    assert_eq!(agent.http_get("/readyz").await.unwrap(), (200, "ok".into()));
    let (status, body) = agent.http_get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            })
            .sum()
    };
    assert!(
        value(
            "nodeward_sidecar_terminations_total",
            Some(("result", "stopped"))
        ) >= 1.0,
        "{body}"
    );
    assert!(
        value(
            "nodeward_cri_requests_total",
            Some(("method", "StopContainer"))
        ) >= 1.0,
        "{body}"
    );
    assert!(value("nodeward_exit_events_total", None) >= 1.0, "{body}");
    assert_eq!(value("nodeward_runtime_connected", None), 1.0, "{body}");
    assert!(
        value("nodeward_relist_last_success_timestamp_seconds", None) > 1.7e9,
        "{body}"
    );
    assert!(value("nodeward_journal_events", None) >= 1.0, "{body}");
    assert!(
        scrape.samples.iter().any(|s| s
            .metric
            .starts_with("nodeward_sidecar_termination_latency_seconds")),
        "{body}"
    );
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

/// Open `n` TCP connections to `addr` that send nothing (each given 3 s to connect; past the
/// agent's accept backlog some never do); the ones that connected.
async fn idle_connections(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let connects = (0..n).map(|_| async move {
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()
    });
    futures::future::join_all(connects)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// 2 000 idle clients on the agent's HTTP port (hostNetwork: anything that reaches the node can
/// connect) hold at most its 64 connection slots: the agent's descriptors stay bounded, and CRI
/// calls and pidfds go on, so a sidecar is stopped as fast as without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_starve_neither_cri_calls_nor_pidfds() {
    let _serial = SERIAL.lock().await;
    let _ = nodeward::telemetry::nofile::raise();
    let tb = TestBed::shared();
    let agent = AgentProcess::spawn(tb, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    let addr = agent.metrics_addr().await.unwrap();
    let baseline = agent.open_fds();
    let idle = idle_connections(&addr, 2000).await;
    assert!(idle.len() >= 64, "{} connected", idle.len());
    let pod = Kubelet::run_pod(tb, job("idle-clients", "sleep 2; exit 0", POLITE, 30))
        .await
        .unwrap();
    let line = agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(line["exit_to_stop_ms"].as_f64().unwrap() < 500.0, "{line}");
    let held = agent.open_fds();
    assert!(
        held <= baseline + 64 + 16,
        "{held} descriptors open (baseline {baseline}) with {} idle clients",
        idle.len()
    );
    drop(idle);
    assert_eq!(
        agent.http_get("/healthz").await.unwrap(),
        (200, "ok".into())
    );
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

/// An agent out of file descriptors counts each failure by operation
/// (`nodeward_open_files_exhausted_total`), keeps serving once descriptors are free again, and
/// says so in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_is_counted() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let probe = AgentProcess::spawn(tb, &[]).unwrap();
    probe.wait_ready().await.unwrap();
    let baseline = u32::try_from(probe.open_fds()).unwrap();
    probe.stop().await.unwrap();
    let agent = AgentProcess::spawn_with_fd_limit(tb, baseline + 8, &[]).unwrap();
    agent.wait_ready().await.unwrap();
    let addr = agent.metrics_addr().await.unwrap();
    let idle = idle_connections(&addr, 40).await;
    agent
        .wait_for(
            "an accept refused for want of descriptors",
            Duration::from_secs(10),
            |v| v["message"] == "accepting an HTTP connection failed",
        )
        .await
        .unwrap();
    drop(idle);
    let (status, body) = agent.http_get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let count = body
        .lines()
        .find(|l| l.starts_with("nodeward_open_files_exhausted_total{operation=\"http_accept\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok());
    assert!(count.is_some_and(|c| c >= 1.0), "{count:?}");
    agent.stop().await.unwrap();
}

/// A StopContainer the runtime never answers ends at its deadline (the grace + 30 s) instead of
/// holding the sidecar's stop forever, and is retried at the next relist: the sidecar is stopped
/// and the action completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_stop_is_retried_after_its_deadline() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let state = tb.dir().join(format!("hung-stop-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let proxy = CriProxy::start(&tb.socket(), &state.join("cri.sock")).unwrap();
    proxy.hang("stop_container", Some(1));
    let agent =
        AgentProcess::spawn_on(tb, proxy.socket(), &state, &["--relist-interval", "1s"]).unwrap();
    agent.wait_ready().await.unwrap();
    let pod = Kubelet::run_pod(tb, job("hung-stop", "sleep 1; exit 0", POLITE, 2))
        .await
        .unwrap();
    agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(proxy.hung(), 1);
    let failed = agent.messages("stopping sidecar failed; retrying at the next relist");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer")),
        "{failed:?}"
    );
    assert_eq!(agent.messages("sidecar stopped").len(), 1);
    assert!(pod.container("proxy").await.unwrap().is_exited());
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

/// An agent started on a full node reads every container's runtime spec (a verbose
/// ContainerStatus) at most 16 at a time: the runtime answers each in a second, 20 are due at
/// once, and the proxy never sees more than 16 in flight; all are read and the agent is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_status_reads_are_capped_at_sixteen_in_flight() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let state = tb.dir().join(format!("verbose-cap-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let mut spec = PodSpec::new("verbose-cap");
    for i in 0..20 {
        spec = spec.container(ContainerSpec::sh(format!("c{i}"), POLITE));
    }
    let pod = Kubelet::run_pod(tb, spec).await.unwrap();
    let proxy = CriProxy::start(&tb.socket(), &state.join("cri.sock")).unwrap();
    proxy.delay_verbose_status(Duration::from_secs(1));
    let agent = AgentProcess::spawn_on(tb, proxy.socket(), &state, &[]).unwrap();
    let ready = agent.wait_ready().await.unwrap();
    assert_eq!(proxy.max_verbose_status_in_flight(), 16);
    assert!(
        ready["running"].as_u64().is_some_and(|n| n >= 20),
        "{ready}"
    );
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}

/// `--feature-gates=SidecarTerminator=false` turns the terminator off (a Job's sidecar keeps
/// running after its main exits) and an unknown gate stops the agent at start with the known ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_terminator_gate_turns_it_off() {
    let _serial = SERIAL.lock().await;
    let tb = TestBed::shared();
    let out = Command::new(agent_binary())
        .args([
            "agent",
            "--standalone",
            "--feature-gates",
            "KruiseDaemon=true",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown feature gate \"KruiseDaemon\" (known: SidecarTerminator,"),
        "{err}"
    );
    let agent = AgentProcess::spawn(tb, &["--feature-gates", "SidecarTerminator=false"]).unwrap();
    agent.wait_ready().await.unwrap();
    let pod = Kubelet::run_pod(tb, job("gate-off", "exit 0", POLITE, 2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pod.container("main").await.unwrap().is_exited());
    assert!(pod.container("proxy").await.unwrap().is_running());
    assert!(agent.messages("sidecar stopped").is_empty());
    agent.stop().await.unwrap();
    pod.remove().await.unwrap();
}
