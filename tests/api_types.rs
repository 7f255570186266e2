//! `apps.kruise.io/v1alpha1` types: upstream's worked objects round-trip without loss, Go's
//! `omitempty` conventions hold, webhook defaults, and the generated CRDs (snapshot, printer
//! columns, names, scope, subresources, structural schemas).
//!
//! Refresh the CRD snapshot with `UPDATE_SNAPSHOTS=1 cargo test --test api_types`.

use std::fmt::Debug;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ExecAction, LifecycleHandler, SleepAction};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResourceExt, Resource};
use nodeward::api::kruise::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn fixture(name: &str) -> String {
    let path = manifest_path("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a fixture into `T`, and checks that serializing it back gives the fixture's JSON value
/// exactly (nothing lost, nothing added), through JSON and through YAML.
fn round_trip<T>(name: &str) -> T
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = fixture(name);
    let original: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let typed: T = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));

    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, original, "{name}: JSON round trip changed the object");

    let from_json: T = serde_json::from_value(original).unwrap();
    assert_eq!(from_json, typed, "{name}: JSON and YAML decoding differ");

    let yaml = serde_saphyr::to_string(&typed).unwrap();
    let again: T = serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
    assert_eq!(again, typed, "{name}: YAML round trip changed the object");
    typed
}

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

// ---- worked objects ---------------------------------------------------------------------------

#[test]
fn crr_as_created_by_a_user() {
    let crr: ContainerRecreateRequest = round_trip("crr-a1-user.yaml");
    assert_eq!(crr.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(crr.spec.pod_name, "web-0");
    let names: Vec<_> = crr
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["app", "sidecar"]);
    assert!(
        crr.spec
            .containers
            .iter()
            .all(|c| c.status_context.is_none())
    );
    let strategy = crr.spec.strategy.as_ref().unwrap();
    assert!(strategy.ordered_recreate);
    assert!(!strategy.force_recreate);
    assert_eq!(strategy.min_started_seconds, 5);
    assert_eq!(strategy.unready_grace_period_seconds, Some(3));
    assert_eq!(strategy.failure_policy, None);
    assert_eq!(
        strategy.failure_policy_or_default(),
        ContainerRecreateRequestFailurePolicy::Fail
    );
    assert_eq!(crr.spec.active_deadline_seconds, Some(300));
    assert_eq!(crr.spec.ttl_seconds_after_finished, Some(600));
    assert_eq!(crr.status, None);
    assert!(!crr.is_active());
    assert_eq!(crr.node_name(), None);
}

#[test]
fn crr_after_the_webhook() {
    let crr: ContainerRecreateRequest = round_trip("crr-a2-webhook.yaml");
    assert!(crr.is_active());
    assert_eq!(crr.node_name(), Some("node-1"));
    assert_eq!(crr.pod_uid(), Some("7d0c5b4e-2a61-4c7e-9d0e-3f1b2a9c8e11"));
    let app = &crr.spec.containers[0];
    let exec = app.pre_stop.as_ref().and_then(|h| h.exec.as_ref()).unwrap();
    assert_eq!(
        exec.command.as_deref(),
        Some(&["sleep".to_string(), "8".to_string()][..])
    );
    assert!(app.ports.is_empty());
    let ctx = app.status_context.as_ref().unwrap();
    assert_eq!(ctx.container_id, "containerd://4f1e9a2b7c3d");
    assert_eq!(ctx.restart_count, 0);
    let strategy = crr.spec.strategy.as_ref().unwrap();
    assert_eq!(
        strategy.failure_policy,
        Some(ContainerRecreateRequestFailurePolicy::Fail)
    );
    assert_eq!(strategy.termination_grace_period_seconds, Some(30));
    assert!(crr.sync_container_statuses().unwrap().is_empty());
    assert!(crr.unready_acquired_at().is_none());
}

#[test]
fn crr_completed_with_manager_annotations() {
    let crr: ContainerRecreateRequest = round_trip("crr-a3-completed.yaml");
    assert!(!crr.is_active());
    let status = crr.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(ContainerRecreateRequestPhase::Completed));
    assert_eq!(status.completion_time, Some(time("2026-07-02T10:00:42Z")));
    assert_eq!(status.message, "");
    assert_eq!(status.container_recreate_states.len(), 2);
    for state in &status.container_recreate_states {
        assert_eq!(state.phase, ContainerRecreateRequestPhase::Succeeded);
        assert!(state.is_killed);
        assert_eq!(state.message, "");
    }
    let synced = crr.sync_container_statuses().unwrap();
    assert_eq!(
        synced[0],
        ContainerRecreateRequestSyncContainerStatus {
            name: "app".into(),
            ready: true,
            restart_count: 1,
            container_id: "containerd://5c6d7e8f9a0b".into(),
        }
    );
    assert_eq!(synced.len(), 2);
    let unready = crr.unready_acquired_at().unwrap().unwrap();
    assert_eq!(unready, "2026-07-02T10:00:01Z".parse().unwrap());
    assert_eq!(
        crr.metadata.finalizers.as_deref(),
        Some(&[FINALIZER_CRR_UNREADY_ACQUIRED.to_string()][..])
    );
}

