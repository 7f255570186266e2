//! Well-known names and values of the ContainerRecreateRequest, ImagePullJob and NodeImage kinds.
//! Values are byte-for-byte those of OpenKruise (`apis/apps/v1alpha1/containerrecreaterequest_types.go`,
//! `imagepulljob_types.go`, `apis/apps/defaults/v1alpha1.go`, the manager controllers and
//! kruise-daemon). The sidecar-terminator env names live in [`crate::api::well_known`].

use super::{CompletionPolicyType, ContainerRecreateRequestFailurePolicy, ImagePullPolicy};

// ---- ContainerRecreateRequest ---------------------------------------------------------------

/// Label (set by the webhook, immutable): UID of the Pod whose containers are recreated.
pub const LABEL_CRR_POD_UID: &str = "crr.apps.kruise.io/pod-uid";
/// Label (set by the webhook, immutable): name of the Pod's node. The agent's CRR watch selects on it.
pub const LABEL_CRR_NODE_NAME: &str = "crr.apps.kruise.io/node-name";
/// Label present (value [`CRR_ACTIVE_VALUE`]) while the CRR is not completed; the manager removes
/// it on completion, which drops the CRR out of the agent's watch.
pub const LABEL_CRR_ACTIVE: &str = "crr.apps.kruise.io/active";
/// Value of [`LABEL_CRR_ACTIVE`].
pub const CRR_ACTIVE_VALUE: &str = "true";
/// Annotation (manager-written while `Recreating`): JSON list of
/// [`ContainerRecreateRequestSyncContainerStatus`](super::ContainerRecreateRequestSyncContainerStatus)
/// for the containers that restarted after the CRR was created.
pub const ANNOTATION_CRR_SYNC_CONTAINER_STATUSES: &str =
    "crr.apps.kruise.io/sync-container-statuses";
/// Annotation (manager-written, immutable once set): RFC 3339 time at which the Pod was made
/// not-ready for `strategy.unreadyGracePeriodSeconds`.
pub const ANNOTATION_CRR_UNREADY_ACQUIRED: &str = "crr.apps.kruise.io/unready-acquired";
/// Finalizer the manager adds while it holds the Pod not-ready (only for Pods with the
/// `KruisePodReady` readiness gate). Same string as [`ANNOTATION_CRR_UNREADY_ACQUIRED`].
pub const FINALIZER_CRR_UNREADY_ACQUIRED: &str = "crr.apps.kruise.io/unready-acquired";
/// Name prefix of the CRR the sidecar terminator creates for a Pod: `sidecar-termination-<pod UID>`.
pub const SIDECAR_TERMINATION_CRR_PREFIX: &str = "sidecar-termination-";
/// Pod condition (readiness gate) the manager sets to `False` while a CRR holds the Pod not-ready.
pub const POD_CONDITION_KRUISE_POD_READY: &str = "KruisePodReady";
/// `userAgent` of the CRR entries in the `KruisePodReady` condition message
/// (`[{"userAgent":"ContainerRecreateRequest","key":"<ns>/<crr>"}]`).
pub const CRR_POD_READINESS_USER_AGENT: &str = "ContainerRecreateRequest";

/// Webhook default of `strategy.failurePolicy`.
pub const DEFAULT_CRR_FAILURE_POLICY: ContainerRecreateRequestFailurePolicy =
    ContainerRecreateRequestFailurePolicy::Fail;
/// Smallest `activeDeadlineSeconds` the webhook accepts.
pub const CRR_MIN_ACTIVE_DEADLINE_SECONDS: i64 = 3;
/// The manager completes a CRR whose `status.phase` is still empty this long after creation
/// ([`CRR_MESSAGE_DAEMON_NOT_RESPONDED`]).
pub const CRR_RESPONSE_TIMEOUT_SECONDS: i64 = 60;

