//! NodePodProbe at load: `NODEWARD_BENCH_PODS` pods (default 200) on the test bed's containerd,
//! each with `NODEWARD_BENCH_PROBES` exec probes (default 2, `true`, period 1 s) in this node's
//! NodePodProbe on the in-memory API server, run by the real agent for `NODEWARD_BENCH_WINDOW_S`
//! seconds (default 30) after a warm-up of two periods. Lateness is a probe's start minus its due
//! time (its period's tick), from the agent's `nodeward_probe_lateness_seconds` histogram (the
//! upper bound of the bucket holding the quantile; buckets grow by 1.5×).
//!
//! The floor, in the same run, before the agent: the same exec probes issued by the least code
//! that can (one tokio task per probe, an interval, CRI ExecSync), its lateness put into the same
//! buckets. Prints `RESULT pod_probe probes=… lateness_p50_ms=… lateness_p99_ms=…
//! agent_rss_mib=… agent_cpu_pct=… floor_p50_ms=… floor_p99_ms=… ratio_p99=…`.

use nodeward_testkit as support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_cri::v1::ExecSyncRequest;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;
use support::agent::AgentProcess;
use support::apiserver::ApiServer;
use support::bench::env_or;
use support::cluster::ClusterPod;
use support::kubelet::{ContainerSpec, PodSpec, RestartPolicy};
use support::rbac;
use support::testbed::TestBed;

const NODE: &str = "node-a";

/// The agent's bucket bounds (seconds): 0.5 ms × 1.5^k, 24 of them.
fn bounds() -> Vec<f64> {
    (0..24).map(|k| 0.0005 * 1.5f64.powi(k)).collect()
}

/// The upper bound (ms) of the bucket holding quantile `q` of cumulative `counts` (by bound).
fn quantile_ms(counts: &BTreeMap<u64, f64>, total: f64, q: f64) -> f64 {
    let want = (q * total).ceil();
    counts
        .iter()
        .find(|(_, c)| **c >= want)
        .map_or(f64::INFINITY, |(le, _)| *le as f64 / 1e6)
}

/// `nodeward_probe_lateness_seconds` buckets from a /metrics text: cumulative counts keyed by
/// the bound in nanoseconds, and the total.
fn scrape(text: &str) -> (BTreeMap<u64, f64>, f64) {
    let mut counts = BTreeMap::new();
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("nodeward_probe_lateness_seconds_bucket{le=\"") else {
            if let Some(n) = line.strip_prefix("nodeward_probe_lateness_seconds_count ") {
                total = n.trim().parse().unwrap_or(0.0);
            }
            continue;
        };
        let Some((le, n)) = rest.split_once("\"} ") else {
            continue;
        };
        let n: f64 = n.trim().parse().unwrap_or(0.0);
        if let Ok(le) = le.parse::<f64>() {
            counts.insert((le * 1e9).round() as u64, n);
        }
    }
    (counts, total)
}

/// Lateness values (seconds) into cumulative counts by the agent's bounds.
fn bucketize(values: &[f64]) -> (BTreeMap<u64, f64>, f64) {
    let mut counts = BTreeMap::new();
    for b in bounds() {
        let n = values.iter().filter(|v| **v <= b).count() as f64;
        counts.insert((b * 1e9).round() as u64, n);
    }
    (counts, values.len() as f64)
}

fn pod(i: usize) -> PodSpec {
    PodSpec::new(format!("probed-{i}"))
        .restart_policy(RestartPolicy::Always)
        .container(ContainerSpec::new("app", "busybox").command(["sleep", "100000"]))
}

