//! The agent's image puller end to end: real `nodeward agent` processes in cluster mode against
//! the in-memory API server, pulling from real registries into the test bed's containerd through
//! a recording CRI proxy. The tests play the controller: they write NodeImage specs directly.

use nodeward_testkit as support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Namespace, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{ListParams, PostParams};
use nodeward::api::kruise::{
    ImagePullPhase, ImagePullPolicy, ImageSpec, ImageTagPullPolicy, ImageTagSpec, ImageTagStatus,
    NodeImage, NodeImageSpec, NodeImageStatus, ReferenceObject, SandboxConfig,
};
use support::agent::AgentProcess;
use support::apiserver::{ApiServer, RequestMatcher};
use support::cri_proxy::{self, CriProxy};
use support::rbac;
use support::registry::{self, Registry};
use support::testbed::TestBed;

const SECRET_NS: &str = "kruise-daemon-config";
const WAIT: Duration = Duration::from_secs(30);

fn api() -> &'static ApiServer {
    ApiServer::shared()
}

/// The agent's kubeconfig: its service account, under the packaged RBAC.
fn kubeconfig() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        api()
            .service_account_kubeconfig(TestBed::shared().dir(), rbac::AGENT)
            .expect("kubeconfig")
    })
    .clone()
}

/// Images in the layout: more than all tests of this file push together.
const LAYOUT_IMAGES: usize = 32;

/// Small distinct images (64 KiB padding each).
fn layout() -> PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            support::images::ensure_pull_layout(LAYOUT_IMAGES, 64).expect("pull images")
        })
        .clone()
}

/// A layout tag no other test of this process pushes. The tests share one containerd, and CRI
/// `RemoveImage` drops every name of an image: two tests pushing the same content under different
/// names would remove each other's pulls.
fn unshared_image() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(i < LAYOUT_IMAGES, "raise LAYOUT_IMAGES");
    format!("pull-{i}")
}

/// Push `n` distinct images to the test bed's registry as `<prefix>-<i>:v1`; returns their
/// NodeImage keys (`127.0.0.1:<port>/<prefix>-<i>`).
async fn push_images(prefix: &str, n: usize) -> Vec<String> {
    let tb = TestBed::shared();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("127.0.0.1:{}/{prefix}-{i}", tb.registry_port());
        registry::push(&layout(), &unshared_image(), &format!("{key}:v1"), None)
            .await
            .unwrap();
        keys.push(key);
    }
    keys
}

async fn ensure_namespace(name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(api().client())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

fn docker_secret(ns: &str, name: &str, key: &str, value: String) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.into_bytes()),
        )])),
        ..Default::default()
    }
}

