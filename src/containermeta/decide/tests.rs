use super::*;
use crate::node::model::State;
use serde_json::json;

fn container(json: serde_json::Value) -> Container {
    serde_json::from_value(json).unwrap()
}

fn pod(json: serde_json::Value) -> Pod {
    serde_json::from_value(json).unwrap()
}

/// A CloneSet pod: container `app` with TEST_ENV from the annotation `test-env`.
fn clone_pod(test_env: &str, meta: Option<&str>, ready: Option<&str>) -> Pod {
    let mut annotations = json!({"test-env": test_env});
    if let Some(m) = meta {
        annotations[ANNOTATION_RUNTIME_CONTAINERS_META] = json!(m);
    }
    let mut conditions = vec![];
    if let Some(status) = ready {
        conditions.push(json!({"type": "InPlaceUpdateReady", "status": status}));
    }
    pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                "name": "c", "uid": "o1", "controller": true}]},
        "spec": {"containers": [
            {"name": "app", "image": "busybox:1.36", "env": [
                {"name": "TEST_ENV", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['test-env']"}}}]},
            {"name": "side", "image": "nginx:alpine"}
        ]},
        "status": {"conditions": conditions, "containerStatuses": [
            {"name": "app", "containerID": "containerd://c1"},
            {"name": "side", "containerID": "containerd://c2"}
        ]}
    }))
}

fn view(name: &str, id: &str, image: &str, state: State) -> ContainerView {
    ContainerView {
        name: name.into(),
        id: id.into(),
        sandbox_id: "s1".into(),
        state,
        started_at: 1,
        restart_count: 0,
        hash: kubelet_hash(&container(json!({"name": name, "image": image}))),
        grace: std::time::Duration::from_secs(30),
        pre_stop: None,
        ports: vec![],
    }
}

fn runtime() -> Vec<ContainerView> {
    vec![
        view("app", "c1", "busybox:1.36", State::Running),
        view("side", "c2", "nginx:alpine", State::Running),
    ]
}

#[test]
fn hashes_are_kruises_to_the_bit() {
    // Vectors computed with go-spew + encoding/json + hash/fnv (docs/upstream/container-meta.md §2.4).
    let h = |envs: &[(&str, &str)]| hash_envs(envs.iter().copied());
    assert_eq!(h(&[]), 86_995_377);
    assert_eq!(h(&[("TEST_ENV", "foo")]), 27_323_935);
    assert_eq!(h(&[("TEST_ENV", "bar")]), 3_944_769_931);
    assert_eq!(h(&[("TEST_ENV", "")]), 1_647_751_841);
    assert_eq!(h(&[("CONFIG", "foo")]), 2_466_869_200);
    assert_eq!(h(&[("b", "2"), ("a", "1")]), 1_593_959_611);
    assert_eq!(h(&[("X", "a<b&c>")]), 367_828_921);
    let c = |name: &str, image: &str| container(json!({"name": name, "image": image}));
    assert_eq!(kubelet_hash(&c("nginx", "nginx:alpine")), 1_281_589_684);
    assert_eq!(kubelet_hash(&c("app", "busybox:1.36")), 3_757_893);
}

#[test]
fn go_json_escapes() {
    let mut s = String::new();
    go_json_string(
        &mut s,
        "a\"\\\n\r\t\u{8}\u{c}\u{1}<>&\u{2028}\u{2029}é\u{7f}",
    );
    assert_eq!(
        s,
        r#""a\"\\\n\r\t\b\f\u0001\u003c\u003e\u0026\u2028\u2029é"#.to_string() + "\u{7f}\""
    );
}

#[test]
fn env_selection_as_kruise() {
    let c = container(json!({"name": "c", "env": [
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}}},
        {"name": "A", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations['x']"}}},
        {"name": "LITERAL", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['y']"}}},
        {"name": "WHOLE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "SIDECARSET_VERSION", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['v']"}}},
        {"name": "SIDECARSET_VERSION_ALT", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['v']"}}}
    ]}));
    let got: Vec<(String, Source, String)> = metadata_env(&c)
        .into_iter()
        .map(|e| (e.name, e.source, e.key))
        .collect();
    assert_eq!(
        got,
        vec![
            ("L".into(), Source::Label, "app.kubernetes.io/name".into()),
            ("A".into(), Source::Annotation, "x".into()),
        ]
    );
}

