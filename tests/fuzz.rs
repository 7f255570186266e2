//! Property-based fuzzing (proptest) of every parser and pure decide function fed by the API, a
//! pod's kubelet annotations or a Secret. Each case takes a valid seed object, applies a few
//! random mutations (extreme and negative numbers, odd strings, extreme timestamps, removed
//! fields, wrong types), and runs the code on whatever still deserialises. Nothing may panic
//! (release builds abort on panic: a stored object that panics the agent is a crash loop), and
//! what the clamps promise must hold.
//!
//! CI runs the default number of cases per target (256, a few seconds in all). Longer:
//! `PROPTEST_CASES=200000 cargo test --release --test fuzz`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use nodeward::api::clamp;
use nodeward::api::kruise::{
    ContainerRecreateRequest, ImagePullJobSpec, NodeImage, NodeImageSpec, NodeImageStatus,
    PodProbeMarker, PodProbeStatus, RuntimeContainerMetaSet,
};
use nodeward::api::role::Role;
use nodeward::containermeta::decide::{self as meta, EnvRead};
use nodeward::controller::cloneset::decide as cloneset;
use nodeward::controller::crr::decide as crr_controller;
use nodeward::controller::imagepull::job::decide as job;
use nodeward::controller::imagepull::node_image::decide as node_image;
use nodeward::controller::podprobe::decide as probe_controller;
use nodeward::controller::podprobe::decide::validate as probe_validate;
use nodeward::controller::webhook;
use nodeward::cri::kubelet::{ContainerMeta, PodRef, PreStop, RestartPolicy};
use nodeward::imagepull::credentials::Keyring;
use nodeward::imagepull::decide as pull;
use nodeward::imagepull::reference::ImageRef;
use nodeward::journal::{Action, Journal, Outcome, Recorded, Retention};
use nodeward::node::model::State;
use nodeward::node::view::ContainerView;
use nodeward::recreate::decide as crr_agent;
use nodeward::sidecar::decide::{self as sidecar, ContainerFacts, Decision, Hold, PodFacts};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// A replacement for one node of a seed.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(i32::MAX)),
        Just(json!(i32::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1.5e300)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<i32>().prop_map(|n| json!(n)),
        Just(json!("")),
        Just(json!("://")),
        Just(json!("containerd://")),
        Just(json!("containerd://x")),
        Just(json!("docker://x")),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("0001-01-01T00:00:00Z")),
        Just(json!("1970-01-01T00:00:00Z")),
        Just(json!("[]")),
        Just(json!("[{\"name\":\"app\",\"restartCount\":-5}]")),
        "\\PC{0,24}".prop_map(Value::String),
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// Up to five mutations: which node (an index into all of the seed's nodes), and its
/// replacement (`None`: remove it).
fn mutations() -> impl Strategy<Value = Vec<(Index, Option<Value>)>> {
    prop::collection::vec((any::<Index>(), prop::option::weighted(0.85, leaf())), 1..6)
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    At(usize),
}

fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                here.push(Step::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(Step::At(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn mutate(seed: &Value, mutations: &[(Index, Option<Value>)]) -> Value {
    let mut v = seed.clone();
    for (at, with) in mutations {
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        let path = &all[at.index(all.len())];
        let Some((last, parent)) = path.split_last() else {
            if let Some(w) = with {
                v = w.clone();
            }
            continue;
        };
        let mut node = &mut v;
        for step in parent {
            node = match step {
                Step::Key(k) => &mut node[k.as_str()],
                Step::At(i) => &mut node[*i],
            };
        }
        match (last, with) {
            (Step::Key(k), Some(w)) => node[k.as_str()] = w.clone(),
            (Step::Key(k), None) => {
                if let Some(map) = node.as_object_mut() {
                    map.remove(k);
                }
            }
            (Step::At(i), Some(w)) => node[*i] = w.clone(),
            (Step::At(i), None) => {
                if let Some(items) = node.as_array_mut() {
                    items.remove(*i);
                }
            }
        }
    }
    v
}

fn crr_seed() -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": {
            "name": "r1", "namespace": "default", "uid": "crr-1", "resourceVersion": "7",
            "creationTimestamp": "2026-12-06T10:00:00Z",
            "labels": {"crr.apps.kruise.io/pod-uid": "pod-uid-1",
                       "crr.apps.kruise.io/node-name": "node-a",
                       "crr.apps.kruise.io/active": "true"},
            "annotations": {
                "crr.apps.kruise.io/sync-container-statuses":
                    "[{\"name\":\"app\",\"ready\":true,\"restartCount\":3,\"containerID\":\"containerd://app-3\"}]",
                "crr.apps.kruise.io/unready-acquired": "2026-12-06T10:00:01Z"
            },
            "finalizers": ["crr.apps.kruise.io/unready-acquired"]
        },
        "spec": {
            "podName": "web-0",
            "containers": [
                {"name": "app", "statusContext": {"containerID": "containerd://app-2", "restartCount": 2},
                 "preStop": {"exec": {"command": ["sleep", "1"]}},
                 "ports": [{"name": "http", "containerPort": 8080}]},
                {"name": "sidecar", "statusContext": {"containerID": "containerd://side-0", "restartCount": 0}}
            ],
            "strategy": {"failurePolicy": "Fail", "orderedRecreate": true, "forceRecreate": true,
                         "terminationGracePeriodSeconds": 30, "unreadyGracePeriodSeconds": 3,
                         "minStartedSeconds": 5},
            "activeDeadlineSeconds": 300,
            "ttlSecondsAfterFinished": 60
        },
        "status": {
            "phase": "Recreating",
            "completionTime": "2026-12-06T10:05:00Z",
            "message": "",
            "containerRecreateStates": [
                {"name": "app", "phase": "Recreating", "isKilled": true},
                {"name": "sidecar", "phase": "Pending"}
            ]
        }
    })
}