async fn create_secret(secret: Secret) {
    let ns = secret.metadata.namespace.clone().unwrap();
    ensure_namespace(&ns).await;
    Api::<Secret>::namespaced(api().client(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn auth_b64(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn tag(tag: &str) -> ImageTagSpec {
    ImageTagSpec {
        tag: tag.into(),
        created_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        pull_policy: Some(ImageTagPullPolicy {
            timeout_seconds: Some(30),
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(600),
            active_deadline_seconds: None,
        }),
        ..Default::default()
    }
}

fn with_policy(mut t: ImageTagSpec, f: impl FnOnce(&mut ImageTagPullPolicy)) -> ImageTagSpec {
    f(t.pull_policy.as_mut().unwrap());
    t
}

fn image(tags: Vec<ImageTagSpec>) -> ImageSpec {
    ImageSpec {
        tags,
        ..Default::default()
    }
}

fn job_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps.kruise.io/v1alpha1".into()),
        kind: Some("ImagePullJob".into()),
        namespace: Some("default".into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    }
}

/// One simulated node: a CRI proxy in front of the shared containerd, an agent using it, and
/// the node's NodeImage.
struct Node {
    name: String,
    state: PathBuf,
    proxy: CriProxy,
    agent: Option<AgentProcess>,
}

impl Node {
    async fn start(name: &str, extra: &[&str]) -> Node {
        let tb = TestBed::shared();
        let state = tb.dir().join(format!("imagepull-{name}"));
        std::fs::create_dir_all(&state).unwrap();
        let proxy = CriProxy::start(&tb.socket(), &state.join("cri-proxy.sock")).unwrap();
        let mut node = Node {
            name: name.into(),
            state,
            proxy,
            agent: None,
        };
        node.spawn_agent(extra);
        node
    }

    fn spawn_agent(&mut self, extra: &[&str]) {
        let tb = TestBed::shared();
        let kc = kubeconfig();
        let state = self.state.join("agent");
        let mut args = vec![
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--node-name",
            &self.name,
        ];
        args.extend_from_slice(extra);
        self.agent = Some(AgentProcess::spawn_on(tb, self.proxy.socket(), &state, &args).unwrap());
    }

    fn agent(&self) -> &AgentProcess {
        self.agent.as_ref().unwrap()
    }

    fn nodeimages() -> Api<NodeImage> {
        Api::all(api().client())
    }

    /// Create the NodeImage, or replace its spec.
    async fn set_spec(&self, images: Vec<(&str, ImageSpec)>) {
        let spec = NodeImageSpec {
            images: images
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        let nodeimages = Self::nodeimages();
        for _ in 0..10 {
            let res = match nodeimages.get_opt(&self.name).await.unwrap() {
                Some(mut obj) => {
                    obj.spec = spec.clone();
                    nodeimages
                        .replace(&self.name, &PostParams::default(), &obj)
                        .await
                }
                None => {
                    let obj = NodeImage::new(&self.name, spec.clone());
                    nodeimages.create(&PostParams::default(), &obj).await
                }
            };
            match res {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => panic!("writing NodeImage {}: {e}", self.name),
            }
        }
        panic!("NodeImage {}: too many conflicts", self.name);
    }

    async fn status(&self) -> Option<NodeImageStatus> {
        Self::nodeimages()
            .get_opt(&self.name)
            .await
            .unwrap()
            .and_then(|n| n.status)
    }

    /// Wait until the NodeImage status satisfies `pred`.
    async fn wait(&self, what: &str, pred: impl Fn(&NodeImageStatus) -> bool) -> NodeImageStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status().await;
            if let Some(s) = &status
                && pred(s)
            {
                return s.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: timed out waiting for {what}; status {status:#?}\nagent log:\n{}",
                    self.name,
                    self.agent
                        .as_ref()
                        .map(|a| a.raw_lines().join("\n"))
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the tag's status satisfies `pred`.
    async fn wait_tag(
        &self,
        image: &str,
        tag: &str,
        what: &str,
        pred: impl Fn(&ImageTagStatus) -> bool,
    ) -> ImageTagStatus {
        let s = self
            .wait(&format!("{image}:{tag} {what}"), |s| {
                find(s, image, tag).is_some_and(&pred)
            })
            .await;
        find(&s, image, tag).unwrap().clone()
    }

    async fn wait_phase(&self, image: &str, tag: &str, phase: ImagePullPhase) -> ImageTagStatus {
        self.wait_tag(image, tag, phase.as_str(), |t| t.phase == phase)
            .await
    }
}

fn find<'a>(s: &'a NodeImageStatus, image: &str, tag: &str) -> Option<&'a ImageTagStatus> {
    s.image_statuses
        .get(image)?
        .tags
        .iter()
        .find(|t| t.tag == tag)
}

async fn events(namespace: &str, reason: &str, object: &str) -> Vec<Event> {
    Api::<Event>::namespaced(api().client(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.involved_object.name.as_deref() == Some(object))
        .collect()
}

async fn remove_image(reference: &str) {
    let mut images = TestBed::shared().image_service();
    let req = k8s_cri::v1::RemoveImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: reference.into(),
            ..Default::default()
        }),
    };
    let _ = images.remove_image(req).await;
}

async fn pull_directly(reference: &str) {
    let mut images = TestBed::shared().image_service();
    let req = k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: reference.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    images.pull_image(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_succeeds_and_sandbox_config_reaches_the_runtime() {
    let keys = push_images("basic", 1).await;
    let key = keys[0].as_str();
    let node = Node::start("ip-basic", &[]).await;
    let mut spec = image(vec![ImageTagSpec {
        owner_references: vec![job_ref("warm-basic")],
        ..tag("v1")
    }]);
    spec.sandbox_config = Some(SandboxConfig {
        labels: BTreeMap::from([("app".into(), "web".into())]),
        annotations: BTreeMap::from([("team".into(), "x".into())]),
    });
    node.set_spec(vec![(key, spec)]).await;
    let done = node.wait_phase(key, "v1", ImagePullPhase::Succeeded).await;
    assert!(
        done.image_id.starts_with(&format!("{key}@sha256:")),
        "{done:?}"
    );
    assert_eq!(done.progress, 100);
    assert!(done.start_time.is_some() && done.completion_time.is_some());
    let status = node.status().await.unwrap();
    assert_eq!(
        (
            status.desired,
            status.succeeded,
            status.failed,
            status.pulling,
            status.waiting
        ),
        (1, 1, 0, 0, 0)
    );

    let pulls = node.proxy.pulls_of(key);
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let req = &pulls[0];
    assert_eq!(req.image.as_ref().unwrap().image, format!("{key}:v1"));
    assert!(req.auth.is_none());
    cri_proxy::assert_sandbox_forwarded(req);
    let deadline = Instant::now() + Duration::from_secs(10);
    while events("default", "PullImageSucceed", &node.name)
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no PullImageSucceed event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ev = &events("default", "PullImageSucceed", &node.name).await[0];
    assert_eq!(ev.involved_object.kind.as_deref(), Some("NodeImage"));
    assert!(ev.message.as_deref().unwrap().contains(key), "{ev:?}");
    // Nothing changes any more: nothing more is written.
    let writes = RequestMatcher::any()
        .verb("update")
        .resource("nodeimages/status")
        .name(&node.name);
    let before = api().count_requests(&writes);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        api().count_requests(&writes),
        before,
        "unchanged status re-written"
    );
    remove_image(&format!("{key}:v1")).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_not_present_skips_always_repulls_and_version_bump_repulls() {
    let keys = push_images("policy", 2).await;
    let (present, always) = (keys[0].as_str(), keys[1].as_str());
    pull_directly(&format!("{present}:v1")).await;
    pull_directly(&format!("{always}:v1")).await;
    let node = Node::start("ip-policy", &[]).await;
    let always_tag = |version| ImageTagSpec {
        image_pull_policy: Some(ImagePullPolicy::Always),
        version,
        ..tag("v1")
    };
    let if_not_present = ImageTagSpec {
        image_pull_policy: Some(ImagePullPolicy::IfNotPresent),
        ..tag("v1")
    };
    node.set_spec(vec![
        (present, image(vec![if_not_present.clone()])),
        (always, image(vec![always_tag(0)])),
    ])
    .await;
    let skipped = node
        .wait_phase(present, "v1", ImagePullPhase::Succeeded)
        .await;
    assert!(skipped.image_id.starts_with(&format!("{present}@sha256:")));
    node.wait_phase(always, "v1", ImagePullPhase::Succeeded)
        .await;
    assert_eq!(
        node.proxy.pulls_of(present).len(),
        0,
        "present image pulled"
    );
    assert_eq!(node.proxy.pulls_of(always).len(), 1);

    // A version bump is a new pull round.
    node.set_spec(vec![
        (present, image(vec![if_not_present])),
        (always, image(vec![always_tag(1)])),
    ])
    .await;
    node.wait_tag(always, "v1", "Succeeded at version 1", |t| {
        t.version == 1 && t.phase == ImagePullPhase::Succeeded
    })
    .await;
    assert_eq!(node.proxy.pulls_of(always).len(), 2);
    assert_eq!(node.proxy.pulls_of(present).len(), 0);
    remove_image(&format!("{present}:v1")).await;
    remove_image(&format!("{always}:v1")).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_dockerconfigjson_dockercfg_and_namespace_restriction() {
    let tb = TestBed::shared();
    let reg = Registry::start(
        &tb.dir().join("registry-secrets"),
        Some(("puller", "s3cret")),
    )
    .await
    .unwrap();
    for name in ["json", "cfg", "other-ns"] {
        reg.push(&layout(), &unshared_image(), &format!("{name}:v1"))
            .await
            .unwrap();
    }
    let public = push_images("secrets-public", 1).await;
    let port = reg.port();
    // Key with a scheme in .dockerconfigjson, without one in .dockercfg (upstream #526).
    let json = format!(
        r#"{{"auths": {{"http://127.0.0.1:{port}": {{"auth": "{}"}}}}}}"#,
        auth_b64("puller", "s3cret")
    );
    let cfg = format!(r#"{{"127.0.0.1:{port}": {{"username": "puller", "password": "s3cret"}}}}"#);
    create_secret(docker_secret(
        SECRET_NS,
        "ip-json",
        ".dockerconfigjson",
        json.clone(),
    ))
    .await;
    create_secret(docker_secret(SECRET_NS, "ip-cfg", ".dockercfg", cfg)).await;
    // Correct credentials, but outside the namespace the agent may read.
    create_secret(docker_secret(
        "default",
        "ip-elsewhere",
        ".dockerconfigjson",
        json,
    ))
    .await;

    let secret = |ns: &str, name: &str| ReferenceObject {
        namespace: ns.into(),
        name: name.into(),
        mode: String::new(),
    };
    let with_secret = |refs: Vec<ReferenceObject>| ImageSpec {
        pull_secrets: refs,
        ..image(vec![tag("v1")])
    };
    let (json_key, cfg_key, other_key) =
        (reg.image("json"), reg.image("cfg"), reg.image("other-ns"));
    let node = Node::start("ip-secrets", &[]).await;
    node.set_spec(vec![
        (&json_key, with_secret(vec![secret(SECRET_NS, "ip-json")])),
        (&cfg_key, with_secret(vec![secret(SECRET_NS, "ip-cfg")])),
        (
            &other_key,
            with_secret(vec![secret("default", "ip-elsewhere")]),
        ),
        // No credentials match this registry: anonymous pull.
        (&public[0], with_secret(vec![secret(SECRET_NS, "ip-json")])),
    ])
    .await;
    for key in [&json_key, &cfg_key, &public[0]] {
        node.wait_phase(key, "v1", ImagePullPhase::Succeeded).await;
    }
    let failed = node
        .wait_phase(&other_key, "v1", ImagePullPhase::Failed)
        .await;
    assert!(!failed.message.is_empty());
    for key in [&json_key, &cfg_key] {
        let pulls = node.proxy.pulls_of(key);
        let auth = pulls[0].auth.as_ref().expect("credentials sent");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("puller", "s3cret")
        );
    }
    assert!(node.proxy.pulls_of(&other_key)[0].auth.is_none());
    assert!(node.proxy.pulls_of(&public[0])[0].auth.is_none());
    for key in [&json_key, &cfg_key, &public[0]] {
        remove_image(&format!("{key}:v1")).await;
    }
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_without_anonymous_fallback() {
    let tb = TestBed::shared();
    let reg = Registry::start(&tb.dir().join("registry-wrong"), Some(("puller", "right")))
        .await
        .unwrap();
    reg.push(&layout(), &unshared_image(), "locked:v1")
        .await
        .unwrap();
    let json = format!(
        r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{}"}}}}}}"#,
        reg.port(),
        auth_b64("puller", "wrong")
    );
    create_secret(docker_secret(
        SECRET_NS,
        "ip-wrong",
        ".dockerconfigjson",
        json,
    ))
    .await;
    let key = reg.image("locked");
    let node = Node::start("ip-wrong", &[]).await;
    let spec = ImageSpec {
        pull_secrets: vec![ReferenceObject {
            namespace: SECRET_NS.into(),
            name: "ip-wrong".into(),
            mode: String::new(),
        }],
        ..image(vec![ImageTagSpec {
            owner_references: vec![job_ref("warm-locked")],
            ..with_policy(tag("v1"), |p| p.backoff_limit = Some(1))
        }])
    };
    node.set_spec(vec![(&key, spec)]).await;
    let failed = node.wait_phase(&key, "v1", ImagePullPhase::Failed).await;
    assert!(
        failed.message.contains("matching pull credentials failed"),
        "{}",
        failed.message
    );
    let pulls = node.proxy.pulls_of(&key);
    assert_eq!(pulls.len(), 2, "backoffLimit 1 = two attempts");
    assert!(pulls.iter().all(|p| p.auth.is_some()), "anonymous fallback");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let on_job = events("default", "PullImageFailed", "warm-locked").await;
        let on_node = events("default", "PullImageFailed", &node.name).await;
        if !on_job.is_empty() && !on_node.is_empty() {
            assert_eq!(on_job[0].type_.as_deref(), Some("Warning"));
            break;
        }
        assert!(Instant::now() < deadline, "no PullImageFailed events");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_then_up_backs_off_and_succeeds() {
    let tb = TestBed::shared();
    let reg = Registry::start(&tb.dir().join("registry-flaky"), None)
        .await
        .unwrap();
    reg.push(&layout(), &unshared_image(), "flaky:v1")
        .await
        .unwrap();
    reg.down();
    let key = reg.image("flaky");
    let node = Node::start("ip-flaky", &[]).await;
    let started = Instant::now();
    node.set_spec(vec![(
        &key,
        image(vec![with_policy(tag("v1"), |p| p.backoff_limit = Some(6))]),
    )])
    .await;
    // Attempts at about 0 s and 1 s fail; the third comes 2 s later.
    let deadline = Instant::now() + WAIT;
    while node.proxy.pulls_of(&key).len() < 2 {
        assert!(Instant::now() < deadline, "no retry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Progress writes are coalesced (at most 2 s behind): wait for the Pulling report.
    node.wait_phase(&key, "v1", ImagePullPhase::Pulling).await;
    reg.up().await.unwrap();
    node.wait_phase(&key, "v1", ImagePullPhase::Succeeded).await;
    let attempts = node.proxy.pulls_of(&key).len();
    assert!(attempts >= 3, "{attempts} attempts");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "backoff 1 s then 2 s"
    );
    remove_image(&format!("{key}:v1")).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_attempt_timeout_then_retry_succeeds() {
    let keys = push_images("timeout", 1).await;
    let key = keys[0].as_str();
    let node = Node::start("ip-timeout", &[]).await;
    node.proxy
        .delay_pulls(key, Duration::from_secs(60), Some(1));
    let started = Instant::now();
    node.set_spec(vec![(
        key,
        image(vec![with_policy(tag("v1"), |p| {
            p.timeout_seconds = Some(1);
            p.backoff_limit = Some(2);
        })]),
    )])
    .await;
    node.wait_phase(key, "v1", ImagePullPhase::Succeeded).await;
    assert_eq!(node.proxy.pulls_of(key).len(), 2);
    // 1 s timeout + 1 s backoff.
    assert!(started.elapsed() >= Duration::from_secs(2));
    let retried = node
        .agent()
        .messages("image pull attempt failed")
        .into_iter()
        .any(|l| {
            l["error"]
                .as_str()
                .is_some_and(|e| e.contains("timed out after 1s"))
        });
    assert!(retried, "{:?}", node.agent().raw_lines());
    assert_eq!(node.proxy.in_flight(), 0);
    remove_image(&format!("{key}:v1")).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_fails_a_stuck_pull() {
    let keys = push_images("deadline", 1).await;
    let key = keys[0].as_str();
    let node = Node::start("ip-deadline", &[]).await;
    node.proxy.delay_pulls(key, Duration::from_secs(120), None);
    let started = Instant::now();
    node.set_spec(vec![(
        key,
        image(vec![with_policy(tag("v1"), |p| {
            p.timeout_seconds = Some(60);
            p.backoff_limit = Some(3);
            p.active_deadline_seconds = Some(2);
        })]),
    )])
    .await;
    let failed = node.wait_phase(key, "v1", ImagePullPhase::Failed).await;
    let elapsed = started.elapsed();
    assert!(
        failed
            .message
            .starts_with("pulling exceeds the activeDeadlineSeconds"),
        "{}",
        failed.message
    );
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    assert_eq!(node.proxy.pulls_of(key).len(), 1);
    // The abandoned CRI call was cancelled.
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.proxy.in_flight() > 0 {
        assert!(Instant::now() < deadline, "pull still in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_pull_resumes_without_repulling_completed_tags() {
    let keys = push_images("restart", 2).await;
    let (quick, slow) = (keys[0].as_str(), keys[1].as_str());
    let mut node = Node::start("ip-restart", &[]).await;
    node.proxy
        .delay_pulls(slow, Duration::from_secs(120), Some(1));
    let always = ImageTagSpec {
        image_pull_policy: Some(ImagePullPolicy::Always),
        ..tag("v1")
    };
    node.set_spec(vec![
        (quick, image(vec![always.clone()])),
        (slow, image(vec![always])),
    ])
    .await;
    node.wait("quick Succeeded, slow Pulling", |s| {
        find(s, quick, "v1").is_some_and(|t| t.phase == ImagePullPhase::Succeeded)
            && find(s, slow, "v1").is_some_and(|t| t.phase == ImagePullPhase::Pulling)
    })
    .await;
    node.agent().kill9();
    node.spawn_agent(&[]);
    node.wait_phase(slow, "v1", ImagePullPhase::Succeeded).await;
    let s = node.status().await.unwrap();
    assert_eq!(
        find(&s, quick, "v1").unwrap().phase,
        ImagePullPhase::Succeeded
    );
    assert_eq!(
        node.proxy.pulls_of(quick).len(),
        1,
        "completed tag pulled again"
    );
    assert_eq!(node.proxy.pulls_of(slow).len(), 2);
    remove_image(&format!("{quick}:v1")).await;
    remove_image(&format!("{slow}:v1")).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_reference_fails_with_a_clear_message() {
    let keys = push_images("parse", 1).await;
    let node = Node::start("ip-parse", &[]).await;
    node.set_spec(vec![
        ("Bad Image!!", image(vec![tag("v1")])),
        (&keys[0], image(vec![tag("v1")])),
    ])
    .await;
    let failed = node
        .wait_phase("Bad Image!!", "v1", ImagePullPhase::Failed)
        .await;
    assert!(
        failed
            .message
            .starts_with("invalid image reference \"Bad Image!!:v1\""),
        "{}",
        failed.message
    );
    node.wait_phase(&keys[0], "v1", ImagePullPhase::Succeeded)
        .await;
    assert_eq!(node.proxy.pulls().len(), 1);
    remove_image(&format!("{}:v1", keys[0])).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_tag_stops_its_worker() {
    let keys = push_images("remove", 2).await;
    let (stuck, kept) = (keys[0].as_str(), keys[1].as_str());
    let node = Node::start("ip-remove", &[]).await;
    node.proxy
        .delay_pulls(stuck, Duration::from_secs(120), None);
    node.set_spec(vec![
        (stuck, image(vec![tag("v1")])),
        (kept, image(vec![tag("v1")])),
    ])
    .await;
    node.wait_phase(stuck, "v1", ImagePullPhase::Pulling).await;
    node.wait_phase(kept, "v1", ImagePullPhase::Succeeded).await;
    assert_eq!(node.proxy.in_flight(), 1);
    node.set_spec(vec![(kept, image(vec![tag("v1")]))]).await;
    let s = node
        .wait("the removed tag gone from the status", |s| {
            !s.image_statuses.contains_key(stuck)
        })
        .await;
    assert_eq!((s.desired, s.succeeded, s.pulling), (1, 1, 0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.proxy.in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "pull of a removed tag still in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !node.agent().messages("image pull stopped").is_empty(),
        "no stop logged"
    );
    remove_image(&format!("{kept}:v1")).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_a_runtime_both_succeed() {
    let keys = push_images("shared", 1).await;
    let key = keys[0].as_str();
    let a = Node::start("ip-shared-a", &[]).await;
    let b = Node::start("ip-shared-b", &[]).await;
    let always = ImageTagSpec {
        image_pull_policy: Some(ImagePullPolicy::Always),
        ..tag("v1")
    };
    a.set_spec(vec![(key, image(vec![always.clone()]))]).await;
    b.set_spec(vec![(key, image(vec![always]))]).await;
    let (sa, sb) = tokio::join!(
        a.wait_phase(key, "v1", ImagePullPhase::Succeeded),
        b.wait_phase(key, "v1", ImagePullPhase::Succeeded)
    );
    assert_eq!(sa.image_id, sb.image_id, "same runtime, same image ID");
    assert_eq!(
        (a.proxy.pulls_of(key).len(), b.proxy.pulls_of(key).len()),
        (1, 1)
    );
    remove_image(&format!("{key}:v1")).await;
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_and_status_write_rate() {
    let keys = push_images("cap", 6).await;
    let node = Node::start("ip-cap", &["--max-concurrent-pulls", "2"]).await;
    for key in &keys {
        node.proxy
            .delay_pulls(key, Duration::from_millis(700), None);
    }
    let started = Instant::now();
    node.set_spec(
        keys.iter()
            .map(|k| (k.as_str(), image(vec![tag("v1")])))
            .collect(),
    )
    .await;
    // The first status is written as soon as the spec is seen (new tasks are urgent), so it
    // shows the queue; whether the first two pulls had started by then is a matter of timing.
    let seen_waiting = node
        .wait("pulls queued behind the cap", |s| s.waiting > 0)
        .await;
    assert!(
        seen_waiting.pulling <= 2
            && seen_waiting.waiting + seen_waiting.pulling + seen_waiting.succeeded == 6,
        "{seen_waiting:?}"
    );
    let done = node.wait("all Succeeded", |s| s.succeeded == 6).await;
    assert_eq!(done.desired, 6);
    let elapsed = started.elapsed();
    assert_eq!(node.proxy.max_in_flight(), 2, "the cap is 2");
    // Three rounds of two 0.7 s pulls.
    assert!(elapsed >= Duration::from_millis(2100), "{elapsed:?}");
    let writes = api().count_requests(
        &RequestMatcher::any()
            .verb("update")
            .resource("nodeimages/status")
            .name(&node.name),
    );
    let allowed = 5 + (elapsed.as_secs_f64() / 2.0).ceil() as usize;
    assert!(writes <= allowed, "{writes} status writes in {elapsed:?}");
    for key in &keys {
        remove_image(&format!("{key}:v1")).await;
    }
    api().assert_no_denials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_write_conflicts_are_re_read_and_retried() {
    let keys = push_images("conflict", 1).await;
    let key = keys[0].as_str();
    let name = "ip-conflict";
    let writes = RequestMatcher::any()
        .verb("update")
        .resource("nodeimages/status")
        .name(name);
    api().fail_next(writes.clone(), 409, 2);
    let node = Node::start(name, &[]).await;
    node.set_spec(vec![(key, image(vec![tag("v1")]))]).await;
    // The first two writes are answered 409 Conflict; the status still arrives.
    node.wait_phase(key, "v1", ImagePullPhase::Succeeded).await;
    assert!(
        api().count_requests(&writes) >= 3,
        "two conflicts, then written"
    );
    let rereads = node
        .agent()
        .wait_messages(
            "NodeImage changed meanwhile; re-reading",
            2,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(rereads.len(), 2, "{rereads:?}");
    remove_image(&format!("{key}:v1")).await;
    api().assert_no_denials();
}