#[test]
fn crr_for_sidecar_termination() {
    let crr: ContainerRecreateRequest = round_trip("crr-sidecar-termination.yaml");
    let uid = crr.pod_uid().unwrap();
    assert_eq!(
        crr.metadata.name.as_deref(),
        Some(&*sidecar_termination_crr_name(uid))
    );
    let strategy = crr.spec.strategy.as_ref().unwrap();
    assert!(strategy.force_recreate);
    assert_eq!(
        strategy.failure_policy_or_default(),
        ContainerRecreateRequestFailurePolicy::Ignore
    );
    let proxy = &crr.spec.containers[0];
    let get = proxy.pre_stop.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(get.port, IntOrString::String("admin".into()));
    assert_eq!(proxy.ports.len(), 2);
    assert_eq!(proxy.ports[0].container_port, 15000);
    let states = &crr.status.as_ref().unwrap().container_recreate_states;
    assert_eq!(states[0].phase, ContainerRecreateRequestPhase::Failed);
    assert!(
        states[0]
            .message
            .starts_with(CRR_STATE_MESSAGE_KILL_ERROR_PREFIX)
    );
    assert!(!states[0].is_killed);
    assert_eq!(states[1].phase, ContainerRecreateRequestPhase::Recreating);
    assert!(states[1].is_killed);
}

#[test]
fn node_image_with_status() {
    let ni: NodeImage = round_trip("nodeimage-a4.yaml");
    assert_eq!(ni.metadata.namespace, None);
    let nginx = &ni.spec.images["nginx"];
    assert_eq!(
        nginx.pull_secrets,
        [ReferenceObject {
            namespace: KRUISE_DAEMON_CONFIG_NAMESPACE.into(),
            name: "pull-secret-1a2b3c".into(),
            mode: String::new(),
        }]
    );
    let sandbox = nginx.sandbox_config.as_ref().unwrap();
    assert_eq!(sandbox.labels["app"], "web");
    assert_eq!(sandbox.annotations["team"], "x");
    let tag = &nginx.tags[0];
    assert_eq!(tag.tag, "1.25");
    assert_eq!(tag.version, 0);
    assert_eq!(tag.created_at, Some(time("2026-07-02T09:00:00Z")));
    assert_eq!(tag.image_pull_policy, Some(ImagePullPolicy::IfNotPresent));
    let policy = tag.pull_policy.as_ref().unwrap();
    assert_eq!(policy.timeout_seconds_or_default(), 600);
    assert_eq!(policy.backoff_limit_or_default(), 3);
    assert_eq!(policy.ttl_seconds_after_finished, Some(1650));
    assert_eq!(policy.active_deadline_seconds, Some(1200));
    let owner = &tag.owner_references[0];
    assert_eq!(owner.kind.as_deref(), Some("ImagePullJob"));
    assert_eq!(owner.api_version.as_deref(), Some(API_VERSION));

    let status = ni.status.as_ref().unwrap();
    assert_eq!(
        (
            status.desired,
            status.succeeded,
            status.failed,
            status.pulling,
            status.waiting
        ),
        (1, 1, 0, 0, 0)
    );
    let st = &status.image_statuses["nginx"].tags[0];
    assert_eq!(st.phase, ImagePullPhase::Succeeded);
    assert!(st.phase.is_finished());
    assert_eq!(st.progress, 100);
    assert!(st.image_id.starts_with("nginx@sha256:"));
    assert_eq!(st.message, "");
}

#[test]
fn node_image_mid_flight() {
    let ni: NodeImage = round_trip("nodeimage-pulling.yaml");
    // BTreeMap: image names come out sorted, whatever the input order.
    let names: Vec<_> = ni.spec.images.keys().map(String::as_str).collect();
    assert_eq!(names, ["ghcr.io/acme/api", "nginx"]);
    let api = &ni.spec.images["ghcr.io/acme/api"];
    assert!(api.tags[0].tag.starts_with("sha256:"));
    assert_eq!(api.tags[1].version, 2);
    assert_eq!(api.tags[1].owner_references.len(), 2);
    assert_eq!(
        api.tags[1].image_pull_policy_or_default(),
        ImagePullPolicy::Always
    );
    assert_eq!(
        ni.spec.images["nginx"].tags[0].image_pull_policy_or_default(),
        ImagePullPolicy::IfNotPresent
    );
    let status = ni.status.as_ref().unwrap();
    let phases: Vec<_> = status
        .image_statuses
        .values()
        .flat_map(|s| s.tags.iter().map(|t| t.phase))
        .collect();
    assert_eq!(
        phases,
        [
            ImagePullPhase::Failed,
            ImagePullPhase::Pulling,
            ImagePullPhase::Failed,
            ImagePullPhase::Waiting
        ]
    );
    assert_eq!(
        status.image_statuses["nginx"].tags[0].message,
        NODE_IMAGE_MESSAGE_NOT_RESPONDED
    );
}

