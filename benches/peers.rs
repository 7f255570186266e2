//! nodeward against the real peers on the same real single-node Kubernetes (`scripts/cluster.sh`,
//! started or reused), in one run, in three phases on one cluster:
//!
//! 1. the kubelet restarted with `EventedPLEG=true`: N native sidecar Jobs interleaved with N
//!    nodeward ones (as the same load; their figures are not counted); the gate off again. First,
//!    while the node holds few containers (the evented kubelet overflows its event channel at
//!    start on a node with hundreds and stops syncing pods).
//! 2. nodeward deployed from `packaging/kubernetes`: N Jobs (`NODEWARD_BENCH_JOBS`, default 20)
//!    whose env-marked sidecar nodeward stops, created interleaved with N whose sidecar is a
//!    Kubernetes native sidecar (generic PLEG, the kubelet's default 1 s relist); N CRRs one after
//!    the other; 8 ImagePullJobs of 8 distinct images from the local registry; then 125 idle pods
//!    and the footprint of nodeward's agent and controller beside them.
//! 3. nodeward removed, OpenKruise installed (`support::kruise`: binaries built apart, given by
//!    `NODEWARD_PEER_KRUISE_*`): its footprint beside the same 125 pods, which then go; the same
//!    Jobs (kruise-manager's sidecar terminator, kruise-daemon's stop) interleaved with native
//!    ones again, CRRs, ImagePullJobs; OpenKruise removed, nodeward back.
//!
//! Figures: `stop` = main exited → sidecar exited, both from containerd's own timestamps
//! (`ContainerStatus.finished_at`); `complete` = main exited → the Job's `Complete` condition seen
//! on the bench's watch; `crr` = the CRR's create request sent (at a random point of the
//! kubelet's relist second) → `Completed` seen on a watch;
//! `pull` = the first ImagePullJob create → all 8 complete (polled every 100 ms), the images
//! removed from containerd before; `rss`/`cpu` = VmRSS and CPU over 30 s of the agent (kruise-daemon)
//! and the controller (kruise-manager; of several replicas the one with the most memory: the
//! leader). Prints the run's conditions as `#` lines, then `RESULT peers jobs=N
//! <figure>_<system>=… ratio_<figure>_vs_<system>=… missing=<system>,…`.

use nodeward_testkit as support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, RemoveImageRequest};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::bench::{env_or, percentile};
use support::k8s::{RealCluster, kruise_api};
use support::kruise::Kruise;
use support::procs;

const SIDECAR_ENV: &str = "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT";
/// A sidecar (and a CRR's container) that exits 0 on SIGTERM, as a well-behaved proxy does.
const POLITE: &str = "trap 'exit 0' TERM; sleep 100000 & wait";
const PULL_IMAGES: usize = 8;
/// Padding per pulled image; with the ~1.9 MiB static busybox about 5 MiB each.
const PAD_KIB: usize = 3 * 1024;
const IDLE_PODS: usize = 125;
const FOOTPRINT_WINDOW: Duration = Duration::from_secs(30);

/// Samples by (figure, system).
type Samples = HashMap<(&'static str, &'static str), Vec<f64>>;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Blocking work (kubectl, scripts) without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A fresh namespace `ns` whose default ServiceAccount exists.
async fn fresh_namespace(client: &Client, ns: &str) -> Result<()> {
    drop_namespace(client, ns).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    namespaces.create(&PostParams::default(), &object).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    while accounts.get_opt("default").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Namespace `ns` deleted and gone (its pods with it).
async fn drop_namespace(client: &Client, ns: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await?.is_some() {
        namespaces.delete(ns, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while namespaces.get_opt(ns).await?.is_some() {
        if Instant::now() > deadline {
            bail!("namespace {ns} still there after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// A Job whose main container exits after `sleep_ms`, with a sidecar as `system` runs one.
fn job(cluster: &RealCluster, system: &str, i: usize, sleep_ms: u64) -> Result<Job> {
    let busybox = cluster.image("busybox:1");
    let main = json!({"name": "main", "image": busybox,
        "command": ["sh", "-c", format!("sleep {}.{:03}", sleep_ms / 1000, sleep_ms % 1000)]});
    let mut sidecar = json!({"name": "proxy", "image": busybox, "command": ["sh", "-c", POLITE]});
    let mut spec = if system.starts_with("native") {
        sidecar["restartPolicy"] = json!("Always");
        json!({"initContainers": [sidecar], "containers": [main]})
    } else {
        sidecar["env"] = json!([{"name": SIDECAR_ENV, "value": "true"}]);
        json!({"containers": [main, sidecar]})
    };
    spec["restartPolicy"] = json!("Never");
    spec["terminationGracePeriodSeconds"] = json!(10);
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{}-{i}", system.replace('_', "-"))},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": {"system": system}}, "spec": spec}},
    }))?)
}

