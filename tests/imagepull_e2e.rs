//! Image pre-pull end to end: the real `nodeward controller` and two real `nodeward agent`
//! processes (cluster mode, one per simulated node, sharing the test bed's containerd through a
//! recording CRI proxy each) against the in-memory API server. ImagePullJobs go in; the
//! controller fans them out to NodeImages, the agents pull for real and report, and the
//! controller aggregates the job status.

use nodeward_testkit as support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use nodeward::api::kruise::{ImagePullJob, ImagePullJobStatus, ImagePullPhase, NodeImage};
use nodeward::controller::imagepull::job::decide::secret_copy_name;
use serde_json::{Value, json};
use support::agent::AgentProcess;
use support::apiserver::ApiServer;
use support::cri_proxy::{self, CriProxy};
use support::rbac;
use support::registry::{self, Registry};
use support::testbed::TestBed;
use support::wait::until;

const NS: &str = "default";
const DAEMON_NS: &str = "kruise-daemon-config";
const NODES: [&str; 2] = ["e2e-a", "e2e-b"];
const WAIT_SECS: u64 = 30;

/// One simulated node: its recording CRI proxy and its agent.
struct NodeAgent {
    proxy: CriProxy,
    agent: AgentProcess,
}

/// The API server, the controller and one agent per node.
struct Cluster {
    server: ApiServer,
    client: Client,
    controller: AgentProcess,
    nodes: Vec<NodeAgent>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let tb = TestBed::shared();
        let server = ApiServer::start().await.unwrap();
        let client = server.client();
        let dir = tempfile::tempdir_in(tb.dir()).unwrap();
        // The controller and the agents act as their service accounts, under the packaged RBAC.
        let kubeconfig = |sa| server.service_account_kubeconfig(dir.path(), sa).unwrap();
        let (controller_kc, agent_kc) = (kubeconfig(rbac::CONTROLLER), kubeconfig(rbac::AGENT));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(DAEMON_NS.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        for name in NODES {
            ready_node(&client, name).await;
        }
        let controller =
            AgentProcess::spawn_controller(&controller_kc, &["--nodeimage-creation-delay", "1s"])
                .unwrap();
        let nodes = NODES
            .iter()
            .map(|name| spawn_node(dir.path(), &agent_kc, name))
            .collect();
        let cluster = Cluster {
            server,
            client,
            controller,
            nodes,
            _dir: dir,
        };
        for n in &cluster.nodes {
            n.agent.wait_ready().await.unwrap();
        }
        let node_images = cluster.node_images();
        for name in NODES {
            until(&format!("NodeImage {name} created"), WAIT_SECS, || async {
                node_images.get_opt(name).await.unwrap()
            })
            .await;
        }
        cluster
    }

    fn jobs(&self) -> Api<ImagePullJob> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn node_images(&self) -> Api<NodeImage> {
        Api::all(self.client.clone())
    }

