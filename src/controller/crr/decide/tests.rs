use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::api::kruise::{
    ContainerRecreateRequestContainer, ContainerRecreateRequestSpec,
    ContainerRecreateRequestStatus, ContainerRecreateRequestStrategy,
};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn ts(secs: u64) -> Time {
    Time(at(secs).try_into().unwrap())
}

fn pod(phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "default", "uid": "pod-uid-1"},
        "spec": {
            "nodeName": "node-a",
            "terminationGracePeriodSeconds": 17,
            "containers": [
                {"name": "app", "image": "x", "ports": [{"name": "http", "containerPort": 8080}],
                 "lifecycle": {"preStop": {"httpGet": {"path": "/quit", "port": "http"}}}},
                {"name": "sidecar", "image": "y",
                 "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}}},
            ],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 2,
                 "containerID": "containerd://app-2", "state": {"running": {"startedAt": "2027-01-15T08:00:00Z"}}},
                {"name": "sidecar", "image": "y", "imageID": "", "ready": true, "restartCount": 0,
                 "containerID": "containerd://side-0", "state": {"running": {}}},
            ],
        },
    }))
    .unwrap()
}

fn crr(names: &[&str]) -> Crr {
    let mut c = Crr::new(
        "r1",
        ContainerRecreateRequestSpec {
            pod_name: "web-0".into(),
            containers: names
                .iter()
                .map(|n| ContainerRecreateRequestContainer {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    );
    c.metadata.namespace = Some("default".into());
    c.metadata.creation_timestamp = Some(ts(0));
    c
}

fn defaulted(names: &[&str]) -> Crr {
    match default_crr(&crr(names), Some(&pod("Running"))) {
        Defaulting::Apply(c) => *c,
        Defaulting::Reject(m) => panic!("rejected: {m}"),
    }
}

fn recreating(mut c: Crr) -> Crr {
    c.status = Some(ContainerRecreateRequestStatus {
        phase: Some(Phase::Recreating),
        ..Default::default()
    });
    c
}

#[test]
fn defaulting_copies_from_the_pod() {
    let c = defaulted(&["app", "sidecar"]);
    assert_eq!(c.pod_uid(), Some("pod-uid-1"));
    assert_eq!(c.node_name(), Some("node-a"));
    assert!(c.is_active());
    let s = c.spec.strategy.as_ref().unwrap();
    assert_eq!(s.termination_grace_period_seconds, Some(17));
    assert_eq!(
        s.failure_policy,
        Some(crate::api::kruise::ContainerRecreateRequestFailurePolicy::Fail)
    );
    let app = &c.spec.containers[0];
    assert_eq!(
        app.status_context.as_ref().unwrap().container_id,
        "containerd://app-2"
    );
    assert_eq!(app.status_context.as_ref().unwrap().restart_count, 2);
    assert!(app.pre_stop.as_ref().unwrap().http_get.is_some());
    assert_eq!(app.ports.len(), 1, "ports are copied for httpGet hooks");
    let side = &c.spec.containers[1];
    assert!(side.pre_stop.as_ref().unwrap().exec.is_some());
    assert!(side.ports.is_empty());
    assert!(!needs_defaulting(&c));
}

#[test]
fn defaulting_keeps_a_given_grace() {
    let mut c = crr(&["app"]);
    c.spec.strategy = Some(ContainerRecreateRequestStrategy {
        termination_grace_period_seconds: Some(3),
        ..Default::default()
    });
    let Defaulting::Apply(c) = default_crr(&c, Some(&pod("Running"))) else {
        panic!()
    };
    assert_eq!(
        c.spec.strategy.unwrap().termination_grace_period_seconds,
        Some(3)
    );
}

fn rejection(c: &Crr, p: Option<&Pod>) -> String {
    match default_crr(c, p) {
        Defaulting::Reject(m) => m,
        Defaulting::Apply(_) => panic!("accepted"),
    }
}

#[test]
fn defaulting_rejects_what_the_webhook_rejects() {
    assert!(rejection(&crr(&["app"]), None).contains("no found Pod"));
    assert!(rejection(&crr(&["nope"]), Some(&pod("Running"))).contains("not found nope"));
    assert!(rejection(&crr(&["app", "app"]), Some(&pod("Running"))).contains("multi times"));
    assert!(rejection(&crr(&[]), Some(&pod("Running"))).contains("containers"));
    assert!(rejection(&crr(&["app"]), Some(&pod("Succeeded"))).contains("inactive"));
    let mut pending = pod("Pending");
    pending.spec.as_mut().unwrap().node_name = None;
    assert!(rejection(&crr(&["app"]), Some(&pending)).contains("pending Pod"));
    let mut short = crr(&["app"]);
    short.spec.active_deadline_seconds = Some(2);
    assert!(rejection(&short, Some(&pod("Running"))).contains("activeDeadlineSeconds"));
    let mut preset = crr(&["app"]);
    preset.spec.containers[0].status_context = Some(Default::default());
    assert!(rejection(&preset, Some(&pod("Running"))).contains("copied from the Pod"));
}

#[test]
fn admission_overwrites_forged_labels_with_the_pods_truth() {
    let mut forged = crr(&["app"]);
    forged.metadata.labels = Some(
        [
            (
                LABEL_CRR_POD_UID.to_string(),
                "uid-of-a-kube-system-pod".to_string(),
            ),
            (LABEL_CRR_NODE_NAME.to_string(), "another-node".to_string()),
        ]
        .into(),
    );
    let Admission::Mutate(c) = admit_create(&forged, Some(&pod("Running"))) else {
        panic!("not admitted")
    };
    assert_eq!(c.pod_uid(), Some("pod-uid-1"));
    assert_eq!(c.node_name(), Some("node-a"));
    let mut hook = crr(&["app"]);
    hook.spec.containers[0].pre_stop = Some(Default::default());
    assert!(matches!(
        admit_create(&hook, Some(&pod("Running"))),
        Admission::Deny(m) if m.contains("copied from the Pod")
    ));
    assert!(matches!(
        admit_create(&crr(&["app"]), None),
        Admission::Deny(_)
    ));
}

/// kruise-manager's mutating webhook, kept during a migration, runs before nodeward's (its
/// configuration sorts first) and fills preStop, ports and statusContext from the same Pod: those
/// values are the truth and pass; anything else is still refused.
#[test]
fn values_another_webhook_copied_from_the_pod_pass() {
    let Admission::Mutate(filled) = admit_create(&crr(&["app"]), Some(&pod("Running"))) else {
        panic!("not admitted")
    };
    let Admission::Mutate(again) = admit_create(&filled, Some(&pod("Running"))) else {
        panic!("the Pod's own values refused")
    };
    assert_eq!(again.spec.containers, filled.spec.containers);
    let mut stale = (*filled).clone();
    if let Some(ctx) = stale.spec.containers[0].status_context.as_mut() {
        ctx.restart_count = 1;
    }
    assert!(rejection(&stale, Some(&pod("Running"))).contains("copied from the Pod"));
}

/// A change made to a CRR in a test case.
type Change = fn(&mut Crr);

#[test]
fn an_admitted_crr_keeps_its_spec_and_pod_labels() {
    let old = defaulted(&["app"]);
    let cases: [(&str, Change, bool); 5] = [
        (
            "status and the active label may change",
            |c: &mut Crr| {
                c.metadata.labels.as_mut().unwrap().remove(LABEL_CRR_ACTIVE);
                c.status = Some(Default::default());
            },
            true,
        ),
        (
            "annotations may be added",
            |c: &mut Crr| {
                c.metadata.annotations = Some(
                    [(
                        ANNOTATION_CRR_UNREADY_ACQUIRED.to_string(),
                        "2027-01-01T00:00:00Z".to_string(),
                    )]
                    .into(),
                );
            },
            true,
        ),
        (
            "spec",
            |c: &mut Crr| c.spec.containers[0].pre_stop = None,
            false,
        ),
        (
            "pod-uid",
            |c: &mut Crr| {
                c.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert(LABEL_CRR_POD_UID.into(), "x".into());
            },
            false,
        ),
        (
            "node-name removed",
            |c: &mut Crr| {
                c.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .remove(LABEL_CRR_NODE_NAME);
            },
            false,
        ),
    ];
    for (what, change, allowed) in cases {
        let mut new = old.clone();
        change(&mut new);
        assert_eq!(
            admit_update(&old, &new) == Admission::Allow,
            allowed,
            "{what}"
        );
    }
    let mut acquired = old.clone();
    acquired.metadata.annotations = Some(
        [(
            ANNOTATION_CRR_UNREADY_ACQUIRED.to_string(),
            "2027-01-01T00:00:00Z".to_string(),
        )]
        .into(),
    );
    let mut moved = acquired.clone();
    moved.metadata.annotations.as_mut().unwrap().insert(
        ANNOTATION_CRR_UNREADY_ACQUIRED.into(),
        "2028-01-01T00:00:00Z".into(),
    );
    assert!(
        matches!(admit_update(&acquired, &moved), Admission::Deny(m) if m.contains("immutable once set"))
    );
    // Never admitted: the controller's defaulting may fill it.
    assert_eq!(admit_update(&crr(&["app"]), &old), Admission::Allow);
}

#[test]
fn terminal_pod_with_sidecar_terminated_is_accepted() {
    let mut p = pod("Succeeded");
    p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "SidecarTerminated".into(),
        status: "True".into(),
        ..Default::default()
    }]);
    assert!(matches!(
        default_crr(&crr(&["sidecar"]), Some(&p)),
        Defaulting::Apply(_)
    ));
}