#[test]
fn current_hash_reads_env_output() {
    let p = clone_pod("foo", None, None);
    let app = &p.spec.as_ref().unwrap().containers[0];
    let out = "PATH=/bin\nTEST_ENV=foo\nHOME=/root\n";
    assert_eq!(current_hash(app, &p, out), expected_hash(app, &p));
    assert_ne!(
        current_hash(app, &p, "TEST_ENV=old\n"),
        expected_hash(app, &p)
    );
    // Missing: "" as upstream.
    assert_eq!(current_hash(app, &p, "PATH=/bin"), 1_647_751_841);
    // A value with spaces and a newline, exactly as the metadata gives it: no endless restarts.
    let p = clone_pod("  two\nlines ", None, None);
    let out = "PATH=/bin\nTEST_ENV=  two\nlines \nHOME=/\n";
    assert_eq!(current_hash(app, &p, out), expected_hash(app, &p));
    // A prefix of the entry is not the entry.
    let p = clone_pod("foo", None, None);
    assert_ne!(
        current_hash(app, &p, "TEST_ENV=foobar\n"),
        expected_hash(app, &p)
    );
}

#[test]
fn eligible_pods() {
    assert!(eligible(&clone_pod("foo", None, None)));
    let apps_v1 = pod(
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": "r", "uid": "o", "controller": true}]}}),
    );
    assert!(!eligible(&apps_v1));
    let not_controller = pod(
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps.kruise.io/v1beta1",
        "kind": "StatefulSet", "name": "r", "uid": "o"}]}}),
    );
    assert!(!eligible(&not_controller));
    let injected = pod(json!({"metadata": {"annotations": {"kruise.io/sidecarset-hash": "{}"}}}));
    assert!(eligible(&injected));
}

#[test]
fn a_new_pod_gets_its_meta_after_one_env_read() {
    let p = clone_pod("foo", None, Some("True"));
    let mut reads = HashMap::new();
    let first = plan(&p, &runtime(), "containerd", &reads);
    assert_eq!(first.read_env, vec![("app".to_string(), "c1".to_string())]);
    assert_eq!(first.annotation, None, "written once the env is read");
    assert!(first.restart.is_empty());
    reads.insert("c1".to_string(), EnvRead::Hash(27_323_935));
    let second = plan(&p, &runtime(), "containerd", &reads);
    assert!(second.read_env.is_empty());
    let set: RuntimeContainerMetaSet =
        serde_json::from_str(second.annotation.as_deref().unwrap()).unwrap();
    assert_eq!(set.containers.len(), 2);
    assert_eq!(set.containers[0].container_id, "containerd://c1");
    assert_eq!(
        set.containers[0].hashes,
        RuntimeContainerHashes {
            plain_hash: 3_757_893,
            extracted_env_from_metadata_hash: 27_323_935
        }
    );
    assert_eq!(
        set.containers[1].hashes.extracted_env_from_metadata_hash,
        NO_METADATA_ENV_HASH
    );
    // Written: nothing more to do.
    let written = clone_pod("foo", second.annotation.as_deref(), Some("True"));
    assert_eq!(
        plan(&written, &runtime(), "containerd", &reads),
        Plan::default()
    );
}

#[test]
fn a_failed_read_writes_the_rest() {
    let p = clone_pod("foo", None, None);
    let reads = HashMap::from([("c1".to_string(), EnvRead::Failed)]);
    let out = plan(&p, &runtime(), "containerd", &reads);
    let set: RuntimeContainerMetaSet =
        serde_json::from_str(out.annotation.as_deref().unwrap()).unwrap();
    assert_eq!(set.containers[0].hashes.extracted_env_from_metadata_hash, 0);
}

