use super::*;
use crate::api::kruise::{CloneSet, CloneSetSpec};

fn limits(replicas: i32) -> Limits {
    Limits {
        replicas,
        partition: 0,
        max_surge: 0,
        max_unavailable: 1,
        scale_max_unavailable: i32::MAX,
    }
}

fn pod(name: &str) -> PodFacts {
    PodFacts {
        name: name.into(),
        instance_id: name.into(),
        updated: true,
        state: Some(LifecycleState::Normal),
        specified_delete: false,
        available: true,
        ready: true,
        running_ready: true,
        in_place_grace: false,
        rank: Rank {
            scheduled: true,
            phase: 2,
            available: true,
            ready: true,
            ..Default::default()
        },
        labels: BTreeMap::new(),
    }
}

fn unready(name: &str) -> PodFacts {
    let mut p = pod(name);
    (p.available, p.ready, p.running_ready) = (false, false, false);
    (p.rank.available, p.rank.ready) = (false, false);
    p
}

#[test]
fn scaled_values() {
    let cases = [
        (IntOrString::Int(3), 10, true, Some(3)),
        (IntOrString::Int(-3), 10, true, Some(0)),
        (IntOrString::String("25%".into()), 10, true, Some(3)),
        (IntOrString::String("25%".into()), 10, false, Some(2)),
        // The controller reads a string without % as a percentage too.
        (IntOrString::String("50".into()), 10, true, Some(5)),
        (IntOrString::String("x%".into()), 10, true, None),
        (
            IntOrString::String("100%".into()),
            i32::MAX,
            true,
            Some(i32::MAX),
        ),
    ];
    for (value, total, up, want) in cases {
        assert_eq!(scaled(&value, total, up), want, "{value:?} of {total}");
    }
}

#[test]
fn partitions() {
    let s = |v: &str| IntOrString::String(v.into());
    let cases = [
        (None, 5, 0),
        (Some(IntOrString::Int(2)), 5, 2),
        (Some(IntOrString::Int(7)), 5, 5),
        (Some(s("50%")), 5, 3),
        (Some(s("100%")), 5, 5),
        // Rounded up to all but not 100%: one pod is still updated.
        (Some(s("99%")), 5, 4),
        (Some(s("99%")), 1, 1),
        (Some(s("bad")), 5, 0),
    ];
    for (partition, replicas, want) in cases {
        assert_eq!(
            partition_replicas(partition.as_ref(), replicas),
            want,
            "{partition:?} of {replicas}"
        );
    }
}

#[test]
fn the_update_of_five_old_pods_goes_one_at_a_time() {
    let pods: Vec<PodFacts> = (0..5)
        .map(|i| PodFacts {
            updated: false,
            ..pod(&format!("p{i}"))
        })
        .collect();
    let d = diffs(&pods, limits(5));
    assert_eq!((d.update, d.update_max_unavailable), (5, 1));
    assert_eq!((d.scale_up, d.scale_down), (0, 0));
    // With maxSurge 1, one new pod comes first.
    let surge = Limits {
        max_surge: 1,
        ..limits(5)
    };
    let d = diffs(&pods, surge);
    assert_eq!(
        (d.surge, d.surge_old, d.scale_up, d.scale_up_old),
        (1, 0, 1, 0)
    );
}