#[test]
fn pod_gone_completes() {
    let c = defaulted(&["app"]);
    let plan = lifecycle(&c, None, at(1));
    assert!(
        matches!(&plan.steps[..], [Step::Complete { message, .. }] if message == "pod has gone")
    );
    let mut other = pod("Running");
    other.metadata.uid = Some("recreated-pod".into());
    let plan = lifecycle(&c, Some(&other), at(1));
    assert!(
        matches!(&plan.steps[..], [Step::Complete { message, .. }] if message == "pod has gone")
    );
}

#[test]
fn node_label_not_the_pods_node_completes() {
    let mut c = defaulted(&["app"]);
    c.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_CRR_NODE_NAME.into(), "node-b".into());
    let plan = lifecycle(&c, Some(&pod("Running")), at(1));
    let want = "refusing to act: the crr.apps.kruise.io/node-name label says \"node-b\", the pod runs on \"node-a\"";
    assert!(
        matches!(&plan.steps[..], [Step::Complete { message, .. }] if message == want),
        "{:?}",
        plan.steps
    );
}

#[test]
fn agent_response_timeout() {
    let c = defaulted(&["app"]);
    let p = pod("Running");
    let plan = lifecycle(&c, Some(&p), at(10));
    assert!(plan.steps.is_empty());
    assert_eq!(plan.requeue, Some(Duration::from_secs(50)));
    let plan = lifecycle(&c, Some(&p), at(60));
    assert!(
        matches!(&plan.steps[..], [Step::Complete { message, .. }] if message == "daemon has not responded for a long time")
    );
}