fn pod_seed() -> Value {
    json!({
        "metadata": {"name": "web-0", "namespace": "default", "uid": "pod-uid-1"},
        "spec": {
            "nodeName": "node-a",
            "terminationGracePeriodSeconds": 17,
            "readinessGates": [{"conditionType": "KruisePodReady"}],
            "containers": [
                {"name": "app", "image": "x", "ports": [{"name": "http", "containerPort": 8080}],
                 "lifecycle": {"preStop": {"httpGet": {"path": "/quit", "port": "http"}}}},
                {"name": "sidecar", "image": "y",
                 "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}}}
            ]
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "KruisePodReady", "status": "False",
                            "message": "[{\"userAgent\":\"ContainerRecreateRequest\",\"key\":\"default/r1\"}]"}],
            "containerStatuses": [
                {"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 3,
                 "containerID": "containerd://app-3", "state": {"running": {"startedAt": "2026-12-06T10:00:02Z"}}},
                {"name": "sidecar", "image": "y", "imageID": "", "ready": true, "restartCount": 0,
                 "containerID": "containerd://side-0", "state": {"running": {}}}
            ]
        }
    })
}

fn marker_seed() -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "PodProbeMarker",
        "metadata": {"name": "ppm", "namespace": "default", "generation": 2},
        "spec": {
            "selector": {"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
            "probes": [
                {"name": "healthy", "containerName": "app",
                 "probe": {"httpGet": {"path": "/", "port": "http", "scheme": "HTTP"},
                           "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
                 "podConditionType": "game.kruise.io/healthy",
                 "markerPolicy": [
                     {"state": "Succeeded", "labels": {"healthy": "yes"},
                      "annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
                     {"state": "Failed", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}}]},
                {"name": "tcp", "containerName": "app", "probe": {"tcpSocket": {"port": 8080}},
                 "podConditionType": "tcp"}
            ]
        },
        "status": {"observedGeneration": 1, "matchedPods": 3}
    })
}

fn probe_status_seed() -> Value {
    json!({"name": "web-0", "namespace": "default", "uid": "pod-uid-1", "probeStates": [
        {"name": "ppm#healthy", "state": "Succeeded", "message": "ok",
         "lastProbeTime": "2026-12-06T10:00:02Z", "lastTransitionTime": "2026-12-06T10:00:02Z"},
        {"name": "ppm#tcp", "state": "Failed", "message": "refused"},
        {"name": "gone#x", "state": "Unknown"}]})
}

fn node_image_seed() -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "NodeImage",
        "metadata": {"name": "node-a", "creationTimestamp": "2026-12-06T10:00:00Z"},
        "spec": {"images": {"r.io/app": {
            "pullSecrets": [{"name": "regcred", "namespace": "kruise-daemon-config"}],
            "sandboxConfig": {"labels": {"a": "b"}, "annotations": {"c": "d"}},
            "tags": [
                {"tag": "v1", "version": 2, "createdAt": "2026-12-06T10:00:00Z",
                 "imagePullPolicy": "Always",
                 "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3,
                                "activeDeadlineSeconds": 1200, "ttlSecondsAfterFinished": 300},
                 "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                                      "name": "j", "namespace": "default", "uid": "job-1"}]},
                {"tag": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "version": 0}
            ]
        }}},
        "status": {"desired": 2, "succeeded": 1, "failed": 0, "pulling": 1, "waiting": 0,
            "imageStatuses": {"r.io/app": {"tags": [
                {"tag": "v1", "phase": "Succeeded", "progress": 100, "version": 2,
                 "startTime": "2026-12-06T10:00:01Z", "completionTime": "2026-12-06T10:00:09Z",
                 "imageID": "sha256:abc"}
            ]}}}
    })
}

fn job_seed() -> Value {
    json!({
        "image": "r.io/app:v1",
        "pullSecrets": ["regcred"],
        "selector": {"names": ["node-a"], "matchLabels": {"a": "b"}},
        "podSelector": {"matchLabels": {"app": "web"}},
        "parallelism": 4,
        "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3},
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 1200, "ttlSecondsAfterFinished": 300},
        "sandboxConfig": {"labels": {"a": "b"}},
        "imagePullPolicy": "Always"
    })
}

fn node_seed() -> Value {
    json!({
        "metadata": {"name": "node-a", "labels": {"type": "virtual-kubelet"},
                     "creationTimestamp": "2026-12-06T10:00:00Z"},
        "status": {"conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-12-06T10:00:00Z"}]}
    })
}

fn at(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
}

fn timestamp(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Times around the seeds' and at the edges.
fn now() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        1_796_000_000i64..1_797_000_000,
        0i64..253_402_300_799,
    ]
}

fn runtime_containers() -> impl Strategy<Value = Vec<crr_agent::RuntimeContainer>> {
    let one = (
        prop_oneof![
            Just("app".to_string()),
            Just("sidecar".to_string()),
            "\\PC{0,6}"
        ],
        prop_oneof![
            Just("containerd://app-2".to_string()),
            Just("containerd://app-3".to_string()),
            "\\PC{0,12}"
        ],
        any::<bool>(),
        any::<i32>(),
        prop::option::of(now()),
    )
        .prop_map(
            |(name, id, exited, restart_count, started)| crr_agent::RuntimeContainer {
                name,
                id,
                exited,
                restart_count,
                started_at: started.map(at),
            },
        );
    prop::collection::vec(one, 0..4)
}