/// N Jobs of each of the two systems, created interleaved in namespace `ns`; their `stop` and
/// `complete` samples; the namespace is dropped afterwards, also when a step failed.
async fn jobs(
    cluster: &RealCluster,
    client: &Client,
    ns: &str,
    systems: [&'static str; 2],
    n: usize,
    samples: &mut Samples,
) -> Result<()> {
    fresh_namespace(client, ns).await?;
    let outcome = async {
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        let complete: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let seen = complete.clone();
        let stream = watcher(jobs.clone(), watcher::Config::default()).applied_objects();
        let watch = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(job)) = stream.next().await {
                let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
                let done = conditions.is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Complete" && c.status == "True")
                });
                if done {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.entry(job.name_any()).or_insert_with(now_ns);
                }
            }
        });
        // Mains exit 6–10 s after creation (all pods are running by then), spread so that exits do
        // not all land in one relist period.
        for i in 0..n {
            for system in systems {
                let sleep_ms = 6000 + (i as u64 * 4000) / n.max(1) as u64;
                jobs.create(&PostParams::default(), &job(cluster, system, i, sleep_ms)?)
                    .await?;
            }
        }
        let count = || complete.lock().unwrap_or_else(|e| e.into_inner()).len();
        let deadline = Instant::now() + Duration::from_secs(180 + 5 * n as u64);
        while count() < 2 * n {
            if Instant::now() > deadline {
                watch.abort();
                bail!("{ns}: only {} of {} Jobs completed", count(), 2 * n);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        watch.abort();
        let complete = complete.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        for pod in pods.list(&ListParams::default()).await?.items {
            let job = pod
                .labels()
                .get("job-name")
                .context("pod without job-name")?;
            let label = pod.labels().get("system").context("pod without system")?;
            let system = systems
                .into_iter()
                .find(|s| s == label)
                .context("unknown system")?;
            let statuses = cluster.runtime_statuses(&pod.uid().context("uid")?).await?;
            let finished = |name: &str| {
                statuses
                    .get(name)
                    .map(|s| s.finished_at)
                    .with_context(|| format!("{}: no status of {name}", pod.name_any()))
            };
            let (main, proxy) = (finished("main")?, finished("proxy")?);
            let done = complete.get(job).context("Job not seen complete")?;
            let ms = |from: i64, to: i64| (to - from) as f64 / 1e6;
            samples
                .entry(("stop", system))
                .or_default()
                .push(ms(main, proxy));
            samples
                .entry(("complete", system))
                .or_default()
                .push(ms(main, *done));
        }
        anyhow::Ok(())
    }
    .await;
    drop_namespace(client, ns).await?;
    outcome
}

