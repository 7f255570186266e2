//! Records kept in the journal. Each is stored as JSON so that a newer agent can read an older
//! journal and vice versa: every struct takes `#[serde(default)]` and unknown fields are ignored.
//! Times are stored as unix milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// `Action::kind` for stopping the sidecars of a finished Job pod.
pub const KIND_STOP_SIDECAR: &str = "stop_sidecar";

/// `Action::kind` for stopping one container on behalf of a ContainerRecreateRequest.
pub const KIND_RECREATE_CONTAINER: &str = "recreate_container";

/// `Action::kind` for stopping a container whose env from pod metadata is stale (in-place update).
pub const KIND_RESTART_FOR_METADATA_ENV: &str = "restart_for_metadata_env";

/// `Outcome::result` values used by the agent. The field is a free string so that new results do
/// not break older readers.
pub const RESULT_STOPPED: &str = "stopped";
pub const RESULT_FAILED: &str = "failed";
pub const RESULT_SKIPPED: &str = "skipped";

/// Identity of a pod as the runtime reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One container an action is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRef {
    pub name: String,
    pub id: String,
}

/// A decided action, recorded before it is carried out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Action {
    /// What to do, e.g. [`KIND_STOP_SIDECAR`].
    pub kind: String,
    pub pod: PodInfo,
    pub containers: Vec<ContainerRef>,
    #[serde(with = "unix_millis")]
    pub decided_at: SystemTime,
    /// Human-readable reason for the decision.
    pub reason: String,
    /// Free-form decision inputs (restart policy, exit codes of the main containers, ...).
    pub inputs: serde_json::Value,
}

impl Default for Action {
    fn default() -> Self {
        Self {
            kind: String::new(),
            pod: PodInfo::default(),
            containers: Vec::new(),
            decided_at: UNIX_EPOCH,
            reason: String::new(),
            inputs: serde_json::Value::Null,
        }
    }
}

/// What happened to one container of an action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOutcome {
    pub name: String,
    pub id: String,
    pub exit_code: Option<i32>,
    /// The sidecar's exit code does not count towards the pod's result.
    pub exit_code_ignored: bool,
    /// From the last main container's exit to the StopContainer call.
    pub exit_to_stop_ms: Option<f64>,
    /// From the last main container's exit to this container's exit.
    pub exit_to_exit_ms: Option<f64>,
    /// What happened to the preStop hook (free-form: "none", "ran", "timed out", ...).
    pub prestop: String,
}

/// The result of an action, recorded once it is finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    /// [`RESULT_STOPPED`], [`RESULT_FAILED`], [`RESULT_SKIPPED`] or a newer value.
    pub result: String,
    pub message: String,
    pub containers: Vec<ContainerOutcome>,
    #[serde(with = "unix_millis")]
    pub finished_at: SystemTime,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            result: String::new(),
            message: String::new(),
            containers: Vec::new(),
            finished_at: UNIX_EPOCH,
        }
    }
}

/// A finished action: the decision and its outcome, numbered in completion order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// Strictly increasing over the journal's life (also across restarts and pruning).
    pub seq: u64,
    pub key: String,
    pub action: Action,
    pub outcome: Outcome,
}

/// Stored value of the pending table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct PendingRecord {
    /// Order of decision; `pending()` returns oldest first.
    pub decision: u64,
    pub action: Action,
}

/// Milliseconds since the unix epoch, saturating at 0 for earlier times.
pub(super) fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(super) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// Serde adapter: `SystemTime` as unix milliseconds (u64).
mod unix_millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::to_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(super::from_millis)
    }
}
