use super::*;
use serde_json::json;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn rfc(secs: i64) -> String {
    ts(secs).to_string()
}

fn node(labels: serde_json::Value, ready: Option<(&str, i64)>) -> Node {
    let conditions = match ready {
        Some((status, since)) => {
            json!([{"type": "Ready", "status": status, "lastTransitionTime": rfc(since)}])
        }
        None => json!([]),
    };
    serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": labels},
        "status": {"conditions": conditions}
    }))
    .unwrap()
}

#[test]
fn creation_after_ready_delay() {
    let delay = Duration::from_secs(30);
    let n = node(json!({}), Some(("True", 0)));
    assert_eq!(
        creation(&n, ts(10), delay),
        Creation::After(Duration::from_secs(20))
    );
    assert_eq!(creation(&n, ts(30), delay), Creation::Now);
    assert_eq!(
        creation(&node(json!({}), Some(("False", 0))), ts(99), delay),
        Creation::No
    );
    assert_eq!(
        creation(&node(json!({}), None), ts(99), delay),
        Creation::No
    );
    let vk = node(json!({"type": "virtual-kubelet"}), Some(("True", 0)));
    assert_eq!(creation(&vk, ts(99), delay), Creation::No);
}

fn owner(name: &str, uid: &str) -> serde_json::Value {
    json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
           "namespace": "ns", "name": name, "uid": uid})
}

fn ni(spec: serde_json::Value, status: serde_json::Value) -> NodeImage {
    serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": spec, "status": status}))
        .unwrap()
}

#[test]
fn gc_drops_missing_owners_finished_tags_and_empty_images() {
    let spec = json!({"images": {
        "a": {"tags": [
            {"tag": "gone", "createdAt": rfc(0), "ownerReferences": [owner("gone", "u0")]},
            {"tag": "uid-mismatch", "createdAt": rfc(0), "ownerReferences": [owner("live", "old")]},
            {"tag": "no-created", "ownerReferences": [owner("live", "u1")]},
            {"tag": "kept", "createdAt": rfc(0), "ownerReferences": [owner("live", "u1"), owner("gone", "u0"),
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}]},
            {"tag": "ttl-done", "createdAt": rfc(0), "ownerReferences": [owner("live", "u1")],
             "pullPolicy": {"ttlSecondsAfterFinished": 100}},
            {"tag": "ttl-later", "createdAt": rfc(0), "ownerReferences": [owner("live", "u1")],
             "pullPolicy": {"ttlSecondsAfterFinished": 100}},
            {"tag": "old-round", "createdAt": rfc(0), "version": 2, "ownerReferences": [owner("live", "u1")],
             "pullPolicy": {"ttlSecondsAfterFinished": 1}}
        ]},
        "b": {"tags": [{"tag": "x", "createdAt": rfc(0), "ownerReferences": [owner("gone", "u0")]}]}
    }});
    let status = json!({"desired": 7, "imageStatuses": {"a": {"tags": [
        {"tag": "ttl-done", "phase": "Succeeded", "completionTime": rfc(0)},
        {"tag": "ttl-later", "phase": "Failed", "completionTime": rfc(50)},
        {"tag": "old-round", "phase": "Succeeded", "version": 1, "completionTime": rfc(0)}
    ]}}});
    let mut obj = ni(spec, status);
    let job_uid = |ns: &str, name: &str| (ns == "ns" && name == "live").then(|| "u1".to_string());
    let (changed, next) = gc_spec(&mut obj.spec, obj.status.as_ref(), job_uid, ts(120));
    assert!(changed);
    assert_eq!(next, Some(30));
    let tags: Vec<&str> = obj.spec.images["a"]
        .tags
        .iter()
        .map(|t| t.tag.as_str())
        .collect();
    assert_eq!(tags, ["kept", "ttl-later", "old-round"]);
    assert_eq!(
        obj.spec.images["a"].tags[0].owner_references.len(),
        2,
        "other kinds kept"
    );
    assert!(!obj.spec.images.contains_key("b"));
    let again = gc_spec(&mut obj.spec, obj.status.as_ref(), job_uid, ts(120));
    assert_eq!(again, (false, Some(30)));
}

#[test]
fn response_timeout_deadline_and_counts() {
    let timeout = Duration::from_secs(600);
    let spec = json!({"images": {"a": {"tags": [
        {"tag": "silent", "createdAt": rfc(0), "ownerReferences": [owner("j", "u1")]},
        {"tag": "stale-version", "createdAt": rfc(0), "version": 1, "ownerReferences": [owner("j", "u1")]},
        {"tag": "slow", "createdAt": rfc(0), "ownerReferences": [owner("j", "u1")],
         "pullPolicy": {"activeDeadlineSeconds": 100}},
        {"tag": "done", "createdAt": rfc(0), "ownerReferences": [owner("j", "u1")]},
        {"tag": "young", "createdAt": rfc(500), "ownerReferences": [owner("j", "u1")]}
    ]}}});
    let status = json!({"desired": 5, "imageStatuses": {"a": {"tags": [
        {"tag": "done", "phase": "Succeeded"},
        {"tag": "slow", "phase": "Pulling"},
        {"tag": "stale-version", "phase": "Succeeded"}
    ]}}});
    let obj = ni(spec.clone(), status.clone());
    let early = check_status(&obj, ts(600), timeout);
    let msgs: Vec<(&str, &str)> = early
        .failed
        .iter()
        .map(|f| (f.tag.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        [
            ("silent", NODE_IMAGE_MESSAGE_NOT_RESPONDED),
            ("stale-version", NODE_IMAGE_MESSAGE_NOT_RESPONDED)
        ]
    );
    assert_eq!(early.next, Some(100), "slow's deadline + timeout at 700");
    let s = &early.status;
    assert_eq!((s.desired, s.succeeded, s.failed, s.pulling), (5, 1, 2, 1));
    let stale = s.image_statuses["a"]
        .tags
        .iter()
        .find(|t| t.tag == "stale-version")
        .unwrap();
    assert_eq!((stale.phase, stale.version), (ImagePullPhase::Failed, 1));
    let late = check_status(&obj, ts(700), timeout);
    assert!(
        late.failed
            .iter()
            .any(|f| f.tag == "slow" && f.message == NODE_IMAGE_MESSAGE_DEADLINE_EXCEEDED)
    );
    assert_eq!(late.failed[0].owners[0].name.as_deref(), Some("j"));
    // Applying the result again changes nothing.
    let mut after = obj.clone();
    after.status = Some(late.status.clone());
    let again = check_status(&after, ts(700), timeout);
    assert!(again.failed.is_empty());
    assert_eq!(again.status, late.status);
}
