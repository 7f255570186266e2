//! The image pre-pull controllers (ImagePullJob fan-out, NodeImage lifecycle) against the
//! in-memory API server, with a scripted fake agent per node writing NodeImage statuses as the
//! real agent does (Waiting → Pulling → Succeeded/Failed, with the spec version). Each test has
//! its own API server and controller, so the tests run in parallel. Covers upstream's
//! `pullimages.go` e2e list plus the cases of issue 6.

use nodeward_testkit as support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use nodeward::api::kruise::{
    ImagePullJob, ImagePullPhase, ImageStatus, ImageTagStatus, NodeImage, NodeImageStatus,
};
use nodeward::controller::imagepull::{self, Config};
use serde_json::{Value, json};
use support::agent::AgentProcess;
use support::apiserver::ApiServer;
use support::rbac;
use support::wait::until;
use tokio::task::JoinHandle;

const NS: &str = "default";
const DAEMON_NS: &str = "kruise-daemon-config";
const IMAGE: &str = "127.0.0.1:5000/pull/app:v1";
const IMAGE_NAME: &str = "127.0.0.1:5000/pull/app";

/// What the fake agent does with one pull task.
#[derive(Clone, Debug)]
enum Behaviour {
    Succeed(Duration),
    Fail(Duration, &'static str),
    /// Reports Pulling and never finishes.
    Hang,
}

type Script = Arc<dyn Fn(&str) -> Behaviour + Send + Sync>;
/// (node, image, tag, version) of a pull task.
type TaskKey = (String, String, String, i64);

fn succeed_after(ms: u64) -> Script {
    Arc::new(move |_| Behaviour::Succeed(Duration::from_millis(ms)))
}

/// An API server, the controllers, and optionally a fake agent.
struct Env {
    server: ApiServer,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
    /// Pull tasks running now / at most at once, over all nodes.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn env(cfg: Config) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .with_env_filter("nodeward=debug,kube_runtime=info")
        .try_init();
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": DAEMON_NS}})).unwrap(),
        )
        .await
        .unwrap();
    let ctrl = tokio::spawn(imagepull::run(
        client.clone(),
        cfg,
        nodeward::controller::metrics::ControllerMetrics::new(),
    ));
    Env {
        server,
        client,
        tasks: vec![ctrl],
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
    }
}

fn fast() -> Config {
    Config {
        node_image_creation_delay: Duration::ZERO,
        ..Config::default()
    }
}

fn rfc(t: Timestamp) -> String {
    t.to_string()
}

impl Env {
    fn jobs(&self) -> Api<ImagePullJob> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn node_images(&self) -> Api<NodeImage> {
        Api::all(self.client.clone())
    }

