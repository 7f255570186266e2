//! The in-memory API server (`tests/support/apiserver`) driven by the real kube client:
//! `kube::Api`, `kube::runtime::watcher`, discovery, kubeconfig files and kube-lease-manager.

use nodeward_testkit as support;

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio_stream::wrappers::UnboundedReceiverStream;

use support::apiserver::{ApiServer, ApiServerOptions, RequestMatcher};

const WAIT: Duration = Duration::from_secs(10);

fn pod(name: &str, node: Option<&str>, labels: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "busybox:1.36"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .expect("a valid pod")
}

fn code(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A client that reports 429/503/504 at once instead of retrying them.
fn no_retry_client(server: &ApiServer) -> Client {
    let mut config = server.config();
    config.default_retry = false;
    Client::try_from(config).expect("a kube client")
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next<S, T>(stream: &mut S, what: &str) -> T
where
    S: Stream<Item = T> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("stream ended while waiting for {what}"))
}

/// The next `watcher::Event` other than an error, skipping errors.
async fn next_event<S>(stream: &mut S, what: &str) -> watcher::Event<Pod>
where
    S: Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin,
{
    loop {
        if let Ok(e) = next(stream, what).await {
            return e;
        }
    }
}

/// Whether `name` has a deletion timestamp (waits on a finalizer).
async fn being_deleted<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.get(name)
        .await
        .unwrap()
        .meta()
        .deletion_timestamp
        .is_some()
}

/// Remove every finalizer of `name` (as the controller that owns them would).
async fn clear_finalizers<K>(api: &Api<K>, name: &str)
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

/// The watcher's initial list: `Init`, the one pod `name`, `InitDone`.
async fn initial_list<S>(stream: &mut S, name: &str)
where
    S: Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin,
{
    assert!(matches!(
        next_event(stream, "Init").await,
        watcher::Event::Init
    ));
    match next_event(stream, "InitApply").await {
        watcher::Event::InitApply(p) => assert_eq!(p.name_any(), name),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        next_event(stream, "InitDone").await,
        watcher::Event::InitDone
    ));
}

/// Runs a kube-runtime watcher in a task of its own (so it keeps re-watching while the test
/// waits elsewhere) and hands its items over.
fn drive_watcher(
    api: Api<Pod>,
    config: watcher::Config,
) -> UnboundedReceiverStream<Result<watcher::Event<Pod>, watcher::Error>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(e) = events.next().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    UnboundedReceiverStream::new(rx)
}

fn crr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.kruise.io", "v1alpha1", "ContainerRecreateRequest"),
        "containerrecreaterequests",
    )
}

fn crr(name: &str, extra_meta: Value) -> DynamicObject {
    let mut metadata = json!({"name": name});
    if let (Value::Object(m), Value::Object(extra)) = (&mut metadata, extra_meta) {
        m.extend(extra);
    }
    serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": metadata,
        "spec": {"podName": "web-0", "containers": [{"name": "main"}]},
        "status": {"phase": "Pending"},
    }))
    .expect("a valid object")
}

