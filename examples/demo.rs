//! The README's demo: a private containerd + registry, the agent, and one Job-like pod whose main
//! container finishes while its sidecar would run forever. Shows the agent stopping the sidecar.
//! Run through `./scripts/demo.sh` (it builds the agent and sets `NODEWARD_BIN`).

use nodeward_testkit as support;

use std::time::Duration;

use support::agent::AgentProcess;
use support::kubelet::{ContainerSpec, Kubelet, PodSpec, RestartPolicy};
use support::testbed::TestBed;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "==> starting a private containerd and a local registry (images built from busybox-static)"
    );
    let tb = TestBed::start().await?;
    println!("    containerd socket: {}", tb.socket().display());
    println!("    images:            {}", tb.image("busybox"));

    println!(
        "==> starting the agent: nodeward agent --cri-socket {}",
        tb.socket().display()
    );
    let agent = AgentProcess::spawn(&tb, &[])?;
    let ready = agent.wait_ready().await?;
    println!("    ready in {} ms", ready["ready_ms"]);

    println!("==> launching Job pod demo/report-1 (restartPolicy Never)");
    println!("    main:  sh -c 'echo computing; sleep 3; echo done'");
    println!(
        "    proxy: a sidecar that would run forever, env KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT=true"
    );
    let spec = PodSpec::new("report-1")
        .namespace("demo")
        .restart_policy(RestartPolicy::Never)
        .announce_restart_policy()
        .container(ContainerSpec::sh(
            "main",
            "echo computing; sleep 3; echo done",
        ))
        .container(
            ContainerSpec::sh("proxy", "trap 'exit 0' TERM; sleep 100000 & wait")
                .env("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "true"),
        );
    let pod = Kubelet::run_pod(&tb, spec).await?;
    let line = agent
        .wait_stopped(pod.uid(), "proxy", Duration::from_secs(60))
        .await?;
    let status = pod
        .wait_until(
            |p| p.containers.iter().all(|c| c.is_exited()),
            Duration::from_secs(30),
        )
        .await?;
    println!("==> pod demo/report-1 after the agent acted:");
    println!(
        "    {:<8} {:<8} {:>4}  finished",
        "container", "state", "exit"
    );
    for c in &status.containers {
        println!(
            "    {:<8} {:<8} {:>4}  {}",
            c.name,
            "exited",
            c.exit_code,
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_nanos(c.finished_at as u64)
            )
        );
    }
    println!("==> agent log line for the action:");
    println!("    {line}");
    println!(
        "==> main container exit -> StopContainer sent: {} ms; -> sidecar exited: {} ms (kruise-daemon's path needs >= 2 kubelet relists of 1 s)",
        line["exit_to_stop_ms"], line["exit_to_sidecar_exit_ms"]
    );
    pod.remove().await?;
    agent.stop().await?;
    println!("==> cleaning up");
    tb.shutdown().await?;
    println!("done");
    Ok(())
}