    fn copies(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), DAEMON_NS)
    }

    async fn job(&self, name: &str, spec: Value) {
        let j = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                       "metadata": {"name": name, "namespace": NS}, "spec": spec});
        self.jobs()
            .create(&PostParams::default(), &serde_json::from_value(j).unwrap())
            .await
            .unwrap();
    }

    /// Waits for the job to complete.
    async fn wait_completed(&self, name: &str) -> ImagePullJobStatus {
        self.wait_job(name, "completed", |st| st.completion_time.is_some())
            .await
    }

    /// Waits for the job's status to satisfy `ok`; on timeout shows the job, the NodeImages and
    /// the logs.
    async fn wait_job(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&ImagePullJobStatus) -> bool,
    ) -> ImagePullJobStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(WAIT_SECS);
        loop {
            let job = self.jobs().get_opt(name).await.unwrap();
            if let Some(st) = job.as_ref().and_then(|j| j.status.clone())
                && ok(&st)
            {
                return st;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "job {name}: timed out waiting for {what}\njob: {}\nnode images: {}\ncontroller log:\n{}\n{}",
                    serde_json::to_string(&job).unwrap(),
                    support::cluster::node_images_json(&self.node_images()).await,
                    self.controller.raw_lines().join("\n"),
                    self.nodes
                        .iter()
                        .map(|n| n.agent.raw_lines().join("\n"))
                        .collect::<Vec<_>>()
                        .join("\n---\n"),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The status phase of `image:tag` on `node`'s NodeImage.
    async fn tag_phase(&self, node: &str, image: &str, tag: &str) -> Option<ImagePullPhase> {
        let ni = self.node_images().get(node).await.unwrap();
        ni.status?
            .image_statuses
            .get(image)?
            .tags
            .iter()
            .find(|t| t.tag == tag)
            .map(|t| t.phase)
    }

    async fn has_tag(&self, node: &str, image: &str, tag: &str) -> bool {
        let ni = self.node_images().get(node).await.unwrap();
        ni.spec
            .images
            .get(image)
            .is_some_and(|i| i.tags.iter().any(|t| t.tag == tag))
    }

    /// Asserts that no process logged an error and the packaged RBAC allowed every call, then
    /// stops them all.
    async fn stop(self) {
        self.server.assert_no_denials();
        let processes =
            std::iter::once(&self.controller).chain(self.nodes.iter().map(|n| &n.agent));
        for p in processes {
            let errors: Vec<_> = p
                .lines()
                .into_iter()
                .filter(|v| v["level"] == "ERROR")
                .collect();
            assert!(errors.is_empty(), "errors logged: {errors:#?}");
        }
        self.controller.stop().await.unwrap();
        for n in &self.nodes {
            n.agent.stop().await.unwrap();
        }
        drop(self.server);
    }
}

/// A Node Ready for an hour.
async fn ready_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = json!({"metadata": {"name": name, "labels": {"e2e": "imagepull"}}});
    nodes
        .create(&PostParams::default(), &serde_json::from_value(n).unwrap())
        .await
        .unwrap();
    let since = Timestamp::now() - Duration::from_secs(3600);
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": since.to_string()}
    ]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// A CRI proxy in front of the test bed's containerd and an agent for `name` using it.
fn spawn_node(dir: &Path, kubeconfig: &Path, name: &str) -> NodeAgent {
    let tb = TestBed::shared();
    let state = dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    let proxy = CriProxy::start(&tb.socket(), &state.join("cri-proxy.sock")).unwrap();
    let agent = AgentProcess::spawn_on(
        tb,
        proxy.socket(),
        &state,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--node-name",
            name,
        ],
    )
    .unwrap();
    NodeAgent { proxy, agent }
}

/// Scenario 1: an Always job on every node, with sandboxConfig metadata.
async fn all_nodes_with_sandbox_config(c: &Cluster, layout: &Path) {
    let image = format!("127.0.0.1:{}/e2e-all", TestBed::shared().registry_port());
    registry::push(layout, "pull-0", &format!("{image}:v1"), None)
        .await
        .unwrap();
    c.job(
        "all",
        json!({
            "image": format!("{image}:v1"),
            "imagePullPolicy": "Always",
            "completionPolicy": {"type": "Always"},
            "pullPolicy": {"timeoutSeconds": 30, "backoffLimit": 0},
            "sandboxConfig": {"labels": {"app": "web"}, "annotations": {"team": "x"}},
        }),
    )
    .await;
    let st = c.wait_completed("all").await;
    assert_eq!(
        (st.desired, st.succeeded, st.failed, st.active),
        (2, 2, 0, 0),
        "{st:?}"
    );
    assert_eq!(st.message, "job has completed");
    for (name, node) in NODES.iter().zip(&c.nodes) {
        assert!(c.has_tag(name, &image, "v1").await, "{name} lacks the tag");
        assert_eq!(
            c.tag_phase(name, &image, "v1").await,
            Some(ImagePullPhase::Succeeded)
        );
        let pulls = node.proxy.pulls_of(&image);
        assert_eq!(pulls.len(), 1, "{name}: {pulls:?}");
        assert_eq!(
            pulls[0].image.as_ref().unwrap().image,
            format!("{image}:v1")
        );
        cri_proxy::assert_sandbox_forwarded(&pulls[0]);
    }
}

