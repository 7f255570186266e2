//! ContainerRecreateRequest latency: N pods, one CRR each (minStartedSeconds 0), created at once
//! against the in-memory API server with the real `nodeward controller` (defaulting, status
//! sync) and `nodeward agent` on a real containerd.
//!
//! * `watch_to_stop`: from just before the CRR's create request to the agent's StopContainer call
//!   (its `stopping container for CRR` log line, written right before the call);
//! * `create_to_completed`: from the create request to the bench's watch seeing `Completed`;
//! * `agent`: the agent's own share of `watch_to_stop`, from the watch event that woke its pass to
//!   the same log line (`since_event_ms`); the rest is the API server and the controller's
//!   defaulting, which the floor measures.
//!
//! The same is measured against a floor, side by side: the bench itself watches the defaulted
//! CRRs and calls StopContainer at once (no status writes, no journal).
//!
//! Prints `RESULT crr_latency crrs=… watch_to_stop_p50_ms=… watch_to_stop_p99_ms=…
//! create_to_completed_p50_ms=… agent_p50_ms=… agent_p99_ms=… floor_p99_ms=… ratio_p99=…`.

#[path = "../tests/support/mod.rs"]
mod support;

use support::bench::{env_or, percentile};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::future::try_join_all;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use nodeward::api::kruise::{ContainerRecreateRequest, ContainerRecreateRequestPhase};
use nodeward::cri::CriClient;
use serde_json::json;
use support::agent::AgentProcess;
use support::apiserver::ApiServer;
use support::cluster::ClusterPod;
use support::kubelet::{ContainerSpec, PodSpec};
use support::testbed::TestBed;

type Crr = ContainerRecreateRequest;

const NODE: &str = "node-bench";
/// The floor's pods live on a node no agent serves.
const FLOOR_NODE: &str = "node-floor";
const POLITE: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or_else(|e| -e.duration().as_secs_f64() * 1e3)
}

async fn start_pods(
    api: &ApiServer,
    node: &str,
    round: &str,
    n: usize,
) -> anyhow::Result<Vec<ClusterPod>> {
    let tb = TestBed::shared();
    let pods = try_join_all((0..n).map(|i| {
        let spec = PodSpec::new(format!("{round}-{i}")).container(ContainerSpec::sh("app", POLITE));
        ClusterPod::run(tb, api.client(), node, spec)
    }))
    .await?;
    for p in &pods {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let obj = p.object().await?;
            let ready = obj
                .status
                .and_then(|s| s.container_statuses)
                .is_some_and(|cs| cs.iter().all(|c| c.ready));
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("pod {} never became ready", p.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(pods)
}

/// Create one CRR per pod, all at once; returns the time just before each create request.
async fn create_crrs(
    api: &ApiServer,
    round: &str,
    n: usize,
) -> anyhow::Result<HashMap<String, SystemTime>> {
    let crrs: Api<Crr> = Api::namespaced(api.client(), "default");
    let created = try_join_all((0..n).map(|i| {
        let crrs = crrs.clone();
        async move {
            let name = format!("{round}-{i}");
            let crr: Crr = serde_json::from_value(json!({
                "apiVersion": "apps.kruise.io/v1alpha1",
                "kind": "ContainerRecreateRequest",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"podName": name, "containers": [{"name": "app"}]},
            }))?;
            let t = SystemTime::now();
            crrs.create(&PostParams::default(), &crr).await?;
            anyhow::Ok((name, t))
        }
    }))
    .await?;
    Ok(created.into_iter().collect())
}

/// Record when each CRR of `names` is first seen Completed.
fn watch_completions(api: &ApiServer) -> Arc<Mutex<HashMap<String, SystemTime>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let out = seen.clone();
    let crrs: Api<Crr> = Api::namespaced(api.client(), "default");
    tokio::spawn(async move {
        let stream = watcher(crrs, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(c)) = stream.next().await {
            if c.status.as_ref().and_then(|s| s.phase)
                == Some(ContainerRecreateRequestPhase::Completed)
            {
                out.lock()
                    .unwrap()
                    .entry(c.name_any())
                    .or_insert_with(SystemTime::now);
            }
        }
    });
    seen
}