/// `status.message` when the Pod is gone, deleting, or has another UID (manager).
pub const CRR_MESSAGE_POD_GONE: &str = "pod has gone";
/// `status.message` when no agent set a phase within [`CRR_RESPONSE_TIMEOUT_SECONDS`] (manager).
pub const CRR_MESSAGE_DAEMON_NOT_RESPONDED: &str = "daemon has not responded for a long time";
/// `status.message` when `activeDeadlineSeconds` elapsed since creation (manager).
pub const CRR_MESSAGE_DEADLINE_EXCEEDED: &str = "recreating has exceeded the activeDeadlineSeconds";
/// Prefix of `status.message` when the container IDs name no usable runtime (agent).
pub const CRR_MESSAGE_RUNTIME_NOT_FOUND_PREFIX: &str = "failed to find runtime service: ";
/// nodeward's final message for a CRR whose pod is not on the node as the CRR names it (its
/// namespace, `spec.podName` and `pod-uid` label must all match the kubelet's pod).
pub const CRR_MESSAGE_POD_NOT_ON_NODE_PREFIX: &str = "refusing to act: ";
/// Per-container state message when the runtime has no container of that name (agent).
pub const CRR_STATE_MESSAGE_CONTAINER_NOT_FOUND: &str = "not found container on Node";
/// Prefix of a per-container `Failed` state message when stopping failed (agent).
pub const CRR_STATE_MESSAGE_KILL_ERROR_PREFIX: &str = "kill container error: ";

/// Name of the CRR the sidecar terminator creates for the Pod with this UID.
pub fn sidecar_termination_crr_name(pod_uid: &str) -> String {
    format!("{SIDECAR_TERMINATION_CRR_PREFIX}{pod_uid}")
}

/// Message of the `Normal Killing` Pod event emitted before stopping a container for a CRR.
pub fn crr_killing_message(container: &str, crr_name: &str) -> String {
    format!("Stopping container {container} by ContainerRecreateRequest {crr_name}")
}

// ---- ImagePullJob ---------------------------------------------------------------------------

/// Finalizer the webhook/manager puts on ImagePullJobs so copied pull secrets are released.
pub const FINALIZER_DELETION_PROTECTION: &str = "apps.kruise.io/deletion-protection";
/// Workload annotation: `parallelism` of the image pre-download job created for it.
pub const ANNOTATION_IMAGE_PREDOWNLOAD_PARALLELISM: &str =
    "apps.kruise.io/image-predownload-parallelism";
/// Workload annotation: `pullPolicy.timeoutSeconds` of the image pre-download job.
pub const ANNOTATION_IMAGE_PREDOWNLOAD_TIMEOUT_SECONDS: &str =
    "apps.kruise.io/image-predownload-timeout-seconds";
/// Workload annotation: updated ready Pods required before pre-downloading.
pub const ANNOTATION_IMAGE_PREDOWNLOAD_MIN_UPDATED_READY_PODS: &str =
    "apps.kruise.io/image-predownload-min-updated-ready-pods";

/// Namespace the agent may read pull secrets from; the manager copies job secrets into it.
pub const KRUISE_DAEMON_CONFIG_NAMESPACE: &str = "kruise-daemon-config";
/// Env overriding [`KRUISE_DAEMON_CONFIG_NAMESPACE`] (manager side).
pub const ENV_KRUISE_DAEMON_CONFIG_NS: &str = "KRUISE_DAEMON_CONFIG_NS";
/// Annotation on a copied secret: `<namespace>/<name>` of its source secret.
pub const ANNOTATION_SECRET_SOURCE_KEY: &str = "imagepulljobs.kruise.io/source-key";
/// Annotation on a copied secret: sorted, comma-joined `<ns>/<job>` of the jobs using it.
pub const ANNOTATION_SECRET_REFERENCES: &str = "imagepulljobs.kruise.io/references";
/// Annotation on a copied secret marking how it is managed (value [`SECRET_MODE_BATCH`]).
pub const ANNOTATION_SECRET_MODE: &str = "imagepulljobs.kruise.io/mode";
/// Value of [`ANNOTATION_SECRET_MODE`].
pub const SECRET_MODE_BATCH: &str = "batch";
/// Deprecated label on copied secrets (older managers): UID of the source secret.
pub const LABEL_SECRET_SOURCE_UID: &str = "imagepulljobs.kruise.io/source-uid";