#[tokio::test]
async fn crud_and_error_mapping() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let pp = PostParams::default();

    let created = pods
        .create(&pp, &pod("web-0", None, json!({"app": "web"})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(rv > 0);
    // Pod defaults and the create strategy's status.
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    let e = pods
        .create(&pp, &pod("web-0", None, json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "AlreadyExists".into()));
    let e = pods.get("missing").await.unwrap_err();
    assert_eq!(code(&e), (404, "NotFound".into()));
    assert!(pods.get_opt("missing").await.unwrap().is_none());
    // Invalid objects are 422 Invalid.
    let mut bad = pod("Bad_Name", None, json!({}));
    let e = pods.create(&pp, &bad).await.unwrap_err();
    assert_eq!(code(&e), (422, "Invalid".into()));
    bad.metadata.name = Some("no-containers".into());
    bad.spec.as_mut().unwrap().containers.clear();
    assert_eq!(code(&pods.create(&pp, &bad).await.unwrap_err()).0, 422);
    // Namespaces must exist.
    let elsewhere: Api<Pod> = Api::namespaced(server.client(), "nowhere");
    let e = elsewhere
        .create(&pp, &pod("x", None, json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (404, "NotFound".into()));

    // generateName.
    let mut generated = pod("", None, json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let generated = pods.create(&pp, &generated).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    let got = pods.get("web-0").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv);

    // Pagination.
    let page = pods.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = pods
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].name_any(), page.items[0].name_any());
    assert!(rest.metadata.continue_.is_none());

    let mut changed = got.clone();
    changed
        .labels_mut()
        .insert("tier".into(), "frontend".into());
    let replaced = pods.replace("web-0", &pp, &changed).await.unwrap();
    assert_eq!(replaced.labels()["tier"], "frontend");
    assert!(replaced.resource_version() != got.resource_version());

    // An unbound pod is deleted at once.
    pods.delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(code(&pods.get("web-0").await.unwrap_err()).0, 404);
    assert_eq!(
        code(
            &pods
                .delete("web-0", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .0,
        404
    );

    // deletecollection with a selector.
    pods.create(&pp, &pod("a", None, json!({"del": "yes"})))
        .await
        .unwrap();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("del=yes"),
    )
    .await
    .unwrap();
    assert!(pods.get_opt("a").await.unwrap().is_none());
    assert!(pods.get_opt(&generated.name_any()).await.unwrap().is_some());
}

#[tokio::test]
async fn optimistic_concurrency_and_generation() {
    let server = ApiServer::start().await.unwrap();
    let ar = crr_resource();
    let api: Api<DynamicObject> = Api::default_namespaced_with(server.client(), &ar);
    let pp = PostParams::default();
    let created = api.create(&pp, &crr("r1", json!({}))).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // The status subresource drops status on create.
    assert!(created.data.get("status").is_none());

    let mut first = created.clone();
    first.data["spec"]["podName"] = json!("web-1");
    let updated = api.replace("r1", &pp, &first).await.unwrap();
    assert_eq!(updated.metadata.generation, Some(2));

    // A stale resourceVersion conflicts.
    let mut stale = created.clone();
    stale.data["spec"]["podName"] = json!("web-2");
    let e = api.replace("r1", &pp, &stale).await.unwrap_err();
    assert_eq!(code(&e), (409, "Conflict".into()));
    // Custom resources need a resourceVersion on update.
    stale.metadata.resource_version = None;
    assert_eq!(
        code(&api.replace("r1", &pp, &stale).await.unwrap_err()).0,
        422
    );
    // A merge patch carrying a stale resourceVersion conflicts too.
    let e = api
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": created.resource_version()}, "spec": {"podName": "x"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 409);

    // Metadata and status changes keep the generation; a no-op keeps the resourceVersion.
    let pp2 = PatchParams::default();
    let labelled = api
        .patch(
            "r1",
            &pp2,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    let with_status = api
        .patch_status(
            "r1",
            &pp2,
            &Patch::Merge(json!({"status": {"phase": "Recreating"}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.metadata.generation, Some(2));
    assert_eq!(with_status.data["status"]["phase"], "Recreating");
    let same = api
        .patch(
            "r1",
            &pp2,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), with_status.resource_version());
    let respec = api
        .patch(
            "r1",
            &pp2,
            &Patch::Merge(json!({"spec": {"podName": "web-3"}})),
        )
        .await
        .unwrap();
    assert_eq!(respec.metadata.generation, Some(3));
    // resourceVersion is one global counter.
    let rvs: Vec<u64> = [&created, &updated, &labelled, &with_status, &respec]
        .iter()
        .map(|o| o.resource_version().unwrap().parse().unwrap())
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    assert_eq!(*rvs.last().unwrap(), server.resource_version());
}

#[tokio::test]
async fn status_subresource_split() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    let mut p = pod("p", Some("node-a"), json!({}));
    p.status = serde_json::from_value(json!({"phase": "Running"})).unwrap();
    let created = pods.create(&pp, &p).await.unwrap();
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    // The main resource ignores status.
    let mut main = created.clone();
    main.status.as_mut().unwrap().phase = Some("Running".into());
    main.labels_mut().insert("x".into(), "y".into());
    let after = pods.replace("p", &pp, &main).await.unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(after.labels()["x"], "y");
    let after = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    // The status subresource changes only status.
    let patched = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "node-b"}, "status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(
        patched.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-a")
    );
    let mut via_put = patched.clone();
    via_put.status.as_mut().unwrap().phase = Some("Succeeded".into());
    via_put.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.37".into());
    let replaced = pods.replace_status("p", &pp, &via_put).await.unwrap();
    assert_eq!(
        replaced.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(
        replaced.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busybox:1.36")
    );
    assert_eq!(
        pods.get_status("p")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Succeeded")
    );
    // pods/status takes metadata changes (as apiserver's pod status strategy does) but keeps
    // the qosClass; custom resources' /status takes nothing but status.
    let labelled = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"via": "status"}}, "status": {"qosClass": null}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(labelled.labels()["via"], "status");
    assert_eq!(
        labelled.status.as_ref().unwrap().qos_class.as_deref(),
        Some("BestEffort")
    );
    let ar = crr_resource();
    let crrs: Api<DynamicObject> = Api::default_namespaced_with(server.client(), &ar);
    crrs.create(&pp, &crr("r", json!({}))).await.unwrap();
    let r = crrs
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"via": "status"}}, "status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    assert!(r.labels().is_empty());
    assert_eq!(r.data["status"]["phase"], "Succeeded");
    // Pod spec is immutable except for images and a few fields.
    let current = pods.get("p").await.unwrap();
    let mut moved = current.clone();
    moved.spec.as_mut().unwrap().node_name = Some("node-c".into());
    assert_eq!(
        code(&pods.replace("p", &pp, &moved).await.unwrap_err()).0,
        422
    );
    let mut reimaged = current.clone();
    reimaged.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.37".into());
    pods.replace("p", &pp, &reimaged).await.unwrap();
}

