//! The agent under a service manager's eyes, against the real containerd: READY=1 once it is
//! connected and synchronised, WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1 on SIGTERM — read from
//! a NOTIFY_SOCKET datagram socket as systemd would. And `--check-config` exit codes.

use nodeward_testkit as support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use support::agent::{AgentProcess, agent_binary};
use support::cri_proxy::CriProxy;
use support::testbed::TestBed;
use support::wait;

/// Datagrams received on `sock` until `until` holds for the ones so far or `timeout` passes.
fn collect(
    sock: &UnixDatagram,
    timeout: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !until(&got) && Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_ready_watchdog_and_stopping() {
    let tb = TestBed::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let agent = AgentProcess::spawn_in_env(
        tb,
        dir.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .unwrap();
    let ready = collect(&sock, Duration::from_secs(20), |g| {
        g.iter().any(|m| m.contains("READY=1"))
    });
    assert!(
        ready.iter().any(|m| m.contains("READY=1")),
        "no READY=1: {ready:?}"
    );
    // The agent logs readiness no later than it tells systemd.
    agent.wait_ready().await.unwrap();
    let start = Instant::now();
    let pings = collect(&sock, Duration::from_secs(3), |g| {
        g.iter().filter(|m| *m == "WATCHDOG=1").count() >= 5
    });
    let n = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        n >= 5,
        "expected a ping every 200 ms, got {n} in {:?}",
        start.elapsed()
    );
    // 5 pings at 200 ms take about 0.8-1 s; a ping per WATCHDOG_USEC (400 ms) would take 1.6 s+.
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "pings too slow: {:?}",
        start.elapsed()
    );
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status:?}");
    let rest = collect(&sock, Duration::from_secs(1), |g| {
        g.iter().any(|m| m == "STOPPING=1")
    });
    assert!(
        rest.iter().any(|m| m == "STOPPING=1"),
        "no STOPPING=1: {rest:?}"
    );
}

#[test]
fn check_config_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "addr = \"127.0.0.1:0\"\nrelist-interval = \"5s\"\npods-cgroup = [\"a\"]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "relist-interval = \"5 parsecs\"\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(agent_binary())
            .args(["agent", "--check-config", "--standalone"])
            .args(args)
            .env_remove("NODEWARD_CONFIG")
            .output()
            .unwrap()
    };
    let ok = run(&["--config", good.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration OK"));
    let out = run(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("relist-interval"),
        "{out:?}"
    );
    // A flag overrides the file.
    let out = run(&["--config", bad.to_str().unwrap(), "--relist-interval", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run(&[
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["--addr", "nonsense"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(1));
}

/// A runtime that stops answering (every relist's ListPodSandbox and ListContainers hang) leaves
/// no successful relist: past `--health-stall-after`, `/healthz` answers 500 with the reason and
/// the watchdog goes unpinged, so the kubelet or systemd restarts the agent. Once the runtime
/// answers again (the hung calls end at their 30 s deadline), both come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_runtime_fails_liveness_and_the_watchdog() {
    let tb = TestBed::shared();
    let dir = tempfile::tempdir().unwrap();
    let proxy = CriProxy::start(&tb.socket(), &dir.path().join("cri.sock")).unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let state = dir.path().join("state");
    let agent = AgentProcess::spawn_with(
        tb,
        proxy.socket(),
        &state,
        &["--relist-interval", "500ms", "--health-stall-after", "2s"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    )
    .unwrap();
    agent.wait_ready().await.unwrap();
    assert_eq!(agent.http_get("/healthz").await.unwrap().0, 200);
    proxy.hang("list_pod_sandbox", None);
    proxy.hang("list_containers", None);
    let reason = wait::until("/healthz failing", 30, || async {
        let (code, body) = agent.http_get("/healthz").await.ok()?;
        (code == 500).then_some(body)
    })
    .await;
    assert!(reason.contains("no successful relist"), "{reason}");
    // Pings sent before the stall was seen, then none.
    let _ = collect(&sock, Duration::from_millis(700), |_| false);
    let quiet = collect(&sock, Duration::from_secs(2), |_| false);
    assert!(!quiet.iter().any(|m| m == "WATCHDOG=1"), "{quiet:?}");
    assert!(
        !agent
            .messages("not pinging the systemd watchdog")
            .is_empty()
    );
    proxy.stop_hanging();
    wait::until("/healthz ok again", 90, || async {
        let (code, _) = agent.http_get("/healthz").await.ok()?;
        (code == 200).then_some(())
    })
    .await;
    let pings = collect(&sock, Duration::from_secs(5), |g| {
        g.iter().any(|m| m == "WATCHDOG=1")
    });
    assert!(pings.iter().any(|m| m == "WATCHDOG=1"), "{pings:?}");
    assert!(proxy.hung() >= 1);
    agent.stop().await.unwrap();
}
