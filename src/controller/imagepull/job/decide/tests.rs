use super::*;
use serde_json::json;

fn job(spec: serde_json::Value) -> ImagePullJob {
    serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "uid-1"},
        "spec": spec
    }))
    .unwrap()
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn target(j: &ImagePullJob) -> JobTarget {
    let spec = with_defaults(&j.spec);
    JobTarget {
        image: validate(&spec).unwrap(),
        owner: owner_ref(j),
        pull_policy: tag_pull_policy(&spec, 300, 0.0),
        image_pull_policy: spec.template.image_pull_policy.unwrap(),
        sandbox_config: spec.template.sandbox_config.clone(),
        secrets: vec![],
    }
}

fn node_image(spec: serde_json::Value, status: serde_json::Value) -> NodeImage {
    serde_json::from_value(json!({
        "metadata": {"name": "n1"}, "spec": spec, "status": status
    }))
    .unwrap()
}

#[test]
fn webhook_defaults() {
    let s = with_defaults(&job(json!({"image": "nginx"})).spec);
    let p = s.template.pull_policy.unwrap();
    assert_eq!((p.timeout_seconds, p.backoff_limit), (Some(600), Some(3)));
    assert_eq!(
        s.template.completion_policy.type_,
        Some(CompletionPolicyType::Always)
    );
    assert_eq!(
        s.template.image_pull_policy,
        Some(ImagePullPolicy::IfNotPresent)
    );
}

#[test]
fn validation_messages() {
    let bad = [
        (json!({"image": "Bad Image"}), "invalid image"),
        (
            json!({"image": "a", "selector": {"names": ["x"]}, "podSelector": {"matchLabels": {"a": "b"}}}),
            "at the same time",
        ),
        (
            json!({"image": "a", "selector": {"names": ["x"], "matchLabels": {"a": "b"}}}),
            "both names and labelSelector",
        ),
        (
            json!({"image": "a", "selector": {"names": ["x", "x"]}}),
            "duplicated",
        ),
        (json!({"image": "a", "parallelism": "50%"}), "integer"),
        (json!({"image": "a", "parallelism": -1}), ">= 0"),
        (
            json!({"image": "a", "completionPolicy": {"type": "Never", "activeDeadlineSeconds": 100}}),
            "only work with Always",
        ),
        (
            json!({"image": "a", "pullPolicy": {"timeoutSeconds": 100}, "completionPolicy": {"activeDeadlineSeconds": 50}}),
            "must be >= pullPolicy.timeoutSeconds",
        ),
        (
            json!({"image": "a", "selector": {"matchExpressions": [{"key": "k", "operator": "Bogus"}]}}),
            "invalid selector",
        ),
    ];
    for (spec, want) in bad {
        let err = validate(&job(spec.clone()).spec).unwrap_err();
        assert!(err.contains(want), "{spec}: {err}");
    }
    let ok = validate(&job(json!({"image": "127.0.0.1:5000/x:1", "parallelism": 3})).spec).unwrap();
    assert_eq!(
        (ok.name.as_str(), ok.tag.as_str()),
        ("127.0.0.1:5000/x", "1")
    );
}

