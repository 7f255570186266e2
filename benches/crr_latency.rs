//! ContainerRecreateRequest latency: N pods, one CRR each (minStartedSeconds 0), created at once
//! against the in-memory API server with the real `nodeward controller` (defaulting, status
//! sync) and `nodeward agent` on a real containerd.
//!
//! * `watch_to_stop`: from the CRR's creation in the API (the API server's receipt of the create
//!   request, from its request log) to the agent's StopContainer call (its `stopping container for
//!   CRR` log line, written right before the call);
//! * `create_to_completed`: from the creation in the API to the bench's watch seeing `Completed`;
//! * `defaulted`: from the creation to the API server's answer to the controller's defaulting
//!   write (labels, statusContext), after which the agent's label-selected watch can see the CRR;
//! * `delivered`: from that answer to the watch event that woke the agent's pass;
//! * `agent`: the agent's own share of `watch_to_stop`, from that event to the same log line
//!   (`since_event_ms`);
//! * `request_to_stop`: `watch_to_stop` measured from just before the bench's create request
//!   instead; the difference is the bench's own HTTP client opening connections for N requests at
//!   once.
//!
//! The same is measured against a floor, side by side: the bench itself watches the defaulted
//! CRRs and calls StopContainer at once (no status writes, no journal).
//!
//! Conditions: the agent runs at nice -10, as the systemd unit starts it (`Nice=-10`), and so do
//! the bench's floor stopper and kubelet fixture (`NODEWARD_BENCH_AGENT_NICE`). The API server
//! double and the controller, which run on control-plane machines in a cluster, run at nice -20
//! (`NODEWARD_BENCH_CONTROL_PLANE_NICE`): on these 2 cores they share the CPU with the runc
//! processes of the N stops and restarts, which they would not see off the node. Set both to 0
//! for everything at one priority. The CRRs are created 3 s after the last pod was seen ready (the node settled after
//! starting N pods); the kubelet fixture relists the node's containers every second, as the
//! kubelet's generic PLEG does (`NODEWARD_BENCH_RELIST_MS`; tests use 100 ms), so it restarts the
//! stopped containers 0–1 s after their exit.
//!
//! Prints `RESULT crr_latency crrs=… watch_to_stop_p50_ms=… watch_to_stop_p99_ms=…
//! create_to_completed_p50_ms=… agent_p50_ms=… agent_p99_ms=… defaulted_p99_ms=… delivered_p99_ms=…
//! request_to_stop_p99_ms=… floor_p99_ms=… ratio_p99=…`.

use nodeward_testkit as support;

use support::bench::{env_or, percentile, renice};

use std::collections::{BTreeMap, HashMap};
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
use support::apiserver::{APISERVER_THREAD, ApiServer};
use support::cluster::ClusterPod;
use support::kubelet::{ContainerSpec, KUBELET_RELIST_PERIOD, PodSpec};
use support::rbac;
use support::testbed::TestBed;

type Crr = ContainerRecreateRequest;

const NODE: &str = "node-bench";
/// The floor's pods live on a node no agent serves.
const FLOOR_NODE: &str = "node-floor";
/// Between the last pod seen ready and the CRRs' creation.
const SETTLE: Duration = Duration::from_secs(3);
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
    tokio::time::sleep(SETTLE).await;
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

/// When each CRR of a round was created in the API and defaulted by the controller, from the
/// API server's request log: the receipt of the create request and the answer to the first PUT
/// of the object (only the controller replaces a CRR; the agent writes `/status`).
struct Timeline {
    requested: HashMap<String, SystemTime>,
    created: HashMap<String, SystemTime>,
    defaulted: HashMap<String, SystemTime>,
}

impl Timeline {
    fn read(api: &ApiServer, requested: HashMap<String, SystemTime>) -> anyhow::Result<Timeline> {
        let (mut created, mut defaulted) = (HashMap::new(), HashMap::new());
        for r in api.requests() {
            let ours = r.resource == "containerrecreaterequests" && (200..300).contains(&r.status);
            let Some(name) = r.name.filter(|n| ours && requested.contains_key(n)) else {
                continue;
            };
            match (r.verb.as_str(), r.subresource) {
                ("create", None) => created.entry(name).or_insert(r.received),
                ("update", None) => defaulted.entry(name).or_insert(r.answered),
                _ => continue,
            };
        }
        if created.len() != requested.len() || defaulted.len() != requested.len() {
            bail!(
                "request log: {} creates and {} defaulting writes for {} CRRs",
                created.len(),
                defaulted.len(),
                requested.len()
            );
        }
        Ok(Timeline {
            requested,
            created,
            defaulted,
        })
    }

