use serde_json::{Value, json};

use super::*;

fn spec(v: Value) -> ImageListPullJobSpec {
    let mut s: ImageListPullJobSpec = serde_json::from_value(v).unwrap();
    s.apply_webhook_defaults();
    s
}

fn now() -> Timestamp {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

/// A job of the list: `(desired, succeeded, failed, active)` once acknowledged, `None` before.
fn job(
    name: &str,
    image: &str,
    hash: Option<&str>,
    counts: Option<(i32, i32, i32, i32)>,
) -> ImagePullJob {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"image": image, "completionPolicy": {"type": "Always"},
                 "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}},
    });
    if let Some(h) = hash {
        v["metadata"]["labels"] = json!({TEMPLATE_HASH_LABEL: h});
    }
    if let Some((desired, succeeded, failed, active)) = counts {
        v["status"] = json!({"startTime": "2026-12-07T09:59:00Z", "desired": desired,
            "succeeded": succeeded, "failed": failed, "active": active});
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn validation_messages() {
    let ok = json!({"images": ["nginx", "busybox:1.36"], "completionPolicy": {}});
    assert_eq!(validate(&spec(ok)), Ok(()));
    let table = [
        (json!({"images": [], "completionPolicy": {}}), "image can not be empty".to_string()),
        (
            json!({"images": ["nginx", "docker.io/library/nginx:latest"], "completionPolicy": {}}),
            "images cannot have duplicate values".into(),
        ),
        (
            json!({"images": (0..256).map(|i| format!("img{i}")).collect::<Vec<_>>(), "completionPolicy": {}}),
            "the maximum number of images cannot > 255".into(),
        ),
        (
            json!({"images": ["Bad Image"], "completionPolicy": {}}),
            "invalid image Bad Image: ".into(),
        ),
        (
            json!({"images": ["nginx"], "completionPolicy": {"type": "Never", "ttlSecondsAfterFinished": 5}}),
            "activeDeadlineSeconds and ttlSecondsAfterFinished can only work with Always CompletionPolicyType".into(),
        ),
        (
            json!({"images": ["nginx"], "completionPolicy": {"activeDeadlineSeconds": 50}}),
            "completionPolicy.activeDeadlineSeconds (50) must be >= pullPolicy.timeoutSeconds (600)".into(),
        ),
    ];
    for (v, want) in table {
        let got = validate(&spec(v.clone())).unwrap_err();
        assert!(got.starts_with(&want), "{v}: {got}");
    }
}

#[test]
fn names_follow_from_the_image_and_the_template() {
    let a = job_name("warm", "nginx", "h1");
    assert_eq!(a, job_name("warm", "nginx", "h1"));
    assert_ne!(a, job_name("warm", "nginx", "h2"));
    assert_ne!(a, job_name("warm", "busybox", "h1"));
    assert!(a.starts_with("warm-"));
    let long = job_name(&"x".repeat(253), "nginx", "h1");
    assert_eq!(long.len(), 253);
    let t = spec(json!({"images": ["a"], "completionPolicy": {}})).template;
    let mut other = t.clone();
    other.parallelism = Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(4));
    assert_eq!(template_hash(&t), template_hash(&t.clone()));
    assert_ne!(template_hash(&t), template_hash(&other));
}

#[test]
fn one_job_per_listed_image_from_the_current_template() {
    let s = spec(json!({"images": ["a", "b", "c"], "completionPolicy": {}}));
    let same_template_unlabelled = job("l-old", "c", None, Some((1, 1, 0, 0)));
    let jobs = [
        job("l-a", "a", Some("h"), Some((2, 2, 0, 0))),
        job("l-a2", "a", Some("h"), None),
        job("l-b", "b", Some("stale"), Some((2, 2, 0, 0))),
        job("l-gone", "removed", Some("h"), Some((2, 2, 0, 0))),
        same_template_unlabelled,
    ];
    let refs: Vec<&ImagePullJob> = jobs.iter().collect();
    let p = plan(&s, None, "h", &refs, now());
    assert_eq!(p.create, vec!["b".to_string()]);
    assert_eq!(p.delete, vec!["l-a2", "l-b", "l-gone"]);
    // a and c count; b's stale job does not.
    assert_eq!(
        (p.status.desired, p.status.completed, p.status.succeeded),
        (3, 2, 2)
    );
    assert_eq!(p.status.completion_time, None);
    assert_eq!(p.status.start_time, Some(Time(now())));
}

#[test]
fn a_job_being_deleted_is_left_alone() {
    let s = spec(json!({"images": ["a"], "completionPolicy": {}}));
    let mut leaving = job("l-a", "a", Some("h"), Some((1, 1, 0, 0)));
    leaving.metadata.deletion_timestamp = Some(Time(now()));
    let p = plan(&s, None, "h", &[&leaving], now());
    assert_eq!(p.create, vec!["a".to_string()]);
    assert!(p.delete.is_empty());
    assert_eq!(p.status.completed, 0);
}

#[test]
fn status_counts_as_upstream_with_failures_sorted_by_image() {
    let s = spec(json!({"images": ["z", "a", "m", "n"], "completionPolicy": {}}));
    let jobs = [
        job("l-z", "z", Some("h"), Some((3, 1, 2, 0))),
        job("l-a", "a", Some("h"), Some((3, 2, 1, 0))),
        job("l-m", "m", Some("h"), Some((3, 1, 0, 2))),
        job("l-n", "n", Some("h"), Some((0, 0, 0, 0))),
    ];
    let refs: Vec<&ImagePullJob> = jobs.iter().collect();
    let p = plan(&s, None, "h", &refs, now());
    let st = &p.status;
    assert_eq!(
        (st.desired, st.active, st.completed, st.succeeded),
        (4, 1, 3, 1)
    );
    let failed: Vec<(&str, &str)> = st
        .failed_image_statuses
        .iter()
        .map(|f| (f.name.as_str(), f.image_pull_job.as_str()))
        .collect();
    assert_eq!(failed, vec![("a", "l-a"), ("z", "l-z")]);
    assert_eq!(st.failed_image_statuses[0].message, FAILED_IMAGE_MESSAGE);
    assert_eq!(st.completion_time, None, "m is still pulling");
}

#[test]
fn always_completes_when_every_job_did_and_never_does_not() {
    let jobs = [
        job("l-a", "a", Some("h"), Some((2, 2, 0, 0))),
        job("l-b", "b", Some("h"), Some((2, 1, 1, 0))),
    ];
    let refs: Vec<&ImagePullJob> = jobs.iter().collect();
    let always = spec(json!({"images": ["a", "b"], "completionPolicy": {}}));
    let p = plan(&always, None, "h", &refs, now());
    assert_eq!(p.status.completion_time, Some(Time(now())));
    assert_eq!((p.status.completed, p.status.succeeded), (2, 1));
    let never = spec(json!({"images": ["a", "b"], "completionPolicy": {"type": "Never"}}));
    let p = plan(&never, None, "h", &refs, now());
    assert_eq!(p.status.completion_time, None);
    assert_eq!(p.status.completed, 2);
    // The start time stays what it was.
    let earlier = ImageListPullJobStatus {
        start_time: Some(Time("2026-12-07T09:00:00Z".parse().unwrap())),
        ..Default::default()
    };
    let p = plan(&always, Some(&earlier), "h", &refs, now());
    assert_eq!(p.status.start_time, earlier.start_time);
}