#[test]
fn tag_pull_policies() {
    let always = with_defaults(
        &job(json!({"image": "a", "completionPolicy": {"activeDeadlineSeconds": 1200}})).spec,
    );
    let p = tag_pull_policy(&always, 300, 0.0);
    assert_eq!(p.ttl_seconds_after_finished, Some(1500));
    assert_eq!(p.active_deadline_seconds, Some(1200));
    assert_eq!(
        tag_pull_policy(&always, 300, 0.999).ttl_seconds_after_finished,
        Some(1799)
    );
    let with_ttl = with_defaults(
        &job(json!({"image": "a", "completionPolicy": {"ttlSecondsAfterFinished": 20}})).spec,
    );
    assert_eq!(
        tag_pull_policy(&with_ttl, 300, 0.0).ttl_seconds_after_finished,
        Some(320)
    );
    let plain = with_defaults(&job(json!({"image": "a"})).spec);
    assert_eq!(
        tag_pull_policy(&plain, 300, 0.0).ttl_seconds_after_finished,
        Some(2100)
    );
    // Never: 24 h ± 10 min; the deadline covers every attempt and backoff (#2071).
    let never = with_defaults(
        &job(json!({"image": "a", "completionPolicy": {"type": "Never"},
                    "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}}))
        .spec,
    );
    let p = tag_pull_policy(&never, 300, 0.5);
    assert_eq!(p.ttl_seconds_after_finished, Some(86400));
    assert_eq!(p.active_deadline_seconds, Some(600 * 4 + 1 + 2 + 4));
    let short = with_defaults(
        &job(json!({"image": "a", "completionPolicy": {"type": "Never"},
                    "pullPolicy": {"timeoutSeconds": 10, "backoffLimit": 1}}))
        .spec,
    );
    assert_eq!(
        tag_pull_policy(&short, 300, 0.0).active_deadline_seconds,
        Some(1800)
    );
    assert_eq!(
        tag_pull_policy(&short, 300, 0.0).ttl_seconds_after_finished,
        Some(86400 - 600)
    );
}

#[test]
fn new_tag_then_idempotent() {
    let j = job(json!({"image": "127.0.0.1:5000/app:v1"}));
    let t = target(&j);
    let mut spec = NodeImageSpec::default();
    let now = Time(ts(0));
    assert!(apply_to_spec(&mut spec, None, &t, &now));
    let tag = &spec.images["127.0.0.1:5000/app"].tags[0];
    assert_eq!((tag.tag.as_str(), tag.version), ("v1", 0));
    assert_eq!(tag.owner_references[0].uid.as_deref(), Some("uid-1"));
    assert!(
        !apply_to_spec(&mut spec, None, &t, &Time(ts(5))),
        "second write is a no-op"
    );
    let ni = NodeImage::new("n1", spec);
    assert_eq!(node_progress(&ni, &t), NodeProgress::Pulling);
}

#[test]
fn second_job_bumps_version_and_new_tag_follows_status_version() {
    let j1 = job(json!({"image": "app:v1"}));
    let mut j2 = job(json!({"image": "docker.io/library/app:v1"}));
    j2.metadata.name = Some("j2".into());
    j2.metadata.uid = Some("uid-2".into());
    let mut spec = NodeImageSpec::default();
    apply_to_spec(&mut spec, None, &target(&j1), &Time(ts(0)));
    assert!(apply_to_spec(&mut spec, None, &target(&j2), &Time(ts(9))));
    let tag = &spec.images["app"].tags[0];
    assert_eq!(tag.version, 1);
    assert_eq!(tag.owner_references.len(), 2);
    assert_eq!(tag.created_at, Some(Time(ts(9))));
    // A tag that was GC'd but whose status remains starts above the status version.
    let status: NodeImageStatus = serde_json::from_value(json!({
        "desired": 1, "imageStatuses": {"app": {"tags": [{"tag": "v1", "phase": "Succeeded", "version": 4}]}}
    }))
    .unwrap();
    let mut fresh = NodeImageSpec::default();
    apply_to_spec(&mut fresh, Some(&status), &target(&j1), &Time(ts(0)));
    assert_eq!(fresh.images["app"].tags[0].version, 5);
}

#[test]
fn progress_follows_status_of_the_same_version() {
    let j = job(json!({"image": "app:v1"}));
    let t = target(&j);
    let mut spec = NodeImageSpec::default();
    apply_to_spec(&mut spec, None, &t, &Time(ts(0)));
    let spec_json = serde_json::to_value(&spec).unwrap();
    let with = |phase: &str, version: i64| {
        node_image(
            spec_json.clone(),
            json!({"desired": 1, "imageStatuses": {"app": {"tags": [{"tag": "v1", "phase": phase, "version": version}]}}}),
        )
    };
    assert_eq!(
        node_progress(&with("Succeeded", 0), &t),
        NodeProgress::Succeeded
    );
    assert_eq!(node_progress(&with("Failed", 0), &t), NodeProgress::Failed);
    assert_eq!(
        node_progress(&with("Waiting", 0), &t),
        NodeProgress::Pulling
    );
    assert_eq!(
        node_progress(&with("Succeeded", 3), &t),
        NodeProgress::Pulling
    );
    assert_eq!(
        node_progress(&node_image(json!({}), json!({"desired": 0})), &t),
        NodeProgress::NotSynced
    );
    let mut needs_secret = t.clone();
    needs_secret.secrets = vec![ReferenceObject {
        namespace: "kruise-daemon-config".into(),
        name: "s-abcdef".into(),
        mode: "batch".into(),
    }];
    assert_eq!(
        node_progress(&with("Succeeded", 0), &needs_secret),
        NodeProgress::NotSynced
    );
}

#[test]
fn an_always_job_with_the_largest_deadline_gets_the_largest_ttl() {
    let spec: ImagePullJobSpec = serde_json::from_value(serde_json::json!({
        "image": "busybox:1",
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": i64::MAX},
    }))
    .unwrap();
    let p = tag_pull_policy(&spec, 300, 0.99);
    assert_eq!(p.ttl_seconds_after_finished, Some(i32::MAX));
}

#[test]
fn pull_policy_edit_propagates() {
    let j = job(json!({"image": "app:v1"}));
    let t = target(&j);
    let mut spec = NodeImageSpec::default();
    apply_to_spec(&mut spec, None, &t, &Time(ts(0)));
    let mut edited = t.clone();
    edited.pull_policy.timeout_seconds = Some(30);
    let ni = NodeImage::new("n1", spec.clone());
    assert!(needs_update(&ni, &edited));
    assert!(!needs_update(&ni, &t));
    // Not yet succeeded: new policy and a new round.
    let mut s1 = spec.clone();
    assert!(apply_to_spec(&mut s1, None, &edited, &Time(ts(7))));
    let tag = &s1.images["app"].tags[0];
    assert_eq!(
        (
            tag.pull_policy.as_ref().unwrap().timeout_seconds,
            tag.version
        ),
        (Some(30), 1)
    );
    // Succeeded with this version: policy written, no re-pull.
    let status: NodeImageStatus = serde_json::from_value(json!({
        "desired": 1, "imageStatuses": {"app": {"tags": [{"tag": "v1", "phase": "Succeeded"}]}}
    }))
    .unwrap();
    let mut s2 = spec.clone();
    assert!(apply_to_spec(&mut s2, Some(&status), &edited, &Time(ts(7))));
    assert_eq!(s2.images["app"].tags[0].version, 0);
}

#[test]
fn remove_owner_drops_empty_tags_and_images() {
    let j1 = job(json!({"image": "app:v1"}));
    let mut j2 = job(json!({"image": "app:v1"}));
    j2.metadata.uid = Some("uid-2".into());
    let mut spec = NodeImageSpec::default();
    apply_to_spec(&mut spec, None, &target(&j1), &Time(ts(0)));
    apply_to_spec(&mut spec, None, &target(&j2), &Time(ts(0)));
    assert!(remove_owner(&mut spec, "uid-1"));
    assert_eq!(spec.images["app"].tags[0].owner_references.len(), 1);
    assert!(!remove_owner(&mut spec, "uid-1"));
    assert!(remove_owner(&mut spec, "uid-2"));
    assert!(spec.images.is_empty());
}

fn nodes(list: &[(&str, NodeProgress)]) -> Vec<(String, NodeProgress)> {
    list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

#[test]
fn status_running_completed_and_deadline() {
    use NodeProgress::*;
    let spec = with_defaults(
        &job(json!({"image": "a", "completionPolicy": {"activeDeadlineSeconds": 600}})).spec,
    );
    let list = nodes(&[
        ("n3", Failed),
        ("n1", Succeeded),
        ("n2", Pulling),
        ("n4", NotSynced),
    ]);
    let c = calculate_status(&spec, None, &list, ts(0));
    assert_eq!(c.status.desired, 4);
    assert_eq!(
        (c.status.active, c.status.succeeded, c.status.failed),
        (1, 1, 1)
    );
    assert_eq!(c.status.failed_nodes, vec!["n3"]);
    assert_eq!(c.status.message, "job is running, progress 50.0%");
    assert_eq!(c.not_synced, vec!["n4"]);
    assert!(c.status.completion_time.is_none());
    // Past the deadline: everything unfinished fails, sorted.
    let d = calculate_status(&spec, Some(&c.status), &list, ts(600));
    assert_eq!(d.status.message, "job exceeds activeDeadlineSeconds");
    assert_eq!(d.status.failed_nodes, vec!["n2", "n3", "n4"]);
    assert_eq!((d.status.failed, d.status.active), (3, 0));
    assert_eq!(d.status.completion_time, Some(Time(ts(600))));
    // All finished: completed.
    let done = nodes(&[("n1", Succeeded), ("n2", Failed)]);
    let e = calculate_status(&spec, Some(&c.status), &done, ts(10));
    assert_eq!(e.status.message, "job has completed");
    assert_eq!(e.status.start_time, Some(Time(ts(0))));
    // Never jobs do not complete.
    let never =
        with_defaults(&job(json!({"image": "a", "completionPolicy": {"type": "Never"}})).spec);
    let f = calculate_status(&never, None, &done, ts(10));
    assert!(f.status.completion_time.is_none());
    assert_eq!(f.status.message, "job is running, progress 100.0%");
    let g = calculate_status(&never, None, &nodes(&[("n1", Pulling)]), ts(10));
    assert_eq!(g.status.message, "job is running, no progress");
}

#[test]
fn status_changed_ignores_the_completion_stamp() {
    let a = ImagePullJobStatus {
        completion_time: Some(Time(ts(1))),
        message: "x".into(),
        ..Default::default()
    };
    let b = ImagePullJobStatus {
        completion_time: Some(Time(ts(2))),
        ..a.clone()
    };
    assert!(!status_changed(Some(&a), &b));
    assert!(status_changed(None, &b));
    assert!(status_changed(Some(&a), &ImagePullJobStatus::default()));
}

#[test]
fn secret_copy_names_and_references() {
    let a = secret_copy_name("ns", "pull");
    assert!(
        a.starts_with("pull-") && a.len() == "pull-".len() + 6,
        "{a}"
    );
    assert_eq!(a, secret_copy_name("ns", "pull"));
    assert_ne!(a, secret_copy_name("other", "pull"));
    assert!(secret_copy_name("ns", &"x".repeat(300)).len() <= 253);
    let mut ann = BTreeMap::new();
    ann.insert(
        ANNOTATION_SECRET_REFERENCES.to_string(),
        "ns/b, ns/a".to_string(),
    );
    let refs = references_with(&ann, "ns/c", true);
    assert_eq!(join_references(&refs), "ns/a,ns/b,ns/c");
    assert_eq!(
        join_references(&references_with(&ann, "ns/b", false)),
        "ns/a"
    );
}

#[test]
fn may_target_follows_the_selection() {
    let mut ni = node_image(json!({}), json!({"desired": 0}));
    ni.metadata.labels = Some([("role".to_string(), "worker".to_string())].into());
    let cases = [
        (json!({"image": "a"}), true),
        (json!({"image": "a", "selector": {"names": ["n1"]}}), true),
        (json!({"image": "a", "selector": {"names": ["n2"]}}), false),
        (
            json!({"image": "a", "selector": {"matchLabels": {"role": "worker"}}}),
            true,
        ),
        (
            json!({"image": "a", "selector": {"matchLabels": {"role": "db"}}}),
            false,
        ),
        (
            json!({"image": "a", "podSelector": {"matchLabels": {"app": "x"}}}),
            true,
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(may_target(&job(spec.clone()).spec, &ni), want, "{spec}");
    }
}

#[test]
fn image_edit_moves_the_job_to_the_new_tag() {
    let j = job(json!({"image": "app:v1"}));
    let mut other = job(json!({"image": "app:v1"}));
    other.metadata.uid = Some("uid-2".into());
    let mut spec = NodeImageSpec::default();
    apply_to_spec(&mut spec, None, &target(&j), &Time(ts(0)));
    let mut edited = j.clone();
    edited.spec.image = "app:v2".into();
    let ni = NodeImage::new("n1", spec.clone());
    assert_eq!(
        node_progress(&ni, &target(&edited)),
        NodeProgress::NotSynced
    );
    assert!(apply_to_spec(
        &mut spec,
        None,
        &target(&edited),
        &Time(ts(1))
    ));
    let tags: Vec<&str> = spec.images["app"]
        .tags
        .iter()
        .map(|t| t.tag.as_str())
        .collect();
    assert_eq!(tags, ["v2"], "v1 had no other owner");
    // A tag shared with another job keeps that owner.
    let mut shared = NodeImageSpec::default();
    apply_to_spec(&mut shared, None, &target(&j), &Time(ts(0)));
    apply_to_spec(&mut shared, None, &target(&other), &Time(ts(0)));
    let mut also_stale = shared.clone();
    apply_to_spec(&mut also_stale, None, &target(&edited), &Time(ts(1)));
    let v1 = &also_stale.images["app"].tags[0];
    assert_eq!((v1.tag.as_str(), v1.owner_references.len()), ("v1", 1));
    assert_eq!(v1.owner_references[0].uid.as_deref(), Some("uid-2"));
    // A synced node still holding the old tag needs an update.
    let mut both = shared.clone();
    both.images.get_mut("app").unwrap().tags.push(ImageTagSpec {
        tag: "v2".into(),
        owner_references: vec![owner_ref(&j)],
        ..target_tag(&target(&edited))
    });
    let t2 = target(&edited);
    let mut synced = NodeImage::new("n1", both);
    synced
        .spec
        .images
        .get_mut("app")
        .unwrap()
        .tags
        .sort_by(|a, b| a.tag.cmp(&b.tag));
    assert!(needs_update(&synced, &t2));
}

fn target_tag(t: &JobTarget) -> ImageTagSpec {
    ImageTagSpec {
        tag: t.image.tag.clone(),
        created_at: Some(Time(ts(0))),
        pull_policy: Some(t.pull_policy.clone()),
        owner_references: vec![t.owner.clone()],
        version: 0,
        image_pull_policy: Some(t.image_pull_policy),
    }
}

#[test]
fn all_attempts_seconds_without_a_loop_over_backoff_limit() {
    let naive = |timeout: i64, retries: i64| {
        timeout * (retries + 1)
            + (0..retries)
                .map(|i| (1i64 << i).min(MAX_BACKOFF_SECONDS))
                .sum::<i64>()
    };
    for timeout in [0, 1, 600] {
        for retries in [-3, 0, 1, 4, 5, 6, 40] {
            assert_eq!(
                all_attempts_seconds(timeout, retries),
                naive(i64::from(timeout), i64::from(retries.max(0))),
                "timeout {timeout}, backoffLimit {retries}"
            );
        }
    }
    // The largest inputs answer at once and do not overflow.
    let most = all_attempts_seconds(i32::MAX, i32::MAX);
    assert!(most > 0);
}
