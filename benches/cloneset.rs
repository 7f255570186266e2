//! The CloneSet controller at scale on the real cluster's API server (`scripts/cluster.sh`,
//! started or reused): a CloneSet of `NODEWARD_BENCH_REPLICAS` (default 1 000) pods on fake
//! nodes, run by `nodeward controller` as a process of its own (`--feature-gates` with only
//! CloneSetController on), twice: with the event-handler optimization and without.
//!
//! The fake nodes are Node objects no kubelet serves (`nodeward.io/bench-fake`, tainted so
//! nothing else lands there); the real kube-scheduler places the pods on them, and a status
//! writer of the bench plays their kubelet: each pod Running with its containers ready, the
//! images of its spec in its container statuses (a changed image gets a new image id, as a
//! restarted container does), Ready once its readiness gates are True; the nodes' heartbeats;
//! pods being deleted are removed. (kwok, which the Go module proxy serves, does the same but
//! leaves a pod's statuses alone once it is Ready, so an in-place update would never complete.)
//!
//! Each round: create the CloneSet → all available (`create_s`); 1 000 pod updates that change no
//! decision (an unrelated annotation on every pod) → reconciles counted from the controller's
//! `nodeward_controller_reconciles{reconciler="cloneset"}` (`churn_reconciles`); an image change
//! → all updated in place and available (`rollout_s`); RSS and CPU of the controller; the
//! CloneSet deleted. Prints `RESULT cloneset replicas=N <figure>_<optimized|plain>=…
//! reconciles_per_update_…= ratio_churn_reconciles=<plain / optimized>`.

use nodeward_testkit as support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use nodeward::api::kruise::CloneSet;
use serde_json::{Value, json};
use support::bench::env_or;
use support::k8s::RealCluster;
use support::procs;

const NS: &str = "cloneset-bench";
const FAKE_LABEL: &str = "nodeward.io/bench-fake";
const NODES: usize = 10;

fn main() -> Result<()> {
    let replicas: usize = env_or("NODEWARD_BENCH_REPLICAS", 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(replicas))
}

async fn run(replicas: usize) -> Result<()> {
    let cluster = RealCluster::shared();
    // The bench runs its own controller: nodeward's deployed one (which may run CloneSets) goes.
    cluster.undeploy_nodeward().ok();
    cluster.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "packaging/kubernetes/crds.yaml",
    ])?;
    let client = cluster.client().await;
    namespace(&client).await?;
    fake_nodes(&client).await?;
    let stop = tokio::sync::watch::channel(false);
    let kubelet = tokio::spawn(play_kubelet(client.clone(), stop.1.clone()));
    let heartbeats = tokio::spawn(heartbeats(client.clone(), stop.1.clone()));
    println!(
        "# {replicas} replicas on {NODES} fake nodes; controller: nodeward controller --feature-gates=CloneSetController=true,CloneSetEventHandlerOptimization=<round>"
    );
    let mut fields = Vec::new();
    let mut churn = Vec::new();
    for (name, optimize) in [("optimized", true), ("plain", false)] {
        let round = round(cluster, &client, replicas, optimize).await;
        match round {
            Ok(r) => {
                println!(
                    "# {name}: created+available {:.1} s, churn {} reconciles for {replicas} pod updates, rollout {:.1} s, RSS {:.1} MiB, CPU {:.1} %",
                    r.create_s, r.churn_reconciles, r.rollout_s, r.rss_mib, r.cpu_pct
                );
                fields.push(format!("create_s_{name}={:.1}", r.create_s));
                fields.push(format!("rollout_s_{name}={:.1}", r.rollout_s));
                fields.push(format!("churn_reconciles_{name}={}", r.churn_reconciles));
                fields.push(format!(
                    "reconciles_per_update_{name}={:.3}",
                    r.churn_reconciles as f64 / replicas as f64
                ));
                fields.push(format!("controller_rss_mib_{name}={:.1}", r.rss_mib));
                fields.push(format!("controller_cpu_pct_{name}={:.1}", r.cpu_pct));
                churn.push(r.churn_reconciles);
            }
            Err(e) => {
                let _ = stop.0.send(true);
                return Err(e.context(format!("the {name} round")));
            }
        }
    }
    let _ = stop.0.send(true);
    let _ = tokio::join!(kubelet, heartbeats);
    remove_fake_nodes(&client).await;
    if let [optimized, plain] = churn[..] {
        fields.push(format!(
            "ratio_churn_reconciles={:.1}",
            plain as f64 / (optimized.max(1)) as f64
        ));
    }
    println!("RESULT cloneset replicas={replicas} {}", fields.join(" "));
    Ok(())
}