#[test]
fn image_pull_job_specs() {
    let job: ImagePullJob = round_trip("imagepulljob-with-secret.yaml");
    let spec = &job.spec;
    assert_eq!(spec.template.pull_secrets, ["e2e-registry"]);
    let selector = spec.template.selector.as_ref().unwrap();
    assert!(selector.names.is_empty());
    let expr = &selector.label_selector.match_expressions.as_ref().unwrap()[0];
    assert_eq!(expr.key, LABEL_FAKE_NODE_IMAGE);
    assert_eq!(expr.operator, "DoesNotExist");
    assert_eq!(spec.template.parallelism_value(), 4);
    let pull = spec.template.pull_policy.as_ref().unwrap();
    assert_eq!(
        (pull.timeout_seconds, pull.backoff_limit),
        (Some(50), Some(2))
    );
    assert_eq!(
        spec.template.completion_policy_type(),
        CompletionPolicyType::Always
    );
    assert_eq!(
        spec.template.completion_policy.active_deadline_seconds,
        Some(50)
    );
    assert_eq!(
        spec.template.completion_policy.ttl_seconds_after_finished,
        Some(20)
    );
    assert_eq!(
        spec.template.sandbox_config.as_ref().unwrap().annotations["owner"],
        "e2e"
    );
    assert_eq!(
        job.metadata.finalizers.as_deref(),
        Some(&[FINALIZER_DELETION_PROTECTION.to_string()][..])
    );
    assert_eq!(job.status, None);

    let job: ImagePullJob = round_trip("imagepulljob-names-never.yaml");
    assert_eq!(
        job.spec.template.selector.as_ref().unwrap().names,
        ["node-1", "node-4"]
    );
    assert_eq!(
        job.spec.template.parallelism,
        Some(IntOrString::String("2".into()))
    );
    assert_eq!(job.spec.template.parallelism_value(), 2);
    assert_eq!(
        job.spec.template.completion_policy_type(),
        CompletionPolicyType::Never
    );
    assert_eq!(
        job.spec.template.image_pull_policy,
        Some(ImagePullPolicy::Always)
    );

    let job: ImagePullJob = round_trip("imagepulljob-podselector.yaml");
    let pods = job.spec.template.pod_selector.as_ref().unwrap();
    assert_eq!(pods.match_labels.as_ref().unwrap()["app"], "web");
    assert_eq!(job.spec.template.selector, None);
    assert_eq!(job.spec.template.image_pull_policy, None);
}

#[test]
fn image_pull_job_statuses() {
    let running: ImagePullJob = round_trip("imagepulljob-status-running.yaml");
    let s = running.status.as_ref().unwrap();
    assert_eq!((s.desired, s.active, s.succeeded, s.failed), (10, 4, 5, 1));
    assert_eq!(s.failed_nodes, ["node-7"]);
    assert_eq!(s.completion_time, None);
    assert_eq!(
        s.message,
        image_pull_job_progress_message(s.succeeded + s.failed, s.desired)
    );

    let done: ImagePullJob = round_trip("imagepulljob-status-done.yaml");
    let s = done.status.as_ref().unwrap();
    assert_eq!(s.message, IMAGE_PULL_JOB_MESSAGE_COMPLETED);
    assert_eq!(s.completion_time, Some(time("2026-07-02T09:04:31Z")));
    assert_eq!(s.active, 0);

    let deadline: ImagePullJob = round_trip("imagepulljob-status-deadline.yaml");
    let s = deadline.status.as_ref().unwrap();
    assert_eq!(s.message, IMAGE_PULL_JOB_MESSAGE_DEADLINE_EXCEEDED);
    assert_eq!(s.failed_nodes, ["node-9", "node-2", "node-7", "node-10"]);
}

// ---- Go wire conventions ----------------------------------------------------------------------