#[tokio::test]
async fn patch_types() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let pp = PatchParams::default();
    pods.create(
        &PostParams::default(),
        &pod("p", Some("n1"), json!({"a": "1"})),
    )
    .await
    .unwrap();

    // JSON merge patch: null deletes, maps merge.
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Merge(
                json!({"metadata": {"labels": {"a": null, "b": "2"}, "annotations": {"k": "v"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(p.labels().len(), 1);
    assert_eq!(p.labels()["b"], "2");

    // JSON patch, with a failing test operation answering 422.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/b", "value": "2"},
        {"op": "add", "path": "/metadata/labels/c", "value": "3"},
    ]))
    .unwrap();
    let p = pods.patch("p", &pp, &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(p.labels()["c"], "3");
    let failing: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/labels/b", "value": "nope"}]),
    )
    .unwrap();
    let e = pods
        .patch("p", &pp, &Patch::Json::<()>(failing))
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 422);

    // Strategic merge patch: conditions merge by type, containerStatuses by name.
    let status = |p: &Pod| serde_json::to_value(p.status.as_ref().unwrap()).unwrap();
    pods.patch_status(
        "p",
        &pp,
        &Patch::Strategic(json!({"status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            ],
            "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "busybox:1.36", "imageID": ""}],
        }})),
    )
    .await
    .unwrap();
    let p = pods
        .patch_status(
            "p",
            &pp,
            &Patch::Strategic(json!({"status": {
                "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}, {"type": "ContainersReady"}],
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": null},
                    {"type": "ContainersReady", "status": "True"},
                ],
                "containerStatuses": [{"name": "main", "ready": true}],
            }})),
        )
        .await
        .unwrap();
    let s = status(&p);
    let conditions = s["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 3, "{s}");
    let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    assert!(ready.get("reason").is_none());
    assert!(conditions.iter().any(|c| c["type"] == "PodScheduled"));
    assert_eq!(s["containerStatuses"][0]["ready"], true);
    assert_eq!(s["containerStatuses"][0]["image"], "busybox:1.36");
    // $patch: delete removes one element; finalizers merge as a set.
    let p = pods
        .patch_status(
            "p",
            &pp,
            &Patch::Strategic(json!({"status": {"conditions": [{"type": "ContainersReady", "$patch": "delete"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(status(&p)["conditions"].as_array().unwrap().len(), 2);
    pods.patch(
        "p",
        &pp,
        &Patch::Strategic(json!({"metadata": {"finalizers": ["a.io/x"]}})),
    )
    .await
    .unwrap();
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Strategic(json!({"metadata": {"finalizers": ["b.io/y"]}})),
        )
        .await
        .unwrap();
    assert_eq!(p.finalizers(), ["a.io/x", "b.io/y"]);
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Strategic(
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/x", "b.io/y"]}}),
            ),
        )
        .await
        .unwrap();
    assert!(p.finalizers().is_empty());

    // Custom resources reject strategic merge patch with 415, like apiserver.
    let ar = crr_resource();
    let crrs: Api<DynamicObject> = Api::default_namespaced_with(server.client(), &ar);
    crrs.create(&PostParams::default(), &crr("r", json!({})))
        .await
        .unwrap();
    let e = crrs
        .patch(
            "r",
            &pp,
            &Patch::Strategic(json!({"spec": {"podName": "x"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), (415, "UnsupportedMediaType".into()));

    // Server-side apply: creates, conflicts with another manager's different value, forces.
    let leases: Api<Lease> = Api::default_namespaced(server.client());
    let apply = |holder: &str| {
        Patch::Apply(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10},
        }))
    };
    let created = leases
        .patch("l", &PatchParams::apply("mgr-a"), &apply("a"))
        .await
        .unwrap();
    assert_eq!(created.spec.unwrap().holder_identity.as_deref(), Some("a"));
    // Same values from another manager: shared ownership, no conflict.
    leases
        .patch("l", &PatchParams::apply("mgr-b"), &apply("a"))
        .await
        .unwrap();
    let e = leases
        .patch("l", &PatchParams::apply("mgr-c"), &apply("c"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "Conflict".into()));
    let forced = leases
        .patch("l", &PatchParams::apply("mgr-c").force(), &apply("c"))
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().holder_identity.as_deref(), Some("c"));
    // Apply without a field manager is rejected.
    let e = leases
        .patch("l", &PatchParams::default(), &apply("d"))
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 422);
}

#[tokio::test]
async fn selectors_on_list() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    for (name, node, labels) in [
        ("a", Some("n1"), json!({"app": "web", "tier": "front"})),
        ("b", Some("n1"), json!({"app": "db"})),
        ("c", Some("n2"), json!({"app": "web", "canary": "true"})),
        ("d", None, json!({})),
    ] {
        pods.create(&pp, &pod(name, node, labels)).await.unwrap();
    }
    pods.patch_status(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    let names = |lp: ListParams| {
        let pods = pods.clone();
        async move {
            let mut n: Vec<String> = pods
                .list(&lp)
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            n.sort();
            n.join(",")
        }
    };
    let lp = ListParams::default;
    assert_eq!(names(lp().labels("app=web")).await, "a,c");
    assert_eq!(names(lp().labels("app==web,tier")).await, "a");
    assert_eq!(names(lp().labels("app!=web")).await, "b,d");
    assert_eq!(names(lp().labels("app in (db, web)")).await, "a,b,c");
    assert_eq!(names(lp().labels("app notin (web)")).await, "b,d");
    assert_eq!(names(lp().labels("!canary,app")).await, "a,b");
    assert_eq!(names(lp().fields("spec.nodeName=n1")).await, "a,b");
    assert_eq!(names(lp().fields("spec.nodeName==n2")).await, "c");
    assert_eq!(names(lp().fields("spec.nodeName=")).await, "d");
    assert_eq!(names(lp().fields("spec.nodeName!=n1")).await, "c,d");
    assert_eq!(names(lp().fields("status.phase=Running")).await, "c");
    assert_eq!(
        names(lp().fields("status.phase!=Running,spec.nodeName=n1")).await,
        "a,b"
    );
    assert_eq!(names(lp().fields("metadata.name=b")).await, "b");
    assert_eq!(
        names(lp().fields("metadata.namespace=default").labels("app=db")).await,
        "b"
    );
    let all: Api<Pod> = Api::all(server.client());
    assert_eq!(
        all.list(&lp().fields("spec.nodeName=n1"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let e = pods.list(&lp().fields("spec.bogus=1")).await.unwrap_err();
    assert_eq!(code(&e).0, 400);
    let e = pods.list(&lp().labels("app in (web")).await.unwrap_err();
    assert_eq!(code(&e).0, 400);
}

#[tokio::test]
async fn watcher_with_field_selector() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    pods.create(&pp, &pod("before", Some("node-a"), json!({})))
        .await
        .unwrap();
    pods.create(&pp, &pod("other-node", Some("node-b"), json!({})))
        .await
        .unwrap();

    let config = watcher::Config::default().fields("spec.nodeName=node-a");
    let mut events = drive_watcher(pods.clone(), config);
    initial_list(&mut events, "before").await;

    pods.create(&pp, &pod("skipped", Some("node-b"), json!({})))
        .await
        .unwrap();
    pods.create(&pp, &pod("p1", Some("node-a"), json!({})))
        .await
        .unwrap();
    match next_event(&mut events, "Apply p1").await {
        watcher::Event::Apply(p) => assert_eq!(p.name_any(), "p1"),
        other => panic!("unexpected {other:?}"),
    }
    pods.patch(
        "p1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    match next_event(&mut events, "Apply p1 (modified)").await {
        watcher::Event::Apply(p) => assert_eq!(p.labels()["x"], "1"),
        other => panic!("unexpected {other:?}"),
    }
    // A pod bound to a node is deleted gracefully: first a deletionTimestamp, then it goes
    // when deleted with grace 0 (what the kubelet does).
    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    match next_event(&mut events, "Apply p1 (terminating)").await {
        watcher::Event::Apply(p) => {
            assert!(p.metadata.deletion_timestamp.is_some());
            assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
        }
        other => panic!("unexpected {other:?}"),
    }
    pods.delete("p1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    match next_event(&mut events, "Delete p1").await {
        watcher::Event::Delete(p) => assert_eq!(p.name_any(), "p1"),
        other => panic!("unexpected {other:?}"),
    }

    // Raw watch: selector transitions are ADDED/DELETED, as apiserver sends them.
    let wp = WatchParams::default().labels("tier=web");
    pods.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "web"}}})),
    )
    .await
    .unwrap();
    let mut raw = pods.watch(&wp, "0").await.unwrap().boxed();
    match next(&mut raw, "initial ADDED").await.unwrap() {
        WatchEvent::Added(p) => assert_eq!(p.name_any(), "before"),
        other => panic!("unexpected {other:?}"),
    }
    let set_tier = |tier: &'static str| {
        let pods = pods.clone();
        async move {
            pods.patch(
                "before",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"tier": tier, "n": tier}}})),
            )
            .await
            .unwrap()
        }
    };
    let left = set_tier("db").await;
    match next(&mut raw, "DELETED on leaving the selector")
        .await
        .unwrap()
    {
        WatchEvent::Deleted(p) => {
            assert_eq!(p.labels()["tier"], "web");
            assert_eq!(p.resource_version(), left.resource_version());
        }
        other => panic!("unexpected {other:?}"),
    }
    set_tier("web").await;
    assert!(matches!(
        next(&mut raw, "ADDED on entering the selector")
            .await
            .unwrap(),
        WatchEvent::Added(_)
    ));
    pods.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"n": "2"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        next(&mut raw, "MODIFIED").await.unwrap(),
        WatchEvent::Modified(_)
    ));
}