#[test]
fn deadline_fails_unfinished_containers() {
    let mut c = recreating(defaulted(&["app", "sidecar"]));
    c.spec.active_deadline_seconds = Some(3);
    c.status.as_mut().unwrap().container_recreate_states = vec![State {
        name: "app".into(),
        phase: Phase::Recreating,
        message: String::new(),
        is_killed: true,
    }];
    let p = pod("Running");
    assert_eq!(
        lifecycle(&c, Some(&p), at(1)).requeue,
        Some(Duration::from_secs(2))
    );
    let plan = lifecycle(&c, Some(&p), at(3));
    let [
        Step::Complete {
            message,
            states: Some(states),
        },
    ] = &plan.steps[..]
    else {
        panic!("{plan:?}")
    };
    assert_eq!(message, "recreating has exceeded the activeDeadlineSeconds");
    assert_eq!(states.len(), 2);
    assert!(states.iter().all(|s| s.phase == Phase::Failed));
    assert!(states[0].is_killed && !states[1].is_killed);
}

#[test]
fn sync_statuses_list_renewed_containers_only() {
    let c = recreating(defaulted(&["app", "sidecar"]));
    let mut p = pod("Running");
    // Nothing restarted yet: an empty list is still written (upstream writes `[]`).
    let plan = lifecycle(&c, Some(&p), at(1));
    assert_eq!(plan.steps, vec![Step::SyncStatuses("[]".into())]);
    let st = &mut p
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0];
    st.container_id = Some("containerd://app-3".into());
    st.restart_count = 3;
    let synced = sync_statuses(&c, &p);
    assert_eq!(synced.len(), 1);
    assert_eq!(synced[0].container_id, "containerd://app-3");
    assert!(synced[0].ready);
}