#[test]
fn scale_steps() {
    let mut pre_deleting = pod("d");
    pre_deleting.state = Some(LifecycleState::PreparingDelete);
    let mut specified = pod("s");
    specified.specified_delete = true;
    let mut unscheduled = unready("u");
    unscheduled.rank.scheduled = false;
    let limited = Limits {
        scale_max_unavailable: 1,
        ..limits(4)
    };
    let cases: Vec<(&str, Vec<PodFacts>, Limits, ScaleStep)> = vec![
        (
            "from nothing",
            vec![],
            limits(3),
            ScaleStep::Create {
                current: 0,
                updated: 3,
                limited: None,
            },
        ),
        (
            "as many as wanted",
            vec![pod("a"), pod("b")],
            limits(2),
            ScaleStep::Nothing,
        ),
        (
            "scale down takes the unscheduled, then the unready, within the budget",
            vec![pod("a"), unscheduled.clone(), pod("b"), unready("c")],
            limits(2),
            ScaleStep::Delete(vec!["u".into(), "c".into()]),
        ),
        (
            "scale down of ready pods: as many as maxUnavailable plus the surplus allow",
            vec![pod("a"), pod("b"), pod("c"), pod("e")],
            limits(1),
            ScaleStep::Delete(vec!["a".into(), "b".into(), "c".into()]),
        ),
        (
            "a specified pod goes first, then is replaced",
            vec![pod("a"), specified.clone(), pod("b")],
            limits(3),
            ScaleStep::Delete(vec!["s".into()]),
        ),
        (
            "scaleStrategy.maxUnavailable holds creations back while pods are unavailable",
            vec![unready("a"), unready("b")],
            limited,
            ScaleStep::Create {
                current: 0,
                updated: 0,
                limited: Some(0),
            },
        ),
        (
            "a pod in PreparingDelete that is needed again is kept",
            vec![pod("a"), pre_deleting.clone(), pod("b")],
            limits(3),
            ScaleStep::CancelDelete(vec!["d".into()]),
        ),
        (
            "a pod in PreparingDelete that is not needed is deleted",
            vec![pod("a"), pre_deleting.clone(), pod("b")],
            limits(2),
            ScaleStep::Delete(vec!["d".into()]),
        ),
    ];
    for (name, pods, limits, want) in cases {
        assert_eq!(scale(&pods, limits, false), want, "{name}");
    }
    // With markPodNotReady hooks, PreparingDelete is never cancelled.
    assert_eq!(
        scale(&[pod("a"), pre_deleting, pod("b")], limits(3), true),
        ScaleStep::Delete(vec!["d".into()])
    );
}

#[test]
fn deletion_order() {
    let base = pod("x").rank;
    let mut cheap = base.clone();
    cheap.deletion_cost = -1;
    let mut restarted = base.clone();
    restarted.restarts = 3;
    let mut newer = base.clone();
    newer.created = 100;
    let mut ready_later = base.clone();
    ready_later.ready_since = Some(50);
    let mut ready_sooner = base.clone();
    ready_sooner.ready_since = Some(10);
    let pending = Rank {
        phase: 0,
        ..base.clone()
    };
    let first = [
        (&cheap, &base),
        (&restarted, &base),
        (&newer, &base),
        (&ready_later, &ready_sooner),
        (&pending, &base),
    ];
    for (a, b) in first {
        assert_eq!(delete_first(a, b), Ordering::Less, "{a:?} before {b:?}");
        assert_eq!(delete_first(b, a), Ordering::Greater);
    }
}

#[test]
fn instance_ids_reuse_free_claims_first() {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let mut draws = ["aaaaa", "zzzzz", "bbbbb", "ccccc"].into_iter();
    let ids = instance_ids(
        3,
        &set(&["free1", "held"]),
        &set(&["held", "aaaaa"]),
        || draws.next().unwrap_or("ddddd").to_string(),
    );
    // "free1" reused, "aaaaa" taken by a pod, then two fresh ones; sorted.
    assert_eq!(ids, ["bbbbb", "free1", "zzzzz"]);
    let ids = instance_ids(2, &BTreeSet::new(), &BTreeSet::new(), || "same".to_string());
    assert_eq!(ids, ["same"], "a generator that repeats itself ends");
}

