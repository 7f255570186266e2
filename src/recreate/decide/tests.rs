use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::kruise::{
    ANNOTATION_CRR_SYNC_CONTAINER_STATUSES, ANNOTATION_CRR_UNREADY_ACQUIRED,
    ContainerRecreateRequestContainer, ContainerRecreateRequestContainerContext,
    ContainerRecreateRequestSpec, ContainerRecreateRequestStatus, ContainerRecreateRequestStrategy,
};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn crr(names: &[&str], strategy: ContainerRecreateRequestStrategy) -> ContainerRecreateRequest {
    let mut c = ContainerRecreateRequest::new(
        "r",
        ContainerRecreateRequestSpec {
            pod_name: "p".into(),
            containers: names
                .iter()
                .map(|n| ContainerRecreateRequestContainer {
                    name: n.to_string(),
                    status_context: Some(ContainerRecreateRequestContainerContext {
                        container_id: format!("containerd://{n}-0"),
                        restart_count: 0,
                    }),
                    ..Default::default()
                })
                .collect(),
            strategy: Some(strategy),
            ..Default::default()
        },
    );
    c.metadata.creation_timestamp = Some(Time(at(0).try_into().unwrap()));
    c
}

fn running(name: &str, attempt: i32, started: u64) -> RuntimeContainer {
    RuntimeContainer {
        name: name.into(),
        id: format!("containerd://{name}-{attempt}"),
        exited: false,
        restart_count: attempt,
        started_at: Some(at(started)),
    }
}

fn with_states(mut c: ContainerRecreateRequest, states: Vec<State>) -> ContainerRecreateRequest {
    c.status = Some(ContainerRecreateRequestStatus {
        phase: Some(Phase::Recreating),
        container_recreate_states: states,
        ..Default::default()
    });
    c
}

fn st(name: &str, phase: Phase, killed: bool) -> State {
    State {
        name: name.into(),
        phase,
        message: String::new(),
        is_killed: killed,
    }
}

fn sync(c: &mut ContainerRecreateRequest, entries: &[(&str, i32, bool)]) {
    let v: Vec<SyncStatus> = entries
        .iter()
        .map(|(n, a, ready)| SyncStatus {
            name: n.to_string(),
            ready: *ready,
            restart_count: *a,
            container_id: format!("containerd://{n}-{a}"),
        })
        .collect();
    c.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            ANNOTATION_CRR_SYNC_CONTAINER_STATUSES.into(),
            serde_json::to_string(&v).unwrap(),
        );
}

fn states_of(c: &ContainerRecreateRequest, rt: &[RuntimeContainer], now: u64) -> Vec<State> {
    let synced = c.sync_container_statuses().unwrap();
    container_states(c, rt, &synced, &HashSet::new(), at(now))
}

#[test]
fn untouched_container_is_pending_then_killed() {
    let c = crr(&["app"], Default::default());
    let rt = [running("app", 0, 0)];
    let mut s = states_of(&c, &rt, 1);
    assert_eq!(s, vec![st("app", Phase::Pending, false)]);
    assert_eq!(next(&c, &mut s, &rt, at(1)), Next::Kill(0));
}

#[test]
fn exited_container_is_recreating_and_marked_killed() {
    let c = crr(&["app"], Default::default());
    let mut rt = [running("app", 0, 0)];
    rt[0].exited = true;
    let mut s = states_of(&c, &rt, 1);
    assert_eq!(s, vec![st("app", Phase::Recreating, false)]);
    assert_eq!(next(&c, &mut s, &rt, at(1)), Next::Wait(None));
    assert!(s[0].is_killed, "written back as killed, as upstream does");
}

#[test]
fn restarted_needs_ready_sync_and_min_started() {
    let strategy = ContainerRecreateRequestStrategy {
        min_started_seconds: 5,
        ..Default::default()
    };
    let mut c = with_states(
        crr(&["app"], strategy),
        vec![st("app", Phase::Recreating, true)],
    );
    let rt = [running("app", 1, 10)];
    assert_eq!(
        states_of(&c, &rt, 12)[0].phase,
        Phase::Recreating,
        "no sync yet"
    );
    sync(&mut c, &[("app", 1, false)]);
    assert_eq!(
        states_of(&c, &rt, 12)[0].phase,
        Phase::Recreating,
        "not ready"
    );
    sync(&mut c, &[("app", 1, true)]);
    let mut s = states_of(&c, &rt, 12);
    assert_eq!(
        s[0].phase,
        Phase::Recreating,
        "started 2 s ago, needs > 5 s"
    );
    assert_eq!(
        next(&c, &mut s, &rt, at(12)),
        Next::Wait(Some(Duration::from_millis(3100)))
    );
    let mut s = states_of(&c, &rt, 16);
    assert_eq!(s, vec![st("app", Phase::Succeeded, true)]);
    assert_eq!(next(&c, &mut s, &rt, at(16)), Next::Complete);
}