    /// Milliseconds from each of this round's CRRs' creation in the API to its time in `at`.
    fn since_created(&self, at: &HashMap<String, SystemTime>) -> Vec<f64> {
        Self::since(&self.created, at)
    }

    /// The same from the bench's create request.
    fn since_requested(&self, at: &HashMap<String, SystemTime>) -> Vec<f64> {
        Self::since(&self.requested, at)
    }

    fn since(from: &HashMap<String, SystemTime>, at: &HashMap<String, SystemTime>) -> Vec<f64> {
        at.iter()
            .filter_map(|(n, t)| Some(ms_between(*from.get(n)?, *t)))
            .collect()
    }
}

async fn remove(pods: Vec<ClusterPod>) -> anyhow::Result<()> {
    try_join_all(pods.into_iter().map(|p| p.remove())).await?;
    Ok(())
}

/// Samples (milliseconds) by series: `to_stop`, `request_to_stop`, `defaulted`, and for the
/// agent also `in_agent`, `delivered` and `to_completed`.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<f64>>);

impl Samples {
    fn new(timeline: &Timeline, stopped: &HashMap<String, SystemTime>) -> Samples {
        Samples(BTreeMap::from([
            ("to_stop", timeline.since_created(stopped)),
            ("request_to_stop", timeline.since_requested(stopped)),
            ("defaulted", timeline.since_created(&timeline.defaulted)),
        ]))
    }

    fn with(mut self, series: &'static str, values: Vec<f64>) -> Samples {
        self.0.insert(series, values);
        self
    }

    fn extend(&mut self, other: Samples) {
        for (series, values) in other.0 {
            self.0.entry(series).or_default().extend(values);
        }
    }

    fn sort(&mut self) {
        for values in self.0.values_mut() {
            values.sort_by(f64::total_cmp);
        }
    }

    fn get(&self, series: &str) -> &[f64] {
        self.0.get(series).map_or(&[], Vec::as_slice)
    }
}

async fn agent_round(
    api: &ApiServer,
    agent: &AgentProcess,
    round: usize,
    n: usize,
) -> anyhow::Result<Samples> {
    let prefix = format!("agent{round}");
    let pods = start_pods(api, NODE, &prefix, n).await?;
    let seen = watch_completions(api);
    let requested = create_crrs(api, &prefix, n).await?;
    let names: Vec<String> = requested.keys().cloned().collect();
    wait_all(&seen, &names).await?;
    // Per CRR: the stop line's time and how long after the event that woke the pass.
    let mut stops: HashMap<String, (SystemTime, f64)> = HashMap::new();
    for line in agent.messages("stopping container for CRR") {
        let Some(crr) = line["crr"]
            .as_str()
            .and_then(|c| c.strip_prefix("default/"))
            .filter(|c| requested.contains_key(*c))
        else {
            continue;
        };
        let at = humantime::parse_rfc3339_weak(line["timestamp"].as_str().context("timestamp")?)?;
        let since_event = line["since_event_ms"].as_f64().context("since_event_ms")?;
        stops.insert(crr.to_owned(), (at, since_event));
    }
    if stops.len() != n {
        bail!("{} CRRs with a stop line of {n}", stops.len());
    }
    let completed = seen.lock().unwrap().clone();
    remove(pods).await?;
    let timeline = Timeline::read(api, requested)?;
    let stopped = stops.iter().map(|(n, (at, _))| (n.clone(), *at)).collect();
    let in_agent = stops.values().map(|(_, since)| *since).collect();
    let delivered = stops
        .iter()
        .map(|(n, (at, since))| {
            let woken = *at - Duration::from_secs_f64(since / 1e3);
            ms_between(timeline.defaulted[n], woken)
        })
        .collect();
    Ok(Samples::new(&timeline, &stopped)
        .with("in_agent", in_agent)
        .with("delivered", delivered)
        .with("to_completed", timeline.since_created(&completed)))
}