#[test]
fn pvc_cleanup_keeps_hands_over_or_deletes() {
    let pvcs = vec![
        ("data-cs-a".to_string(), "a".to_string()),
        ("data-cs-b".to_string(), "b".to_string()),
        ("data-cs-c".to_string(), "c".to_string()),
    ];
    let active: BTreeSet<String> = ["a".to_string()].into();
    let inactive: BTreeMap<String, String> = [("b".to_string(), "cs-b".to_string())].into();
    assert_eq!(
        pvc_cleanup(&pvcs, &active, &inactive),
        PvcCleanup {
            hand_over: vec![("data-cs-b".into(), "cs-b".into())],
            delete: vec!["data-cs-c".into()],
        }
    );
    assert_eq!(pvc_name("data", "cs", "a"), "data-cs-a");
}

#[test]
fn status_counts_and_current_revision() {
    let mut old = pod("o");
    old.updated = false;
    let mut preparing = pod("p");
    // Ready but not yet Normal: ready, not available.
    preparing.state = Some(LifecycleState::PreparingNormal);
    preparing.available = false;
    let pods = vec![pod("a"), old, preparing, unready("u")];
    let s = status_counts(&pods, 4, 1, "cs-new", "cs-old");
    assert_eq!(
        (
            s.replicas,
            s.ready_replicas,
            s.available_replicas,
            s.updated_replicas,
            s.updated_ready_replicas,
            s.updated_available_replicas,
            s.expected_updated_replicas
        ),
        (4, 3, 2, 3, 2, 1, 3)
    );
    assert_eq!(
        (s.update_revision.as_str(), s.current_revision.as_str()),
        ("cs-new", "cs-old")
    );
    // Every pod updated and as many as wanted: the update revision is current.
    let s = status_counts(&[pod("a"), pod("b")], 2, 0, "cs-new", "cs-old");
    assert_eq!(s.current_revision, "cs-new");
    let s = status_counts(&[pod("a"), pod("b")], 3, 0, "cs-new", "cs-old");
    assert_eq!(s.current_revision, "cs-old", "scaling up: not yet");
}

#[test]
fn selectors_as_the_scale_subresource_shows_them() {
    let selector: LabelSelector = serde_json::from_value(serde_json::json!({
        "matchLabels": {"app": "web", "tier": "front"},
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["b", "a"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "owner", "operator": "Exists"},
        ],
    }))
    .unwrap();
    assert_eq!(
        selector_string(&selector),
        "app=web,!canary,env notin (dev),owner,tier=front,zone in (a,b)"
    );
    assert_eq!(selector_string(&LabelSelector::default()), "");
}