struct Round {
    create_s: f64,
    churn_reconciles: u64,
    rollout_s: f64,
    rss_mib: f64,
    cpu_pct: f64,
}

/// The controller as a process: admin kubeconfig, its Lease in the bench's namespace.
struct Controller {
    child: std::process::Child,
    metrics: String,
}

impl Controller {
    fn start(cluster: &RealCluster, optimize: bool) -> Result<Self> {
        let port = 20000 + (std::process::id() % 20000) as u16;
        let gates = format!(
            "CloneSetController=true,CloneSetEventHandlerOptimization={optimize},SidecarTerminator=false,ImagePullJobGate=false,PodProbeMarkerGate=false"
        );
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_nodeward"))
            .args([
                "controller",
                "--lease-namespace",
                NS,
                "--lease-name",
                "cloneset-bench",
            ])
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .arg(format!("--addr=127.0.0.1:{port}"))
            .arg(format!("--feature-gates={gates}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting nodeward controller")?;
        Ok(Controller {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `nodeward_controller_reconciles_total{reconciler="cloneset"}`.
    async fn reconciles(&self) -> Result<u64> {
        let body = http_get(&self.metrics).await?;
        body.lines()
            .find(|l| {
                l.starts_with("nodeward_controller_reconciles_total{reconciler=\"cloneset\"}")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .context("no cloneset reconcile counter in /metrics")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP GET (the controller's metrics listener).
async fn http_get(url: &str) -> Result<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .await?;
    if !out.status.success() {
        bail!("GET {url} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn round(
    cluster: &RealCluster,
    client: &Client,
    replicas: usize,
    optimize: bool,
) -> Result<Round> {
    let controller = Controller::start(cluster, optimize)?;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), NS);
    // Wait for the controller's metrics (it leads once the Lease is free).
    let deadline = Instant::now() + Duration::from_secs(60);
    while controller.reconciles().await.is_err() {
        if Instant::now() > deadline {
            bail!("the controller's /metrics never answered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cs: CloneSet = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "updateStrategy": {"type": "InPlaceIfPossible", "maxUnavailable": "50%"},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {
                    "nodeSelector": {FAKE_LABEL: "true"},
                    "tolerations": [{"key": FAKE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "main", "image": cluster.image("busybox:1")}],
                },
            },
        },
    }))?;
    let started = Instant::now();
    api.create(&PostParams::default(), &cs).await?;
    until(&api, "all available", 600, |s| {
        s.available_replicas as usize == replicas && s.updated_replicas as usize == replicas
    })
    .await?;
    let create_s = started.elapsed().as_secs_f64();
    // Settle, then churn: an annotation nothing reads, once on every pod.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = controller.reconciles().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let listed = pods
        .list(&ListParams::default().labels("app=bench"))
        .await?
        .items;
    let patch = json!({"metadata": {"annotations": {"bench/churn": format!("{optimize}")}}});
    futures::stream::iter(listed.iter().map(|p| {
        let (pods, patch, name) = (pods.clone(), patch.clone(), p.name_any());
        async move {
            pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    }))
    .buffer_unordered(16)
    .for_each(|_| async {})
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let churn_reconciles = controller.reconciles().await?.saturating_sub(before);
    // The footprint over 10 s while idle.
    let pid = controller.pid();
    let cpu0 = procs::cpu_ms(pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu_pct = (procs::cpu_ms(pid)?.saturating_sub(cpu0)) as f64 / 100.0;
    let rss_mib = procs::rss_kib(pid)? as f64 / 1024.0;
    // An in-place image update of every pod.
    let image = cluster.image("busybox:2-bench");
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}});
    let started = Instant::now();
    api.patch("bench", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    until(&api, "all updated in place", 900, |s| {
        s.updated_available_replicas as usize == replicas && s.current_revision == s.update_revision
    })
    .await?;
    let rollout_s = started.elapsed().as_secs_f64();
    api.delete("bench", &DeleteParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !pods
        .list(&ListParams::default().labels("app=bench").limit(1))
        .await?
        .items
        .is_empty()
    {
        if Instant::now() > deadline {
            bail!("the CloneSet's pods did not go");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(controller);
    Ok(Round {
        create_s,
        churn_reconciles,
        rollout_s,
        rss_mib,
        cpu_pct,
    })
}

async fn until(
    api: &Api<CloneSet>,
    what: &str,
    secs: u64,
    done: impl Fn(&nodeward::api::kruise::CloneSetStatus) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let cs = api.get("bench").await?;
        if let Some(s) = &cs.status
            && Some(s.observed_generation) == cs.metadata.generation
            && done(s)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s ({:?})", cs.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn namespace(client: &Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NS).await?.is_none() {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
            )
            .await?;
    }
    Ok(())
}

fn node_name(i: usize) -> String {
    format!("bench-fake-{i}")
}

async fn fake_nodes(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..NODES {
        let name = node_name(i);
        if nodes.get_opt(&name).await?.is_some() {
            continue;
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {FAKE_LABEL: "true", "kubernetes.io/hostname": name}},
            "spec": {"taints": [{"key": FAKE_LABEL, "value": "true", "effect": "NoSchedule"}]},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    node_status(client).await
}

/// Every fake node Ready, with room for 250 pods, heartbeat now.
async fn node_status(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for i in 0..NODES {
        let status = json!({"status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
        }});
        nodes
            .patch_status(
                &node_name(i),
                &PatchParams::default(),
                &Patch::Strategic(&status),
            )
            .await?;
    }
    Ok(())
}

/// The fake nodes' heartbeats: status and Lease every 10 s.
async fn heartbeats(client: Client, mut stop: tokio::sync::watch::Receiver<bool>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    loop {
        if let Err(e) = node_status(&client).await {
            eprintln!("heartbeat: {e}");
        }
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for i in 0..NODES {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node_name(i)},
                "spec": {"holderIdentity": node_name(i), "leaseDurationSeconds": 40, "renewTime": now},
            });
            let _ = leases
                .patch(
                    &node_name(i),
                    &PatchParams::apply("cloneset-bench").force(),
                    &Patch::Apply(&lease),
                )
                .await;
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

async fn remove_fake_nodes(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..NODES {
        nodes
            .delete(&node_name(i), &DeleteParams::default())
            .await
            .ok();
    }
}

/// The status a kubelet would report for `pod` on a fake node, if it differs from what it has.
fn kubelet_status(pod: &Pod) -> Option<Value> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref()?;
    if !node.starts_with("bench-fake-") {
        return None;
    }
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let gates_true = spec.readiness_gates.iter().flatten().all(|g| {
        conditions
            .iter()
            .any(|c| c.type_ == g.condition_type && c.status == "True")
    });
    let ready = if gates_true { "True" } else { "False" };
    let uid = pod.uid().unwrap_or_default();
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let old = status
                .container_statuses
                .iter()
                .flatten()
                .find(|s| s.name == c.name);
            let changed = old.is_some_and(|o| o.image != image);
            let restart = old.map_or(0, |o| o.restart_count) + i32::from(changed);
            json!({
                "name": c.name, "image": image, "imageID": format!("sha256:{:x}", image_number(&image)),
                "containerID": format!("fake://{uid}-{}-{restart}", c.name),
                "ready": true, "started": true, "restartCount": restart,
                "state": {"running": {"startedAt": "2026-12-07T00:00:00Z"}},
            })
        })
        .collect();
    let same_images = status.container_statuses.iter().flatten().count() == statuses.len()
        && statuses.iter().all(|s| {
            status
                .container_statuses
                .iter()
                .flatten()
                .any(|c| c.name == s["name"] && c.image == s["image"])
        });
    let ready_now = conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == ready);
    if status.phase.as_deref() == Some("Running") && same_images && ready_now {
        return None;
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    Some(json!({"status": {
        "phase": "Running",
        "podIP": "10.99.0.1",
        "startTime": status.start_time.map(|t| t.0.to_string()).unwrap_or(now.clone()),
        "conditions": [
            {"type": "Ready", "status": ready, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": statuses,
    }}))
}

/// A stable digest-like number for an image name (a changed image, a new image id).
fn image_number(s: &str) -> u64 {
    nodeward::hash::fnv1a_64(s.bytes())
}

/// The fake nodes' kubelet: statuses as [`kubelet_status`] says, pods being deleted removed.
async fn play_kubelet(client: Client, mut stop: tokio::sync::watch::Receiver<bool>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let stream = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    loop {
        let pod = tokio::select! {
            _ = stop.changed() => return,
            next = stream.next() => match next {
                Some(Ok(pod)) => pod,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let on_fake = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n.starts_with("bench-fake-"));
        if !on_fake {
            continue;
        }
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let (pods, name) = (pods.clone(), name.clone());
            tokio::spawn(async move { pods.delete(&name, &now).await.ok() });
            continue;
        }
        if let Some(patch) = kubelet_status(&pod) {
            let (pods, name) = (pods.clone(), name.clone());
            tokio::spawn(async move {
                pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                    .ok()
            });
        }
    }
}