#[test]
fn go_zero_values_are_omitted_on_output() {
    // What a Go client may send explicitly but Go's `omitempty` never writes.
    let crr: ContainerRecreateRequest = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ContainerRecreateRequest",
        "metadata": {"name": "c", "namespace": "n"},
        "spec": {
            "podName": "p",
            "containers": [{"name": "app", "ports": []}],
            "strategy": {"failurePolicy": "", "orderedRecreate": false, "forceRecreate": false,
                         "minStartedSeconds": 0}
        },
        "status": {"phase": "", "message": "", "containerRecreateStates": [
            {"name": "app", "phase": "Pending", "message": "", "isKilled": false}
        ]}
    }))
    .unwrap();
    let strategy = crr.spec.strategy.as_ref().unwrap();
    assert_eq!(strategy.failure_policy, None);
    assert_eq!(crr.status.as_ref().unwrap().phase, None);
    assert_eq!(
        serde_json::to_value(&crr).unwrap(),
        json!({
            "apiVersion": "apps.kruise.io/v1alpha1",
            "kind": "ContainerRecreateRequest",
            "metadata": {"name": "c", "namespace": "n"},
            "spec": {"podName": "p", "containers": [{"name": "app"}], "strategy": {}},
            "status": {"containerRecreateStates": [{"name": "app", "phase": "Pending"}]}
        })
    );

    let mut tag_status = json!({"tag": "1.25", "phase": "Waiting", "progress": 0, "version": 0,
                                "imageID": "", "message": ""});
    let parsed: ImageTagStatus = serde_json::from_value(tag_status.clone()).unwrap();
    assert_eq!(
        serde_json::to_value(&parsed).unwrap(),
        json!({"tag": "1.25", "phase": "Waiting"})
    );
    tag_status["version"] = json!(3);
    let parsed: ImageTagStatus = serde_json::from_value(tag_status).unwrap();
    assert_eq!(parsed.version, 3);

    let tag: ImageTagSpec =
        serde_json::from_value(json!({"tag": "1.25", "version": 0, "imagePullPolicy": ""}))
            .unwrap();
    assert_eq!(tag.image_pull_policy, None);
    assert_eq!(serde_json::to_value(&tag).unwrap(), json!({"tag": "1.25"}));
}