    /// A Node, Ready since `ready_for` ago.
    async fn node(&self, name: &str, labels: Value, ready_for: Duration) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let n = json!({"metadata": {"name": name, "labels": labels}});
        nodes
            .create(&PostParams::default(), &serde_json::from_value(n).unwrap())
            .await
            .unwrap();
        let since = Timestamp::now() - ready_for;
        let status = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": rfc(since)}
        ]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// Ready nodes with NodeImages (waits for the controller to create them).
    async fn nodes(&self, names: &[&str], labels: Value) {
        for n in names {
            self.node(n, labels.clone(), Duration::from_secs(3600))
                .await;
        }
        for n in names {
            let api = self.node_images();
            until(&format!("NodeImage {n}"), 10, || async {
                api.get_opt(n).await.unwrap()
            })
            .await;
        }
    }

    /// A NodeImage without a Node that never answers (upstream's e2e fixture).
    async fn fake_node_image(&self, name: &str) {
        let ni = json!({"metadata": {"name": name, "labels": {"apps.kruise.io/fake-nodeimage": "true"}},
                        "spec": {}});
        self.node_images()
            .create(&PostParams::default(), &serde_json::from_value(ni).unwrap())
            .await
            .unwrap();
    }

    async fn job(&self, name: &str, spec: Value) -> ImagePullJob {
        let j = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                       "metadata": {"name": name, "namespace": NS}, "spec": spec});
        self.jobs()
            .create(&PostParams::default(), &serde_json::from_value(j).unwrap())
            .await
            .unwrap()
    }

    async fn wait_job(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&ImagePullJob) -> bool,
    ) -> ImagePullJob {
        let api = self.jobs();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = api.get_opt(name).await.unwrap();
            if let Some(j) = job.as_ref().filter(|j| ok(j)) {
                return j.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for job {name}: {what}\njob: {}\nnode images: {}",
                    serde_json::to_string(&job).unwrap(),
                    support::cluster::node_images_json(&self.node_images()).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_job_gone(&self, name: &str) {
        let api = self.jobs();
        until(&format!("job {name} deleted"), 20, || async {
            api.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }

    /// Waits until no NodeImage lists the image.
    async fn wait_image_removed(&self) {
        let api = self.node_images();
        until("image removed from every NodeImage", 20, || async {
            let all = api.list(&ListParams::default()).await.unwrap().items;
            all.iter()
                .all(|n| !n.spec.images.contains_key(IMAGE_NAME))
                .then_some(())
        })
        .await;
    }

    async fn copies(&self) -> Vec<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), DAEMON_NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// Starts the fake agent for `nodes`.
    fn agent(&mut self, nodes: &[&str], script: Script) {
        let nodes: HashSet<String> = nodes.iter().map(|s| s.to_string()).collect();
        let api = self.node_images();
        let started: Arc<Mutex<HashSet<TaskKey>>> = Arc::default();
        let (cur, max) = (self.in_flight.clone(), self.max_in_flight.clone());
        let task = tokio::spawn(async move {
            let stream = watcher(api.clone(), watcher::Config::default())
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(ni)) = stream.next().await {
                let node = ni.name_any();
                if !nodes.contains(&node) {
                    continue;
                }
                for (image, spec) in &ni.spec.images {
                    for tag in &spec.tags {
                        let key = (node.clone(), image.clone(), tag.tag.clone(), tag.version);
                        if !started.lock().unwrap().insert(key) {
                            continue;
                        }
                        let behaviour = script(&node);
                        let (api, node, image, tag, version) = (
                            api.clone(),
                            node.clone(),
                            image.clone(),
                            tag.tag.clone(),
                            tag.version,
                        );
                        let (cur, max) = (cur.clone(), max.clone());
                        tokio::spawn(async move {
                            let t = Task {
                                api,
                                node,
                                image,
                                tag,
                                version,
                            };
                            t.report(ImagePullPhase::Waiting, "").await;
                            let n = cur.fetch_add(1, Ordering::SeqCst) + 1;
                            max.fetch_max(n, Ordering::SeqCst);
                            t.report(ImagePullPhase::Pulling, "").await;
                            match behaviour {
                                Behaviour::Succeed(d) => {
                                    tokio::time::sleep(d).await;
                                    cur.fetch_sub(1, Ordering::SeqCst);
                                    t.report(ImagePullPhase::Succeeded, "").await;
                                }
                                Behaviour::Fail(d, msg) => {
                                    tokio::time::sleep(d).await;
                                    cur.fetch_sub(1, Ordering::SeqCst);
                                    t.report(ImagePullPhase::Failed, msg).await;
                                }
                                Behaviour::Hang => {}
                            }
                        });
                    }
                }
            }
        });
        self.tasks.push(task);
    }
}

/// One pull task of the fake agent.
struct Task {
    api: Api<NodeImage>,
    node: String,
    image: String,
    tag: String,
    version: i64,
}

impl Task {
    /// Full status replace with optimistic concurrency, as the agent does; stops when the spec
    /// moved on to another version or dropped the tag.
    async fn report(&self, phase: ImagePullPhase, message: &str) {
        for _ in 0..50 {
            let Some(mut ni) = self.api.get_opt(&self.node).await.unwrap() else {
                return;
            };
            let current = ni
                .spec
                .images
                .get(&self.image)
                .and_then(|i| i.tags.iter().find(|t| t.tag == self.tag))
                .is_some_and(|t| t.version == self.version);
            if !current {
                return;
            }
            let mut status = ni.status.clone().unwrap_or_default();
            let entry = status
                .image_statuses
                .entry(self.image.clone())
                .or_insert_with(ImageStatus::default);
            entry.tags.retain(|t| t.tag != self.tag);
            let now = Time(Timestamp::now());
            entry.tags.push(ImageTagStatus {
                tag: self.tag.clone(),
                phase,
                progress: if phase == ImagePullPhase::Succeeded {
                    100
                } else {
                    0
                },
                start_time: Some(now.clone()),
                completion_time: phase.is_finished().then_some(now),
                version: self.version,
                image_id: if phase == ImagePullPhase::Succeeded {
                    format!("{}@sha256:{}", self.image, "0".repeat(64))
                } else {
                    String::new()
                },
                message: message.to_string(),
            });
            entry.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
            recount(&mut status, &ni);
            ni.status = Some(status);
            match self
                .api
                .replace_status(&self.node, &PostParams::default(), &ni)
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => panic!("status write: {e}"),
            }
        }
        panic!("status write of {} kept conflicting", self.node);
    }
}

