//! Sidecar termination latency: nodeward vs the ideal floor, side by side in one run.
//!
//! Starts its own test bed (containerd + registry), then runs N concurrent Job pods (main exits,
//! sidecar traps SIGTERM and exits 0) twice, alternating:
//! - **agent**: the `nodeward agent` binary stops the sidecars;
//! - **floor**: the benchmark itself waits on each main container's pidfd and calls StopContainer at once.
//!
//! The latency of one pod is the sidecar's CRI `finishedAt` minus the main container's `finishedAt`.
//! Prints one line: `RESULT sidecar_termination pods=… agent_p50_ms=… …`.
//!
//! The agent runs at nice -10, as the systemd unit ships it (`Nice=-10`), and so does the
//! benchmark process that plays the floor: `NODEWARD_BENCH_AGENT_NICE` (0 = as the runtime).

use nodeward_testkit as support;

use support::bench::{env_or, percentile, renice};

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::try_join_all;
use nodeward::cri::CriClient;
use nodeward::node::pidfd::ContainerPidfd;
use support::agent::AgentProcess;
use support::kubelet::{ContainerSpec, Kubelet, PodHandle, PodSpec, RestartPolicy};
use support::testbed::TestBed;

/// Main containers run 3 s plus `stagger × i`, so the pods run concurrently while their mains exit
/// a little apart, as real Jobs do; `NODEWARD_BENCH_STAGGER_MS=0` makes them all exit at once.
fn job(round: &str, i: usize, stagger_ms: u64) -> PodSpec {
    let main = format!("sleep {:.3}", 3.0 + (stagger_ms * i as u64) as f64 / 1000.0);
    PodSpec::new(format!("bench-{round}-{i}"))
        .restart_policy(RestartPolicy::Never)
        .announce_restart_policy()
        .container(ContainerSpec::sh("main", &main))
        .container(
            ContainerSpec::sh("proxy", "trap 'exit 0' TERM; sleep 100000 & wait")
                .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true"),
        )
}

async fn start_pods(tb: &'static TestBed, round: &str, n: usize) -> anyhow::Result<Vec<PodHandle>> {
    let stagger = stagger_ms();
    let pods = try_join_all((0..n).map(|i| Kubelet::run_pod(tb, job(round, i, stagger)))).await?;
    Ok(pods)
}

/// Wait until every pod's sidecar exited, then return sidecar.finishedAt - main.finishedAt per pod.
async fn latencies(pods: &[PodHandle]) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for pod in pods {
        pod.wait_until(
            |p| p.containers.iter().filter(|c| c.is_exited()).count() == 2,
            Duration::from_secs(90),
        )
        .await
        .with_context(|| format!("pod {} did not finish", pod.uid()))?;
        let main = pod.container("main").await?;
        let side = pod.container("proxy").await?;
        if side.exit_code != 0 {
            bail!("sidecar of {} exited {}", pod.uid(), side.exit_code);
        }
        out.push((side.finished_at - main.finished_at) as f64 / 1e6);
    }
    Ok(out)
}

async fn remove(pods: Vec<PodHandle>) -> anyhow::Result<()> {
    try_join_all(pods.into_iter().map(|p| p.remove())).await?;
    Ok(())
}

struct AgentRound {
    latencies: Vec<f64>,
    rss_kib: u64,
    cpu_ms: u64,
}

async fn agent_round(
    tb: &'static TestBed,
    round: usize,
    n: usize,
    nice: i32,
) -> anyhow::Result<AgentRound> {
    let agent = AgentProcess::spawn(tb, &[])?;
    agent.wait_ready().await?;
    renice(agent.pid(), nice, |_| true)?;
    let pods = start_pods(tb, &format!("agent{round}"), n).await?;
    let latencies = latencies(&pods).await?;
    let rss_kib = agent.peak_rss_kib().unwrap_or(0);
    let cpu_ms = agent.cpu_ms().unwrap_or(0);
    agent.stop().await?;
    remove(pods).await?;
    Ok(AgentRound {
        latencies,
        rss_kib,
        cpu_ms,
    })
}

/// The ideal floor: wake on the main's pidfd and call StopContainer for the sidecar at once.
async fn floor_round(tb: &'static TestBed, round: usize, n: usize) -> anyhow::Result<Vec<f64>> {
    let cri = CriClient::new(nodeward::cri::channel(&tb.socket()));
    let pods = start_pods(tb, &format!("floor{round}"), n).await?;
    let mut waiters = Vec::new();
    for pod in &pods {
        pod.wait_until(
            |p| p.containers.iter().filter(|c| c.is_running()).count() == 2,
            Duration::from_secs(30),
        )
        .await?;
        let main = pod.container("main").await?;
        let side = pod.container("proxy").await?;
        let (_, info) = cri.container_status(&main.id, true).await?;
        let pid = info.pid.context("main container pid")?;
        let fd = ContainerPidfd::open(pid, &main.id, Path::new("/proc"))?;
        let cri = cri.clone();
        waiters.push(tokio::spawn(async move {
            fd.exited().await?;
            cri.stop_container(&side.id, Duration::from_secs(30))
                .await?;
            anyhow::Ok(())
        }));
    }
    for w in waiters {
        w.await??;
    }
    let lat = latencies(&pods).await?;
    remove(pods).await?;
    Ok(lat)
}

fn stagger_ms() -> u64 {
    std::env::var("NODEWARD_BENCH_STAGGER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn main() -> anyhow::Result<()> {
    let n = env_or("NODEWARD_BENCH_PODS", 20usize);
    let rounds = env_or("NODEWARD_BENCH_ROUNDS", 1usize);
    let nice: i32 = env_or("NODEWARD_BENCH_AGENT_NICE", -10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!(
        "sidecar_termination: {n} pods x {rounds} round(s), main exits staggered by {} ms, agent and floor nice {nice}",
        stagger_ms()
    );
    rt.block_on(async {
        let tb = TestBed::shared();
        renice(std::process::id(), nice, |_| true)?;
        let (mut agent, mut floor) = (Vec::new(), Vec::new());
        let (mut rss, mut cpu) = (0u64, 0u64);
        for round in 0..rounds {
            let a = agent_round(tb, round, n, nice).await?;
            agent.extend(a.latencies);
            rss = rss.max(a.rss_kib);
            cpu += a.cpu_ms;
            floor.extend(floor_round(tb, round, n).await?);
        }
        agent.sort_by(f64::total_cmp);
        floor.sort_by(f64::total_cmp);
        let (a50, a99) = (percentile(&agent, 50.0), percentile(&agent, 99.0));
        let (f50, f99) = (percentile(&floor, 50.0), percentile(&floor, 99.0));
        println!(
            "RESULT sidecar_termination pods={n} agent_p50_ms={a50:.2} agent_p99_ms={a99:.2} floor_p50_ms={f50:.2} floor_p99_ms={f99:.2} ratio_p99={:.2} agent_rss_mib={:.1} agent_cpu_ms={}",
            a99 / f99,
            rss as f64 / 1024.0,
            cpu / rounds as u64,
        );
        tb.shutdown().await?;
        anyhow::Ok(())
    })
}