/// N CRRs of N ready pods, one after the other: create request sent → `Completed` seen.
async fn crrs(
    cluster: &RealCluster,
    client: &Client,
    system: &'static str,
    n: usize,
    samples: &mut Samples,
) -> Result<()> {
    let ns = "bench-peers-crr";
    fresh_namespace(client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for i in 0..n {
        let pod = serde_json::from_value(json!({
            "metadata": {"name": format!("crr-{i}")},
            "spec": {"terminationGracePeriodSeconds": 10, "containers": [{"name": "app",
                "image": cluster.image("busybox:1"), "command": ["sh", "-c", POLITE]}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| ready(p))
        .count()
        < n
    {
        if Instant::now() > deadline {
            bail!("the CRR pods are not all ready after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let crrs = kruise_api(client, Some(ns), "ContainerRecreateRequest", "v1alpha1");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher(crrs.clone(), watcher::Config::default()).applied_objects();
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(crr)) = stream.next().await {
            let phase = crr.data["status"]["phase"].as_str().unwrap_or_default();
            if matches!(phase, "Completed" | "Failed") {
                let _ = tx.send((crr.name_any(), phase.to_owned(), Instant::now()));
            }
        }
    });
    for i in 0..n {
        let name = format!("crr-{i}");
        let object = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "ContainerRecreateRequest",
            "metadata": {"name": name},
            "spec": {"podName": name, "containers": [{"name": "app"}]},
        }))?;
        // At a random point of the kubelet's 1 s relist: one CRR right after another would
        // start each just after the relist that showed the previous one done.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
        let sent = Instant::now();
        crrs.create(&PostParams::default(), &object).await?;
        let ended = loop {
            let next = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await;
            match next {
                Ok(Some((n, phase, at))) if n == name => break (phase, at),
                Ok(Some(_)) => continue,
                _ => bail!("{system}: CRR {name} did not end in 120 s"),
            }
        };
        if ended.0 != "Completed" {
            bail!("{system}: CRR {name} ended {}", ended.0);
        }
        samples
            .entry(("crr", system))
            .or_default()
            .push(ended.1.duration_since(sent).as_secs_f64() * 1000.0);
    }
    watch.abort();
    drop_namespace(client, ns).await
}

/// The pulled images' repository for `system` (each system pulls its own names, so that nothing
/// one left in the NodeImage is pulled by the other).
fn pull_repo(cluster: &RealCluster, system: &str) -> String {
    cluster.image(&format!("bench-pull-{system}"))
}

/// Remove `system`'s pulled images from containerd (absent ones are fine).
async fn remove_pulled(cluster: &RealCluster, system: &str) -> Result<()> {
    let socket = cluster.runtime_dir.join("containerd/containerd.sock");
    let mut cri = ImageServiceClient::new(nodeward::cri::channel(&socket));
    for i in 0..PULL_IMAGES {
        let image = Some(ImageSpec {
            image: format!("{}:pull-{i}", pull_repo(cluster, system)),
            ..Default::default()
        });
        cri.remove_image(RemoveImageRequest { image }).await?;
    }
    Ok(())
}

/// 8 ImagePullJobs created at once → all complete, in seconds; then the jobs, their NodeImage
/// entry and the images removed.
async fn pull(
    cluster: &RealCluster,
    client: &Client,
    system: &'static str,
    samples: &mut Samples,
) -> Result<()> {
    let ns = "bench-peers-pull";
    fresh_namespace(client, ns).await?;
    remove_pulled(cluster, system).await?;
    let jobs = kruise_api(client, Some(ns), "ImagePullJob", "v1alpha1");
    let repo = pull_repo(cluster, system);
    let start = Instant::now();
    for i in 0..PULL_IMAGES {
        let object = serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "ImagePullJob",
            "metadata": {"name": format!("pull-{i}")},
            "spec": {"image": format!("{repo}:pull-{i}"), "completionPolicy": {"type": "Always"}},
        }))?;
        jobs.create(&PostParams::default(), &object).await?;
    }
    let deadline = start + Duration::from_secs(300);
    loop {
        let list = jobs.list(&ListParams::default()).await?.items;
        let failed: Vec<&DynamicObject> = list
            .iter()
            .filter(|j| j.data["status"]["failed"].as_i64().unwrap_or(0) > 0)
            .collect();
        if let Some(job) = failed.first() {
            bail!("{system}: ImagePullJob failed: {}", job.data["status"]);
        }
        let done = list
            .iter()
            .filter(|j| {
                j.data["status"]["succeeded"].as_i64().unwrap_or(0) >= 1
                    && !j.data["status"]["completionTime"].is_null()
            })
            .count();
        if done == PULL_IMAGES {
            break;
        }
        if Instant::now() > deadline {
            bail!("{system}: {done} of {PULL_IMAGES} ImagePullJobs complete after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
        .entry(("pull", system))
        .or_default()
        .push(start.elapsed().as_secs_f64());
    drop_namespace(client, ns).await?;
    let node_images = kruise_api(client, None, "NodeImage", "v1alpha1");
    let forget = json!({"spec": {"images": {repo: null}}});
    node_images
        .patch(
            &cluster.node,
            &PatchParams::default(),
            &Patch::Merge(&forget),
        )
        .await?;
    remove_pulled(cluster, system).await
}

/// 125 idle pods (one Deployment), all running.
async fn idle_pods(cluster: &RealCluster, client: &Client) -> Result<()> {
    let ns = "bench-peers-idle";
    fresh_namespace(client, ns).await?;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), ns);
    let object = serde_json::from_value(json!({
        "metadata": {"name": "idle"},
        "spec": {"replicas": IDLE_PODS, "selector": {"matchLabels": {"app": "idle"}},
            "template": {"metadata": {"labels": {"app": "idle"}}, "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "idle", "image": cluster.image("busybox:1"),
                    "command": ["sleep", "100000"]}]}}},
    }))?;
    deployments.create(&PostParams::default(), &object).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let running = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= IDLE_PODS {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{running} of {IDLE_PODS} idle pods running after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The agent's and the controller's RSS and CPU beside the idle pods, after 30 s to settle.
async fn footprint(
    system: &'static str,
    agent: impl Fn(&str, &[String]) -> bool,
    controller: impl Fn(&str, &[String]) -> bool,
    figures: &mut BTreeMap<String, f64>,
) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (role, pick) in [
        ("agent", &agent as &dyn Fn(&str, &[String]) -> bool),
        ("controller", &controller),
    ] {
        let pids = procs::find(pick);
        if pids.is_empty() {
            bail!("{system}: no {role} process found");
        }
        let measured = procs::footprints(&pids, FOOTPRINT_WINDOW).await?;
        let biggest = measured
            .iter()
            .max_by(|a, b| a.rss_mib.total_cmp(&b.rss_mib))
            .context("no footprint")?;
        figures.insert(format!("{role}_rss_mib_{system}"), biggest.rss_mib);
        figures.insert(format!("{role}_cpu_pct_{system}"), biggest.cpu_pct);
    }
    Ok(())
}