#[tokio::test]
async fn watch_bookmarks_and_timeout() {
    let server = ApiServer::start_with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..ApiServerOptions::default()
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    // Writes elsewhere advance the resourceVersion a bookmark reports.
    let leases: Api<Lease> = Api::default_namespaced(server.client());
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let wp = WatchParams::default().timeout(1);
    let started = Instant::now();
    let events: Vec<_> = pods
        .watch(&wp, &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(events.len() >= 2, "{events:?}");
    let last = match events.last().unwrap() {
        WatchEvent::Bookmark(b) => b.metadata.resource_version.parse::<u64>().unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    assert!(last >= rv.parse::<u64>().unwrap());
    assert!(events.iter().all(|e| matches!(e, WatchEvent::Bookmark(_))));
    assert_eq!(server.open_watches(), 0);

    // kube-runtime's watcher with streaming lists (sendInitialEvents) instead of list+watch.
    pods.create(&PostParams::default(), &pod("streamed", None, json!({})))
        .await
        .unwrap();
    let mut streamed = drive_watcher(pods.clone(), watcher::Config::default().streaming_lists());
    initial_list(&mut streamed, "streamed").await;
    pods.delete("streamed", &DeleteParams::default())
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut streamed, "Delete").await,
        watcher::Event::Delete(_)
    ));

    // sendInitialEvents: the state as ADDED, then a bookmark marking its end.
    pods.create(&PostParams::default(), &pod("p", None, json!({})))
        .await
        .unwrap();
    let wp = WatchParams::default().initial_events().timeout(1);
    let mut s = pods.watch(&wp, "0").await.unwrap().boxed();
    assert!(matches!(
        next(&mut s, "ADDED").await.unwrap(),
        WatchEvent::Added(_)
    ));
    match next(&mut s, "initial-events-end").await.unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.annotations["k8s.io/initial-events-end"], "true")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_expired_resource_version_relists() {
    let server = ApiServer::start().await.unwrap();
    let client = no_retry_client(&server);
    let pods: Api<Pod> = Api::default_namespaced(client);
    let pp = PostParams::default();
    pods.create(&pp, &pod("p0", None, json!({}))).await.unwrap();
    let old_rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    // A raw watch from a compacted resourceVersion gets one ERROR event with code 410.
    pods.create(&pp, &pod("p1", None, json!({}))).await.unwrap();
    server.compact();
    let mut raw = pods
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut raw, "410").await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(raw.next().await.is_none());

    // kube-runtime's watcher relists after a 410 and keeps delivering.
    let mut events = drive_watcher(pods.clone(), watcher::Config::default());
    loop {
        if let watcher::Event::InitDone = next_event(&mut events, "InitDone").await {
            break;
        }
    }
    // Hold re-watches off, end the watch, write and compact meanwhile, then let it resume
    // from its (now expired) resourceVersion. The watcher's watch must be open first (InitDone
    // comes before it is sent), or no watch ends.
    eventually("the watcher's watch", || async {
        server.open_watches() == 1
    })
    .await;
    let watches = RequestMatcher::any().verb("watch").resource("pods");
    server.fail_next(watches.clone(), 500, usize::MAX);
    let lists_before = server.count_requests(&RequestMatcher::any().verb("list").resource("pods"));
    server.close_watches();
    let failing = RequestMatcher::any().verb("watch").resource("pods");
    eventually("a failed re-watch", || async {
        server
            .requests()
            .iter()
            .any(|r| failing.matches(r) && r.status == 500)
    })
    .await;
    pods.create(&pp, &pod("during-outage", None, json!({})))
        .await
        .unwrap();
    server.compact();
    server.clear_failures();
    let mut saw_410 = false;
    let mut relisted = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !relisted {
        assert!(Instant::now() < deadline, "the watcher did not relist");
        match tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_410 = true,
            Err(_) => {}
            Ok(watcher::Event::InitApply(p)) if p.name_any() == "during-outage" => relisted = true,
            Ok(_) => {}
        }
    }
    assert!(saw_410, "the watcher never saw the 410");
    assert!(
        server.count_requests(&RequestMatcher::any().verb("list").resource("pods")) > lists_before
    );
    loop {
        if let watcher::Event::InitDone = next_event(&mut events, "InitDone").await {
            break;
        }
    }
    pods.create(&pp, &pod("after", None, json!({})))
        .await
        .unwrap();
    match next_event(&mut events, "Apply after relist").await {
        watcher::Event::Apply(p) => assert_eq!(p.name_any(), "after"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let server = ApiServer::start().await.unwrap();
    let ar = crr_resource();
    let api: Api<DynamicObject> = Api::default_namespaced_with(server.client(), &ar);
    let obj = api
        .create(
            &PostParams::default(),
            &crr("r", json!({"finalizers": ["nodeward.io/cleanup"]})),
        )
        .await
        .unwrap();
    let deleted = api.delete("r", &DeleteParams::default()).await.unwrap();
    let pending = deleted
        .left()
        .expect("the object is returned while pending");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.generation, Some(2));
    let still = api.get("r").await.unwrap();
    assert_eq!(still.metadata.uid, obj.metadata.uid);
    assert!(still.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing; new finalizers are refused.
    api.delete("r", &DeleteParams::default()).await.unwrap();
    let e = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["nodeward.io/cleanup", "other.io/x"]}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 422);
    // Status writes still work while terminating.
    api.patch_status(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Completed"}})),
    )
    .await
    .unwrap();
    // Removing the last finalizer removes the object (JSON patch, as kube-runtime does).
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": ["nodeward.io/cleanup"]},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]))
    .unwrap();
    api.patch("r", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(code(&api.get("r").await.unwrap_err()).0, 404);

    // Preconditions.
    api.create(&PostParams::default(), &crr("q", json!({})))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(code(&api.delete("q", &dp).await.unwrap_err()).0, 409);

    // A namespace goes through Terminating, deletes its content, then goes.
    let namespaces: Api<Namespace> = Api::all(server.client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let in_team: Api<DynamicObject> = Api::namespaced_with(server.client(), "team", &ar);
    in_team
        .create(
            &PostParams::default(),
            &crr("t", json!({"finalizers": ["test.io/hold"]})),
        )
        .await
        .unwrap();
    in_team
        .create(&PostParams::default(), &crr("u", json!({})))
        .await
        .unwrap();
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let e = in_team
        .create(&PostParams::default(), &crr("t2", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 403);
    eventually("the content without finalizers to go", || async {
        in_team.get_opt("u").await.unwrap().is_none()
    })
    .await;
    let terminating = namespaces.get("team").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert!(being_deleted(&in_team, "t").await);
    clear_finalizers(&in_team, "t").await;
    eventually("the namespace to go", || async {
        namespaces.get_opt("team").await.unwrap().is_none()
    })
    .await;
    assert!(
        server
            .object(
                "containerrecreaterequests.apps.kruise.io",
                Some("team"),
                "t"
            )
            .is_none()
    );
}

#[tokio::test]
async fn owner_reference_garbage_collection() {
    let server = ApiServer::start().await.unwrap();
    let ipj = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.kruise.io", "v1alpha1", "ImagePullJob"),
        "imagepulljobs",
    );
    let jobs: Api<DynamicObject> = Api::default_namespaced_with(server.client(), &ipj);
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    let owned_pod = |name: &str, owner: &DynamicObject| {
        let mut p = pod(name, None, json!({}));
        p.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "apps.kruise.io/v1alpha1",
                "kind": "ImagePullJob",
                "name": owner.name_any(),
                "uid": owner.uid().unwrap(),
                "controller": true,
            }))
            .unwrap(),
        ]);
        p
    };
    let job = |name: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "ImagePullJob",
            "metadata": {"name": name},
            "spec": {"image": "busybox:1.36"},
        }))
        .unwrap()
    };

    // Background (default): dependents are deleted after the owner.
    let owner = jobs.create(&pp, &job("bg")).await.unwrap();
    pods.create(&pp, &owned_pod("bg-1", &owner)).await.unwrap();
    pods.create(&pp, &owned_pod("bg-2", &owner)).await.unwrap();
    jobs.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    eventually("dependents to be collected", || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;

    // Orphan: dependents stay, without the reference.
    let owner = jobs.create(&pp, &job("or")).await.unwrap();
    pods.create(&pp, &owned_pod("or-1", &owner)).await.unwrap();
    jobs.delete("or", &DeleteParams::orphan()).await.unwrap();
    eventually("the owner to go", || async {
        jobs.get_opt("or").await.unwrap().is_none()
    })
    .await;
    let orphan = pods.get("or-1").await.unwrap();
    assert!(orphan.owner_references().is_empty());

    // Foreground: the owner waits for its dependents.
    let owner = jobs.create(&pp, &job("fg")).await.unwrap();
    let mut blocker = owned_pod("fg-1", &owner);
    blocker.metadata.finalizers = Some(vec!["test.io/hold".into()]);
    pods.create(&pp, &blocker).await.unwrap();
    jobs.delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = jobs.get("fg").await.unwrap();
    assert!(
        waiting
            .finalizers()
            .contains(&"foregroundDeletion".to_owned())
    );
    assert!(being_deleted(&pods, "fg-1").await);
    clear_finalizers(&pods, "fg-1").await;
    eventually("the foreground owner to go", || async {
        jobs.get_opt("fg").await.unwrap().is_none()
    })
    .await;

    // Dangling references to a served kind are collected; unknown kinds are left alone.
    let mut dangling = pod("dangling", None, json!({}));
    let mut foreign = pod("foreign", None, json!({}));
    dangling.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob", "name": "gone",
            "uid": "00000000-0000-4000-8000-000000000000",
        }))
        .unwrap(),
    ]);
    foreign.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job", "name": "job",
            "uid": "00000000-0000-4000-8000-000000000001",
        }))
        .unwrap(),
    ]);
    pods.create(&pp, &dangling).await.unwrap();
    pods.create(&pp, &foreign).await.unwrap();
    eventually("the dangling dependent to be collected", || async {
        pods.get_opt("dangling").await.unwrap().is_none()
    })
    .await;
    assert!(pods.get_opt("foreign").await.unwrap().is_some());
}

