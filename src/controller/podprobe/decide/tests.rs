use super::*;
use crate::api::kruise::ContainerProbeState;
use serde_json::json;

fn pod(name: &str, labels: Value, extra: Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "resourceVersion": "7", "labels": labels},
        "spec": {"nodeName": "n1", "containers": [
            {"name": "main", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1",
                   "conditions": [{"type": "Initialized", "status": "True"}]}
    });
    merge(&mut p, extra);
    serde_json::from_value(p).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn marker(name: &str, extra: Value) -> PodProbeMarker {
    let mut m = json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "PodProbeMarker",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "probes": [
            {"name": "healthy", "containerName": "main",
             "probe": {"exec": {"command": ["true"]}},
             "podConditionType": "game.kruise.io/healthy",
             "markerPolicy": [
                {"state": "Succeeded", "labels": {"healthy": "yes"},
                 "annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
                {"state": "Failed", "labels": {"sick": "yes"},
                 "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}}]}]}
    });
    merge(&mut m, extra);
    serde_json::from_value(m).unwrap()
}

#[test]
fn which_pods_are_probed() {
    let web = json!({"app": "web"});
    let table = [
        (json!({}), true),
        (json!({"status": {"phase": "Succeeded"}}), false),
        (json!({"status": {"phase": "Failed"}}), false),
        (
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            false,
        ),
        (
            json!({"status": {"conditions": [{"type": "Initialized", "status": "False"}]}}),
            false,
        ),
        (json!({"status": {"conditions": []}}), false),
        (json!({"spec": {"nodeName": ""}}), false),
    ];
    for (extra, want) in table {
        assert_eq!(
            is_probed(&pod("p", web.clone(), extra.clone())),
            want,
            "{extra}"
        );
    }
}

#[test]
fn which_markers_select_a_pod() {
    let p = pod("p", json!({"app": "web", "tier": "a"}), json!({}));
    let table = [
        (json!({}), true),
        (
            json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}}),
            false,
        ),
        (json!({"metadata": {"namespace": "other"}}), false),
        (
            json!({"spec": {"selector": {"matchLabels": null, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]}]}}}),
            true,
        ),
        // An empty selector selects nothing (upstream skips it too).
        (json!({"spec": {"selector": {"matchLabels": null}}}), false),
        (
            json!({"spec": {"selector": {"matchLabels": null, "matchExpressions": [
                {"key": "tier", "operator": "Bogus"}]}}}),
            false,
        ),
    ];
    for (extra, want) in table {
        assert_eq!(selects(&marker("m", extra.clone()), &p), want, "{extra}");
    }
}

#[test]
fn a_node_spec_is_computed_from_scratch_in_a_stable_order() {
    let web = json!({"app": "web"});
    let pods = [
        pod("b", web.clone(), json!({})),
        pod("a", web.clone(), json!({"status": {"podIP": "10.0.0.2"}})),
        pod(
            "done",
            web.clone(),
            json!({"status": {"phase": "Succeeded"}}),
        ),
        pod("other", json!({"app": "db"}), json!({})),
    ];
    let tcp = marker(
        "a-tcp",
        json!({"spec": {"probes": [{"name": "port", "containerName": "main",
            "probe": {"tcpSocket": {"port": "http"}}, "podConditionType": "tcp"}]}}),
    );
    let exec = marker("z-exec", json!({}));
    let gone = marker(
        "gone",
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    );
    let (spec, skipped) = node_spec(&pods, &[&exec, &gone, &tcp]);
    assert!(skipped.is_empty());
    let names: Vec<(&str, &str, Vec<&str>)> = spec
        .pod_probes
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.ip.as_str(),
                p.probes.iter().map(|c| c.name.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("a", "10.0.0.2", vec!["a-tcp#port", "z-exec#healthy"]),
            ("b", "10.0.0.1", vec!["a-tcp#port", "z-exec#healthy"]),
        ]
    );
    // The named port is a number in the NodePodProbe.
    let port = &spec.pod_probes[0].probes[0]
        .probe
        .tcp_socket
        .as_ref()
        .unwrap()
        .port;
    assert_eq!(port, &IntOrString::Int(8080));
    assert_eq!(spec.pod_probes[0].uid, "uid-a");
    // Same inputs, any order: the same spec.
    let (again, _) = node_spec(
        &[pods[3].clone(), pods[1].clone(), pods[0].clone()],
        &[&tcp, &exec],
    );
    assert_eq!(again, spec);
}