fn role() -> impl Strategy<Value = Option<Role>> {
    prop_oneof![
        Just(None),
        Just(Some(Role::Main)),
        Just(Some(Role::Other)),
        any::<bool>().prop_map(|ignore_exit_code| Some(Role::Sidecar { ignore_exit_code })),
    ]
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Created),
        Just(State::Running),
        Just(State::Unknown),
        prop::option::of(prop_oneof![Just(0), Just(1), Just(137), any::<i32>()])
            .prop_map(|code| State::Exited { code }),
    ]
}

fn pod_facts() -> impl Strategy<Value = PodFacts> {
    let policy = prop::option::of(prop_oneof![
        Just(RestartPolicy::Always),
        Just(RestartPolicy::OnFailure),
        Just(RestartPolicy::Never),
    ]);
    let containers = prop::collection::vec((role(), state()), 0..6).prop_map(|cs| {
        cs.into_iter()
            .enumerate()
            .map(|(i, (role, state))| ContainerFacts {
                id: format!("id-{i}"),
                name: format!("c{i}"),
                role,
                state,
            })
            .collect()
    });
    (policy, containers).prop_map(|(policy, containers)| PodFacts { policy, containers })
}

fn action_seed() -> Value {
    json!({
        "kind": "stop_sidecar",
        "pod": {"namespace": "default", "name": "job-1", "uid": "u-1"},
        "containers": [{"name": "proxy", "id": "c-1"}],
        "decided_at": 1_700_000_000_000u64,
        "reason": "main containers exited",
        "inputs": {"restart_policy": "Never", "containers": [
            {"name": "main", "id": "c-0", "role": "Main", "state": "exited", "exit_code": 0},
            {"name": "proxy", "id": "c-1", "role": {"Sidecar": {"ignore_exit_code": true}},
             "state": "running", "exit_code": null}]},
    })
}

fn outcome_seed() -> Value {
    json!({
        "result": "stopped", "message": "",
        "containers": [{"name": "proxy", "id": "c-1", "exit_code": 137, "exit_code_ignored": true,
                        "exit_to_stop_ms": 3.5, "exit_to_exit_ms": 120.0, "prestop": "none"}],
        "finished_at": 1_700_000_001_000u64,
    })
}

/// What `ImageRef::parse` made of oci-spec's `Reference` before it read the grammar itself.
fn oci_spec_reading(reference: &str) -> Option<(String, String, String)> {
    let r: oci_spec::distribution::Reference = reference.parse().ok()?;
    let tag = r.digest().or(r.tag())?.to_string();
    if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some((r.registry().to_string(), r.repository().to_string(), tag))
}