#[test]
fn unready_acquisition_with_and_without_gate() {
    let mut c = recreating(defaulted(&["app"]));
    c.spec
        .strategy
        .as_mut()
        .unwrap()
        .unready_grace_period_seconds = Some(1);
    c.metadata.annotations = Some(
        [(
            ANNOTATION_CRR_SYNC_CONTAINER_STATUSES.to_string(),
            "[]".to_string(),
        )]
        .into(),
    );
    let p = pod("Running");
    assert_eq!(
        lifecycle(&c, Some(&p), at(1)).steps,
        vec![Step::AcquireUnready {
            pod_condition: false
        }]
    );
    let mut gated = p.clone();
    gated.spec.as_mut().unwrap().readiness_gates =
        Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
            condition_type: "KruisePodReady".into(),
        }]);
    assert_eq!(
        lifecycle(&c, Some(&gated), at(1)).steps,
        vec![Step::AcquireUnready {
            pod_condition: true
        }]
    );
}

#[test]
fn finished_crr_releases_then_unlabels_then_expires() {
    let mut c = defaulted(&["app"]);
    c.spec.ttl_seconds_after_finished = Some(3);
    c.metadata.finalizers = Some(vec![FINALIZER_CRR_UNREADY_ACQUIRED.into()]);
    c.status = Some(ContainerRecreateRequestStatus {
        phase: Some(Phase::Completed),
        completion_time: Some(ts(10)),
        ..Default::default()
    });
    assert_eq!(
        lifecycle(&c, None, at(11)).steps,
        vec![Step::ReleaseUnready, Step::RemoveActiveLabel]
    );
    c.metadata.finalizers = None;
    c.metadata.labels.as_mut().unwrap().remove(LABEL_CRR_ACTIVE);
    assert_eq!(
        lifecycle(&c, None, at(11)).requeue,
        Some(Duration::from_secs(2))
    );
    assert_eq!(lifecycle(&c, None, at(13)).steps, vec![Step::Delete]);
}

#[test]
fn the_readiness_key_names_the_crr() {
    let mut c = crr(&["app"]);
    c.metadata.name = Some("b".into());
    let key = readiness_key(&c);
    assert_eq!(
        (key.user_agent.as_str(), key.key.as_str()),
        ("ContainerRecreateRequest", "default/b")
    );
}

#[test]
fn extreme_deadline_and_ttl_are_clamped() {
    let mut c = recreating(defaulted(&["app"]));
    c.spec.active_deadline_seconds = Some(i64::MAX);
    let plan = lifecycle(&c, Some(&pod("Running")), at(1));
    assert!(
        plan.requeue
            .is_some_and(|r| r <= crate::api::clamp::seconds(i64::MAX))
    );
    c.spec.ttl_seconds_after_finished = Some(i32::MAX);
    c.status.as_mut().unwrap().completion_time = Some(ts(1));
    c.metadata.labels.as_mut().unwrap().remove(LABEL_CRR_ACTIVE);
    let plan = lifecycle(&c, None, at(2));
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
}