fn nodeward_agent(name: &str, args: &[String]) -> bool {
    name == "nodeward" && args.first().is_some_and(|a| a == "agent")
}

fn nodeward_controller(name: &str, args: &[String]) -> bool {
    name == "nodeward" && args.first().is_some_and(|a| a == "controller")
}

/// Phase 2: OpenKruise in nodeward's place, then nodeward back (also when a step failed).
async fn openkruise_phase(
    cluster: &RealCluster,
    client: &Client,
    kruise: &Kruise,
    n: usize,
    samples: &mut Samples,
    figures: &mut BTreeMap<String, f64>,
) -> Result<()> {
    blocking(|| cluster.undeploy_nodeward())?;
    let outcome = async {
        blocking(|| kruise.install(cluster))?;
        footprint(
            "openkruise",
            |name, _| name == "kruise-daemon",
            |name, _| name == "manager",
            figures,
        )
        .await?;
        drop_namespace(client, "bench-peers-idle").await?;
        jobs(
            cluster,
            client,
            "bench-peers-openkruise",
            ["openkruise", "native"],
            n,
            samples,
        )
        .await?;
        crrs(cluster, client, "openkruise", n, samples).await?;
        pull(cluster, client, "openkruise", samples).await
    }
    .await;
    let removed = blocking(|| kruise.uninstall(cluster));
    blocking(|| cluster.redeploy_nodeward());
    outcome.and(removed)
}

/// Phase 3: native sidecars with the kubelet's EventedPLEG on, then off again.
async fn evented_phase(
    cluster: &RealCluster,
    client: &Client,
    n: usize,
    samples: &mut Samples,
) -> Result<()> {
    blocking(|| cluster.script(&["kubelet-gates", "EventedPLEG=true"]))?;
    let mut load = Samples::new();
    let outcome = jobs(
        cluster,
        client,
        "bench-peers-evented",
        ["native_evented", "nodeward"],
        n,
        &mut load,
    )
    .await;
    let reset = blocking(|| cluster.script(&["kubelet-gates", ""]));
    samples.extend(
        load.into_iter()
            .filter(|((_, s), _)| *s == "native_evented"),
    );
    outcome.and(reset.map(drop))
}