#[test]
fn go_fields_without_omitempty_are_always_written() {
    // ImagePullJobStatus.{desired,active,succeeded,failed}, NodeImageStatus counters and
    // ImagePullJobSpec.completionPolicy have no `omitempty` upstream.
    let status = serde_json::to_value(ImagePullJobStatus::default()).unwrap();
    assert_eq!(
        status,
        json!({"desired": 0, "active": 0, "succeeded": 0, "failed": 0})
    );
    let status = serde_json::to_value(NodeImageStatus::default()).unwrap();
    assert_eq!(
        status,
        json!({"desired": 0, "succeeded": 0, "failed": 0, "pulling": 0, "waiting": 0})
    );
    let job = ImagePullJob::new(
        "j",
        ImagePullJobSpec {
            image: "nginx".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        serde_json::to_value(&job).unwrap()["spec"],
        json!({"image": "nginx", "completionPolicy": {}})
    );
    // ... and older objects without them (e.g. no `waiting` before v1.9) still read.
    let old: NodeImageStatus = serde_json::from_value(json!({"desired": 2})).unwrap();
    assert_eq!(old.waiting, 0);
    let old: ImagePullJobSpec = serde_json::from_value(json!({"image": "nginx"})).unwrap();
    assert_eq!(old.template.completion_policy, CompletionPolicy::default());
}

#[test]
fn unknown_enum_values_are_rejected() {
    let bad = json!({"tag": "1.25", "phase": "Unknown"});
    assert!(serde_json::from_value::<ImageTagStatus>(bad).is_err());
    let bad = json!({"failurePolicy": "Retry"});
    assert!(serde_json::from_value::<ContainerRecreateRequestStrategy>(bad).is_err());
}

#[test]
fn enums_print_their_wire_values() {
    for phase in [
        ContainerRecreateRequestPhase::Pending,
        ContainerRecreateRequestPhase::Recreating,
        ContainerRecreateRequestPhase::Succeeded,
        ContainerRecreateRequestPhase::Failed,
        ContainerRecreateRequestPhase::Completed,
    ] {
        assert_eq!(
            json!(phase.to_string()),
            serde_json::to_value(phase).unwrap()
        );
    }
    for phase in [
        ImagePullPhase::Waiting,
        ImagePullPhase::Pulling,
        ImagePullPhase::Succeeded,
        ImagePullPhase::Failed,
    ] {
        assert_eq!(
            json!(phase.to_string()),
            serde_json::to_value(phase).unwrap()
        );
    }
    for p in [
        ContainerRecreateRequestFailurePolicy::Fail,
        ContainerRecreateRequestFailurePolicy::Ignore,
    ] {
        assert_eq!(json!(p.to_string()), serde_json::to_value(p).unwrap());
    }
    for p in [ImagePullPolicy::Always, ImagePullPolicy::IfNotPresent] {
        assert_eq!(json!(p.to_string()), serde_json::to_value(p).unwrap());
    }
    for t in [CompletionPolicyType::Always, CompletionPolicyType::Never] {
        assert_eq!(json!(t.to_string()), serde_json::to_value(t).unwrap());
    }
}

// ---- defaults and helpers ---------------------------------------------------------------------

#[test]
fn webhook_defaults() {
    let mut spec: ContainerRecreateRequestSpec =
        serde_saphyr::from_str(&fixture("crr-a1-user.yaml"))
            .map(|crr: ContainerRecreateRequest| crr.spec)
            .unwrap();
    spec.apply_webhook_defaults();
    let strategy = spec.strategy.as_ref().unwrap();
    assert_eq!(
        strategy.failure_policy,
        Some(ContainerRecreateRequestFailurePolicy::Fail)
    );
    assert!(strategy.ordered_recreate, "user values are kept");
    let mut bare = ContainerRecreateRequestSpec::default();
    bare.apply_webhook_defaults();
    assert_eq!(
        serde_json::to_value(&bare.strategy).unwrap(),
        json!({"failurePolicy": "Fail"})
    );

    let mut job = ImagePullJobSpec {
        image: "nginx".into(),
        template: ImagePullJobTemplate {
            pull_policy: Some(PullPolicy {
                timeout_seconds: Some(50),
                backoff_limit: None,
            }),
            ..Default::default()
        },
    };
    job.apply_webhook_defaults();
    assert_eq!(
        serde_json::to_value(&job).unwrap(),
        json!({
            "image": "nginx",
            "pullPolicy": {"timeoutSeconds": 50, "backoffLimit": 3},
            "completionPolicy": {"type": "Always"},
            "imagePullPolicy": "IfNotPresent"
        })
    );
    assert_eq!(job.template.parallelism_value(), DEFAULT_PARALLELISM);

    let now = time("2026-07-02T09:00:00Z");
    let mut ni: NodeImageSpec = serde_json::from_value(json!({"images": {"nginx": {"tags": [
        {"tag": "1.25"},
        {"tag": "1.27", "createdAt": "2026-07-01T00:00:00Z", "pullPolicy": {"backoffLimit": 0}}
    ]}}}))
    .unwrap();
    ni.apply_webhook_defaults(&now);
    assert_eq!(
        serde_json::to_value(&ni).unwrap(),
        json!({"images": {"nginx": {"tags": [
            {"tag": "1.25", "createdAt": "2026-07-02T09:00:00Z",
             "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}},
            {"tag": "1.27", "createdAt": "2026-07-01T00:00:00Z",
             "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 0}}
        ]}}})
    );
    let negative = ImageTagPullPolicy {
        backoff_limit: Some(-1),
        ..Default::default()
    };
    assert_eq!(negative.backoff_limit_or_default(), 3);
}

#[test]
fn helpers() {
    assert_eq!(
        sidecar_termination_crr_name("0b6f"),
        "sidecar-termination-0b6f"
    );
    assert_eq!(
        crr_killing_message("app", "crr-demo"),
        "Stopping container app by ContainerRecreateRequest crr-demo"
    );
    assert_eq!(
        image_pull_job_progress_message(0, 10),
        "job is running, no progress"
    );
    assert_eq!(
        image_pull_job_progress_message(6, 10),
        "job is running, progress 60.0%"
    );
    assert_eq!(
        image_pull_job_progress_message(1, 3),
        "job is running, progress 33.3%"
    );

    let mut spec = ImagePullJobSpec::default();
    for (value, want) in [
        (IntOrString::Int(0), 0),
        (IntOrString::Int(7), 7),
        (IntOrString::String("3".into()), 3),
        (IntOrString::String("50%".into()), 0),
    ] {
        spec.template.parallelism = Some(value);
        assert_eq!(spec.template.parallelism_value(), want);
    }

    let exec = ExecAction {
        command: Some(vec!["sleep".into(), "8".into()]),
    };
    let handler = LifecycleHandler {
        exec: Some(exec.clone()),
        ..Default::default()
    };
    assert_eq!(
        CrrProbeHandler::from_lifecycle(&handler),
        Some(CrrProbeHandler {
            exec: Some(exec),
            ..Default::default()
        })
    );
    let sleep_only = LifecycleHandler {
        sleep: Some(SleepAction { seconds: 5 }),
        ..Default::default()
    };
    assert_eq!(CrrProbeHandler::from_lifecycle(&sleep_only), None);

    let mut crr = ContainerRecreateRequest::new("x", ContainerRecreateRequestSpec::default());
    crr.metadata.annotations = Some(
        [(
            ANNOTATION_CRR_SYNC_CONTAINER_STATUSES.to_string(),
            "not json".to_string(),
        )]
        .into(),
    );
    assert!(crr.sync_container_statuses().is_err());
}

#[test]
fn resource_identity() {
    assert_eq!(ContainerRecreateRequest::api_version(&()), API_VERSION);
    assert_eq!(ContainerRecreateRequest::group(&()), GROUP);
    assert_eq!(ContainerRecreateRequest::version(&()), VERSION);
    assert_eq!(
        ContainerRecreateRequest::plural(&()),
        "containerrecreaterequests"
    );
    assert_eq!(ImagePullJob::plural(&()), "imagepulljobs");
    assert_eq!(NodeImage::plural(&()), "nodeimages");
    assert_eq!(ContainerRecreateRequest::shortnames(), ["crr"]);
    assert!(ImagePullJob::shortnames().is_empty());
    assert!(NodeImage::shortnames().is_empty());
    let ni = NodeImage::new("node-1", NodeImageSpec::default());
    let v = serde_json::to_value(&ni).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodeImage",
               "metadata": {"name": "node-1"}, "spec": {}})
    );
}

