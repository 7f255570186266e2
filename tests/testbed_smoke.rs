//! Smoke test of the real-runtime test bed and the kubelet fixture (tests/support).

use nodeward_testkit as support;

use std::time::Duration;

use support::kubelet::{ContainerSpec, Kubelet, PodSpec, RestartPolicy};
use support::testbed::TestBed;

#[tokio::test]
async fn fixture_restarts_per_policy() -> anyhow::Result<()> {
    let bed = TestBed::shared();
    let _access = bed.lock_shared().await;

    let failing = PodSpec::new("smoke-onfailure")
        .restart_policy(RestartPolicy::OnFailure)
        .container(ContainerSpec::sh("main", "sleep 1; exit 1"));
    let completing = PodSpec::new("smoke-never")
        .restart_policy(RestartPolicy::Never)
        .announce_restart_policy()
        .container(ContainerSpec::new("main", "noshell").command(["/sleep", "1"]));
    let (failing, completing) = tokio::try_join!(
        Kubelet::run_pod(bed, failing),
        Kubelet::run_pod(bed, completing)
    )?;

    let status = failing
        .wait_until(
            |pod| pod.container("main").is_some_and(|c| c.restart_count >= 1),
            Duration::from_secs(15),
        )
        .await?;
    let main = status.container("main").expect("waited for it");
    assert_eq!(main.attempt, main.restart_count);

    let status = completing
        .wait_until(
            |pod| pod.container("main").is_some_and(|c| c.is_exited()),
            Duration::from_secs(15),
        )
        .await?;
    let first = status.container("main").expect("waited for it").clone();
    assert_eq!((first.exit_code, first.restart_count), (0, 0), "{first:?}");
    assert!(first.finished_at > first.started_at, "{first:?}");
    // Give a (wrong) restart a few polling periods to happen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = completing.container("main").await?;
    assert_eq!((again.id, again.restart_count), (first.id, 0));

    failing.remove().await?;
    completing.remove().await?;
    Ok(())
}

#[tokio::test]
async fn containers_survive_containerd_restart() -> anyhow::Result<()> {
    let bed = TestBed::shared();
    let _access = bed.lock_exclusive().await;

    let pod = Kubelet::run_pod(
        bed,
        PodSpec::new("smoke-survivor")
            .container(ContainerSpec::sh("main", "sleep 1000").pre_stop_exec(["true"])),
    )
    .await?;
    let before = pod
        .wait_until(
            |pod| pod.container("main").is_some_and(|c| c.is_running()),
            Duration::from_secs(10),
        )
        .await?;
    let before = before.container("main").expect("waited for it").clone();

    let old_pid = bed.containerd_pid();
    bed.restart_containerd().await?;
    assert_ne!(bed.containerd_pid(), old_pid);

    let after = pod.container("main").await?;
    assert!(after.is_running(), "{after:?}");
    assert_eq!((after.id, after.started_at), (before.id, before.started_at));
    pod.remove().await?;
    Ok(())
}