#[test]
fn pods_and_claims_as_upstream_makes_them() {
    let cs: CloneSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
        "metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"a": "1"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}],
                         "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"disk": "ssd"}},
                                      "spec": {"accessModes": ["ReadWriteOnce"]}}]
        }
    }))
    .unwrap();
    let pod = new_pod(
        &cs,
        "web-7d9f8",
        &cs.spec.template,
        "x2b4q",
        "2026-12-07T10:00:00Z",
    );
    let value = serde_json::to_value(&pod).unwrap();
    assert_eq!(value["metadata"]["name"], "web-x2b4q");
    assert_eq!(value["metadata"]["namespace"], "ns");
    assert_eq!(
        value["metadata"]["labels"],
        serde_json::json!({"app": "web", "apps.kruise.io/cloneset-instance-id": "x2b4q",
            "controller-revision-hash": "web-7d9f8", "pod-template-hash": "7d9f8",
            "lifecycle.apps.kruise.io/state": "PreparingNormal"})
    );
    assert_eq!(
        value["metadata"]["annotations"],
        serde_json::json!({"a": "1", "lifecycle.apps.kruise.io/timestamp": "2026-12-07T10:00:00Z"})
    );
    assert_eq!(
        value["metadata"]["ownerReferences"],
        serde_json::json!([{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "name": "web", "uid": "u-1", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(
        value["spec"]["readinessGates"],
        serde_json::json!([{"conditionType": "InPlaceUpdateReady"}])
    );
    assert_eq!(
        value["spec"]["volumes"],
        serde_json::json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-x2b4q"}},
            {"name": "cache", "emptyDir": {}},
        ])
    );
    let pvcs = serde_json::to_value(new_pvcs(&cs, "x2b4q")).unwrap();
    assert_eq!(pvcs[0]["metadata"]["name"], "data-web-x2b4q");
    assert_eq!(
        pvcs[0]["metadata"]["labels"],
        serde_json::json!({"disk": "ssd", "app": "web", "apps.kruise.io/cloneset-instance-id": "x2b4q"})
    );
    assert_eq!(pvcs[0]["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(
        pvcs[0]["spec"],
        serde_json::json!({"accessModes": ["ReadWriteOnce"]})
    );
}

#[test]
fn revisions_are_found_by_their_template() {
    let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}
    }))
    .unwrap();
    let ours = revision_data(&template);
    assert_eq!(ours["spec"]["template"]["$patch"], "replace");
    // kruise-manager's Go JSON of the same template.
    let theirs = serde_json::json!({"spec": {"template": {"$patch": "replace",
        "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": {}}]}}}});
    assert!(same_template(&ours, &theirs));
    let mut other = theirs.clone();
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx".into();
    assert!(!same_template(&ours, &other));
    // The same template hashes the same whoever wrote it; a collision count changes it.
    assert_eq!(revision_hash(&ours, 0), revision_hash(&theirs, 0));
    assert_ne!(revision_hash(&ours, 0), revision_hash(&ours, 1));
    assert_ne!(revision_hash(&ours, 0), revision_hash(&other, 0));
    let hash = revision_hash(&ours, 0);
    assert!(
        hash.chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{hash}"
    );
    assert_eq!(revision_name("web", &hash), format!("web-{hash}"));
    assert_eq!(revision_name(&"a".repeat(300), "h").len(), 225);
}

#[test]
fn selectors_match_labels() {
    let selector: LabelSelector = serde_json::from_value(serde_json::json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }))
    .unwrap();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let cases = [
        (labels(&[("app", "web"), ("zone", "a")]), true),
        (
            labels(&[("app", "web"), ("zone", "a"), ("env", "prod")]),
            true,
        ),
        (
            labels(&[("app", "web"), ("zone", "a"), ("env", "dev")]),
            false,
        ),
        (labels(&[("app", "web"), ("zone", "c")]), false),
        (
            labels(&[("app", "web"), ("zone", "a"), ("canary", "1")]),
            false,
        ),
        (labels(&[("zone", "a")]), false),
    ];
    for (labels, want) in cases {
        assert_eq!(selector_matches(&selector, &labels), want, "{labels:?}");
    }
}