// ---- CRDs ---------------------------------------------------------------------------------------

fn crd_named<'a>(crds: &'a [CustomResourceDefinition], name: &str) -> &'a CustomResourceDefinition {
    crds.iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

/// (name, type, jsonPath) of the first version's printer columns.
fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| (c.name.clone(), c.type_.clone(), c.json_path.clone()))
        .collect()
}

fn cols(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn crds_match_upstream_names_scope_columns_and_subresources() {
    let crds = crds();
    let order: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "containerrecreaterequests.apps.kruise.io",
            "imagepulljobs.apps.kruise.io",
            "imagelistpulljobs.apps.kruise.io",
            "nodeimages.apps.kruise.io",
            "nodepodprobes.apps.kruise.io",
            "podprobemarkers.apps.kruise.io",
            "clonesets.apps.kruise.io"
        ]
    );
    // OpenKruise v1.9 stores the image kinds as v1beta1 (same schema, no conversion webhook).
    let beta = [
        "imagepulljobs.apps.kruise.io",
        "imagelistpulljobs.apps.kruise.io",
        "nodeimages.apps.kruise.io",
    ];
    for crd in &crds {
        let name = crd.metadata.name.as_deref().unwrap();
        assert_eq!(crd.spec.group, GROUP);
        let versions: Vec<_> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        if beta.contains(&name) {
            assert_eq!(
                versions,
                [(VERSION, true, false), (VERSION_V1BETA1, true, true)],
                "{name}"
            );
            assert_eq!(
                crd.spec.versions[0].schema, crd.spec.versions[1].schema,
                "{name}"
            );
        } else {
            assert_eq!(versions, [(VERSION, true, true)], "{name}");
        }
        for v in &crd.spec.versions {
            let sub = v.subresources.as_ref().expect("subresources");
            assert!(sub.status.is_some(), "{name}: status subresource");
            // Only CloneSet scales (`kubectl scale`, HPA), as upstream.
            let scale = sub.scale.as_ref().map(|s| {
                (
                    s.spec_replicas_path.as_str(),
                    s.status_replicas_path.as_str(),
                    s.label_selector_path.as_deref(),
                )
            });
            if name == "clonesets.apps.kruise.io" {
                assert_eq!(
                    scale,
                    Some((
                        ".spec.replicas",
                        ".status.replicas",
                        Some(".status.labelSelector")
                    ))
                );
            } else {
                assert!(scale.is_none(), "{name}");
            }
        }
        assert!(crd.spec.conversion.is_none());
    }

    let cs = crd_named(&crds, "clonesets.apps.kruise.io");
    assert_eq!(cs.spec.scope, "Namespaced");
    assert_eq!(cs.spec.names.kind, "CloneSet");
    assert_eq!(
        cs.spec.names.short_names.as_deref(),
        Some(&["clone".to_string()][..])
    );
    let cs_columns: Vec<String> = columns(cs).into_iter().map(|c| c.0).collect();
    assert_eq!(
        cs_columns,
        [
            "DESIRED",
            "UPDATED",
            "UPDATED_READY",
            "UPDATED_AVAILABLE",
            "READY",
            "TOTAL",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );

    let crr = crd_named(&crds, "containerrecreaterequests.apps.kruise.io");
    assert_eq!(crr.spec.scope, "Namespaced");
    assert_eq!(crr.spec.names.kind, "ContainerRecreateRequest");
    assert_eq!(crr.spec.names.plural, "containerrecreaterequests");
    assert_eq!(
        crr.spec.names.singular.as_deref(),
        Some("containerrecreaterequest")
    );
    assert_eq!(
        crr.spec.names.short_names.as_deref(),
        Some(&["crr".to_string()][..])
    );
    assert_eq!(
        columns(crr),
        cols(&[
            ("PHASE", "string", ".status.phase"),
            ("POD", "string", ".spec.podName"),
            (
                "NODE",
                "string",
                r".metadata.labels.crr\.apps\.kruise\.io/node-name"
            ),
            ("AGE", "date", ".metadata.creationTimestamp"),
        ])
    );

    let job = crd_named(&crds, "imagepulljobs.apps.kruise.io");
    assert_eq!(job.spec.scope, "Namespaced");
    assert_eq!(job.spec.names.kind, "ImagePullJob");
    assert_eq!(job.spec.names.short_names, None);
    assert_eq!(
        columns(job),
        cols(&[
            ("TOTAL", "integer", ".status.desired"),
            ("ACTIVE", "integer", ".status.active"),
            ("SUCCEED", "integer", ".status.succeeded"),
            ("FAILED", "integer", ".status.failed"),
            ("AGE", "date", ".metadata.creationTimestamp"),
            ("MESSAGE", "string", ".status.message"),
        ])
    );
    // v1beta1 has no MESSAGE column.
    let beta_columns: Vec<_> = job.spec.versions[1]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        beta_columns,
        ["TOTAL", "ACTIVE", "SUCCEED", "FAILED", "AGE"]
    );

    let list = crd_named(&crds, "imagelistpulljobs.apps.kruise.io");
    assert_eq!(list.spec.scope, "Namespaced");
    assert_eq!(list.spec.names.kind, "ImageListPullJob");
    assert_eq!(
        columns(list),
        cols(&[
            ("TOTAL", "integer", ".status.desired"),
            ("SUCCEEDED", "integer", ".status.succeeded"),
            ("COMPLETED", "integer", ".status.completed"),
            ("AGE", "date", ".metadata.creationTimestamp"),
        ])
    );

    let ni = crd_named(&crds, "nodeimages.apps.kruise.io");
    assert_eq!(ni.spec.scope, "Cluster");
    assert_eq!(ni.spec.names.kind, "NodeImage");
    assert_eq!(ni.spec.names.short_names, None);
    assert_eq!(
        columns(ni),
        cols(&[
            ("DESIRED", "integer", ".status.desired"),
            ("PULLING", "integer", ".status.pulling"),
            ("SUCCEED", "integer", ".status.succeeded"),
            ("FAILED", "integer", ".status.failed"),
            ("AGE", "date", ".metadata.creationTimestamp"),
        ])
    );
}