#[test]
fn stale_sync_for_the_old_container_does_not_count() {
    let mut c = with_states(
        crr(&["app"], Default::default()),
        vec![st("app", Phase::Recreating, true)],
    );
    sync(&mut c, &[("app", 0, true)]);
    assert_eq!(
        states_of(&c, &[running("app", 1, 1)], 3)[0].phase,
        Phase::Recreating
    );
}

#[test]
fn terminal_states_are_sticky() {
    let c = with_states(
        crr(&["a", "b"], Default::default()),
        vec![
            st("a", Phase::Succeeded, true),
            st("b", Phase::Failed, false),
        ],
    );
    let s = states_of(&c, &[], 1);
    assert_eq!(s[0].phase, Phase::Succeeded);
    assert_eq!(s[1].phase, Phase::Failed);
}

#[test]
fn missing_container_waits_with_message() {
    let c = crr(&["gone"], Default::default());
    let mut s = states_of(&c, &[], 1);
    assert_eq!(s[0].message, CRR_STATE_MESSAGE_CONTAINER_NOT_FOUND);
    assert_eq!(next(&c, &mut s, &[], at(1)), Next::Wait(None));
}

#[test]
fn force_kills_a_restarting_container_once() {
    let strategy = ContainerRecreateRequestStrategy {
        force_recreate: true,
        ..Default::default()
    };
    // Already restarted by the kubelet (new id): without force it would just wait.
    let rt = [running("app", 1, 1)];
    let plain = crr(&["app"], Default::default());
    assert_eq!(states_of(&plain, &rt, 2)[0].phase, Phase::Recreating);
    let c = crr(&["app"], strategy);
    let mut s = states_of(&c, &rt, 2);
    assert_eq!(s, vec![st("app", Phase::Pending, false)]);
    assert_eq!(next(&c, &mut s, &rt, at(2)), Next::Kill(0));
    // Killed once (status says so): normal evaluation resumes.
    let c = with_states(c, vec![st("app", Phase::Recreating, true)]);
    let rt = [running("app", 2, 3)];
    assert_eq!(states_of(&c, &rt, 4)[0].phase, Phase::Recreating);
}

#[test]
fn journal_kill_counts_when_the_status_write_was_lost() {
    let strategy = ContainerRecreateRequestStrategy {
        force_recreate: true,
        ..Default::default()
    };
    let c = crr(&["app"], strategy);
    let rt = [running("app", 1, 1)];
    let killed = HashSet::from(["app".to_string()]);
    let s = container_states(&c, &rt, &[], &killed, at(2));
    assert_eq!(s, vec![st("app", Phase::Recreating, true)]);
}

#[test]
fn ordered_waits_for_the_previous_container() {
    let strategy = ContainerRecreateRequestStrategy {
        ordered_recreate: true,
        ..Default::default()
    };
    let c = with_states(
        crr(&["a", "b"], strategy),
        vec![
            st("a", Phase::Recreating, true),
            st("b", Phase::Pending, false),
        ],
    );
    let rt = [running("a", 1, 1), running("b", 0, 0)];
    let mut s = states_of(&c, &rt, 2);
    assert_eq!(next(&c, &mut s, &rt, at(2)), Next::Wait(None));
    let unordered = with_states(
        crr(&["a", "b"], Default::default()),
        vec![
            st("a", Phase::Recreating, true),
            st("b", Phase::Pending, false),
        ],
    );
    let mut s = states_of(&unordered, &rt, 2);
    assert_eq!(next(&unordered, &mut s, &rt, at(2)), Next::Kill(1));
}

#[test]
fn failure_policy_decides_whether_to_go_on() {
    let fail = with_states(
        crr(&["a", "b"], Default::default()),
        vec![
            st("a", Phase::Failed, false),
            st("b", Phase::Pending, false),
        ],
    );
    let rt = [running("a", 0, 0), running("b", 0, 0)];
    let mut s = states_of(&fail, &rt, 1);
    assert_eq!(next(&fail, &mut s, &rt, at(1)), Next::Complete);
    let ignore = with_states(
        crr(
            &["a", "b"],
            ContainerRecreateRequestStrategy {
                failure_policy: Some(FailurePolicy::Ignore),
                ..Default::default()
            },
        ),
        vec![
            st("a", Phase::Failed, false),
            st("b", Phase::Pending, false),
        ],
    );
    let mut s = states_of(&ignore, &rt, 1);
    assert_eq!(next(&ignore, &mut s, &rt, at(1)), Next::Kill(1));
}