#[test]
fn webhook_defaults_and_validation() {
    use super::validate::{apply_defaults, strict_scaled, validate};
    use crate::api::kruise::CloneSetSpec;
    let spec = |v: serde_json::Value| -> CloneSetSpec { serde_json::from_value(v).unwrap() };
    let base = serde_json::json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "app", "image": "busybox"}]}},
    });
    let mut defaulted = spec(base.clone());
    apply_defaults(&mut defaulted);
    assert_eq!(
        serde_json::to_value(&defaulted.update_strategy).unwrap(),
        serde_json::json!({"type": "ReCreate", "partition": 0, "maxUnavailable": "20%", "maxSurge": 0})
    );
    assert_eq!(
        (defaulted.replicas, defaulted.revision_history_limit),
        (Some(1), Some(10))
    );
    let mut in_place = spec(base.clone());
    in_place.update_strategy.type_ = "InPlaceIfPossible".into();
    apply_defaults(&mut in_place);
    assert!(in_place.update_strategy.in_place_update_strategy.is_some());
    assert!(validate(&defaulted, None).is_empty());

    let with = |patch: serde_json::Value| {
        let mut v = base.clone();
        json_patch::merge(&mut v, &patch);
        spec(v)
    };
    let priority =
        |p: serde_json::Value| serde_json::json!({"updateStrategy": {"priorityStrategy": p}});
    let weight = |weight: i32, key: &str, value: &str| {
        let selector = serde_json::json!({"matchLabels": {key: value}});
        serde_json::json!({"weight": weight, "matchSelector": selector})
    };
    let expression = |e: serde_json::Value| {
        let selector = serde_json::json!({"matchExpressions": [e]});
        priority(serde_json::json!({"weightPriority": [{"weight": 5, "matchSelector": selector}]}))
    };
    let cases = [
        (serde_json::json!({"replicas": -1}), "must be non-negative"),
        (
            serde_json::json!({"selector": {"matchLabels": null}}),
            "empty selector",
        ),
        (
            serde_json::json!({"selector": {"matchLabels": {"app": "db"}}}),
            "does not match",
        ),
        (
            serde_json::json!({"template": {"spec": {"restartPolicy": "Never"}}}),
            "only \"Always\"",
        ),
        (
            serde_json::json!({"template": {"spec": {"activeDeadlineSeconds": 5}}}),
            "activeDeadlineSeconds",
        ),
        (
            serde_json::json!({"scaleStrategy": {"podsToDelete": ["a", "a"]}}),
            "duplicated",
        ),
        (
            serde_json::json!({"updateStrategy": {"type": "OnDelete"}}),
            "Unsupported value",
        ),
        (
            serde_json::json!({"updateStrategy": {"partition": -1}}),
            "can not be negative",
        ),
        (
            serde_json::json!({"updateStrategy": {"maxSurge": "x"}}),
            "invalid value",
        ),
        (
            serde_json::json!({"updateStrategy": {"type": "InPlaceOnly", "maxSurge": 1}}),
            "InPlaceOnly",
        ),
        (
            serde_json::json!({"updateStrategy": {"maxUnavailable": 0, "maxSurge": 0}}),
            "both be less than 1",
        ),
        (
            serde_json::json!({"progressDeadlineSeconds": 5, "minReadySeconds": 5}),
            "greater than minReadySeconds",
        ),
        (
            priority(serde_json::json!({"weightPriority": [weight(1, "a", "b")],
                "orderPriority": [{"orderedKey": "k"}]})),
            "spec.updateStrategy.priorityStrategy: Required value: only one of weightPriority and orderPriority can be used",
        ),
        (
            priority(serde_json::json!({"weightPriority": [weight(101, "a", "b")]})),
            "Required value: weight must be valid number in the range 1-100",
        ),
        (
            priority(serde_json::json!({"weightPriority": [weight(-1, "a", "b")]})),
            "Required value: weight must be valid number in the range 1-100",
        ),
        (
            priority(serde_json::json!({"weightPriority": [{"weight": 5, "matchSelector": {}}]})),
            "Required value: selector can not be empty",
        ),
        (
            expression(serde_json::json!({"key": "a", "operator": "Gt", "values": ["1"]})),
            "Required value: invalid selector \"Gt\" is not a valid label selector operator",
        ),
        (
            expression(serde_json::json!({"key": "a", "operator": "In"})),
            "Required value: invalid selector values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            expression(serde_json::json!({"key": "a", "operator": "Exists", "values": ["x"]})),
            "Required value: invalid selector values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist",
        ),
        (
            priority(serde_json::json!({"weightPriority": [weight(5, "/a", "b")]})),
            "invalid selector key: Invalid value: \"/a\": prefix part must be non-empty",
        ),
        (
            priority(serde_json::json!({"orderPriority": [{"orderedKey": ""}]})),
            "spec.updateStrategy.priorityStrategy: Required value: order key can not be empty",
        ),
        (
            serde_json::json!({"updateStrategy": {"scatterStrategy": [{"key": "", "value": "x"}]}}),
            "spec.updateStrategy.scatterStrategy: Required value: key should not be empty",
        ),
        (
            serde_json::json!({"updateStrategy": {"scatterStrategy": [
                {"key": "a", "value": "b"}, {"key": "c", "value": "d"}, {"key": "a", "value": "b"}]}}),
            "spec.updateStrategy.scatterStrategy: Required value: duplicated key=a value=b",
        ),
    ];
    for (patch, want) in cases {
        let errors = validate(&with(patch.clone()), None);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{patch}: {errors:?}"
        );
    }
    // Both key and value refused: Go's aggregate of the two.
    let errors = validate(
        &with(priority(
            serde_json::json!({"weightPriority": [weight(5, "a b", "c d")]}),
        )),
        None,
    );
    assert!(
        errors.iter().any(|e| e.contains(
            "invalid selector [key: Invalid value: \"a b\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'), values[0][a b]: Invalid value: \"c d\": a valid label must be an empty string"
        )),
        "{errors:?}"
    );
    // What upstream accepts: weight 0, a prefixed key, an empty value, the same key twice.
    let fine = with(serde_json::json!({"updateStrategy": {
        "priorityStrategy": {"weightPriority": [weight(0, "example.com/zone", ""),
            {"weight": 100, "matchSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]},
        "scatterStrategy": [{"key": "a", "value": ""}, {"key": "a", "value": "b"}]}}));
    assert_eq!(validate(&fine, None), Vec::<String>::new());
    let moved = with(
        serde_json::json!({"selector": {"matchLabels": {"app": "web", "x": "1"}},
        "template": {"metadata": {"labels": {"app": "web", "x": "1"}}}}),
    );
    assert!(
        validate(&moved, Some(&defaulted))
            .iter()
            .any(|e| e.contains("immutable"))
    );
    assert_eq!(
        strict_scaled(&IntOrString::String("12.5%".into()), 10),
        Ok(2)
    );
    assert!(strict_scaled(&IntOrString::String("50".into()), 10).is_err());
}

#[test]
fn what_may_change_in_place() {
    let template = |v: serde_json::Value| -> PodTemplateSpec { serde_json::from_value(v).unwrap() };
    let old = template(serde_json::json!({
        "metadata": {"labels": {"app": "web", "version": "1"}},
        "spec": {"containers": [
            {"name": "app", "image": "busybox:1",
             "env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['version']"}}}]},
            {"name": "proxy", "image": "envoy:1"}]}
    }));
    let with = |patch: serde_json::Value| {
        let mut v = serde_json::to_value(&old).unwrap();
        json_patch::merge(&mut v, &patch);
        template(v)
    };
    let image = with(serde_json::json!({"spec": {"containers": [
        {"name": "app", "image": "busybox:1",
         "env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['version']"}}}]},
        {"name": "proxy", "image": "envoy:2"}]}}));
    assert_eq!(
        in_place_change(&old, &image),
        Some(InPlaceChange {
            images: [("proxy".to_string(), "envoy:2".to_string())].into(),
            ..Default::default()
        })
    );
    let label = with(serde_json::json!({"metadata": {"labels": {"version": "2"}}}));
    assert_eq!(
        in_place_change(&old, &label),
        Some(InPlaceChange {
            metadata: true,
            env_from_metadata: true,
            ..Default::default()
        })
    );
    let other_label = with(serde_json::json!({"metadata": {"annotations": {"note": "x"}}}));
    assert_eq!(
        in_place_change(&old, &other_label).map(|c| (c.metadata, c.env_from_metadata)),
        Some((true, false))
    );
    let env = with(serde_json::json!({"spec": {"containers": [
        {"name": "app", "image": "busybox:1", "env": [{"name": "V", "value": "x"}]},
        {"name": "proxy", "image": "envoy:1"}]}}));
    assert_eq!(in_place_change(&old, &env), None, "env: recreate");
    let added = with(serde_json::json!({"spec": {"containers": [
        {"name": "app", "image": "busybox:1"}, {"name": "proxy", "image": "envoy:1"},
        {"name": "more", "image": "x"}]}}));
    assert_eq!(
        in_place_change(&old, &added),
        None,
        "a new container: recreate"
    );
    assert_eq!(in_place_change(&old, &old), Some(InPlaceChange::default()));
}