/// Checks the rules of a Kubernetes structural schema that schemars output could break: every
/// node is typed (or int-or-string / preserve-unknown-fields), no references or combinators, no
/// defaults (upstream has none), arrays have items, objects don't mix properties with
/// additionalProperties, enums are strings.
fn assert_structural(node: &Value, path: &str) {
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    for banned in [
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "default",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "const",
    ] {
        assert!(!obj.contains_key(banned), "{path}: has `{banned}`");
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let ty = obj.get("type").and_then(Value::as_str);
    assert!(ty.is_some() || int_or_string || preserve, "{path}: no type");
    if int_or_string {
        assert_eq!(ty, None, "{path}: int-or-string with a type");
    }
    if let Some(values) = obj.get("enum") {
        assert_eq!(ty, Some("string"), "{path}: enum of non-strings");
        assert!(
            values.as_array().unwrap().iter().all(Value::is_string),
            "{path}"
        );
    }
    if obj.contains_key("properties") {
        assert!(
            !obj.contains_key("additionalProperties"),
            "{path}: properties + additionalProperties"
        );
    }
    match ty {
        Some("object") => {
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    assert_structural(v, &format!("{path}.{k}"));
                }
            }
            if let Some(extra) = obj.get("additionalProperties") {
                assert_structural(extra, &format!("{path}.*"));
            }
        }
        Some("array") => {
            let items = obj
                .get("items")
                .unwrap_or_else(|| panic!("{path}: array without items"));
            assert_structural(items, &format!("{path}[]"));
        }
        Some("string" | "integer" | "number" | "boolean") | None => {
            assert!(
                !obj.contains_key("properties") && !obj.contains_key("items"),
                "{path}"
            );
        }
        Some(other) => panic!("{path}: type {other}"),
    }
}

#[test]
fn crd_schemas_are_structural() {
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap_or_else(|| panic!("{name}: no schema"));
        let schema = serde_json::to_value(schema).unwrap();
        assert_eq!(schema["type"], "object", "{name}");
        assert_eq!(schema["required"], json!(["spec"]), "{name}");
        assert_structural(&schema, &name);
        // `metadata` must stay out of (or be a bare object in) a CRD schema.
        assert!(schema["properties"].get("metadata").is_none(), "{name}");
    }
}