fn main() -> anyhow::Result<()> {
    let pods = env_or("NODEWARD_BENCH_PODS", 200usize);
    let per_pod = env_or("NODEWARD_BENCH_PROBES", 2usize);
    let window = Duration::from_secs(env_or("NODEWARD_BENCH_WINDOW_S", 30));
    let probes = pods * per_pod;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tb = TestBed::shared();
        let api = ApiServer::start().await?;
        let t = Instant::now();
        let running: Vec<ClusterPod> = stream::iter(0..pods)
            .map(|i| ClusterPod::run(tb, api.client(), NODE, pod(i)))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        eprintln!("pod_probe: {pods} pods running after {:?}", t.elapsed());

        // The floor: the same probes from one task each, an interval and ExecSync.
        let mut containers = Vec::new();
        for p in &running {
            containers.push(p.handle.container("app").await?.id);
        }
        let until = Instant::now() + window + Duration::from_secs(2);
        let tasks: Vec<_> = containers
            .iter()
            .flat_map(|id| std::iter::repeat_n(id.clone(), per_pod))
            .enumerate()
            .map(|(i, id)| {
                let mut cri = tb.cri();
                tokio::spawn(async move {
                    // Spread over the period, as the agent's jitter does.
                    let offset = Duration::from_millis((i as u64 * 997) % 1000);
                    let start = tokio::time::Instant::now() + offset;
                    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut late = Vec::new();
                    while Instant::now() < until {
                        let due = tick.tick().await;
                        late.push(due.elapsed().as_secs_f64());
                        let _ = cri
                            .exec_sync(ExecSyncRequest {
                                container_id: id.clone(),
                                cmd: vec!["true".into()],
                                timeout: 1,
                            })
                            .await;
                    }
                    late
                })
            })
            .collect();
        let mut floor = Vec::new();
        for t in tasks {
            // The first two periods warm up, as the agent's do.
            floor.extend(t.await?.into_iter().skip(2));
        }
        let (floor_counts, floor_total) = bucketize(&floor);
        let floor_p50 = quantile_ms(&floor_counts, floor_total, 0.50);
        let floor_p99 = quantile_ms(&floor_counts, floor_total, 0.99);
        eprintln!("pod_probe: floor {} probes, p50 ≤ {floor_p50:.1} ms, p99 ≤ {floor_p99:.1} ms", floor.len());

        // The agent.
        let kc = api.service_account_kubeconfig(tb.dir(), rbac::AGENT)?;
        let agent = AgentProcess::spawn(
            tb,
            &["--kubeconfig", kc.to_str().unwrap_or_default(), "--node-name", NODE],
        )?;
        agent.wait_ready().await?;
        let pod_probes: Vec<_> = running
            .iter()
            .map(|p| {
                let probes: Vec<_> = (0..per_pod)
                    .map(|k| json!({"name": format!("bench#exec-{k}"), "containerName": "app",
                        "probe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "timeoutSeconds": 1}}))
                    .collect();
                json!({"name": p.name, "namespace": "default", "uid": p.handle.uid(),
                       "IP": "", "probes": probes})
            })
            .collect();
        let gvk = GroupVersionKind::gvk("apps.kruise.io", "v1alpha1", "NodePodProbe");
        let npps: Api<DynamicObject> = Api::all_with(api.client(), &ApiResource::from_gvk(&gvk));
        let npp = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodePodProbe",
            "metadata": {"name": NODE}, "spec": {"podProbes": pod_probes}}))?;
        npps.create(&PostParams::default(), &npp).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (before, before_total) = scrape(&agent.http_get("/metrics").await?.1);
        let cpu0 = agent.cpu_ms().unwrap_or(0);
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let cpu_pct = (agent.cpu_ms().unwrap_or(0).saturating_sub(cpu0)) as f64
            / t0.elapsed().as_millis() as f64
            * 100.0;
        let (after, after_total) = scrape(&agent.http_get("/metrics").await?.1);
        let rss_mib = agent.rss_kib().unwrap_or(0) as f64 / 1024.0;
        let counts: BTreeMap<u64, f64> = after
            .iter()
            .map(|(le, n)| (*le, n - before.get(le).copied().unwrap_or(0.0)))
            .collect();
        let total = after_total - before_total;
        let p50 = quantile_ms(&counts, total, 0.50);
        let p99 = quantile_ms(&counts, total, 0.99);
        eprintln!(
            "pod_probe: agent {total} probes in {window:?} ({:.0}/s of {probes}/s due)",
            total / window.as_secs_f64()
        );
        println!(
            "RESULT pod_probe probes={probes} lateness_p50_ms={p50:.1} lateness_p99_ms={p99:.1} agent_rss_mib={rss_mib:.1} agent_cpu_pct={cpu_pct:.2} floor_p50_ms={floor_p50:.1} floor_p99_ms={floor_p99:.1} ratio_p99={:.2}",
            p99 / floor_p99
        );
        agent.stop().await?;
        stream::iter(running)
            .map(|p| p.remove())
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        tb.shutdown().await?;
        anyhow::Ok(())
    })
}