#[tokio::test]
async fn unavailability_and_recovery() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(no_retry_client(&server));
    let pp = PostParams::default();
    pods.create(&pp, &pod("p0", None, json!({}))).await.unwrap();
    let mut events = drive_watcher(pods.clone(), watcher::Config::default());
    loop {
        if let watcher::Event::InitDone = next_event(&mut events, "InitDone").await {
            break;
        }
    }
    eventually("the watch to open", || async { server.open_watches() == 1 }).await;

    server.set_unavailable(true);
    let e = pods.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(code(&e), (503, "ServiceUnavailable".into()));
    assert_eq!(code(&pods.get("p0").await.unwrap_err()).0, 503);
    eventually("the watch to be closed", || async {
        server.open_watches() == 0
    })
    .await;
    // The watcher reports its failing re-watches.
    match tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
    {
        Err(e) => assert!(format!("{e:?}").contains("503"), "{e:?}"),
        Ok(other) => panic!("unexpected {other:?}"),
    }

    server.set_unavailable(false);
    pods.create(&pp, &pod("p1", None, json!({}))).await.unwrap();
    match next_event(&mut events, "Apply after recovery").await {
        watcher::Event::Apply(p) => assert_eq!(p.name_any(), "p1"),
        other => panic!("unexpected {other:?}"),
    }

    // kube's default client retries 503 with backoff, so a call made during an outage
    // succeeds once the server is back.
    let retrying: Api<Pod> = Api::default_namespaced(server.client());
    server.set_unavailable(true);
    let call = tokio::spawn(async move { retrying.get("p1").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.set_unavailable(false);
    let got = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(got.unwrap().name_any(), "p1");
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| r.name.as_deref() == Some("p1") && r.status == 503)
            .count()
            >= 2
    );
}