proptest! {
    /// The sidecar rule's promises, whatever the pod: nothing is decided before every role is
    /// known; only running sidecars are stopped; never while a main container runs, never under
    /// `Always`, and under `OnFailure` only once every main container exited 0.
    #[test]
    fn sidecar_decisions(pod in pod_facts()) {
        let decision = sidecar::decide(&pod);
        if pod.containers.iter().any(|c| c.role.is_none()) {
            prop_assert_eq!(&decision, &Decision::Hold(Hold::ClassificationPending));
        }
        if let Decision::Stop(targets) = &decision {
            prop_assert!(!targets.is_empty());
            prop_assert!(pod.policy != Some(RestartPolicy::Always));
            let mains: Vec<_> = pod.containers.iter().filter(|c| c.role == Some(Role::Main)).collect();
            prop_assert!(!mains.is_empty());
            prop_assert!(mains.iter().all(|c| c.state.is_exited()));
            if pod.policy != Some(RestartPolicy::Never) {
                let exited_ok = State::Exited { code: Some(0) };
                prop_assert!(mains.iter().all(|c| c.state == exited_ok));
            }
            for t in targets {
                let c = pod.containers.iter().find(|c| c.id == t.id).unwrap();
                prop_assert_eq!(c.state, State::Running);
                let role = Role::Sidecar { ignore_exit_code: t.ignore_exit_code };
                prop_assert_eq!(c.role, Some(role));
            }
        }
    }

    /// The env rule is upstream's `strings.EqualFold(value, "true")`.
    #[test]
    fn sidecar_env(value in prop_oneof![Just("true".to_string()), Just(" true".to_string()), Just("TrUe".to_string()), "\\PC{0,8}"]) {
        let role = Role::from_env([("KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT", value.as_str())]);
        prop_assert_eq!(role.is_sidecar(), value.eq_ignore_ascii_case("true"));
    }

    /// Journal records as a damaged or older journal may hold them: recorded, completed, listed,
    /// shown through the local API, pruned at any time, and read for the Job's verdict.
    #[test]
    fn journal_records(action_muts in mutations(), outcome_muts in mutations(), now in now(), max_events in 0usize..4) {
        let Ok(action) = serde_json::from_value::<Action>(mutate(&action_seed(), &action_muts)) else {
            return Ok(());
        };
        let Ok(outcome) = serde_json::from_value::<Outcome>(mutate(&outcome_seed(), &outcome_muts)) else {
            return Ok(());
        };
        let _ = nodeward::sidecar::report::verdict_patch(&action, true);
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention { max_events, max_age: Duration::from_secs(3600) };
        let (journal, _) = Journal::open(dir.path(), retention).unwrap();
        let key = format!("{}/{}", action.kind, action.pod.uid);
        prop_assert!(matches!(journal.decide(&key, &action), Ok(Recorded::New(_))));
        prop_assert_eq!(journal.pending().unwrap().len(), 1);
        let event = journal.complete(&key, &outcome).unwrap();
        let _ = nodeward::report::api::to_pb(&event);
        let _ = nodeward::sidecar::report::job_phase(&event);
        let _ = journal.events_since(0, 10).unwrap();
        let _ = journal.outbox(10).unwrap();
        let _ = journal.stats().unwrap();
        let _ = journal.prune(at(now)).unwrap();
        prop_assert!(journal.pending().unwrap().is_empty());
    }

    /// The admission patch, applied to the object exactly as the client sent it, gives the
    /// object the webhook decided on: the Pod's labels and the defaulted spec.
    #[test]
    fn admission_patch(crr_muts in mutations(), pod_muts in mutations()) {
        let raw = mutate(&crr_seed(), &crr_muts);
        let Ok(crr) = serde_json::from_value::<ContainerRecreateRequest>(raw.clone()) else {
            return Ok(());
        };
        let pod = serde_json::from_value::<Pod>(mutate(&pod_seed(), &pod_muts)).ok();
        if let crr_controller::Admission::Mutate(next) = crr_controller::admit_create(&crr, pod.as_ref()) {
            let patch = webhook::patch(&raw, &next).unwrap();
            let mut applied = raw.clone();
            json_patch::patch(&mut applied, &patch).unwrap();
            let got: ContainerRecreateRequest = serde_json::from_value(applied).unwrap();
            prop_assert_eq!(&got.spec, &next.spec);
            prop_assert_eq!(got.pod_uid(), next.pod_uid());
            prop_assert_eq!(got.node_name(), next.node_name());
            prop_assert_eq!(&got.metadata.labels, &next.metadata.labels);
        }
    }

    #[test]
    fn crr_agent_decisions(
        crr_muts in mutations(),
        other_muts in mutations(),
        runtime in runtime_containers(),
        now in now(),
        killed in prop::collection::hash_set(prop_oneof![Just("app".to_string()), Just("sidecar".to_string())], 0..3),
    ) {
        let seed = crr_seed();
        let Ok(crr) = serde_json::from_value::<ContainerRecreateRequest>(mutate(&seed, &crr_muts)) else {
            return Ok(());
        };
        let other = serde_json::from_value::<ContainerRecreateRequest>(mutate(&seed, &other_muts)).ok();
        let mut all = vec![&crr];
        all.extend(other.as_ref());
        let _ = crr_agent::pick(&all);
        let _ = crr_agent::is_open(&crr);
        let _ = crr_agent::unready_gate(&crr, at(now));
        let pod = PodRef { namespace: "default".into(), name: "web-0".into(), uid: "pod-uid-1".into() };
        let _ = crr_agent::check_pod(&crr, Some(&pod));
        let _ = crr_agent::check_pod(&crr, None);
        let _ = crr_agent::check_runtime(&crr, "containerd");
        prop_assert!(crr_agent::grace(&crr) <= clamp::seconds(i64::MAX));
        let synced = crr.sync_container_statuses().unwrap_or_default();
        let killed: HashSet<String> = killed;
        let mut states = crr_agent::container_states(&crr, &runtime, &synced, &killed, at(now));
        let _ = crr_agent::next(&crr, &mut states, &runtime, at(now));
    }

    #[test]
    fn crr_controller_decisions(crr_muts in mutations(), pod_muts in mutations(), now in now(), add in any::<bool>()) {
        let Ok(crr) = serde_json::from_value::<ContainerRecreateRequest>(mutate(&crr_seed(), &crr_muts)) else {
            return Ok(());
        };
        let pod = serde_json::from_value::<Pod>(mutate(&pod_seed(), &pod_muts)).ok();
        let _ = crr_controller::needs_defaulting(&crr);
        let _ = crr_controller::is_finished(&crr);
        let _ = crr_controller::default_crr(&crr, pod.as_ref());
        // Admission: a create is admitted with the Pod's truth or refused; never a panic.
        if let crr_controller::Admission::Mutate(next) = crr_controller::admit_create(&crr, pod.as_ref()) {
            prop_assert_eq!(next.pod_uid(), pod.as_ref().map(|p| p.metadata.uid.as_deref().unwrap_or_default()));
            let _ = crr_controller::admit_update(&next, &crr);
        }
        let _ = crr_controller::admit_update(&crr, &crr);
        let plan = crr_controller::lifecycle(&crr, pod.as_ref(), at(now));
        prop_assert!(plan.requeue.is_none_or(|r| r <= crr_controller::MAX_REQUEUE));
        let _ = crr_controller::lifecycle(&crr, None, at(now));
        let _ = crr_controller::failed_unfinished(&crr, "m");
        if let Some(pod) = &pod {
            let _ = crr_controller::sync_statuses(&crr, pod);
            let key = crr_controller::readiness_key(&crr);
            let _ = nodeward::controller::readiness::condition(pod, &key, add);
        }
    }

    #[test]
    fn virtual_node_sidecar_swap(pod_muts in mutations()) {
        if let Ok(pod) = serde_json::from_value::<Pod>(mutate(&pod_seed(), &pod_muts)) {
            let _ = nodeward::controller::vk_sidecar::decide::decide(&pod);
        }
    }

    #[test]
    fn node_image_agent_decisions(muts in mutations(), running in prop::collection::btree_map("\\PC{0,4}", any::<i64>(), 0..3), attempts in any::<u32>()) {
        let Ok(ni) = serde_json::from_value::<NodeImage>(mutate(&node_image_seed(), &muts)) else {
            return Ok(());
        };
        let status = ni.status.clone().unwrap_or_default();
        let statuses = pull::tag_statuses(&status);
        let running: BTreeMap<pull::TagKey, i64> = running
            .into_iter()
            .map(|(tag, v)| (pull::TagKey { image: "r.io/app".into(), tag }, v))
            .collect();
        let plan = pull::plan(&ni.spec, &statuses, &running);
        for task in &plan.start {
            prop_assert!(task.timeout <= clamp::seconds(i64::MAX));
            prop_assert!(task.deadline.is_none_or(|d| d <= clamp::seconds(i64::MAX)));
        }
        let doc = pull::status_document(&ni.spec, &statuses);
        let _ = pull::write_when(&doc, Some(&status)).coalesce();
        let _: Vec<Duration> = pull::backoff_schedule(attempts).take(64).collect();
    }

    #[test]
    fn node_image_controller_decisions(muts in mutations(), node_muts in mutations(), now in now(), delay in any::<u32>(), timeout in any::<u32>()) {
        let now = timestamp(now);
        if let Ok(node) = serde_json::from_value::<Node>(mutate(&node_seed(), &node_muts)) {
            let _ = node_image::creation(&node, now, Duration::from_secs(u64::from(delay)));
        }
        let Ok(ni) = serde_json::from_value::<NodeImage>(mutate(&node_image_seed(), &muts)) else {
            return Ok(());
        };
        let _ = node_image::is_fake(&ni);
        let _ = node_image::check_status(&ni, now, Duration::from_secs(u64::from(timeout)));
        let mut spec: NodeImageSpec = ni.spec.clone();
        let status: Option<NodeImageStatus> = ni.status.clone();
        let _ = node_image::gc_spec(&mut spec, status.as_ref(), |_, _| Some("job-1".into()), now);
    }

    #[test]
    fn image_pull_job_decisions(muts in mutations(), ni_muts in mutations(), jitter in 0.0f64..1.0, ttl in any::<i32>(), now in now()) {
        let Ok(spec) = serde_json::from_value::<ImagePullJobSpec>(mutate(&job_seed(), &muts)) else {
            return Ok(());
        };
        let spec = job::with_defaults(&spec);
        let valid = job::validate(&spec).is_ok();
        let policy = job::tag_pull_policy(&spec, ttl, jitter);
        // What reaches the NodeImage (only from a valid job) has no negative durations.
        if valid {
            prop_assert!(policy.active_deadline_seconds.is_none_or(|d| d >= 0), "{policy:?}");
            prop_assert!(policy.timeout_seconds.is_none_or(|t| t >= 0), "{policy:?}");
        }
        let now = timestamp(now);
        let _ = job::calculate_status(&spec, None, &[], now);
        if let Ok(ni) = serde_json::from_value::<NodeImage>(mutate(&node_image_seed(), &ni_muts)) {
            let _ = job::may_target(&spec, &ni);
            let _ = job::is_owner(&ni, "job-1");
        }
    }

    #[test]
    fn kubelet_annotations(hook_muts in mutations(), ports in "\\PC{0,60}", grace in "\\PC{0,24}", restarts in "\\PC{0,12}") {
        let hook = mutate(&json!({"exec": {"command": ["sh", "-c", "x"]}, "sleep": {"seconds": 5},
            "httpGet": {"path": "/q", "port": "http", "host": "h", "scheme": "HTTP",
                        "httpHeaders": [{"name": "a", "value": "b"}]}}), &hook_muts);
        let annotations: HashMap<String, String> = [
            ("io.kubernetes.container.preStopHandler".to_string(), hook.to_string()),
            ("io.kubernetes.container.ports".to_string(), ports),
            ("io.kubernetes.pod.terminationGracePeriod".to_string(), grace),
            ("io.kubernetes.container.restartCount".to_string(), restarts),
        ].into_iter().collect();
        let meta = ContainerMeta::from_cri(&HashMap::new(), &annotations, "c");
        prop_assert!(meta.grace <= clamp::seconds(i64::MAX));
        if let Some(PreStop::Sleep(d)) = meta.pre_stop {
            prop_assert!(d <= clamp::seconds(i64::MAX));
        }
    }

    #[test]
    fn pull_secrets(muts in mutations(), raw in prop::collection::vec(any::<u8>(), 0..64), path in "\\PC{0,40}") {
        let config = mutate(&json!({"auths": {
            "r.io": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"auth": "dTpw"},
            "127.0.0.1:5000/team": {"auth": "not base64!"}
        }}), &muts);
        let mut keyring = Keyring::default();
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), config.to_string().into_bytes())]);
        let _ = keyring.add_secret(&data);
        let _ = keyring.add_secret(&BTreeMap::from([(".dockercfg".to_string(), raw)]));
        let _ = keyring.lookup(&path);
        let _ = keyring.lookup("r.io/app");
    }

    /// PodProbeMarkers, pods and results as stored objects may hold them: judged at admission,
    /// turned into a node's spec and into the pod's marks. The spec lists only pods that are
    /// probed, and the marks never write a condition the kubelet owns.
    #[test]
    fn pod_probe_markers(marker_muts in mutations(), pod_muts in mutations(), status_muts in mutations()) {
        let Ok(marker) = serde_json::from_value::<PodProbeMarker>(mutate(&marker_seed(), &marker_muts)) else {
            return Ok(());
        };
        let mut pod = pod_seed();
        pod["metadata"]["labels"] = json!({"app": "web", "tier": "a"});
        pod["status"]["conditions"] = json!([{"type": "Initialized", "status": "True"}]);
        let Ok(pod) = serde_json::from_value::<Pod>(mutate(&pod, &pod_muts)) else {
            return Ok(());
        };
        let _ = probe_validate::validate(&marker, Some(&marker));
        let (spec, _) = probe_controller::node_spec(std::slice::from_ref(&pod), &[&marker]);
        for entry in &spec.pod_probes {
            prop_assert!(probe_controller::is_probed(&pod));
            prop_assert_eq!(Some(&entry.uid), pod.metadata.uid.as_ref());
        }
        let Ok(status) = serde_json::from_value::<PodProbeStatus>(mutate(&probe_status_seed(), &status_muts)) else {
            return Ok(());
        };
        let marks = probe_controller::marks(&status, |m| (m == "ppm").then_some(&marker));
        for c in &marks.conditions {
            prop_assert!(!probe_controller::RESERVED_CONDITIONS.contains(&c.type_.as_str()));
        }
        let _ = probe_controller::pod_patch(&pod, &marks);
        let _ = probe_controller::still_probed(&spec, "default", "ppm");
    }

    /// Container meta over any pod and env output: the plan never panics, the annotation it
    /// writes reads back, a restart happens only during an in-place update and only for a
    /// running container the runtime reported, and the hashes are 32-bit as upstream's.
    #[test]
    fn container_meta(pod_muts in mutations(), env_output in "\\PC{0,80}", labels in prop::collection::btree_map("[a-z-]{1,6}", "\\PC{0,12}", 0..3), stale in any::<bool>()) {
        let mut pod = pod_seed();
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "CloneSet", "name": "c", "uid": "o", "controller": true}]);
        pod["metadata"]["labels"] = json!(labels);
        pod["spec"]["containers"][0]["env"] = json!([
            {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['b']"}}}]);
        pod["status"]["conditions"] = json!([{"type": "InPlaceUpdateReady", "status": "False"}]);
        let Ok(pod) = serde_json::from_value::<Pod>(mutate(&pod, &pod_muts)) else {
            return Ok(());
        };
        let view = |name: &str, id: &str| ContainerView {
            name: name.into(), id: id.into(), sandbox_id: "s".into(), state: State::Running,
            started_at: 1, restart_count: 3, hash: 0, grace: Duration::from_secs(1),
            pre_stop: None, ports: vec![],
        };
        let mut runtime = [view("app", "app-3"), view("sidecar", "side-0")];
        // The kubelet's hash of each spec container, so that stops are possible.
        for (v, c) in runtime.iter_mut().zip(pod.spec.iter().flat_map(|s| s.containers.iter())) {
            v.hash = meta::kubelet_hash(c);
        }
        let mut reads = HashMap::new();
        if let Some(app) = pod.spec.as_ref().and_then(|s| s.containers.first()) {
            let h = meta::current_hash(app, &pod, &env_output);
            prop_assert!(h <= u64::from(u32::MAX));
            prop_assert!(meta::expected_hash(app, &pod) <= u64::from(u32::MAX));
            prop_assert!(meta::kubelet_hash(app) <= u64::from(u32::MAX));
            reads.insert("app-3".to_string(), if stale { EnvRead::Hash(h ^ 1) } else { EnvRead::Hash(h) });
        }
        let plan = meta::plan(&pod, &runtime, "containerd", &reads);
        if let Some(value) = &plan.annotation {
            prop_assert!(RuntimeContainerMetaSet::parse(Some(value)).is_some());
        }
        for r in &plan.restart {
            prop_assert!(runtime.iter().any(|c| c.id == r.id));
            prop_assert!(r.running != r.expected);
            let updating = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                c.iter().any(|c| c.type_ == "InPlaceUpdateReady" && c.status == "False")
            });
            prop_assert!(updating);
        }
    }

    #[test]
    fn image_references(reference in "\\PC{0,80}", name in "[a-z0-9./:@_-]{0,40}", tag in "[a-zA-Z0-9:._-]{0,72}") {
        if let Ok(r) = ImageRef::parse(&reference) {
            let _ = r.pull_ref();
        }
        let _ = ImageRef::from_node_image(&name, &tag);
        let _ = PreStop::parse(&reference);
    }

    /// The hand-read grammar agrees with oci-spec's regex on ASCII references: both refuse, or
    /// both read the same registry, repository and tag (or digest).
    #[test]
    fn image_references_read_as_oci_spec_reads_them(
        random in "[a-zA-Z0-9./:@_+-]{0,60}",
        shaped in "(([a-z0-9]{1,3}\\.)?[a-zA-Z0-9][a-zA-Z0-9-]{0,3}(:[0-9]{1,4})?/)?[a-z0-9]{1,3}(([._]|__|-{1,2})[a-z0-9]{1,3}){0,2}(/[a-z0-9]{1,3}(([._]|__|-{1,2})[a-z0-9]{1,3}){0,2}){0,2}(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,6})?(@(sha256|sha512|md5):[0-9a-f]{64})?",
        at in any::<usize>(),
        insert in "[a-zA-Z0-9./:@_+-]?",
        remove in any::<bool>(),
    ) {
        // A shaped reference is mostly valid; one character put in or taken out finds the edges.
        let mut edited = shaped.clone();
        let at = at % (edited.len() + 1);
        edited.insert_str(at, &insert);
        if remove && at < edited.len() {
            edited.remove(at);
        }
        for reference in [random, shaped, edited] {
            let ours = ImageRef::parse(&reference).ok().map(|r| (r.registry, r.repository, r.tag));
            prop_assert_eq!(ours, oci_spec_reading(&reference), "{}", reference);
        }
    }

    /// CloneSet scale decisions over any pods and limits: no panic, no overflow, and a step that
    /// names only pods it was given and never creates more than the limit lets through.
    #[test]
    fn cloneset_scale(
        replicas in any::<i32>(),
        partition in any::<i32>(),
        surge in any::<i32>(),
        unavailable in any::<i32>(),
        scale_unavailable in any::<i32>(),
        percent in "[0-9]{0,12}%?",
        pods in prop::collection::vec((any::<bool>(), 0u8..8, any::<bool>(), any::<bool>(), any::<bool>(), any::<i32>(), any::<i64>(),
            prop::collection::btree_map("[abc]", "[ab]?[0-9]?|-?[0-9]{18,22}", 0..3)), 0..40),
        hooks in any::<bool>(),
        weights in prop::collection::vec((any::<i32>(), "[ab]|[a/. -]{0,3}", "[ab]?[0-9]?|.{0,3}", 0u8..6, any::<bool>()), 0..4),
        order_keys in prop::option::of(prop::collection::vec("[abc]?", 0..3)),
        scatter in prop::collection::vec(("[abc]?", "[ab]?[0-9]?"), 0..4),
    ) {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        use nodeward::api::kruise::{
            CloneSetSpec, CloneSetUpdateStrategy, UpdatePriorityOrderTerm, UpdatePriorityStrategy,
            UpdatePriorityWeightTerm, UpdateScatterTerm,
        };
        let operators = ["In", "NotIn", "Exists", "DoesNotExist", "Gt"];
        let selector = |key: &String, value: &String, op: u8, with_values: bool| match operators.get(usize::from(op)) {
            Some(op) => LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: key.clone(),
                    operator: op.to_string(),
                    values: with_values.then(|| vec![value.clone()]),
                }]),
                ..Default::default()
            },
            None => LabelSelector {
                match_labels: with_values.then(|| [(key.clone(), value.clone())].into()),
                ..Default::default()
            },
        };
        let strategy = CloneSetUpdateStrategy {
            priority_strategy: order_keys.map(|keys| UpdatePriorityStrategy {
                order_priority: keys.into_iter().map(|ordered_key| UpdatePriorityOrderTerm { ordered_key }).collect(),
                weight_priority: weights
                    .iter()
                    .map(|(weight, key, value, op, with_values)| UpdatePriorityWeightTerm {
                        weight: *weight,
                        match_selector: selector(key, value, *op, *with_values),
                    })
                    .collect(),
            }),
            scatter_strategy: scatter.into_iter().map(|(key, value)| UpdateScatterTerm { key, value }).collect(),
            ..Default::default()
        };
        let states = nodeward::api::kruise::LifecycleState::ALL;
        let facts: Vec<cloneset::PodFacts> = pods
            .iter()
            .enumerate()
            .map(|(i, (updated, state, specified, available, ready, cost, created, labels))| cloneset::PodFacts {
                name: format!("p{i}"),
                instance_id: format!("i{i}"),
                updated: *updated,
                state: states.get(usize::from(*state)).copied(),
                specified_delete: *specified,
                available: *available,
                ready: *ready,
                running_ready: *ready,
                in_place_grace: *specified && *updated,
                rank: cloneset::Rank {
                    scheduled: *available,
                    phase: *state % 3,
                    available: *available,
                    ready: *ready,
                    deletion_cost: *cost,
                    ready_since: Some(*created),
                    restarts: *cost,
                    created: *created,
                },
                labels: labels.clone(),
            })
            .collect();
        let limits = cloneset::Limits {
            replicas,
            partition: cloneset::partition_replicas(Some(&IntOrString::Int(partition)), replicas),
            max_surge: surge,
            max_unavailable: cloneset::scaled(&IntOrString::String(percent), unavailable, true).unwrap_or(unavailable),
            scale_max_unavailable: scale_unavailable,
        };
        let d = cloneset::diffs(&facts, limits);
        let chosen = cloneset::update::choose_updates(&facts, &d, &strategy);
        prop_assert!(chosen.len() <= usize::try_from(d.update.max(0)).unwrap_or(0));
        prop_assert!(chosen.iter().all(|n| facts.iter().any(|p| &p.name == n && !p.updated)));
        prop_assert!(chosen.iter().collect::<HashSet<_>>().len() == chosen.len());
        // The priority and scatter order is a permutation of the candidates, even against
        // totals that do not hold them.
        let names = |pods: &[&cloneset::PodFacts]| {
            let mut names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            names.sort_unstable();
            names
        };
        let candidates: Vec<&cloneset::PodFacts> = facts.iter().filter(|p| !p.updated).collect();
        for all in [&facts[..], &facts[..facts.len() / 2], &[]] {
            let ordered = cloneset::order::update_order(candidates.clone(), all, &strategy);
            prop_assert_eq!(names(&ordered), names(&candidates));
        }
        let errors = cloneset::validate::validate(
            &CloneSetSpec { update_strategy: strategy.clone(), ..Default::default() },
            None,
        );
        let both = strategy.priority_strategy.as_ref().is_some_and(|p| !p.order_priority.is_empty() && !p.weight_priority.is_empty());
        prop_assert_eq!(both, errors.iter().any(|e| e.contains("only one of weightPriority and orderPriority")));
        let status = cloneset::status_counts(&facts, replicas, limits.partition, "new", "old");
        prop_assert!(status.updated_available_replicas <= status.updated_replicas);
        prop_assert!(status.replicas as usize == facts.len());
        match cloneset::scale(&facts, limits, hooks) {
            cloneset::ScaleStep::Create { current, updated, limited } => {
                prop_assert!(current >= 0 && updated >= 0);
                prop_assert!(limited.is_none_or(|l| current.saturating_add(updated) <= l));
            }
            cloneset::ScaleStep::Delete(names) | cloneset::ScaleStep::CancelDelete(names) => {
                prop_assert!(!names.is_empty());
                prop_assert!(names.iter().all(|n| facts.iter().any(|p| &p.name == n)));
            }
            cloneset::ScaleStep::Nothing => {}
        }
    }

    /// In-place records (the grace and state annotations) as a user with pod patch rights may
    /// write them: read without a panic; the update patch holds the spec back exactly when a
    /// grace period is asked for.
    #[test]
    fn cloneset_in_place_records(
        grace_muts in mutations(),
        state_muts in mutations(),
        now in any::<i64>(),
        grace in any::<i32>(),
    ) {
        let grace_seed = json!({"revision": "web-abc", "containerImages": {"app": "busybox:2"},
            "metaDataPatch": "eyJsYWJlbHMiOnt9fQ==", "updateEnvFromMetadata": true, "graceSeconds": 30});
        let state_seed = json!({"revision": "web-abc", "updateTimestamp": "2026-12-07T10:00:00Z",
            "lastContainerStatuses": {"app": {"imageID": "x"}}, "updateImages": true});
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-0", "labels": {"controller-revision-hash": "web-abc"},
                "annotations": {
                    "apps.kruise.io/inplace-update-grace": mutate(&grace_seed, &grace_muts).to_string(),
                    "apps.kruise.io/inplace-update-state": mutate(&state_seed, &state_muts).to_string(),
                }},
            "spec": {"containers": [{"name": "app", "image": "busybox:1"}]},
            "status": {"containerStatuses": [{"name": "app", "image": "busybox:1", "imageID": "x",
                "ready": true, "restartCount": 0}]},
        }))
        .unwrap();
        let _ = cloneset::inplace::grace_step(&pod, now, "2026-12-07T10:00:00Z");
        let _ = cloneset::inplace::in_place_done(&pod);
        let change = cloneset::InPlaceChange {
            images: [("app".to_string(), "busybox:2".to_string())].into(),
            ..Default::default()
        };
        let patch = cloneset::inplace::update_patch(&pod, "web-abc", &change, &json!({}), "t", grace);
        prop_assert_eq!(patch.get("spec").is_none(), grace > 0);
    }

    /// The `Progressing` condition from any counters, deadline and clock: one condition at most,
    /// gone without a deadline; False exactly when the deadline is exceeded, and a requeue
    /// exactly while progressing.
    #[test]
    fn cloneset_progressing(
        counts in (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()),
        deadline in prop::option::of(any::<i32>()),
        reason in prop::sample::select(vec!["CloneSetUpdated", "CloneSetAvailable", "ProgressDeadlineExceeded", ""]),
        started in -100_000_000_000i64..100_000_000_000,
        now in any::<i64>(),
        paused in any::<bool>(),
    ) {
        use cloneset::status::{ProgressSpec, set_progressing};
        let (replicas, updated, updated_available, expected_updated) = counts;
        let mut status = nodeward::api::kruise::CloneSetStatus {
            replicas,
            updated_replicas: updated,
            updated_available_replicas: updated_available,
            expected_updated_replicas: expected_updated,
            update_revision: "b".into(),
            conditions: vec![nodeward::api::kruise::CloneSetCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: reason.into(),
                last_update_time: Timestamp::from_second(started).ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
                ..Default::default()
            }],
            ..Default::default()
        };
        let spec = ProgressSpec { deadline_seconds: deadline, paused, replicas };
        let requeue = set_progressing(&mut status, spec, now);
        let conditions: Vec<_> = status.conditions.iter().filter(|c| c.type_ == "Progressing").collect();
        let has_deadline = deadline.is_some_and(|d| d != i32::MAX);
        prop_assert_eq!(conditions.len(), usize::from(has_deadline));
        if let Some(c) = conditions.first() {
            prop_assert_eq!(c.status == "False", c.reason == "ProgressDeadlineExceeded");
            prop_assert_eq!(requeue.is_some(), c.reason == "CloneSetUpdated");
        } else {
            prop_assert!(requeue.is_none());
        }
    }

    /// CloneSet specs as a user may write them: admission judges them, its defaults are
    /// idempotent and pass their own checks when the rest does.
    #[test]
    fn cloneset_admission(muts in mutations(), old_muts in mutations()) {
        use nodeward::controller::cloneset::decide::validate;
        let seed = json!({
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "app", "image": "busybox"}]}},
            "scaleStrategy": {"podsToDelete": ["web-a"], "maxUnavailable": "10%"},
            "updateStrategy": {"type": "InPlaceIfPossible", "partition": "50%", "maxSurge": 1,
                "priorityStrategy": {"weightPriority": [{"weight": 50,
                    "matchSelector": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]},
                "scatterStrategy": [{"key": "zone", "value": "a"}],
                "inPlaceUpdateStrategy": {"gracePeriodSeconds": 5}},
            "lifecycle": {"inPlaceUpdate": {"labelsHandler": {"hold": "true"}, "markPodNotReady": true}},
            "progressDeadlineSeconds": 60,
        });
        let Ok(mut spec) = serde_json::from_value::<nodeward::api::kruise::CloneSetSpec>(mutate(&seed, &muts)) else {
            return Ok(());
        };
        let old = serde_json::from_value::<nodeward::api::kruise::CloneSetSpec>(mutate(&seed, &old_muts)).ok();
        let _ = validate::validate(&spec, old.as_ref());
        let _ = validate::newly_named_pods(&spec, old.as_ref());
        validate::apply_defaults(&mut spec);
        let once = spec.clone();
        validate::apply_defaults(&mut spec);
        prop_assert_eq!(once, spec);
    }
}