async fn wait_all(
    seen: &Mutex<HashMap<String, SystemTime>>,
    names: &[String],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while names.iter().any(|n| !seen.lock().unwrap().contains_key(n)) {
        if Instant::now() > deadline {
            bail!("not all CRRs completed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn remove(pods: Vec<ClusterPod>) -> anyhow::Result<()> {
    try_join_all(pods.into_iter().map(|p| p.remove())).await?;
    Ok(())
}

struct AgentRound {
    to_stop: Vec<f64>,
    in_agent: Vec<f64>,
    to_completed: Vec<f64>,
}

async fn agent_round(
    api: &ApiServer,
    agent: &AgentProcess,
    round: usize,
    n: usize,
) -> anyhow::Result<AgentRound> {
    let prefix = format!("agent{round}");
    let pods = start_pods(api, NODE, &prefix, n).await?;
    let seen = watch_completions(api);
    let created = create_crrs(api, &prefix, n).await?;
    let names: Vec<String> = created.keys().cloned().collect();
    wait_all(&seen, &names).await?;
    let (mut to_stop, mut in_agent) = (Vec::new(), Vec::new());
    for line in agent.messages("stopping container for CRR") {
        let Some(crr) = line["crr"]
            .as_str()
            .and_then(|c| c.strip_prefix("default/"))
        else {
            continue;
        };
        let Some(t0) = created.get(crr) else { continue };
        let at = humantime::parse_rfc3339_weak(line["timestamp"].as_str().context("timestamp")?)?;
        to_stop.push(ms_between(*t0, at));
        in_agent.push(line["since_event_ms"].as_f64().context("since_event_ms")?);
    }
    if to_stop.len() != n {
        bail!("{} stop lines for {n} CRRs", to_stop.len());
    }
    let seen = seen.lock().unwrap().clone();
    let to_completed = names
        .iter()
        .map(|n| ms_between(created[n], seen[n]))
        .collect();
    remove(pods).await?;
    Ok(AgentRound {
        to_stop,
        in_agent,
        to_completed,
    })
}

/// The floor: the bench watches the defaulted CRRs and stops each container at once.
async fn floor_round(api: &ApiServer, round: usize, n: usize) -> anyhow::Result<Vec<f64>> {
    let prefix = format!("floor{round}");
    let pods = start_pods(api, FLOOR_NODE, &prefix, n).await?;
    let ids: HashMap<String, String> = {
        let mut m = HashMap::new();
        for p in &pods {
            m.insert(p.name.clone(), p.handle.container("app").await?.id);
        }
        m
    };
    let cri = CriClient::new(nodeward::cri::channel(&TestBed::shared().socket()));
    let stops = Arc::new(Mutex::new(HashMap::new()));
    let out = stops.clone();
    let crrs: Api<Crr> = Api::namespaced(api.client(), "default");
    let watch = tokio::spawn(async move {
        let stream = watcher(
            crrs,
            watcher::Config::default()
                .labels(&format!("crr.apps.kruise.io/node-name={FLOOR_NODE}")),
        )
        .default_backoff()
        .applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(c)) = stream.next().await {
            let name = c.name_any();
            if out.lock().unwrap().contains_key(&name) {
                continue;
            }
            let Some(id) = ids.get(&c.spec.pod_name).cloned() else {
                continue;
            };
            out.lock().unwrap().insert(name, SystemTime::now());
            let cri = cri.clone();
            tokio::spawn(async move { cri.stop_container(&id, Duration::from_secs(30)).await });
        }
    });
    let created = create_crrs(api, &prefix, n).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stops.lock().unwrap().len() < n {
        if Instant::now() > deadline {
            bail!("floor: not all CRRs seen");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let stops = stops.lock().unwrap().clone();
    remove(pods).await?;
    Ok(created
        .iter()
        .map(|(n, t0)| ms_between(*t0, stops[n]))
        .collect())
}

fn main() -> anyhow::Result<()> {
    let n = env_or("NODEWARD_BENCH_CRRS", 50) as usize;
    let rounds = env_or("NODEWARD_BENCH_ROUNDS", 1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!("crr_latency: {n} pods with one CRR each x {rounds} round(s)");
    rt.block_on(async {
        let tb = TestBed::shared();
        let api = ApiServer::start().await?;
        let kc = tb.dir().join("kubeconfig-bench");
        api.write_kubeconfig(&kc)?;
        let kc = kc.display().to_string();
        let agent = AgentProcess::spawn(tb, &["--kubeconfig", &kc, "--node-name", NODE])?;
        agent.wait_ready().await?;
        let controller = AgentProcess::spawn_nodeward(&[
            "controller", "--kubeconfig", &kc, "--lease-namespace", "default", "--addr", "off",
        ])?;
        controller
            .wait_for("leader", Duration::from_secs(30), |v| {
                v["message"] == "became the leader; starting reconcilers"
            })
            .await?;
        let (mut to_stop, mut in_agent, mut to_completed, mut floor) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let a = agent_round(&api, &agent, round, n).await?;
            to_stop.extend(a.to_stop);
            in_agent.extend(a.in_agent);
            to_completed.extend(a.to_completed);
            floor.extend(floor_round(&api, round, n).await?);
        }
        for v in [&mut to_stop, &mut in_agent, &mut to_completed, &mut floor] {
            v.sort_by(f64::total_cmp);
        }
        let (s50, s99) = (percentile(&to_stop, 50.0), percentile(&to_stop, 99.0));
        let f99 = percentile(&floor, 99.0);
        println!(
            "RESULT crr_latency crrs={} watch_to_stop_p50_ms={s50:.1} watch_to_stop_p99_ms={s99:.1} create_to_completed_p50_ms={:.1} create_to_completed_p99_ms={:.1} agent_p50_ms={:.1} agent_p99_ms={:.1} floor_p50_ms={:.1} floor_p99_ms={f99:.1} ratio_p99={:.2}",
            to_stop.len(),
            percentile(&to_completed, 50.0),
            percentile(&to_completed, 99.0),
            percentile(&in_agent, 50.0),
            percentile(&in_agent, 99.0),
            percentile(&floor, 50.0),
            s99 / f99,
        );
        agent.stop().await?;
        controller.stop().await?;
        tb.shutdown().await?;
        anyhow::Ok(())
    })
}