#[test]
fn pick_runs_recreating_first_then_oldest() {
    let mut a = crr(&["x"], Default::default());
    a.metadata.name = Some("a".into());
    let mut b = crr(&["x"], Default::default());
    b.metadata.name = Some("b".into());
    b.metadata.creation_timestamp = Some(Time(at(5).try_into().unwrap()));
    let mut c = b.clone();
    c.metadata.name = Some("c".into());
    c.status = Some(ContainerRecreateRequestStatus {
        phase: Some(Phase::Recreating),
        ..Default::default()
    });
    let mut done = a.clone();
    done.metadata.name = Some("done".into());
    done.status = Some(ContainerRecreateRequestStatus {
        phase: Some(Phase::Completed),
        completion_time: Some(Time(at(1).try_into().unwrap())),
        ..Default::default()
    });
    let all = [&a, &b, &c, &done];
    assert_eq!(pick(&all), (Some(2), vec![0, 1]));
    assert_eq!(pick(&[&b, &a]), (Some(1), vec![0]));
    assert_eq!(pick(&[&done]), (None, vec![]));
}

#[test]
fn unready_gate_waits_for_annotation_then_grace() {
    let strategy = ContainerRecreateRequestStrategy {
        unready_grace_period_seconds: Some(3),
        ..Default::default()
    };
    let mut c = crr(&["app"], strategy);
    assert_eq!(unready_gate(&c, at(1)), Gate::AwaitUnready);
    let ann = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(
        ANNOTATION_CRR_UNREADY_ACQUIRED.into(),
        humantime::format_rfc3339_seconds(at(1)).to_string(),
    );
    assert_eq!(unready_gate(&c, at(2)), Gate::Until(Duration::from_secs(2)));
    assert_eq!(unready_gate(&c, at(4)), Gate::Go);
    c.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANNOTATION_CRR_UNREADY_ACQUIRED.into(), "yesterday".into());
    assert!(matches!(unready_gate(&c, at(4)), Gate::Invalid(_)));
    assert_eq!(
        unready_gate(&crr(&["a"], Default::default()), at(0)),
        Gate::Go
    );
}

#[test]
fn runtime_check_messages() {
    let c = crr(&["app"], Default::default());
    assert_eq!(check_runtime(&c, "containerd"), Ok(()));
    let err = check_runtime(&c, "cri-o").unwrap_err();
    assert!(err.starts_with("failed to find runtime service: "), "{err}");
    let mut bad = c.clone();
    bad.spec.containers[0].status_context = None;
    assert!(
        check_runtime(&bad, "containerd")
            .unwrap_err()
            .contains("statusContext")
    );
    bad.spec.containers[0].status_context = Some(ContainerRecreateRequestContainerContext {
        container_id: "nonsense".into(),
        restart_count: 0,
    });
    assert!(
        check_runtime(&bad, "containerd")
            .unwrap_err()
            .contains("invalid containerID")
    );
}

#[test]
fn acts_only_on_the_pod_the_crr_names() {
    let mut c = crr(&["app"], ContainerRecreateRequestStrategy::default());
    c.metadata.namespace = Some("team".into());
    c.spec.pod_name = "web-0".into();
    c.metadata.labels = Some(BTreeMap::from([(
        crate::api::kruise::LABEL_CRR_POD_UID.to_string(),
        "u1".to_string(),
    )]));
    let pod = |ns: &str, name: &str, uid: &str| PodRef {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
    };
    assert_eq!(check_pod(&c, Some(&pod("team", "web-0", "u1"))), Ok(()));
    let cases = [
        (None, "no pod with uid \"u1\" runs on this node"),
        (
            Some(pod("kube-system", "etcd", "u1")),
            "uid \"u1\" is pod kube-system/etcd, not team/web-0",
        ),
        (
            Some(pod("team", "web-1", "u1")),
            "uid \"u1\" is pod team/web-1, not team/web-0",
        ),
    ];
    for (found, why) in cases {
        let err = check_pod(&c, found.as_ref()).unwrap_err();
        assert_eq!(err, format!("{CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX}{why}"));
    }
    // Without the label there is no uid to match.
    c.metadata.labels = None;
    assert!(check_pod(&c, Some(&pod("team", "web-0", ""))).is_err());
}

#[test]
fn extreme_strategy_numbers_are_clamped() {
    let year = crate::api::clamp::seconds(i64::MAX);
    let strategy = ContainerRecreateRequestStrategy {
        unready_grace_period_seconds: Some(i64::MAX),
        termination_grace_period_seconds: Some(i64::MAX),
        min_started_seconds: i32::MAX,
        ..Default::default()
    };
    let mut c = crr(&["app"], strategy);
    assert_eq!(grace(&c), year);
    let ann = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(
        ANNOTATION_CRR_UNREADY_ACQUIRED.into(),
        humantime::format_rfc3339_seconds(at(1)).to_string(),
    );
    assert_eq!(unready_gate(&c, at(1)), Gate::Until(year));
    let mut negative = c.clone();
    negative
        .spec
        .strategy
        .as_mut()
        .unwrap()
        .unready_grace_period_seconds = Some(i64::MIN);
    assert_eq!(unready_gate(&negative, at(1)), Gate::Go);
    // minStartedSeconds i32::MAX: the states and the next step are computed without overflow.
    let rt = [running("app", 1, 5)];
    let mut states = states_of(&c, &rt, 6);
    let _ = next(&c, &mut states, &rt, at(6));
}