/// Webhook default of `completionPolicy.type`.
pub const DEFAULT_COMPLETION_POLICY_TYPE: CompletionPolicyType = CompletionPolicyType::Always;
/// Webhook default of `pullPolicy.timeoutSeconds` / a NodeImage tag's `pullPolicy.timeoutSeconds`.
pub const DEFAULT_PULL_TIMEOUT_SECONDS: i32 = 600;
/// Webhook default of `pullPolicy.backoffLimit` / a NodeImage tag's `pullPolicy.backoffLimit`.
pub const DEFAULT_PULL_BACKOFF_LIMIT: i32 = 3;
/// Webhook default of `imagePullPolicy` (v1.5.2+).
pub const DEFAULT_IMAGE_PULL_POLICY: ImagePullPolicy = ImagePullPolicy::IfNotPresent;
/// `parallelism` used by the manager when unset (not written back by any webhook).
pub const DEFAULT_PARALLELISM: i32 = 1;

/// `status.message` of a finished job (manager).
pub const IMAGE_PULL_JOB_MESSAGE_COMPLETED: &str = "job has completed";
/// `status.message` of a running job with nothing finished yet (manager).
pub const IMAGE_PULL_JOB_MESSAGE_NO_PROGRESS: &str = "job is running, no progress";
/// `status.message` of an `Always` job past `activeDeadlineSeconds` (manager).
pub const IMAGE_PULL_JOB_MESSAGE_DEADLINE_EXCEEDED: &str = "job exceeds activeDeadlineSeconds";

/// `status.message` of a running job: `job is running, progress 60.0%` for 6 of 10 finished
/// (succeeded + failed); [`IMAGE_PULL_JOB_MESSAGE_NO_PROGRESS`] when nothing finished.
pub fn image_pull_job_progress_message(finished: i32, desired: i32) -> String {
    if finished <= 0 || desired <= 0 {
        return IMAGE_PULL_JOB_MESSAGE_NO_PROGRESS.to_string();
    }
    let pct = f64::from(finished) * 100.0 / f64::from(desired);
    format!("job is running, progress {pct:.1}%")
}

// ---- NodeImage ------------------------------------------------------------------------------

/// Annotation always added to the CRI pull's sandbox config (some runtimes crash on a nil one).
pub const ANNOTATION_PULLING_IMAGE_BY: &str = "apps.kruise.io/pulling-image-by";
/// kruise-daemon's value of [`ANNOTATION_PULLING_IMAGE_BY`].
pub const PULLING_IMAGE_BY_KRUISE_DAEMON: &str = "kruise-daemon";
/// Label of test NodeImages that have no Node and are never garbage-collected by the manager.
pub const LABEL_FAKE_NODE_IMAGE: &str = "apps.kruise.io/fake-nodeimage";
/// Most images one NodeImage may list (validating webhook).
pub const NODE_IMAGE_MAX_IMAGES: usize = 256;
/// The manager fails a tag the agent has not reported within this long of its `createdAt`
/// (v1.5+; 60 s in v1.4) with [`NODE_IMAGE_MESSAGE_NOT_RESPONDED`].
pub const NODE_IMAGE_RESPONSE_TIMEOUT_SECONDS: i64 = 600;
/// Manager default of `--default-ttlseconds-for-always-nodeimage`, added to an `Always` job's
/// tag TTL.
pub const DEFAULT_TTL_SECONDS_FOR_ALWAYS_NODE_IMAGE: i32 = 300;

/// Tag status message when the agent did not report in time (manager).
pub const NODE_IMAGE_MESSAGE_NOT_RESPONDED: &str = "node has not responded for a long time";
/// Tag status message when `activeDeadlineSeconds` elapsed (agent and manager).
pub const NODE_IMAGE_MESSAGE_DEADLINE_EXCEEDED: &str = "pulling exceeds the activeDeadlineSeconds";
/// Event reason on the NodeImage after a successful pull.
pub const EVENT_REASON_PULL_IMAGE_SUCCEED: &str = "PullImageSucceed";
/// Event reason on the NodeImage (and the owning jobs) after a failed pull.
pub const EVENT_REASON_PULL_IMAGE_FAILED: &str = "PullImageFailed";

/// Event reason on a Pod whose NodePodProbe probe succeeded (kruise-daemon's podprobe).
pub const EVENT_REASON_PROBE_SUCCEEDED: &str = "KruiseProbeSucceeded";
/// Event reason on a Pod whose NodePodProbe probe failed.
pub const EVENT_REASON_PROBE_FAILED: &str = "KruiseProbeFailed";
/// The longest probe message kept in a NodePodProbe status (characters).
pub const MAX_PROBE_MESSAGE_LENGTH: usize = 1024;