#[tokio::test]
async fn fail_next_and_request_log() {
    let server = ApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let pp = PostParams::default();
    pods.create(&pp, &pod("p", Some("n"), json!({})))
        .await
        .unwrap();
    server.clear_requests();

    let status_patches = RequestMatcher::any()
        .method("PATCH")
        .resource("pods/status");
    server.fail_next(status_patches.clone(), 500, 2);
    let patch = Patch::Merge(json!({"status": {"phase": "Running"}}));
    for _ in 0..2 {
        let e = pods
            .patch_status("p", &PatchParams::default(), &patch)
            .await
            .unwrap_err();
        assert_eq!(code(&e), (500, "InternalError".into()));
    }
    let p = pods
        .patch_status("p", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(server.count_requests(&status_patches), 3);
    // Main-resource patches are not matched by `pods/status`.
    server.fail_next(status_patches.clone(), 409, 1);
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
    let e = pods
        .patch_status("p", &PatchParams::default(), &patch)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "Conflict".into()));

    let log = server.requests();
    let writes: Vec<_> = log.iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 5);
    let last = writes.last().unwrap();
    assert_eq!(last.method, "PATCH");
    assert_eq!(last.path, "/api/v1/namespaces/default/pods/p/status");
    assert_eq!(last.subresource.as_deref(), Some("status"));
    assert_eq!(last.namespace.as_deref(), Some("default"));
    assert_eq!(
        last.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(last.status, 409);
    assert_eq!(
        server.count_requests(&RequestMatcher::any().verb("patch").resource("pods/*")),
        5
    );
}

#[tokio::test]
async fn discovery_and_kubeconfig() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (crr, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "ContainerRecreateRequest")
        .expect("ContainerRecreateRequest is discovered");
    assert_eq!(crr.plural, "containerrecreaterequests");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "containerrecreaterequests/status" || s.plural == "status")
    );
    let (node_image, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "NodeImage")
        .unwrap();
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert_eq!(node_image.group, "apps.kruise.io");
    assert!(discovery.has_group("coordination.k8s.io"));
    assert!(discovery.has_group("events.k8s.io"));
    let aggregated = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    assert!(aggregated.has_group("apps.kruise.io"));
    let (pods_ar, _) =
        kube::discovery::pinned_kind(&client, &GroupVersionKind::gvk("", "v1", "Pod"))
            .await
            .unwrap();
    assert_eq!(pods_ar.plural, "pods");

    // Registering a kind later, and through a CustomResourceDefinition object.
    server.register_crd("example.io", "v1", "Widget", "widgets", true);
    let widgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.io", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &widgets);
    let w: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &w).await.unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.io"},
        "spec": {
            "group": "example.io",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
            "scope": "Cluster",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                          "subresources": {"status": {}}}],
        },
    }))
    .unwrap();
    let crd = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    let gadgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.io", "v1", "Gadget"),
        "gadgets",
    );
    let gapi: Api<DynamicObject> = Api::all_with(client.clone(), &gadgets);
    let g: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.io/v1", "kind": "Gadget", "metadata": {"name": "g"}}),
    )
    .unwrap();
    gapi.create(&PostParams::default(), &g).await.unwrap();
    crds.delete("gadgets.example.io", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the CRD's resource to go away", || async {
        gapi.list(&ListParams::default()).await.is_err()
    })
    .await;

    // A kubeconfig file, as given to our binaries with --kubeconfig.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let from_file = Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(from_file.clone());
    let names: Vec<_> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert!(names.contains(&"kube-system".to_owned()), "{names:?}");
    let version = from_file.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn lease_manager_elects_one_leader() {
    use kube_lease_manager::LeaseManagerBuilder;
    let server = ApiServer::start().await.unwrap();
    let manager = |id: &str| {
        LeaseManagerBuilder::new(server.client(), "nodeward-controller")
            .with_namespace("kube-system")
            .with_identity(id)
            .with_duration(2)
            .with_grace(1)
            .build()
    };
    let (a, b) = tokio::join!(manager("a"), manager("b"));
    let (mut rx_a, task_a) = a.unwrap().watch().await;
    let (mut rx_b, task_b) = b.unwrap().watch().await;
    eventually("a leader", || {
        let (a, b) = (*rx_a.borrow(), *rx_b.borrow());
        async move { a || b }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a_leads, b_leads) = (*rx_a.borrow_and_update(), *rx_b.borrow_and_update());
    assert!(
        a_leads != b_leads,
        "exactly one leader (a={a_leads}, b={b_leads})"
    );
    let lease = server
        .object(
            "leases.coordination.k8s.io",
            Some("kube-system"),
            "nodeward-controller",
        )
        .unwrap();
    let holder = if a_leads { "a" } else { "b" };
    assert_eq!(lease["spec"]["holderIdentity"], holder);

    // The leader steps down (drops its channel): the other one takes over.
    let (mut follower, leader_task, follower_task) = if a_leads {
        drop(rx_a);
        (rx_b, task_a, task_b)
    } else {
        drop(rx_b);
        (rx_a, task_b, task_a)
    };
    tokio::time::timeout(Duration::from_secs(15), follower.wait_for(|l| *l))
        .await
        .expect("the follower takes over")
        .unwrap();
    leader_task.await.unwrap().unwrap();
    drop(follower);
    follower_task.await.unwrap().unwrap();
}

/// 10 000 pods on 1 000 nodes, with 1 000 watchers (one per node, like node agents) watching
/// with a `spec.nodeName` field selector. Prints timings; asserts only correctness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_10k_objects_1k_watchers() {
    const NODES: usize = 1_000;
    const PODS: usize = 10_000;
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    let started = Instant::now();
    let mut watchers = Vec::with_capacity(NODES);
    for n in 0..NODES {
        let pods = pods.clone();
        let wp = WatchParams::default().fields(&format!("spec.nodeName=node-{n}"));
        watchers.push(tokio::spawn(async move {
            let mut stream = pods.watch(&wp, "0").await.unwrap().boxed();
            let mut seen = 0;
            while seen < PODS / NODES {
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(p))) => {
                        assert_eq!(p.spec.unwrap().node_name.unwrap(), format!("node-{n}"));
                        seen += 1;
                    }
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            Instant::now()
        }));
    }
    eventually("1000 open watches", || async {
        server.open_watches() == NODES
    })
    .await;
    let watches_open = started.elapsed();

    let created_at = Instant::now();
    futures::stream::iter(0..PODS)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let p = pod(
                    &format!("pod-{i}"),
                    Some(&format!("node-{}", i % NODES)),
                    json!({"i": i.to_string()}),
                );
                pods.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let create = created_at.elapsed();
    let mut last_delivery = created_at;
    for w in watchers {
        last_delivery = last_delivery.max(w.await.unwrap());
    }
    let delivered = last_delivery - created_at;

    let t = Instant::now();
    let all = pods.list(&ListParams::default()).await.unwrap();
    let list_all = t.elapsed();
    assert_eq!(all.items.len(), PODS);
    let t = Instant::now();
    let one = pods
        .list(&ListParams::default().fields("spec.nodeName=node-7"))
        .await
        .unwrap();
    let list_node = t.elapsed();
    assert_eq!(one.items.len(), PODS / NODES);
    let t = Instant::now();
    let mut paged = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = pods.list(&lp).await.unwrap();
        paged += page.items.len();
        match page.metadata.continue_ {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let list_paged = t.elapsed();
    assert_eq!(paged, PODS);
    println!(
        "load: {NODES} watches open in {watches_open:?}; {PODS} creates (32 in flight) in {create:?} \
         ({:.0}/s); all watchers had their {} pods {delivered:?} after the first create; \
         list of {PODS} in {list_all:?}, field-selected list in {list_node:?}, \
         paged list (500) in {list_paged:?}",
        PODS as f64 / create.as_secs_f64(),
        PODS / NODES,
    );
}