#[test]
fn a_port_that_cannot_be_resolved_skips_that_probe_only() {
    let p = pod("p", json!({"app": "web"}), json!({}));
    let table = [
        (json!({"httpGet": {"port": "http", "path": "/"}}), Ok(8080)),
        (json!({"httpGet": {"port": 81, "path": "/"}}), Ok(81)),
        (json!({"httpGet": {"port": "9090", "path": "/"}}), Ok(9090)),
        (
            json!({"httpGet": {"port": "metrics", "path": "/"}}),
            Err("container main has no port named metrics"),
        ),
        (
            json!({"tcpSocket": {"port": "99999"}}),
            Err("container main has no port named 99999"),
        ),
    ];
    for (probe, want) in table {
        let m = marker(
            "m",
            json!({"spec": {"probes": [
                {"name": "x", "containerName": "main", "probe": probe.clone(), "podConditionType": "x"},
                {"name": "y", "containerName": "main", "probe": {"exec": {"command": ["true"]}}, "podConditionType": "y"}]}}),
        );
        let mut skipped = Vec::new();
        let probes = container_probes(&m, &p, &mut skipped);
        match want {
            Ok(port) => {
                assert_eq!(probes.len(), 2, "{probe}");
                let got = probes[0].probe.http_get.as_ref().map(|h| h.port.clone());
                let got = got.or(probes[0].probe.tcp_socket.as_ref().map(|t| t.port.clone()));
                assert_eq!(got, Some(IntOrString::Int(port)), "{probe}");
            }
            Err(reason) => {
                assert_eq!(probes.len(), 1, "{probe}");
                assert_eq!(probes[0].name, "m#y");
                assert_eq!(
                    skipped,
                    [Skipped {
                        pod: "ns/p".into(),
                        probe: "m#x".into(),
                        reason: reason.into()
                    }]
                );
            }
        }
    }
    // A named port of a container the pod does not have.
    let m = marker(
        "m",
        json!({"spec": {"probes": [{"name": "x", "containerName": "nope",
            "probe": {"tcpSocket": {"port": "http"}}, "podConditionType": "x"}]}}),
    );
    let mut skipped = Vec::new();
    assert!(container_probes(&m, &p, &mut skipped).is_empty());
    assert_eq!(skipped[0].reason, "no container nope in the pod");
}

fn states(list: &[(&str, ProbeState, &str)]) -> PodProbeStatus {
    PodProbeStatus {
        name: "p".into(),
        namespace: "ns".into(),
        uid: "uid-p".into(),
        probe_states: list
            .iter()
            .map(|(name, state, message)| ContainerProbeState {
                name: (*name).into(),
                state: *state,
                message: (*message).into(),
                ..Default::default()
            })
            .collect(),
    }
}

fn some(v: &str) -> Option<String> {
    Some(v.into())
}