/// Scenario 2: a Never job on one node by name, with a pull secret against an htpasswd
/// registry (the copy lives as long as the job references it); deleting the job removes its
/// tag and the secret copy.
async fn one_node_with_secret(c: &Cluster, layout: &Path) {
    let tb = TestBed::shared();
    let reg = Registry::start(&tb.dir().join("registry-e2e"), Some(("puller", "s3cret")))
        .await
        .unwrap();
    reg.push(layout, "pull-1", "private:v1").await.unwrap();
    let image = reg.image("private");
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("puller:s3cret")
    };
    let config = format!(
        r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#,
        reg.port()
    );
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("e2e-cred".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(config.into_bytes()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    c.job(
        "one",
        json!({
            "image": format!("{image}:v1"),
            "selector": {"names": [NODES[0]]},
            "pullSecrets": ["e2e-cred"],
            "completionPolicy": {"type": "Never"},
            "pullPolicy": {"timeoutSeconds": 30, "backoffLimit": 0},
        }),
    )
    .await;
    let st = c
        .wait_job("one", "succeeded=1", |st| st.succeeded == 1)
        .await;
    assert_eq!((st.desired, st.failed, st.active), (1, 0, 0), "{st:?}");
    assert!(
        st.completion_time.is_none(),
        "a Never job does not complete"
    );
    assert!(!c.has_tag(NODES[1], &image, "v1").await);
    let copy_name = secret_copy_name(NS, "e2e-cred");
    let copy = c.copies().get(&copy_name).await.unwrap();
    assert_eq!(copy.data, secret.data, "copied secret data");
    let pulls = c.nodes[0].proxy.pulls_of(&image);
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let sent = pulls[0].auth.as_ref().expect("credentials sent");
    assert_eq!(
        (sent.username.as_str(), sent.password.as_str()),
        ("puller", "s3cret")
    );
    assert!(c.nodes[1].proxy.pulls_of(&image).is_empty());

    c.jobs()
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();
    until(
        "job one gone, its tag and secret copy removed",
        WAIT_SECS,
        || async {
            let gone = c.jobs().get_opt("one").await.unwrap().is_none()
                && !c.has_tag(NODES[0], &image, "v1").await
                && c.copies().get_opt(&copy_name).await.unwrap().is_none();
            gone.then_some(())
        },
    )
    .await;
}

/// Scenario 3: a missing tag with backoffLimit 0 fails the node and the job.
async fn unpullable_image_fails_the_job(c: &Cluster) {
    let image = format!("127.0.0.1:{}/e2e-all", TestBed::shared().registry_port());
    c.job(
        "missing",
        json!({
            "image": format!("{image}:nope"),
            "selector": {"names": [NODES[1]]},
            "pullPolicy": {"timeoutSeconds": 10, "backoffLimit": 0},
        }),
    )
    .await;
    let st = c.wait_completed("missing").await;
    assert_eq!((st.desired, st.succeeded, st.failed), (1, 0, 1), "{st:?}");
    assert_eq!(st.failed_nodes, vec![NODES[1].to_string()]);
    assert_eq!(
        c.tag_phase(NODES[1], &image, "nope").await,
        Some(ImagePullPhase::Failed)
    );
    let reference = format!("{image}:nope");
    assert_eq!(
        c.nodes[1].proxy.pulls_of(&reference).len(),
        1,
        "one attempt"
    );
    assert!(c.nodes[0].proxy.pulls_of(&reference).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_agents_pre_pull_images() {
    let layout = support::images::ensure_pull_layout(8, 64).expect("pull images");
    let c = Cluster::start().await;
    all_nodes_with_sandbox_config(&c, &layout).await;
    one_node_with_secret(&c, &layout).await;
    unpullable_image_fails_the_job(&c).await;
    c.stop().await;
}