#[tokio::test]
async fn metadata_api_and_event_recorder() {
    use kube::Resource;
    use kube::core::PartialObjectMeta;
    use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let p = pods
        .create(
            &PostParams::default(),
            &pod("p", Some("n1"), json!({"a": "1"})),
        )
        .await
        .unwrap();

    // kube's metadata API (PartialObjectMetadata) for get, list and watch.
    let m = pods.get_metadata("p").await.unwrap();
    assert_eq!(m.metadata.uid, p.metadata.uid);
    let list = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].labels()["a"], "1");
    let meta_api: Api<PartialObjectMeta<Pod>> = Api::default_namespaced(client.clone());
    let mut meta_events = watcher(meta_api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let first = next(&mut meta_events, "metadata InitApply").await.unwrap();
    assert_eq!(first.name_any(), "p");

    // kube-runtime's event recorder: create, then a merge patch for the series.
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "nodeward".into(),
            instance: Some("test".into()),
        },
    );
    let event = RecorderEvent {
        type_: EventType::Normal,
        reason: "SidecarStopped".into(),
        note: Some("stopped the sidecar".into()),
        action: "Stop".into(),
        secondary: None,
    };
    let reference = p.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(list.items[0].reason.as_deref(), Some("SidecarStopped"));
}

/// Malformed requests answer a `Status` with the right code; nothing crashes the server.
#[tokio::test]
async fn bad_input_answers_status() {
    use axum::http::Request;
    let server = ApiServer::start().await.unwrap();
    let client = no_retry_client(&server);
    let pods_path = "/api/v1/namespaces/default/pods";
    Api::<Pod>::default_namespaced(client.clone())
        .create(&PostParams::default(), &pod("p", None, json!({})))
        .await
        .unwrap();
    let cases: Vec<(&str, String, Option<&str>, &str, u16)> = vec![
        (
            "POST",
            pods_path.into(),
            Some("application/json"),
            "{not json",
            400,
        ),
        (
            "POST",
            pods_path.into(),
            Some("application/json"),
            "[1,2]",
            400,
        ),
        (
            "POST",
            pods_path.into(),
            Some("application/yaml"),
            "kind: Pod",
            415,
        ),
        (
            "POST",
            "/api/v1/pods".into(),
            Some("application/json"),
            "{}",
            405,
        ),
        (
            "POST",
            pods_path.into(),
            Some("application/json"),
            r#"{"kind":"Node","metadata":{"name":"x"}}"#,
            400,
        ),
        (
            "POST",
            pods_path.into(),
            Some("application/json"),
            r#"{"metadata":{"name":"x","resourceVersion":"5"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
            500,
        ),
        (
            "POST",
            pods_path.into(),
            Some("application/json"),
            r#"{"metadata":{"name":"x","labels":{"a":1}},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
            422,
        ),
        (
            "POST",
            pods_path.into(),
            Some("application/json"),
            r#"{"metadata":{"name":"x"},"spec":"nope"}"#,
            422,
        ),
        (
            "PUT",
            format!("{pods_path}/p"),
            Some("application/json"),
            r#"{"metadata":{"name":"other"}}"#,
            400,
        ),
        (
            "PUT",
            format!("{pods_path}/missing"),
            Some("application/json"),
            r#"{"metadata":{"name":"missing"}}"#,
            404,
        ),
        (
            "PATCH",
            format!("{pods_path}/p"),
            Some("text/plain"),
            "{}",
            415,
        ),
        (
            "PATCH",
            format!("{pods_path}/p"),
            Some("application/json-patch+json"),
            r#"{"op":"add"}"#,
            400,
        ),
        (
            "PATCH",
            format!("{pods_path}/p"),
            Some("application/json-patch+json"),
            r#"[{"op":"remove","path":"/nope/x"}]"#,
            422,
        ),
        (
            "PATCH",
            format!("{pods_path}/p"),
            Some("application/merge-patch+json"),
            r#"{"metadata":{"name":"renamed"}}"#,
            422,
        ),
        (
            "PATCH",
            format!("{pods_path}/p"),
            Some("application/merge-patch+json"),
            "[1]",
            400,
        ),
        (
            "PATCH",
            format!("{pods_path}/p"),
            Some("application/strategic-merge-patch+json"),
            r#"{"spec":{"containers":[{"image":"x"}]}}"#,
            422,
        ),
        (
            "PATCH",
            format!("{pods_path}/p"),
            Some("application/strategic-merge-patch+json"),
            r#"{"$patch":"bogus"}"#,
            422,
        ),
        (
            "PATCH",
            format!("{pods_path}/p?fieldManager=m"),
            Some("application/apply-patch+yaml"),
            "{{{ not yaml",
            400,
        ),
        (
            "PATCH",
            format!("{pods_path}/p?fieldManager=m"),
            Some("application/apply-patch+yaml"),
            "apiVersion: v1\nkind: Node\n",
            400,
        ),
        (
            "GET",
            format!("{pods_path}?labelSelector=a%20in%20(b"),
            None,
            "",
            400,
        ),
        (
            "GET",
            format!("{pods_path}?fieldSelector=nonsense"),
            None,
            "",
            400,
        ),
        ("GET", format!("{pods_path}?continue=zzz"), None, "", 400),
        ("GET", format!("{pods_path}?limit=abc"), None, "", 400),
        (
            "GET",
            format!("{pods_path}?watch=true&resourceVersion=abc"),
            None,
            "",
            400,
        ),
        (
            "GET",
            format!("{pods_path}?watch=true&sendInitialEvents=true"),
            None,
            "",
            422,
        ),
        ("GET", format!("{pods_path}/p/exec"), None, "", 404),
        ("GET", "/api/v1/pods/p".into(), None, "", 404),
        ("GET", "/apis/nope.io/v1/things".into(), None, "", 404),
        ("GET", "/apis/nope.io".into(), None, "", 404),
        ("GET", "/nowhere".into(), None, "", 404),
        (
            "DELETE",
            format!("{pods_path}/p"),
            Some("application/json"),
            "{garbage",
            400,
        ),
        (
            "DELETE",
            format!("{pods_path}/p"),
            Some("application/json"),
            r#"{"propagationPolicy":"Sideways"}"#,
            422,
        ),
        (
            "POST",
            format!("{pods_path}/p/binding"),
            Some("application/json"),
            r#"{"target":{}}"#,
            422,
        ),
    ];
    for (method, path, content_type, body, want) in cases {
        let mut req = Request::builder().method(method).uri(&path);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(body.as_bytes().to_vec()).unwrap();
        match client.request_text(req).await {
            Ok(text) => panic!("{method} {path} {body}: expected {want}, got 2xx: {text}"),
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, want, "{method} {path} {body}: {s:?}");
                assert!(!s.reason.is_empty() && !s.message.is_empty(), "{s:?}");
            }
            Err(e) => panic!("{method} {path} {body}: {e:?}"),
        }
    }
    // A huge timeout is clamped, not a crash.
    let req = Request::get(format!(
        "{pods_path}?watch=true&timeoutSeconds=9223372036854775807"
    ))
    .body(Vec::new())
    .unwrap();
    let mut lines = client.request_events::<Pod>(req).await.unwrap().boxed();
    assert!(matches!(
        next(&mut lines, "ADDED").await.unwrap(),
        WatchEvent::Added(_)
    ));
    // Apply accepts YAML.
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    from: yaml\n";
    let req = Request::patch(format!("{pods_path}/p?fieldManager=yaml-applier"))
        .header("content-type", "application/apply-patch+yaml")
        .body(yaml.as_bytes().to_vec())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    assert!(text.contains("\"from\":\"yaml\""), "{text}");
    // The server still answers normally.
    assert!(
        Api::<Pod>::default_namespaced(client)
            .get("p")
            .await
            .is_ok()
    );
}