/// The floor: the bench watches the defaulted CRRs and stops each container at once.
async fn floor_round(api: &ApiServer, round: usize, n: usize) -> anyhow::Result<Samples> {
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
    let requested = create_crrs(api, &prefix, n).await?;
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
    Ok(Samples::new(&Timeline::read(api, requested)?, &stops))
}

fn main() -> anyhow::Result<()> {
    let n = env_or("NODEWARD_BENCH_CRRS", 50usize);
    let rounds = env_or("NODEWARD_BENCH_ROUNDS", 1usize);
    let agent_nice: i32 = env_or("NODEWARD_BENCH_AGENT_NICE", -10);
    let control_plane_nice: i32 = env_or("NODEWARD_BENCH_CONTROL_PLANE_NICE", -20);
    let relist = Duration::from_millis(env_or(
        "NODEWARD_BENCH_RELIST_MS",
        KUBELET_RELIST_PERIOD.as_millis() as u64,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!(
        "crr_latency: {n} pods with one CRR each x {rounds} round(s), agent nice {agent_nice}, control plane nice {control_plane_nice}, relist {relist:?}"
    );
    rt.block_on(async {
        let tb = TestBed::shared();
        tb.start_relist(relist)?;
        let api = ApiServer::start().await?;
        // The agent and the controller act as their service accounts, under the packaged RBAC.
        let agent_kc = api.service_account_kubeconfig(tb.dir(), rbac::AGENT)?;
        let controller_kc = api.service_account_kubeconfig(tb.dir(), rbac::CONTROLLER)?;
        let agent_kc = agent_kc.display().to_string();
        let agent = AgentProcess::spawn(tb, &["--kubeconfig", &agent_kc, "--node-name", NODE])?;
        agent.wait_ready().await?;
        let controller = AgentProcess::spawn_controller(&controller_kc, &[])?;
        controller.wait_leader(Duration::from_secs(30)).await?;
        let me = std::process::id();
        renice(agent.pid(), agent_nice, |_| true)?;
        renice(me, agent_nice, |thread| thread != APISERVER_THREAD)?;
        renice(me, control_plane_nice, |thread| thread == APISERVER_THREAD)?;
        renice(controller.pid(), control_plane_nice, |_| true)?;
        let (mut agent_samples, mut floor) = (Samples::default(), Samples::default());
        for round in 0..rounds {
            agent_samples.extend(agent_round(&api, &agent, round, n).await?);
            floor.extend(floor_round(&api, round, n).await?);
        }
        agent_samples.sort();
        floor.sort();
        let (a, f) = (&agent_samples, &floor);
        let fields: [(&str, &[f64], f64); 15] = [
            ("watch_to_stop_p50_ms", a.get("to_stop"), 50.0),
            ("watch_to_stop_p99_ms", a.get("to_stop"), 99.0),
            ("create_to_completed_p50_ms", a.get("to_completed"), 50.0),
            ("create_to_completed_p99_ms", a.get("to_completed"), 99.0),
            ("agent_p50_ms", a.get("in_agent"), 50.0),
            ("agent_p99_ms", a.get("in_agent"), 99.0),
            ("defaulted_p50_ms", a.get("defaulted"), 50.0),
            ("defaulted_p99_ms", a.get("defaulted"), 99.0),
            ("delivered_p50_ms", a.get("delivered"), 50.0),
            ("delivered_p99_ms", a.get("delivered"), 99.0),
            ("request_to_stop_p99_ms", a.get("request_to_stop"), 99.0),
            ("floor_p50_ms", f.get("to_stop"), 50.0),
            ("floor_p99_ms", f.get("to_stop"), 99.0),
            ("floor_defaulted_p99_ms", f.get("defaulted"), 99.0),
            (
                "floor_request_to_stop_p99_ms",
                f.get("request_to_stop"),
                99.0,
            ),
        ];
        let mut line = format!("RESULT crr_latency crrs={}", a.get("to_stop").len());
        for (name, values, pct) in fields {
            line.push_str(&format!(" {name}={:.1}", percentile(values, pct)));
        }
        let ratio = percentile(a.get("to_stop"), 99.0) / percentile(f.get("to_stop"), 99.0);
        println!("{line} ratio_p99={ratio:.2}");
        agent.stop().await?;
        controller.stop().await?;
        tb.shutdown().await?;
        anyhow::Ok(())
    })
}