/// A template kruise-manager's webhook defaulted (as its revision holds it), then the user's own
/// file applied again with a new image: an in-place update, and the same revision until then.
#[test]
fn kruise_manager_defaults_are_no_change() {
    let template = |v: serde_json::Value| -> PodTemplateSpec { serde_json::from_value(v).unwrap() };
    let theirs = serde_json::json!({"$patch": "replace",
        "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1", "imagePullPolicy": "Always",
            "resources": {}, "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File"}],
            "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
            "schedulerName": "default-scheduler", "securityContext": {},
            "terminationGracePeriodSeconds": 30}});
    let plain = serde_json::json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1"}]}});
    let revision = serde_json::json!({"spec": {"template": theirs}});
    assert!(same_template(
        &revision,
        &revision_data(&template(plain.clone()))
    ));
    let mut kruise_made = theirs.clone();
    kruise_made.as_object_mut().unwrap().remove("$patch");
    let mut newer = plain;
    newer["spec"]["containers"][0]["image"] = "busybox:2".into();
    assert_eq!(
        in_place_change(&template(kruise_made.clone()), &template(newer.clone())),
        Some(InPlaceChange {
            images: [("main".to_string(), "busybox:2".to_string())].into(),
            ..Default::default()
        })
    );
    // A value that differs from the default still counts.
    newer["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent".into();
    assert_eq!(
        in_place_change(&template(kruise_made), &template(newer)),
        None
    );
}

