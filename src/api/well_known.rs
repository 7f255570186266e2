//! Well-known names. Values are byte-for-byte those of OpenKruise (`apis/apps/v1alpha1/well_known_labels.go`)
//! and of the kubelet (`pkg/kubelet/kuberuntime/labels.go`).

/// Env marking a sidecar to stop when the Job's main containers have exited.
pub const ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT: &str = "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT";
/// Env marking a sidecar (virtual-kubelet nodes) to swap to a quick-exit image.
pub const ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE: &str =
    "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE";
/// Env marking a sidecar whose exit code is ignored for the Job's verdict.
pub const ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE: &str =
    "KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE";

/// Sandbox annotation (from the Pod's annotations) carrying the pod's restart policy when the
/// agent has no access to the Pod object.
pub const ANNOTATION_RESTART_POLICY: &str = "nodeward.io/restart-policy";

/// Kubelet labels on sandboxes and containers.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Kubelet annotations on containers.
pub const ANNOTATION_CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const ANNOTATION_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const ANNOTATION_PRESTOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";
/// The container's ports as JSON (`[{"name","containerPort","protocol"}]`), when it has any.
pub const ANNOTATION_CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
pub const ANNOTATION_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
pub const ANNOTATION_TERMINATION_MESSAGE_POLICY: &str =
    "io.kubernetes.container.terminationMessagePolicy";

/// Kubelet's default grace period when the annotation is absent.
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;
/// Kubelet never stops a container with less than this grace (`minimumGracePeriodInSeconds`).
pub const MINIMUM_GRACE_SECONDS: i64 = 2;

/// True when an env value means "true" the way OpenKruise reads it: Go's
/// `strings.EqualFold(value, "true")`, case-insensitive and untrimmed.
pub fn env_true(value: &str) -> bool {
    value.eq_ignore_ascii_case("true")
}
