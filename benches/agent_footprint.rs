//! Agent footprint on a busy node: a test bed with 125 pods × 2 containers (250 containers), then
//! the agent is started; prints how long it takes to be ready, and its RSS and CPU while idling.
//! Prints one line: `RESULT agent_footprint containers=… ready_ms=… rss_mib=… cpu_pct=…
//! pidfd_watched=…`. `NODEWARD_BENCH_PODS` pods of one main and `NODEWARD_BENCH_SIDECARS`
//! sidecars each (default 1); containerd's own descriptors cap a test bed near a thousand pods, so
//! 2 000 containers are 667 pods × (1 + 2).

use nodeward_testkit as support;

use support::bench::env_or;

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use support::agent::AgentProcess;
use support::kubelet::{ContainerSpec, Kubelet, PodHandle, PodSpec, RestartPolicy};
use support::testbed::TestBed;

fn pod(i: usize, sidecars: usize) -> PodSpec {
    let mut spec = PodSpec::new(format!("idle-{i}"))
        .restart_policy(RestartPolicy::Never)
        .announce_restart_policy()
        .container(ContainerSpec::new("main", "busybox").command(["sleep", "100000"]));
    for s in 0..sidecars {
        spec = spec.container(
            ContainerSpec::new(format!("proxy-{s}"), "busybox")
                .command(["sleep", "100000"])
                .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true"),
        );
    }
    spec
}

fn main() -> anyhow::Result<()> {
    let pods = env_or("NODEWARD_BENCH_PODS", 125usize);
    let sidecars = env_or("NODEWARD_BENCH_SIDECARS", 1usize);
    let containers = pods * (1 + sidecars);
    let idle = Duration::from_secs(env_or("NODEWARD_BENCH_IDLE_S", 60));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tb = TestBed::shared();
        let t = Instant::now();
        let handles: Vec<PodHandle> = stream::iter(0..pods)
            .map(|i| Kubelet::run_pod(tb, pod(i, sidecars)))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        eprintln!(
            "agent_footprint: {} pods ({} containers) running after {:?}; idling {:?}",
            pods,
            containers,
            t.elapsed(),
            idle
        );
        let start = Instant::now();
        let agent = AgentProcess::spawn(tb, &[])?;
        let ready = agent.wait_ready().await?;
        let ready_ms = start.elapsed().as_millis();
        let watched = ready["pidfd_watched"].as_u64().unwrap_or(0);
        let cpu0 = agent.cpu_ms().unwrap_or(0);
        let t0 = Instant::now();
        tokio::time::sleep(idle).await;
        let cpu_pct = (agent.cpu_ms().unwrap_or(0) - cpu0) as f64 / t0.elapsed().as_millis() as f64 * 100.0;
        let rss_kib = agent.peak_rss_kib().unwrap_or(0);
        println!(
            "RESULT agent_footprint containers={containers} ready_ms={ready_ms} rss_mib={:.1} cpu_pct={cpu_pct:.2} pidfd_watched={watched}",
            rss_kib as f64 / 1024.0
        );
        agent.stop().await?;
        stream::iter(handles)
            .map(|h| h.remove())
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        tb.shutdown().await?;
        anyhow::Ok(())
    })
}