/// A service account's kubeconfig is held to the packaged RBAC: the agent may read Pods and
/// patch their status but not update them, and reads Secrets only in kruise-daemon-config.
#[tokio::test]
async fn service_account_tokens_are_held_to_the_packaged_rbac() {
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client_as = async |sa| {
        let path = server.service_account_kubeconfig(dir.path(), sa).unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    };
    let agent = client_as(support::rbac::AGENT).await;
    let pp = PostParams::default();
    let admin: Api<Pod> = Api::default_namespaced(server.client());
    let created = admin
        .create(&pp, &pod("rbac", None, json!({})))
        .await
        .unwrap();

    let pods: Api<Pod> = Api::default_namespaced(agent.clone());
    assert_eq!(pods.get("rbac").await.unwrap().name_any(), "rbac");
    pods.patch_status(
        "rbac",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    match pods.replace("rbac", &pp, &created).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert!(
                s.message.contains(
                    "User \"system:serviceaccount:nodeward-system:nodeward-agent\" cannot update"
                ),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let secrets = |ns| Api::<k8s_openapi::api::core::v1::Secret>::namespaced(agent.clone(), ns);
    assert!(matches!(
        secrets("default").list(&ListParams::default()).await,
        Err(kube::Error::Api(s)) if s.code == 403
    ));
    // The controller may patch ImageListPullJobs but not create them: not by server-side apply
    // either.
    let jobs: Api<DynamicObject> = Api::namespaced_with(
        client_as(support::rbac::CONTROLLER).await,
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apps.kruise.io",
            "v1alpha1",
            "ImageListPullJob",
        )),
    );
    let job = json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImageListPullJob",
        "metadata": {"name": "new-job"}, "spec": {"images": ["127.0.0.1:5000/x:1"]}});
    match jobs
        .patch("new-job", &PatchParams::apply("test"), &Patch::Apply(&job))
        .await
    {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("cannot create"), "{}", s.message),
        other => panic!("expected 403, got {other:?}"),
    }
    let denied = server.denials();
    assert_eq!(denied.len(), 3, "{denied:#?}");
    assert!(
        denied[0]
            .starts_with("update /api/v1/namespaces/default/pods/rbac: pods \"rbac\" is forbidden")
            && denied[1]
                .starts_with("list /api/v1/namespaces/default/secrets: secrets is forbidden"),
        "{denied:#?}"
    );
}