fn meta(env_hash: u64) -> String {
    serde_json::to_string(&RuntimeContainerMetaSet {
        containers: vec![
            RuntimeContainerMeta {
                name: "app".into(),
                container_id: "containerd://c1".into(),
                restart_count: 0,
                hashes: RuntimeContainerHashes {
                    plain_hash: 3_757_893,
                    extracted_env_from_metadata_hash: env_hash,
                },
            },
            RuntimeContainerMeta {
                name: "side".into(),
                container_id: "containerd://c2".into(),
                restart_count: 0,
                hashes: RuntimeContainerHashes {
                    plain_hash: 1_281_589_684,
                    extracted_env_from_metadata_hash: NO_METADATA_ENV_HASH,
                },
            },
        ],
    })
    .unwrap()
}

#[test]
fn restarts_only_a_stale_container_during_an_in_place_update() {
    let reads = HashMap::new();
    let foo = 27_323_935;
    // The metadata moved to bar while the container runs with foo.
    let cases = [
        ("no update: the condition is True", Some("True"), true, 0),
        ("no condition at all", None, true, 0),
        ("update in progress", Some("False"), true, 1),
        (
            "the kubelet recreates it itself (image changed)",
            Some("False"),
            false,
            0,
        ),
    ];
    for (what, ready, same_image, restarts) in cases {
        let p = clone_pod("bar", Some(&meta(foo)), ready);
        let mut rt = runtime();
        if !same_image {
            rt[0] = view("app", "c1", "busybox:1.37", State::Running);
        }
        let out = plan(&p, &rt, "containerd", &reads);
        assert_eq!(out.restart.len(), restarts, "{what}");
        if restarts == 1 {
            let r = &out.restart[0];
            assert_eq!((r.container.as_str(), r.id.as_str()), ("app", "c1"));
            assert_eq!((r.running, r.expected), (foo, 3_944_769_931));
        }
    }
    // An exited container is left to the kubelet; an up-to-date one stays.
    let p = clone_pod("bar", Some(&meta(foo)), Some("False"));
    let mut rt = runtime();
    rt[0].state = State::Exited { code: Some(0) };
    assert!(plan(&p, &rt, "containerd", &reads).restart.is_empty());
    let p = clone_pod("foo", Some(&meta(foo)), Some("False"));
    assert!(
        plan(&p, &runtime(), "containerd", &reads)
            .restart
            .is_empty()
    );
}

#[test]
fn the_new_container_replaces_its_entry() {
    let p = clone_pod("bar", Some(&meta(27_323_935)), Some("False"));
    let mut rt = runtime();
    rt[0] = view("app", "c9", "busybox:1.36", State::Running);
    rt[0].restart_count = 1;
    let reads = HashMap::from([("c9".to_string(), EnvRead::Hash(3_944_769_931))]);
    let out = plan(&p, &rt, "containerd", &reads);
    assert!(out.restart.is_empty());
    let set: RuntimeContainerMetaSet =
        serde_json::from_str(out.annotation.as_deref().unwrap()).unwrap();
    assert_eq!(set.containers[0].container_id, "containerd://c9");
    assert_eq!(set.containers[0].restart_count, 1);
    assert_eq!(
        set.containers[0].hashes.extracted_env_from_metadata_hash,
        3_944_769_931
    );
}

#[test]
fn pods_left_alone() {
    let reads = HashMap::new();
    let mut p = clone_pod("foo", None, None);
    p.metadata.owner_references = None;
    assert_eq!(plan(&p, &runtime(), "containerd", &reads), Plan::default());
    let mut p = clone_pod("foo", None, None);
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    assert_eq!(plan(&p, &runtime(), "containerd", &reads), Plan::default());
    let mut p = clone_pod("foo", None, None);
    p.status = None;
    assert_eq!(plan(&p, &runtime(), "containerd", &reads), Plan::default());
    // A container the runtime does not know yet is not listed.
    let p = clone_pod("foo", None, None);
    let out = plan(&p, &runtime()[1..], "containerd", &reads);
    let set: RuntimeContainerMetaSet =
        serde_json::from_str(out.annotation.as_deref().unwrap()).unwrap();
    assert_eq!(set.containers.len(), 1);
}