#[test]
fn results_mark_the_pod_as_upstream() {
    let m = marker("m", json!({}));
    let lookup = |name: &str| (name == "m").then_some(&m);
    use ProbeState::*;
    let cost = "controller.kubernetes.io/pod-deletion-cost";
    // (state, condition status, labels, annotations)
    let table = [
        (
            Succeeded,
            "True",
            vec![("healthy", some("yes")), ("sick", None)],
            vec![(cost, some("10"))],
        ),
        (
            Failed,
            "False",
            vec![("healthy", None), ("sick", some("yes"))],
            vec![(cost, some("-10"))],
        ),
        // Unknown: both policies are "the other state": their keys are removed.
        (
            Unknown,
            "False",
            vec![("healthy", None), ("sick", None)],
            vec![(cost, None)],
        ),
    ];
    for (state, status, labels, annotations) in table {
        let got = marks(&states(&[("m#healthy", state, "out")]), lookup);
        assert_eq!(got.conditions.len(), 1);
        assert_eq!(got.conditions[0].type_, "game.kruise.io/healthy");
        assert_eq!(got.conditions[0].status, status, "{state:?}");
        assert_eq!(got.conditions[0].message.as_deref(), Some("out"));
        let want = |l: &[(&str, Option<String>)]| {
            l.iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(got.labels, want(&labels), "{state:?}");
        assert_eq!(got.annotations, want(&annotations), "{state:?}");
    }
    // States of a marker or probe that is gone, or with no '#', mark nothing.
    for name in ["other#healthy", "m#renamed", "nohash"] {
        assert_eq!(
            marks(&states(&[(name, Succeeded, "")]), lookup),
            Marks::default(),
            "{name}"
        );
    }
}

#[test]
fn the_first_probe_of_a_condition_type_wins_and_reserved_types_are_never_written() {
    let m = marker(
        "m",
        json!({"spec": {"probes": [
            {"name": "a", "containerName": "main", "probe": {"exec": {"command": ["true"]}}, "podConditionType": "c"},
            {"name": "b", "containerName": "main", "probe": {"exec": {"command": ["true"]}}, "podConditionType": "c"},
            {"name": "r", "containerName": "main", "probe": {"exec": {"command": ["true"]}}, "podConditionType": "Ready"}]}}),
    );
    let lookup = |name: &str| (name == "m").then_some(&m);
    use ProbeState::*;
    let got = marks(
        &states(&[
            ("m#a", Failed, ""),
            ("m#b", Succeeded, ""),
            ("m#r", Succeeded, ""),
        ]),
        lookup,
    );
    assert_eq!(got.conditions.len(), 1);
    assert_eq!(
        (
            got.conditions[0].type_.as_str(),
            got.conditions[0].status.as_str()
        ),
        ("c", "False")
    );
}

#[test]
fn the_pod_patch_carries_only_what_changes() {
    let m = marker("m", json!({}));
    let lookup = |name: &str| (name == "m").then_some(&m);
    let marks = marks(
        &states(&[("m#healthy", ProbeState::Succeeded, "ok")]),
        lookup,
    );
    let fresh = pod("p", json!({"app": "web", "sick": "yes"}), json!({}));
    let patch = pod_patch(&fresh, &marks).unwrap();
    assert_eq!(
        patch,
        json!({
            "metadata": {"resourceVersion": "7",
                "labels": {"healthy": "yes", "sick": null},
                "annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
            "status": {"conditions": [{"type": "game.kruise.io/healthy", "status": "True", "message": "ok"}]}
        })
    );
    let marked = pod(
        "p",
        json!({"app": "web", "healthy": "yes"}),
        json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
               "status": {"conditions": [
                   {"type": "Initialized", "status": "True"},
                   {"type": "game.kruise.io/healthy", "status": "True", "message": "ok",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
    );
    assert_eq!(pod_patch(&marked, &marks), None);
    // A new message replaces the condition.
    let other = super::marks(
        &states(&[("m#healthy", ProbeState::Succeeded, "new")]),
        lookup,
    );
    let patch = pod_patch(&marked, &other).unwrap();
    assert_eq!(patch["status"]["conditions"][0]["message"], "new");
    assert!(patch["metadata"].get("labels").is_none());
}

#[test]
fn a_marker_is_still_probed_while_a_node_spec_names_it_exactly() {
    let spec: NodePodProbeSpec = serde_json::from_value(json!({"podProbes": [
        {"name": "p", "namespace": "ns", "uid": "u", "IP": "", "probes": [
            {"name": "gateway#x", "containerName": "c", "probe": {}}]},
        {"name": "q", "namespace": "other", "uid": "v", "IP": "", "probes": [
            {"name": "way#x", "containerName": "c", "probe": {}}]}]}))
    .unwrap();
    assert!(still_probed(&spec, "ns", "gateway"));
    assert!(!still_probed(&spec, "ns", "way"));
    assert!(still_probed(&spec, "other", "way"));
}