#[test]
fn pods_to_delete_must_be_this_clonesets_live_pods() {
    use validate::{newly_named_pods, pod_to_delete_refusal};
    let spec = |names: &[&str]| {
        let mut s = CloneSetSpec::default();
        s.scale_strategy.pods_to_delete = names.iter().map(|n| n.to_string()).collect();
        s
    };
    assert_eq!(
        newly_named_pods(&spec(&["b", "a"]), Some(&spec(&["a"]))),
        ["b"]
    );
    assert!(
        newly_named_pods(&spec(&["a", "a"]), None).is_empty(),
        "duplicates refused before"
    );
    let pod = |owner: Option<&str>, deleting: bool| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p",
            "deletionTimestamp": deleting.then_some("2026-12-07T00:00:00Z"),
            "ownerReferences": owner.map(|uid| vec![serde_json::json!({"apiVersion": "apps.kruise.io/v1alpha1",
                "kind": "CloneSet", "name": "web", "uid": uid, "controller": true})])}}))
        .unwrap()
    };
    let mine = pod(Some("u1"), false);
    assert_eq!(pod_to_delete_refusal("p", Ok(Some(&mine)), "u1"), None);
    let cases = [
        (Ok(None), "find pod p failed: pods \"p\" not found"),
        (Err("timed out".to_string()), "find pod p failed: timed out"),
    ];
    for (found, want) in cases {
        let got = pod_to_delete_refusal("p", found, "u1").unwrap();
        assert!(got.ends_with(want), "{got}");
        assert!(got.starts_with("spec.scaleStrategy.podsToDelete: Invalid value: \"p\""));
    }
    let other = pod(Some("u2"), false);
    let orphan = pod(None, false);
    let leaving = pod(Some("u1"), true);
    for (p, want) in [
        (&other, "owner is not this CloneSet"),
        (&orphan, "owner is not this CloneSet"),
        (&leaving, "already terminating"),
    ] {
        let got = pod_to_delete_refusal("p", Ok(Some(p)), "u1").unwrap();
        assert!(got.ends_with(want), "{got}");
    }
}