fn recount(status: &mut NodeImageStatus, ni: &NodeImage) {
    status.desired = ni.spec.images.values().map(|i| i.tags.len() as i32).sum();
    let tags: Vec<&ImageTagStatus> = status
        .image_statuses
        .values()
        .flat_map(|i| &i.tags)
        .collect();
    let count = |p| tags.iter().filter(|t| t.phase == p).count() as i32;
    status.succeeded = count(ImagePullPhase::Succeeded);
    status.failed = count(ImagePullPhase::Failed);
    status.pulling = count(ImagePullPhase::Pulling);
    status.waiting = count(ImagePullPhase::Waiting);
}

fn status(j: &ImagePullJob) -> nodeward::api::kruise::ImagePullJobStatus {
    j.status.clone().unwrap_or_default()
}

fn completed(j: &ImagePullJob) -> bool {
    status(j).completion_time.is_some()
}

fn job_tags(ni: &NodeImage) -> Vec<&nodeward::api::kruise::ImageTagSpec> {
    ni.spec
        .images
        .get(IMAGE_NAME)
        .map(|i| i.tags.iter().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_image_lifecycle() {
    let e = env(Config {
        node_image_creation_delay: Duration::from_secs(2),
        ..Config::default()
    })
    .await;
    let api = e.node_images();
    e.fake_node_image("fake").await;
    e.node("n-a", json!({"zone": "a"}), Duration::ZERO).await;
    e.node(
        "n-vk",
        json!({"type": "virtual-kubelet"}),
        Duration::from_secs(3600),
    )
    .await;
    e.node("n-old", json!({}), Duration::from_secs(3600)).await;
    let created = tokio::time::Instant::now();
    // Ready long ago: at once; just Ready: after the delay.
    until("n-old's NodeImage", 5, || async {
        api.get_opt("n-old").await.unwrap()
    })
    .await;
    // Tags of jobs that do not exist are garbage-collected (no finalizer ran for them).
    let orphan = json!({"spec": {"images": {"orphan": {"tags": [{"tag": "1", "createdAt": rfc(Timestamp::now()),
        "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                             "namespace": NS, "name": "gone", "uid": "u-gone"}]}]}}}});
    api.patch("n-old", &PatchParams::default(), &Patch::Merge(&orphan))
        .await
        .unwrap();
    until("orphan tag dropped", 10, || async {
        api.get("n-old")
            .await
            .unwrap()
            .spec
            .images
            .is_empty()
            .then_some(())
    })
    .await;
    let ni = until("n-a's NodeImage", 10, || async {
        api.get_opt("n-a").await.unwrap()
    })
    .await;
    assert!(
        created.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        created.elapsed()
    );
    assert_eq!(ni.labels().get("zone").map(String::as_str), Some("a"));
    assert!(
        api.get_opt("n-vk").await.unwrap().is_none(),
        "no NodeImage for a virtual node"
    );
    // Label changes are mirrored.
    let nodes: Api<Node> = Api::all(e.client.clone());
    let patch = json!({"metadata": {"labels": {"zone": "b", "extra": "1"}}});
    nodes
        .patch("n-a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    until("labels mirrored", 10, || async {
        let ni = api.get("n-a").await.unwrap();
        (ni.labels().get("zone").map(String::as_str) == Some("b")
            && ni.labels().contains_key("extra"))
        .then_some(())
    })
    .await;
    // Deleted with the Node; the fake NodeImage stays.
    nodes.delete("n-a", &DeleteParams::default()).await.unwrap();
    until("n-a's NodeImage deleted", 10, || async {
        api.get_opt("n-a").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(api.get_opt("fake").await.unwrap().is_some());
    assert!(api.get_opt("n-vk").await.unwrap().is_none());
}

/// Upstream e2e "pull image with secret": one synced copy with identical data, completion,
/// TTL deletion, image removed from the NodeImages, copy deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_job_completes_then_ttl_cleans_up() {
    let mut e = env(fast()).await;
    e.nodes(&["n1", "n2", "n3"], json!({"role": "worker"}))
        .await;
    e.fake_node_image("fake").await;
    e.agent(&["n1", "n2", "n3"], succeed_after(300));
    let auth = json!({"auths": {"127.0.0.1:5001": {"auth": "dXNlcjpwYXNz"}}}).to_string();
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), NS);
    let src: Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": auth}
    }))
    .unwrap();
    let src = secrets.create(&PostParams::default(), &src).await.unwrap();
    e.job("with-secret", json!({
        "image": IMAGE, "pullSecrets": ["regcred"], "parallelism": 4,
        "selector": {"matchLabels": {"role": "worker"}},
        "pullPolicy": {"timeoutSeconds": 50, "backoffLimit": 2},
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 50, "ttlSecondsAfterFinished": 3}
    }))
    .await;
    let running = e
        .wait_job("with-secret", "desired 3", |j| status(j).desired == 3)
        .await;
    assert!(
        running
            .finalizers()
            .contains(&"apps.kruise.io/deletion-protection".to_string())
    );
    assert_eq!(
        running.spec.template.image_pull_policy.map(|p| p.as_str()),
        Some("IfNotPresent")
    );
    let copies = until("one secret copy", 10, || async {
        let c = e.copies().await;
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    let ann = copy.annotations();
    assert_eq!(ann["imagepulljobs.kruise.io/source-key"], "default/regcred");
    assert_eq!(
        ann["imagepulljobs.kruise.io/references"],
        "default/with-secret"
    );
    assert_eq!(ann["imagepulljobs.kruise.io/mode"], "batch");
    assert_eq!(copy.data, src.data);
    assert_eq!(copy.type_, src.type_);
    assert!(
        copy.name_any().starts_with("regcred-") && copy.name_any().len() == "regcred-".len() + 6
    );
    let n1 = e.node_images().get("n1").await.unwrap();
    let image = &n1.spec.images[IMAGE_NAME];
    assert_eq!(image.pull_secrets[0].name, copy.name_any());
    assert_eq!(image.pull_secrets[0].namespace, DAEMON_NS);
    let tag = &image.tags[0];
    assert_eq!(tag.tag, "v1");
    let policy = tag.pull_policy.clone().unwrap();
    assert_eq!(
        (
            policy.timeout_seconds,
            policy.backoff_limit,
            policy.active_deadline_seconds
        ),
        (Some(50), Some(2), Some(50))
    );
    assert!(
        job_tags(&e.node_images().get("fake").await.unwrap()).is_empty(),
        "selector excludes the fake node"
    );
    let done = e.wait_job("with-secret", "completed", completed).await;
    let st = status(&done);
    assert_eq!(
        (st.desired, st.succeeded, st.failed, st.active),
        (3, 3, 0, 0)
    );
    assert_eq!(st.message, "job has completed");
    e.wait_job_gone("with-secret").await;
    e.wait_image_removed().await;
    until("copy deleted", 10, || async {
        e.copies().await.is_empty().then_some(())
    })
    .await;
}

/// Upstream e2e "never completion pull job with updated pull secrets" and "never job on all
/// nodes" (the fake node never answers, so the job never completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_job_propagates_secret_updates_and_cleans_up_on_delete() {
    let mut e = env(fast()).await;
    e.nodes(&["n1", "n2"], json!({})).await;
    e.fake_node_image("fake").await;
    e.agent(&["n1", "n2"], succeed_after(200));
    let secrets: Api<Secret> = Api::namespaced(e.client.clone(), NS);
    let src: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cfg"}, "type": "kubernetes.io/dockercfg",
        "stringData": {".dockercfg": "{\"127.0.0.1:5001\":{\"auth\":\"YTpi\"}}"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &src).await.unwrap();
    e.job(
        "never",
        json!({"image": IMAGE, "pullSecrets": ["cfg"], "parallelism": 5,
                          "completionPolicy": {"type": "Never"}}),
    )
    .await;
    let j = e
        .wait_job("never", "2 succeeded", |j| status(j).succeeded == 2)
        .await;
    let st = status(&j);
    assert_eq!(st.desired, 3, "two nodes and the fake one");
    assert!(st.completion_time.is_none());
    let tag = &e.node_images().get("n1").await.unwrap().spec.images[IMAGE_NAME].tags[0];
    let policy = tag.pull_policy.clone().unwrap();
    let ttl = policy.ttl_seconds_after_finished.unwrap();
    assert!((86400 - 600..=86400 + 600).contains(&ttl), "{ttl}");
    // Every attempt fits the deadline: 4 × 600 s + 1 + 2 + 4 s of backoff (upstream #2071).
    assert_eq!(policy.active_deadline_seconds, Some(2407));
    // The source secret changes: the copy follows.
    let patch = json!({"stringData": {".dockercfg": "{\"127.0.0.1:5001\":{\"auth\":\"Yzpk\"}}"}});
    let updated = secrets
        .patch("cfg", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    until("copy data updated", 10, || async {
        let c = e.copies().await;
        (c.len() == 1 && c[0].data == updated.data).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!completed(&e.jobs().get("never").await.unwrap()));
    e.jobs()
        .delete("never", &DeleteParams::default())
        .await
        .unwrap();
    e.wait_job_gone("never").await;
    e.wait_image_removed().await;
    until("copy deleted", 10, || async {
        e.copies().await.is_empty().then_some(())
    })
    .await;
}

/// Upstream e2e "always job on one real node" (`selector.names`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_by_name() {
    let mut e = env(fast()).await;
    e.nodes(&["n1", "n2", "n3"], json!({})).await;
    e.agent(&["n1", "n2", "n3"], succeed_after(100));
    e.job(
        "one",
        json!({"image": IMAGE, "selector": {"names": ["n2", "missing"]}}),
    )
    .await;
    let j = e.wait_job("one", "completed", completed).await;
    let st = status(&j);
    assert_eq!((st.desired, st.succeeded), (1, 1));
    for (n, has) in [("n1", false), ("n2", true), ("n3", false)] {
        let ni = e.node_images().get(n).await.unwrap();
        assert_eq!(!job_tags(&ni).is_empty(), has, "{n}");
    }
    e.jobs()
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();
    e.wait_image_removed().await;
    e.wait_job_gone("one").await;
}

/// Upstream e2e "always job on all real nodes" and "two jobs pull the same image": the second
/// job bumps the tag version, so every node pulls again for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_then_second_job_same_image_bumps_version() {
    let mut e = env(fast()).await;
    e.nodes(&["n1", "n2"], json!({})).await;
    e.agent(&["n1", "n2"], succeed_after(100));
    e.job("first", json!({"image": IMAGE, "parallelism": 2}))
        .await;
    let j = e.wait_job("first", "completed", completed).await;
    assert_eq!((status(&j).desired, status(&j).succeeded), (2, 2));
    e.job(
        "second",
        json!({"image": IMAGE, "parallelism": 2, "completionPolicy": {"type": "Never"}}),
    )
    .await;
    let j2 = e
        .wait_job("second", "2 succeeded", |j| status(j).succeeded == 2)
        .await;
    assert_eq!(status(&j2).desired, 2);
    for n in ["n1", "n2"] {
        let ni = e.node_images().get(n).await.unwrap();
        let tag = job_tags(&ni)[0].clone();
        assert_eq!(tag.version, 1, "{n}");
        assert_eq!(tag.owner_references.len(), 2);
        let st = &ni.status.unwrap().image_statuses[IMAGE_NAME].tags[0];
        assert_eq!((st.version, st.phase), (1, ImagePullPhase::Succeeded));
    }
    // Deleting the first job leaves the tag to the second.
    e.jobs()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    e.wait_job_gone("first").await;
    let ni = e.node_images().get("n1").await.unwrap();
    assert_eq!(job_tags(&ni)[0].owner_references.len(), 1);
    assert_eq!(
        job_tags(&ni)[0].owner_references[0].name.as_deref(),
        Some("second")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_window_limits_nodes_in_flight() {
    let mut e = env(fast()).await;
    let names = ["n1", "n2", "n3", "n4", "n5"];
    e.nodes(&names, json!({})).await;
    e.agent(&names, succeed_after(600));
    e.server.clear_requests();
    e.job("window", json!({"image": IMAGE, "parallelism": 2}))
        .await;
    let j = e.wait_job("window", "completed", completed).await;
    assert_eq!(status(&j).succeeded, 5);
    assert_eq!(e.max_in_flight.load(Ordering::SeqCst), 2);
    // No expectations, yet no duplicate writes: one spec write per node, a few job writes.
    let requests = e.server.requests();
    let writes = |resource: &str, sub: Option<&str>| {
        requests
            .iter()
            .filter(|r| r.resource == resource && r.is_write() && r.subresource.as_deref() == sub)
            .count()
    };
    assert_eq!(writes("nodeimages", None), 5);
    let job_status_writes = writes("imagepulljobs", Some("status"));
    assert!(
        (2..=16).contains(&job_status_writes),
        "{job_status_writes} job status writes"
    );
    eprintln!(
        "RESULT controller_writes nodes=5 nodeimage_spec={} job_status={job_status_writes} job_update={}",
        writes("nodeimages", None),
        writes("imagepulljobs", None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_selector_picks_nodes_of_active_pods() {
    let mut e = env(fast()).await;
    e.nodes(&["n1", "n2", "n3"], json!({})).await;
    e.agent(&["n1", "n2", "n3"], succeed_after(100));
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), NS);
    let add_pod =
        |name: &'static str, node: &'static str, app: &'static str, phase: &'static str| {
            let pods = pods.clone();
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": app}},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
                }))
                .unwrap();
                pods.create(&PostParams::default(), &p).await.unwrap();
                let st = json!({"status": {"phase": phase}});
                pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
                    .await
                    .unwrap();
            }
        };
    add_pod("web-1", "n2", "web", "Running").await;
    add_pod("web-2", "n3", "web", "Succeeded").await;
    add_pod("db-1", "n1", "db", "Running").await;
    e.job(
        "pods",
        json!({"image": IMAGE, "podSelector": {"matchLabels": {"app": "web"}},
               "completionPolicy": {"type": "Never"}}),
    )
    .await;
    let j = e
        .wait_job("pods", "1 succeeded", |j| status(j).succeeded == 1)
        .await;
    assert_eq!(status(&j).desired, 1);
    for (n, has) in [("n1", false), ("n2", true), ("n3", false)] {
        let ni = e.node_images().get(n).await.unwrap();
        assert_eq!(!job_tags(&ni).is_empty(), has, "{n}");
    }
    // A matching pod scheduled later brings its node in (the Pod watch wakes the job).
    add_pod("web-3", "n1", "web", "Running").await;
    let j = e
        .wait_job("pods", "2 succeeded", |j| status(j).succeeded == 2)
        .await;
    assert_eq!(status(&j).desired, 2);
    assert!(job_tags(&e.node_images().get("n3").await.unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_fails_unfinished_nodes() {
    let mut e = env(fast()).await;
    e.nodes(&["n1", "n2", "n3"], json!({})).await;
    e.agent(
        &["n1", "n2", "n3"],
        Arc::new(|node: &str| match node {
            "n1" => Behaviour::Succeed(Duration::from_millis(100)),
            "n2" => Behaviour::Fail(Duration::from_millis(100), "pull failed: 401"),
            _ => Behaviour::Hang,
        }),
    );
    e.job(
        "deadline",
        json!({"image": IMAGE, "parallelism": 3,
        "pullPolicy": {"timeoutSeconds": 2},
        "completionPolicy": {"activeDeadlineSeconds": 3}}),
    )
    .await;
    let j = e.wait_job("deadline", "completed", completed).await;
    let st = status(&j);
    assert_eq!(st.message, "job exceeds activeDeadlineSeconds");
    assert_eq!((st.succeeded, st.failed, st.active), (1, 2, 0));
    assert_eq!(st.failed_nodes, vec!["n2", "n3"]);
    let took = (st.completion_time.unwrap().0.as_millisecond()
        - st.start_time.unwrap().0.as_millisecond()) as f64
        / 1000.0;
    assert!((3.0..6.0).contains(&took), "completed after {took} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_fails_after_response_timeout() {
    let mut e = env(Config {
        node_image_response_timeout: Duration::from_secs(2),
        ..fast()
    })
    .await;
    e.nodes(&["n1"], json!({})).await;
    e.fake_node_image("fake").await;
    e.agent(&["n1"], succeed_after(100));
    e.job("silent", json!({"image": IMAGE, "parallelism": 2}))
        .await;
    let j = e.wait_job("silent", "completed", completed).await;
    let st = status(&j);
    assert_eq!((st.desired, st.succeeded, st.failed), (2, 1, 1));
    assert_eq!(st.failed_nodes, vec!["fake"]);
    let fake = e.node_images().get("fake").await.unwrap();
    let tag = &fake.status.unwrap().image_statuses[IMAGE_NAME].tags[0];
    assert_eq!(tag.phase, ImagePullPhase::Failed);
    assert_eq!(tag.message, "node has not responded for a long time");
    let events: Api<Event> = Api::namespaced(e.client.clone(), NS);
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        evs.iter()
            .any(|ev| ev.reason.as_deref() == Some("PullImageFailed")
                && ev.involved_object.name.as_deref() == Some("silent")
                && ev.type_.as_deref() == Some("Warning")),
        "{evs:?}"
    );
}

/// Upstream #2221: pullPolicy edits of a running job reach the NodeImages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policy_edit_propagates() {
    let mut e = env(fast()).await;
    e.nodes(&["n1"], json!({})).await;
    e.agent(&["n1"], Arc::new(|_: &str| Behaviour::Hang));
    e.job(
        "edit",
        json!({"image": IMAGE, "completionPolicy": {"type": "Never"}}),
    )
    .await;
    let api = e.node_images();
    let tag = until("tag written", 10, || async {
        job_tags(&api.get("n1").await.unwrap())
            .first()
            .map(|t| (*t).clone())
    })
    .await;
    assert_eq!(tag.pull_policy.unwrap().timeout_seconds, Some(600));
    let patch = json!({"spec": {"pullPolicy": {"timeoutSeconds": 30, "backoffLimit": 1}, "imagePullPolicy": "Always"}});
    e.jobs()
        .patch("edit", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let tag = until("edit propagated", 10, || async {
        let ni = api.get("n1").await.unwrap();
        job_tags(&ni)
            .first()
            .filter(|t| t.pull_policy.as_ref().and_then(|p| p.timeout_seconds) == Some(30))
            .map(|t| (*t).clone())
    })
    .await;
    assert_eq!(tag.pull_policy.unwrap().backoff_limit, Some(1));
    assert_eq!(tag.image_pull_policy.map(|p| p.as_str()), Some("Always"));
    assert_eq!(tag.version, 1, "a new round with the new policy");
    // An edited image moves the job to the new tag; the old one, now ownerless, goes.
    let patch = json!({"spec": {"image": format!("{IMAGE_NAME}:v2")}});
    e.jobs()
        .patch("edit", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    until("image edit propagated", 10, || async {
        let ni = api.get("n1").await.unwrap();
        let tags: Vec<String> = job_tags(&ni).iter().map(|t| t.tag.clone()).collect();
        (tags == ["v2"]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_image_is_reported_without_node_image_writes() {
    let e = env(fast()).await;
    e.nodes(&["n1"], json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.server.clear_requests();
    e.job("bad", json!({"image": "Not A/valid::image"})).await;
    let j = e
        .wait_job("bad", "message", |j| !status(j).message.is_empty())
        .await;
    assert!(
        status(&j).message.starts_with("invalid image"),
        "{}",
        status(&j).message
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = e
        .server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "nodeimages" && r.is_write())
        .count();
    assert_eq!(writes, 0);
    assert!(
        e.node_images()
            .get("n1")
            .await
            .unwrap()
            .spec
            .images
            .is_empty()
    );
}

/// The real `nodeward controller` binary runs the image pull reconcilers once it leads, with
/// the flags wired through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_runs_image_pull_reconcilers() {
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server
        .service_account_kubeconfig(dir.path(), rbac::CONTROLLER)
        .unwrap();
    let mut e = Env {
        client: server.client(),
        server,
        tasks: Vec::new(),
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
    };
    let ctrl = AgentProcess::spawn_controller(
        &kubeconfig,
        &[
            "--nodeimage-creation-delay",
            "1s",
            "--nodeimage-response-timeout",
            "2s",
        ],
    )
    .unwrap();
    ctrl.wait_for("image pull controllers", Duration::from_secs(20), |v| {
        v["message"] == "image pull controllers started"
    })
    .await
    .unwrap();
    e.nodes(&["n1"], json!({})).await;
    e.fake_node_image("fake").await;
    e.agent(&["n1"], succeed_after(100));
    e.job("bin", json!({"image": IMAGE, "parallelism": 2}))
        .await;
    let j = e.wait_job("bin", "completed", completed).await;
    let st = status(&j);
    assert_eq!((st.succeeded, st.failed), (1, 1), "{st:?}");
    assert_eq!(
        st.failed_nodes,
        vec!["fake"],
        "response timeout from the flag"
    );
    e.server.assert_no_denials();
    ctrl.stop().await.unwrap();
}
