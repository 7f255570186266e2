//! Job sidecar termination on the real single-node Kubernetes (`scripts/cluster.sh`, started or
//! reused): N Jobs (`NODEWARD_BENCH_JOBS`, default 20) of each of two variants, created
//! interleaved in one namespace, their main containers exiting spread over a few seconds:
//!
//! * `nodeward`: the sidecar marked `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT=true`, stopped by the
//!   nodeward agent running as its DaemonSet pod (deployed from `packaging/kubernetes`);
//! * `native`: the same sidecar as a Kubernetes native sidecar (init container,
//!   `restartPolicy: Always`), stopped by the kubelet (generic PLEG, 1 s relist).
//!
//! Figures per Job, from containerd's own timestamps (CRI `ContainerStatus.finished_at`) and one
//! clock: `stop` = main exited → sidecar exited; `complete` = main exited → the Job's `Complete`
//! condition seen on the bench's watch. Prints `RESULT real_job jobs=N nodeward_stop_p50_ms=…
//! nodeward_stop_p99_ms=… native_stop_p50_ms=… native_stop_p99_ms=… nodeward_complete_p50_ms=…
//! nodeward_complete_p99_ms=… native_complete_p50_ms=… native_complete_p99_ms=… ratio_stop_p99=…
//! ratio_complete_p50=…`.

use nodeward_testkit as support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::bench::{env_or, percentile};
use support::k8s::RealCluster;

const NS: &str = "bench-real-job";
const SIDECAR: &str = "trap 'exit 0' TERM; sleep 100000 & wait";
const VARIANTS: [&str; 2] = ["nodeward", "native"];

fn job(cluster: &RealCluster, variant: &str, i: usize, sleep_ms: u64) -> Job {
    let busybox = cluster.image("busybox:1");
    let main = json!({"name": "main", "image": busybox,
        "command": ["sh", "-c", format!("sleep {}.{:03}", sleep_ms / 1000, sleep_ms % 1000)]});
    let sidecar = json!({"name": "proxy", "image": busybox, "command": ["sh", "-c", SIDECAR]});
    let spec = match variant {
        "nodeward" => {
            let mut sidecar = sidecar;
            sidecar["env"] =
                json!([{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", "value": "true"}]);
            json!({"containers": [main, sidecar]})
        }
        _ => {
            let mut sidecar = sidecar;
            sidecar["restartPolicy"] = json!("Always");
            json!({"initContainers": [sidecar], "containers": [main]})
        }
    };
    let mut spec: Value = spec;
    spec["restartPolicy"] = json!("Never");
    spec["terminationGracePeriodSeconds"] = json!(10);
    serde_json::from_value(json!({
        "metadata": {"name": format!("{variant}-{i}"), "labels": {"variant": variant}},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    }))
    .expect("job object")
}

fn ms_between(earlier_ns: i64, later_ns: i64) -> f64 {
    (later_ns - earlier_ns) as f64 / 1e6
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

async fn run() -> Result<()> {
    let n: usize = env_or("NODEWARD_BENCH_JOBS", 20);
    let cluster = tokio::task::spawn_blocking(|| {
        let cluster = RealCluster::shared();
        cluster.deploy_nodeward();
        cluster
    })
    .await?;
    let client = cluster.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NS).await?.is_some() {
        namespaces.delete(NS, &DeleteParams::default()).await?;
        while namespaces.get_opt(NS).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    while Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), NS)
        .get_opt("default")
        .await?
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The watch records when each Job is first seen Complete.
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let complete: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let seen = complete.clone();
    let stream = watcher(jobs.clone(), watcher::Config::default()).applied_objects();
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(job)) = stream.next().await {
            let done = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Complete" && c.status == "True")
                });
            if done {
                seen.lock()
                    .unwrap()
                    .entry(job.name_any())
                    .or_insert_with(now_ns);
            }
        }
    });

    // Mains exit 6–10 s after creation (all pods are running by then), spread so that exits do
    // not all land in one relist period.
    for i in 0..n {
        for variant in VARIANTS {
            let sleep_ms = 6000 + (i as u64 * 4000) / n.max(1) as u64;
            jobs.create(&PostParams::default(), &job(cluster, variant, i, sleep_ms))
                .await?;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180 + 5 * n as u64);
    while complete.lock().unwrap().len() < 2 * n {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only {} of {} Jobs completed",
                complete.lock().unwrap().len(),
                2 * n
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.abort();

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut stop: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut done: HashMap<&str, Vec<f64>> = HashMap::new();
    let complete = complete.lock().unwrap().clone();
    for pod in pods.list(&ListParams::default()).await?.items {
        let job = pod
            .labels()
            .get("job-name")
            .cloned()
            .context("pod without job-name")?;
        let variant = VARIANTS
            .into_iter()
            .find(|v| job.starts_with(&format!("{v}-")))
            .context("unknown variant")?;
        let statuses = cluster.runtime_statuses(&pod.uid().context("uid")?).await?;
        let finished = |name: &str| {
            statuses
                .get(name)
                .map(|s| s.finished_at)
                .context("no status")
        };
        let (main, proxy) = (finished("main")?, finished("proxy")?);
        stop.entry(variant)
            .or_default()
            .push(ms_between(main, proxy));
        done.entry(variant)
            .or_default()
            .push(ms_between(main, complete[&job]));
    }
    for xs in stop.values_mut().chain(done.values_mut()) {
        xs.sort_by(f64::total_cmp);
    }
    let stat = |m: &HashMap<&str, Vec<f64>>, v: &str, p: f64| {
        m.get(v).map_or(f64::NAN, |xs| percentile(xs, p))
    };
    let (ns50, ns99) = (stat(&stop, "nodeward", 50.0), stat(&stop, "nodeward", 99.0));
    let (vs50, vs99) = (stat(&stop, "native", 50.0), stat(&stop, "native", 99.0));
    let (nc50, nc99) = (stat(&done, "nodeward", 50.0), stat(&done, "nodeward", 99.0));
    let (vc50, vc99) = (stat(&done, "native", 50.0), stat(&done, "native", 99.0));
    println!(
        "RESULT real_job jobs={n} nodeward_stop_p50_ms={ns50:.1} nodeward_stop_p99_ms={ns99:.1} \
         native_stop_p50_ms={vs50:.1} native_stop_p99_ms={vs99:.1} nodeward_complete_p50_ms={nc50:.1} \
         nodeward_complete_p99_ms={nc99:.1} native_complete_p50_ms={vc50:.1} native_complete_p99_ms={vc99:.1} \
         ratio_stop_p99={:.3} ratio_complete_p50={:.3}",
        ns99 / vs99,
        nc50 / vc50
    );
    namespaces.delete(NS, &DeleteParams::default()).await?;
    Ok(())
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