#[test]
fn crd_schema_details() {
    let crds: Vec<Value> = crds()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    let props = |i: usize| {
        crds[i]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"].clone()
    };
    let (crr, job, list, ni) = (props(0), props(1), props(2), props(3));

    let container = &crr["spec"]["properties"]["containers"]["items"];
    assert_eq!(container["required"], json!(["name"]));
    assert_eq!(
        container["properties"]["statusContext"]["properties"]["containerID"]["type"],
        "string"
    );
    assert_eq!(
        crr["status"]["properties"]["phase"]["enum"],
        json!(["Pending", "Recreating", "Succeeded", "Failed", "Completed"])
    );
    // The field's own description wins over the enum type's.
    assert_eq!(
        crr["spec"]["properties"]["strategy"]["properties"]["failurePolicy"]["description"],
        "FailurePolicy decides whether to continue if one container fails to recreate.\nUnset means Fail (the webhook writes it)."
    );
    assert_eq!(
        crr["spec"]["properties"]["strategy"]["properties"]["failurePolicy"]["enum"],
        json!(["Fail", "Ignore"])
    );
    assert_eq!(
        job["spec"]["properties"]["parallelism"]["x-kubernetes-int-or-string"],
        true
    );
    assert_eq!(job["spec"]["required"], json!(["image"]));
    assert_eq!(job["status"]["required"], json!(["desired"]));
    assert_eq!(list["spec"]["required"], json!(["images"]));
    assert_eq!(list["status"]["required"], json!(["desired"]));
    // The list's inline template has the job's fields.
    let mut job_fields: Vec<_> = job["spec"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let mut list_fields: Vec<_> = list["spec"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    job_fields.retain(|k| *k != "image");
    list_fields.retain(|k| *k != "images");
    assert_eq!(job_fields, list_fields);
    assert_eq!(
        job["spec"]["properties"]["selector"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["matchExpressions", "matchLabels", "names"]
    );
    let image = &ni["spec"]["properties"]["images"]["additionalProperties"];
    assert_eq!(image["required"], json!(["tags"]));
    assert_eq!(
        image["properties"]["tags"]["items"]["required"],
        json!(["tag"])
    );
    let status = &ni["status"]["properties"];
    for counter in ["desired", "succeeded", "failed", "pulling", "waiting"] {
        assert_eq!(status[counter]["type"], "integer", "{counter}");
    }
    let tag_status =
        &status["imageStatuses"]["additionalProperties"]["properties"]["tags"]["items"];
    assert_eq!(tag_status["required"], json!(["phase", "tag"]));
    assert!(tag_status["properties"].get("imageID").is_some());
}

#[test]
fn crds_yaml_matches_snapshot() {
    let actual = crds_yaml();
    assert_eq!(actual, try_crds_yaml().unwrap());
    assert_eq!(actual.matches("\n---\n").count(), 6);
    assert!(!actual.starts_with("---"));

    let path = manifest_path("tests/snapshots/crds.yaml");
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(&path, &actual).unwrap();
    } else {
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "CRDs differ from {} (rerun with UPDATE_SNAPSHOTS=1 to accept)",
            path.display()
        );
    }

    // The YAML reads back into the very same CRDs.
    let parsed: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&actual).unwrap();
    assert_eq!(parsed, crds());
    assert_eq!(crds_yaml(), actual, "rendering is deterministic");
}

#[test]
fn node_pod_probe_is_upstreams() {
    let crds = crds();
    let npp = crd_named(&crds, "nodepodprobes.apps.kruise.io");
    assert_eq!(npp.spec.scope, "Cluster");
    assert_eq!(npp.spec.names.kind, "NodePodProbe");
    assert_eq!(npp.spec.names.singular.as_deref(), Some("nodepodprobe"));
    assert!(columns(npp).is_empty());
    // The pod IP's JSON name is upstream's `IP`; an unknown or empty state reads as Unknown.
    let obj: NodePodProbe = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodePodProbe",
        "metadata": {"name": "node-a"},
        "spec": {"podProbes": [{"name": "p", "namespace": "n", "uid": "u", "IP": "10.0.0.9",
            "probes": [{"name": "m#x", "containerName": "c",
                        "probe": {"exec": {"command": ["true"]}}}]}]},
        "status": {"podProbeStatuses": [{"name": "p", "namespace": "n", "uid": "u",
            "probeStates": [{"name": "m#x", "state": ""}, {"name": "m#y", "state": "Weird"},
                            {"name": "m#z", "state": "Succeeded"}]}]}
    }))
    .unwrap();
    assert_eq!(obj.spec.pod_probes[0].ip, "10.0.0.9");
    let states: Vec<ProbeState> = obj.status.unwrap().pod_probe_statuses[0]
        .probe_states
        .iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(
        states,
        [
            ProbeState::Unknown,
            ProbeState::Unknown,
            ProbeState::Succeeded
        ]
    );

    let ppm = crd_named(&crds, "podprobemarkers.apps.kruise.io");
    assert_eq!(ppm.spec.scope, "Namespaced");
    assert_eq!(ppm.spec.names.kind, "PodProbeMarker");
    assert_eq!(ppm.spec.names.short_names, None);
    assert!(columns(ppm).is_empty());
    let schema = serde_json::to_value(&ppm.spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], json!(["probes", "selector"]));
    let probe = &spec["properties"]["probes"]["items"];
    assert_eq!(probe["required"], json!(["containerName", "name", "probe"]));
    let status = &schema["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(status["required"], json!(["observedGeneration"]));
    // Upstream's e2e object, as its API writes it, reads back unchanged.
    let obj = json!({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "PodProbeMarker",
        "metadata": {"name": "ppm-main", "namespace": "ns"},
        "spec": {"selector": {"matchLabels": {"app": "probe"}}, "probes": [{
            "name": "check", "containerName": "main",
            "probe": {"exec": {"command": ["/bin/sh", "-c", "ps -ef"]}},
            "podConditionType": "game.kruise.io/check",
            "markerPolicy": [
                {"state": "Succeeded", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
                {"state": "Failed", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}}]}]},
        "status": {"observedGeneration": 0}
    });
    let typed: PodProbeMarker = serde_json::from_value(obj.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), obj);
}