async fn run() -> Result<()> {
    let n: usize = env_or("NODEWARD_BENCH_JOBS", 20);
    let cluster = blocking(|| {
        let cluster = RealCluster::shared();
        cluster.deploy_nodeward();
        cluster
    });
    let client = cluster.client().await;
    let kruise = Kruise::from_env();
    let layout = support::images::ensure_pull_layout(PULL_IMAGES, PAD_KIB)?;
    for system in ["nodeward", "openkruise"] {
        for i in 0..PULL_IMAGES {
            let dest = format!("{}:pull-{i}", pull_repo(cluster, system));
            support::registry::push(&layout, &format!("pull-{i}"), &dest, None).await?;
        }
    }
    let node: Node = Api::all(client.clone()).get(&cluster.node).await?;
    let info = node.status.and_then(|s| s.node_info).context("nodeInfo")?;
    println!(
        "# peers: kubelet {} on {}, {} cores; nodeward {} (packaging/kubernetes); {}",
        info.kubelet_version,
        info.container_runtime_version,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION"),
        match &kruise {
            Ok(k) => format!(
                "openkruise {} (config/default, --feature-gates={}, -v={})",
                k.version(),
                support::kruise::GATES,
                support::kruise::LOG_LEVEL
            ),
            Err(e) => format!("openkruise missing: {e:#}"),
        }
    );
    println!(
        "# peers: {n} Jobs per system with 10 s grace, created interleaved with as many native \
         ones; {n} CRRs one at a time; {PULL_IMAGES} images of ~5 MiB; footprint beside \
         {IDLE_PODS} idle pods over {}s; every daemon at the niceness its pod gets (0); native: \
         generic PLEG (1 s relist), native_evented: the kubelet's EventedPLEG gate",
        FOOTPRINT_WINDOW.as_secs()
    );

    let mut samples = Samples::new();
    let mut figures = BTreeMap::new();
    let mut missing = Vec::new();
    // First, while the node holds few containers: the evented kubelet relists them all at
    // start into an event channel of 1 000, and stops syncing pods when it overflows.
    if let Err(e) = evented_phase(cluster, &client, n, &mut samples).await {
        eprintln!("# peers: native_evented missing: {e:#}");
        missing.push("native_evented");
    }
    jobs(
        cluster,
        &client,
        "bench-peers-nodeward",
        ["nodeward", "native"],
        n,
        &mut samples,
    )
    .await?;
    crrs(cluster, &client, "nodeward", n, &mut samples).await?;
    pull(cluster, &client, "nodeward", &mut samples).await?;
    idle_pods(cluster, &client).await?;
    footprint(
        "nodeward",
        nodeward_agent,
        nodeward_controller,
        &mut figures,
    )
    .await?;
    match &kruise {
        Ok(kruise) => {
            openkruise_phase(cluster, &client, kruise, n, &mut samples, &mut figures).await?
        }
        Err(_) => {
            drop_namespace(&client, "bench-peers-idle").await?;
            missing.push("openkruise");
        }
    }

    for ((figure, system), xs) in &mut samples {
        xs.sort_by(f64::total_cmp);
        let unit = if *figure == "pull" { "s" } else { "ms" };
        if *figure == "pull" {
            figures.insert(format!("pull_s_{system}"), percentile(xs, 50.0));
            continue;
        }
        for p in [50.0, 99.0] {
            figures.insert(format!("{figure}_p{p}_{unit}_{system}"), percentile(xs, p));
        }
    }
    let mut line = format!("RESULT peers jobs={n}");
    for (key, value) in &figures {
        let (figure, system) = split_key(key);
        line.push_str(&format!(" {figure}_{system}={value:.1}"));
    }
    for (key, value) in &figures {
        let (figure, system) = split_key(key);
        if system != "nodeward" {
            continue;
        }
        for other in ["openkruise", "native", "native_evented"] {
            if let Some(theirs) = figures.get(&format!("{figure}_{other}")) {
                line.push_str(&format!(" ratio_{figure}_vs_{other}={:.3}", value / theirs));
            }
        }
    }
    if !missing.is_empty() {
        line.push_str(&format!(" missing={}", missing.join(",")));
    }
    println!("{line}");
    Ok(())
}

/// `<figure>_<system>` split at the system (`native_evented` holds an underscore).
fn split_key(key: &str) -> (&str, &str) {
    for system in ["native_evented", "openkruise", "nodeward", "native"] {
        if let Some(figure) = key.strip_suffix(&format!("_{system}")) {
            return (figure, system);
        }
    }
    (key, "")
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
