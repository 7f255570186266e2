//! What the sidecar terminator tells the world.
//!
//! - After a stop: the journal's outcome (which feeds the local API's followers), the metrics and
//!   one log line per sidecar ([`finished`]).
//! - Upstream (cluster mode), from the journal's outbox, exactly once: for each completed stop an
//!   Event (reason `SidecarTerminated`) on the Pod and the Pod condition `SidecarTerminated=True`.
//!   An entry leaves the outbox only after both writes succeeded; both are idempotent (the Event
//!   name derives from the action key, the condition is merged by type), so a crash between
//!   delivery and acknowledgement repeats nothing visible. With ignore-exit-code sidecars, the
//!   Job's verdict is also written before the stop ([`patch_verdict`]).
//! - The local API's view of the pods and their decisions ([`pods`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_cri::v1::ContainerStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::Config;
use super::Done;
use super::decide::{Decision, GuardStep, decide, facts};
use crate::api::role::Role;
use crate::cluster::events::{self, EventType, Note};
use crate::cluster::{COMPONENT, is_not_found};
use crate::cri::kubelet::RestartPolicy;
use crate::journal::{self, Action, Event, Journal, PodInfo};
use crate::node::model::{NodeModel, State};
use crate::report::pb;

/// Condition type and Event reason, as OpenKruise v1.6+ writes them.
pub const SIDECAR_TERMINATED: &str = "SidecarTerminated";

/// The decision's inputs, kept with the action in the journal (`Action::inputs`). A field an
/// older record lacks reads as empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inputs {
    pub restart_policy: Option<RestartPolicy>,
    pub containers: Vec<InputsContainer>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputsContainer {
    pub name: String,
    pub id: String,
    pub role: Option<Role>,
    pub state: String,
    pub exit_code: Option<i32>,
}

/// A stable, DNS-safe Event name for an action: `<pod>.<16 hex digits of the key's hash>`.
pub fn event_name(pod_name: &str, key: &str) -> String {
    let h = crate::hash::fnv1a_64(key.bytes());
    let mut prefix: String = pod_name.chars().take(253 - 17).collect();
    prefix.push('.');
    format!("{prefix}{h:016x}")
}

/// The Event's message: which sidecars were stopped and how they ended.
pub fn message(ev: &Event) -> String {
    let parts: Vec<String> = ev
        .outcome
        .containers
        .iter()
        .map(|c| {
            let code = match (c.exit_code, c.exit_code_ignored) {
                (Some(code), true) => format!("exit {code}, ignored"),
                (Some(code), false) => format!("exit {code}"),
                (None, _) => "gone".into(),
            };
            match c.exit_to_stop_ms {
                Some(ms) => format!(
                    "{} ({code}, stopped {ms:.1} ms after the main containers)",
                    c.name
                ),
                None => format!("{} ({code})", c.name),
            }
        })
        .collect();
    format!("nodeward stopped sidecar(s) {}", parts.join(", "))
}

/// The Event of a completed stop, named after the action (a redelivery finds it written).
fn note(ev: &Event) -> Note {
    let pod = &ev.action.pod;
    let object = crate::cluster::events::pod_reference(&pod.namespace, &pod.name, Some(&pod.uid));
    Note {
        name: Some(event_name(&pod.name, &ev.key)),
        at: ev.outcome.finished_at,
        ..Note::new(
            object,
            EventType::Normal,
            SIDECAR_TERMINATED,
            "StopContainer",
            message(ev),
        )
    }
}

/// With `KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE` sidecars, OpenKruise v1.9 sets the pod phase
/// from the main containers alone: Succeeded when they all exited 0, else Failed. `None` when no
/// stopped sidecar ignores its exit code.
pub fn job_phase(ev: &Event) -> Option<&'static str> {
    let ignoring = ev.outcome.containers.iter().any(|c| c.exit_code_ignored);
    phase_from_inputs(&ev.action, ignoring)
}

fn phase_from_inputs(action: &Action, ignoring: bool) -> Option<&'static str> {
    if !ignoring {
        return None;
    }
    let inputs = Inputs::deserialize(&action.inputs).ok()?;
    // Without every main container's exit code there is no verdict to write.
    let codes: Option<Vec<i32>> = inputs
        .containers
        .iter()
        .filter(|c| c.role == Some(Role::Main))
        .map(|c| c.exit_code)
        .collect();
    let all_ok = codes?.iter().all(|c| *c == 0);
    Some(if all_ok { "Succeeded" } else { "Failed" })
}

/// The phase and condition patch to write before stopping ignore-exit-code sidecars; `None` when no
/// target ignores its exit code or a main container's exit code is unknown.
pub fn verdict_patch(action: &Action, ignoring: bool) -> Option<serde_json::Value> {
    let phase = phase_from_inputs(action, ignoring)?;
    let mut patch = condition_at(action.decided_at);
    patch["status"]["phase"] = phase.into();
    Some(patch)
}

/// Write the verdict before stopping, retried within [`VERDICT_BUDGET`] (each call bounded by
/// [`VERDICT_CALL_TIMEOUT`]) so that an unreachable API delays the stop by that much at most; the
/// guard ([`guard_verdict`]) and the outbox write it again in any case. A stop before the verdict
/// lands lets the kubelet report the sidecar's exit code as the pod's phase, which the verdict then
/// cannot change.
pub async fn patch_verdict(client: &kube::Client, pod: &PodInfo, patch: &serde_json::Value) {
    match tokio::time::timeout(VERDICT_BUDGET, write_verdict(client, pod, patch)).await {
        Ok(_) => debug!(pod = %pod.name, "job verdict written before stopping"),
        Err(_) => warn!(
            pod = %pod.name,
            budget = ?VERDICT_BUDGET,
            "job verdict not written before stopping; stopping anyway, the report retries"
        ),
    }
}

/// Write the verdict until a write succeeds (the caller bounds the time); the phase it replaced,
/// if it replaced one.
async fn write_verdict(
    client: &kube::Client,
    pod: &PodInfo,
    patch: &serde_json::Value,
) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let mut delays = crate::backoff::exponential(VERDICT_RETRY_MIN, VERDICT_RETRY_MAX);
    loop {
        let call = patch_status_keeping_terminal_phase(&pods, pod, patch.clone());
        let error = match tokio::time::timeout(VERDICT_CALL_TIMEOUT, call).await {
            Ok(Ok(replaced)) => return replaced,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {VERDICT_CALL_TIMEOUT:?}"),
        };
        debug!(pod = %pod.name, %error, "job verdict not written yet; retrying");
        tokio::time::sleep(delays.next().unwrap_or(VERDICT_RETRY_MAX)).await;
    }
}

/// Keep the verdict in place until the kubelet has judged the stopped sidecars' exits with it in
/// view. The kubelet's periodic status reconcile (every 10 s) writes its own cached phase
/// (Running) back over a phase it did not set, until it sees a container exit; its judgement of
/// the exit keeps a terminal phase only if the API shows one then. So while `sidecars` stop, the
/// pod is watched and a phase that is not terminal gets the verdict again. The guard ends when
/// the API shows every sidecar terminated under the verdict, when the kubelet wrote the other
/// terminal phase first (logged), when the pod is gone, or [`VERDICT_SETTLE`] after `stopped`
/// fires (or is dropped).
pub async fn guard_verdict(
    client: kube::Client,
    pod: PodInfo,
    patch: serde_json::Value,
    sidecars: Vec<String>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use futures::TryStreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let Some(verdict) = patch["status"]["phase"].as_str().map(str::to_owned) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    // The first list is read from etcd, not the watch cache: a cached view from before the
    // verdict would look like the kubelet's revert and write the verdict once more.
    let cfg = watcher::Config::default()
        .fields(&format!("metadata.name={}", pod.name))
        .list_semantic(watcher::ListSemantic::MostRecent);
    let watch = async {
        let stream = watcher(api, cfg).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        loop {
            let seen = match stream.try_next().await {
                Ok(Some(seen)) => seen,
                Ok(None) => return,
                Err(e) => {
                    debug!(pod = %pod.name, error = %e, "verdict guard: watch interrupted");
                    continue;
                }
            };
            let status = seen.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref());
            let reported = sidecars.iter().all(|name| {
                status
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        &c.name == name
                            && c.state.as_ref().is_some_and(|st| st.terminated.is_some())
                    })
            });
            let same_pod = seen.metadata.uid.as_deref() == Some(pod.uid.as_str());
            match super::decide::guard_step(same_pod, phase, &verdict, reported) {
                GuardStep::Watch => {}
                GuardStep::Settled | GuardStep::Gone => return,
                // An event older than the guard's own last write shows the replaced phase
                // again; the write reads the pod first and changes nothing then.
                GuardStep::Rewrite => {
                    if let Some(replaced) = write_verdict(&client, &pod, &patch).await {
                        info!(
                            phase = replaced,
                            "job verdict replaced by the kubelet's cached phase; writing it again"
                        );
                    }
                }
                GuardStep::Lost => {
                    warn!(
                        phase = phase.unwrap_or_default(),
                        "the kubelet set a terminal phase before the job verdict reached it"
                    );
                    return;
                }
            }
        }
    };
    let settled = async {
        let _ = stopped.await;
        tokio::time::sleep(VERDICT_SETTLE).await;
    };
    let span = tracing::info_span!(
        "job verdict guard",
        pod_namespace = %pod.namespace,
        pod_name = %pod.name,
        pod_uid = %pod.uid,
        verdict = %verdict,
    );
    tokio::select! {
        () = watch.instrument(span) => {}
        () = settled => {}
    }
}

/// How long the pre-stop verdict may hold the stop back in all.
const VERDICT_BUDGET: Duration = Duration::from_secs(15);
/// One read-and-patch of the verdict.
const VERDICT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
const VERDICT_RETRY_MIN: Duration = Duration::from_millis(200);
const VERDICT_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long the guard watches after the stop: longer than the kubelet's status reconcile period
/// (10 s) and its container-exit relist (1 s).
const VERDICT_SETTLE: Duration = Duration::from_secs(15);

/// Never change a phase that is already terminal: a pod the kubelet (or a user) already marked
/// Failed stays Failed, as upstream's `markJobPodTerminated` checks. `current` is the pod's phase.
/// The phase the patch replaces: `current` when the patch sets another phase and stays so.
pub fn keep_terminal_phase(patch: &mut serde_json::Value, current: Option<&str>) -> Option<String> {
    let status = patch.get_mut("status")?.as_object_mut()?;
    let phase = status.get("phase")?.as_str()?;
    if matches!(current, Some("Succeeded" | "Failed")) {
        status.remove("phase");
        return None;
    }
    (current != Some(phase)).then(|| current.unwrap_or_default().to_owned())
}

/// Patch the status of this pod (`pod`: its uid too); a phase in the patch is dropped when the
/// pod's is already terminal. Read and written as one: the write carries the resourceVersion
/// read, so a phase the kubelet set in between is seen (Conflict, read again) rather than
/// overwritten. The phase it replaced, if it wrote one; nothing for a pod that is gone or
/// replaced by another of the same name.
async fn patch_status_keeping_terminal_phase(
    pods: &Api<Pod>,
    pod: &PodInfo,
    patch: serde_json::Value,
) -> Result<Option<String>, kube::Error> {
    crate::cluster::retry_on_conflict(5, || {
        let mut patch = patch.clone();
        async move {
            let Some(current) = pods.get_opt(&pod.name).await? else {
                return Ok(None);
            };
            if current.metadata.uid.as_deref() != Some(pod.uid.as_str()) {
                return Ok(None);
            }
            let phase = current.status.as_ref().and_then(|s| s.phase.as_deref());
            let replaced = keep_terminal_phase(&mut patch, phase);
            patch["metadata"]["resourceVersion"] = current.metadata.resource_version.into();
            let found = patch_status(pods, &pod.name, patch).await?.is_some();
            Ok(replaced.filter(|_| found))
        }
    })
    .await
}

/// A strategic merge patch of the pod's status; a pod that is gone is `Ok(None)`.
async fn patch_status(
    pods: &Api<Pod>,
    name: &str,
    patch: serde_json::Value,
) -> Result<Option<Pod>, kube::Error> {
    match pods
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(pod) => Ok(Some(pod)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The strategic merge patch adding the `SidecarTerminated` condition (merged by type), and the
/// phase when [`job_phase`] says so.
pub fn condition_patch(ev: &Event) -> serde_json::Value {
    let mut patch = condition_only(ev);
    if let Some(phase) = job_phase(ev) {
        patch["status"]["phase"] = phase.into();
    }
    patch
}

fn condition_only(ev: &Event) -> serde_json::Value {
    condition_at(ev.outcome.finished_at)
}

fn condition_at(at: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "status": {
            "conditions": [{
                "type": SIDECAR_TERMINATED,
                "status": "True",
                "reason": SIDECAR_TERMINATED,
                "message": "Terminated by nodeward",
                "lastTransitionTime": Time(
                    k8s_openapi::jiff::Timestamp::try_from(at)
                        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                ),
            }]
        }
    })
}

#[derive(Debug, thiserror::Error)]
#[error("delivering {what} for {pod}: {source}")]
pub struct DeliveryError {
    what: &'static str,
    pod: String,
    #[source]
    source: kube::Error,
}

impl DeliveryError {
    /// The API refused the request as it is (malformed, invalid, too large): sending it again
    /// can never succeed. Anything else (the API unreachable or overloaded, a conflict, a
    /// timeout, a missing permission an operator can grant) may.
    pub fn is_permanent(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if matches!(s.code, 400 | 413 | 415 | 422))
    }

    /// The failure is the API's, not this report's (unreachable, overloaded, failing): no other
    /// report would get through now either. Otherwise (a permission, a conflict) it is this
    /// report's own, and the others go on.
    pub fn is_api_wide(&self) -> bool {
        match &self.source {
            kube::Error::Api(s) => s.code == 429 || s.code >= 500,
            _ => true,
        }
    }
}

/// Deliver one outbox entry. A Pod that no longer exists has nothing to report to: delivered.
/// Entries of other kinds than sidecar stops are acknowledged without a write.
pub async fn deliver(client: &kube::Client, node: &str, ev: &Event) -> Result<(), DeliveryError> {
    // Container recreation reports through the CRR's status and its own Events.
    if ev.action.kind != crate::journal::KIND_STOP_SIDECAR {
        return Ok(());
    }
    let pod = &ev.action.pod;
    let err = |what| {
        let pod = format!("{}/{}", pod.namespace, pod.name);
        move |source| DeliveryError { what, pod, source }
    };
    let writer = events::EventWriter::new(client.clone(), COMPONENT, Some(node.to_string()));
    match writer.write(&note(ev)).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(err("Event")(e)),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    patch_status_keeping_terminal_phase(&pods, pod, condition_patch(ev))
        .await
        .map(|_| ())
        .map_err(err("pod condition"))
}

/// Deliver the outbox until the process ends: at start, whenever `wake` is notified (a new
/// entry), and with backoff (1 s → 60 s) while the API is unreachable or failing
/// ([`DeliveryError::is_api_wide`]). An entry the API refuses for good
/// ([`DeliveryError::is_permanent`]) is dropped with a warning and counted; one refused for a
/// reason of its own (a permission, a conflict) backs off on its own (1 s → 60 s) while the
/// entries behind it are delivered. Neither holds back the rest.
pub async fn run_outbox(
    client: kube::Client,
    node: String,
    journal: Journal,
    wake: std::sync::Arc<Notify>,
    metrics: crate::telemetry::metrics::Metrics,
) {
    const BATCH: usize = 100;
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);
    let mut delays = crate::backoff::exponential(MIN, MAX);
    // Reports that failed on their own account, by sequence number: consecutive failures and
    // when to try again. The others are delivered meanwhile.
    let mut waiting: HashMap<u64, (u32, Instant)> = HashMap::new();
    loop {
        let j = journal.clone();
        let limit = BATCH.saturating_add(waiting.len());
        let batch = match tokio::task::spawn_blocking(move || j.outbox(limit)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the outbox");
                Vec::new()
            }
            Err(e) => {
                warn!(error = %e, "outbox reader failed");
                Vec::new()
            }
        };
        waiting.retain(|seq, _| batch.iter().any(|ev| ev.seq == *seq));
        let (mut api_down, mut done) = (None, 0usize);
        for ev in &batch {
            let now = Instant::now();
            if waiting.get(&ev.seq).is_some_and(|(_, at)| *at > now) {
                continue;
            }
            let result = match deliver(&client, &node, ev).await {
                Ok(()) => {
                    debug!(seq = ev.seq, key = %ev.key, "report delivered");
                    "delivered"
                }
                Err(e) if e.is_permanent() => {
                    warn!(error = %e, seq = ev.seq, key = %ev.key, "report refused by the API for good; dropped");
                    "dropped"
                }
                Err(e) if e.is_api_wide() => {
                    let delay = delays.next().unwrap_or(MAX);
                    warn!(error = %e, seq = ev.seq, retry_in_ms = delay.as_millis() as u64, "report not delivered; will retry");
                    api_down = Some(delay);
                    break;
                }
                Err(e) => {
                    let failures = waiting.get(&ev.seq).map_or(1, |(n, _)| n.saturating_add(1));
                    let delay = crate::backoff::after(failures, MIN, MAX);
                    warn!(error = %e, seq = ev.seq, key = %ev.key, failures, retry_in_ms = delay.as_millis() as u64,
                        "report not delivered; will retry it, the others go on");
                    waiting.insert(ev.seq, (failures, now + delay));
                    continue;
                }
            };
            metrics.report(result);
            waiting.remove(&ev.seq);
            done += 1;
            let j = journal.clone();
            let seq = ev.seq;
            let _ = tokio::task::spawn_blocking(move || j.ack_outbox(&[seq])).await;
        }
        if let Some(delay) = api_down {
            tokio::time::sleep(delay).await;
            continue;
        }
        delays = crate::backoff::exponential(MIN, MAX);
        if batch.len() >= limit && done > 0 {
            continue;
        }
        // New entries wake us; so does the next report due again; a periodic pass catches
        // anything else.
        let next = waiting
            .values()
            .map(|(_, at)| at.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(OUTBOX_PERIOD)
            .min(OUTBOX_PERIOD);
        let _ = tokio::time::timeout(next, wake.notified()).await;
    }
}

/// The outbox is looked at at least this often.
const OUTBOX_PERIOD: Duration = Duration::from_secs(30);

/// When the pod's main containers finished: the latest main exit, each by the earliest evidence
/// of it — the runtime's `finishedAt`, or when the agent saw it (under load the runtime may record
/// the exit after the agent already acted on it).
pub fn mains_finished_at(model: &NodeModel, uid: &str) -> Option<SystemTime> {
    let facts = facts(model, uid)?;
    facts
        .containers
        .iter()
        .filter(|c| c.role == Some(Role::Main))
        .map(|c| {
            let rec = model.container(&c.id)?;
            let runtime = (rec.finished_at > 0)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(rec.finished_at as u64));
            let seen = rec.exit_observed.map(|(_, at)| at);
            match (runtime, seen) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// Milliseconds from `from` to `to`, to the microsecond.
fn ms(from: Option<SystemTime>, to: SystemTime) -> Option<f64> {
    to.duration_since(from?)
        .ok()
        .map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0)
}

/// The one log line per stopped (or failed) sidecar, with the pod and container ids.
macro_rules! stop_line {
    ($level:ident, $req:expr, $o:expr, $co:expr, $($rest:tt)+) => {
        $level!(
            pod_namespace = %$req.pod.namespace,
            pod_name = %$req.pod.name,
            pod_uid = %$req.pod.uid,
            container = %$req.target.name,
            container_id = %$req.target.id,
            decision = "stop_sidecar",
            prestop = %$o.pre_stop,
            exit_to_stop_ms = $co.exit_to_stop_ms,
            $($rest)+
        )
    };
}

/// A stop finished: one log line and the metrics per sidecar; when every sidecar stopped, the
/// outcome recorded in the journal (off the event loop: an fsync shared with concurrent writes)
/// and the outbox reporter woken. A failed stop is not recorded: the next relist decides again and
/// the same key is re-issued. Returns the final statuses the node model should take.
pub fn finished(
    cfg: &Config,
    done: Done,
    mains_at: Option<SystemTime>,
    now: SystemTime,
) -> Vec<ContainerStatus> {
    let Some(outcomes) = done.outcomes else {
        debug!(key = %done.key, "action already completed before; not repeated");
        return Vec::new();
    };
    let mut statuses = Vec::new();
    let mut containers = Vec::new();
    let mut failed = false;
    for o in &outcomes {
        let req = &o.request;
        let mut co = journal::ContainerOutcome {
            name: req.target.name.clone(),
            id: req.target.id.clone(),
            exit_code: None,
            exit_code_ignored: req.target.ignore_exit_code,
            exit_to_stop_ms: ms(mains_at, o.stop_sent_at),
            exit_to_exit_ms: None,
            prestop: o.pre_stop.to_string(),
        };
        match &o.result {
            Ok(final_status) => {
                if let Some(st) = final_status {
                    co.exit_code = Some(st.exit_code);
                    co.exit_to_exit_ms = (st.finished_at > 0)
                        .then(|| {
                            SystemTime::UNIX_EPOCH + Duration::from_nanos(st.finished_at as u64)
                        })
                        .and_then(|f| ms(mains_at, f));
                    statuses.push(st.clone());
                }
                cfg.metrics.sidecar_terminated(journal::RESULT_STOPPED);
                if let Some(v) = co.exit_to_stop_ms {
                    cfg.metrics.observe_latency("exit_to_stop", v / 1000.0);
                }
                if let Some(v) = co.exit_to_exit_ms {
                    cfg.metrics
                        .observe_latency("exit_to_sidecar_exit", v / 1000.0);
                }
                stop_line!(
                    info,
                    req,
                    o,
                    co,
                    runtime = %cfg.runtime,
                    grace_s = crate::cri::client::grace_seconds(o.stop_grace),
                    exit_to_sidecar_exit_ms = co.exit_to_exit_ms,
                    sidecar_exit_code = co.exit_code,
                    exit_code_ignored = req.target.ignore_exit_code,
                    result = "stopped",
                    "sidecar stopped"
                );
            }
            Err(e) => {
                cfg.metrics.sidecar_terminated(journal::RESULT_FAILED);
                failed = true;
                stop_line!(
                    warn,
                    req,
                    o,
                    co,
                    error = %e,
                    result = "failed",
                    "stopping sidecar failed; retrying at the next relist"
                );
            }
        }
        containers.push(co);
    }
    if let Some(e) = &done.journal_error {
        warn!(key = %done.key, error = %e, "journal could not record the decision; acted anyway");
    }
    if failed {
        return statuses;
    }
    let outcome = journal::Outcome {
        result: journal::RESULT_STOPPED.into(),
        message: String::new(),
        containers,
        finished_at: now,
    };
    let cfg = cfg.clone();
    let key = done.key;
    tokio::spawn(async move {
        match cfg.commits.complete(key.clone(), outcome).await {
            Ok(event) => {
                let _ = cfg.live.send(crate::report::api::to_pb(&event));
                if let Some((_, reporter)) = &cfg.cluster {
                    reporter.notify_one();
                }
            }
            Err(e) => warn!(key = %key, error = %e, "journal could not record the outcome"),
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(stats) = cfg.journal.stats() {
                cfg.metrics.set_journal(&stats);
            }
        })
        .await;
    });
    statuses
}

/// The local API's view: every pod with its containers' roles and the terminator's decision.
pub fn pods(model: &NodeModel) -> Vec<pb::Pod> {
    let mut pods: Vec<pb::Pod> = model
        .pods()
        .filter_map(|p| {
            let facts = facts(model, &p.pod.uid)?;
            let decision = match decide(&facts) {
                Decision::Hold(h) => h.as_str().to_string(),
                Decision::Stop(_) => "stop".to_string(),
            };
            let containers = facts
                .containers
                .iter()
                .filter_map(|f| Some((f.role, model.container(&f.id)?)))
                .map(|(role, c)| pb::Container {
                    name: c.meta.name.clone(),
                    id: c.id.clone(),
                    role: match role {
                        Some(Role::Main) => "main",
                        Some(Role::Sidecar { .. }) => "sidecar",
                        Some(Role::Other) | None => "other",
                    }
                    .into(),
                    state: c.state.as_str().into(),
                    exit_code: match c.state {
                        State::Exited { code } => code,
                        _ => None,
                    },
                    restart_count: c.meta.restart_count,
                    exit_code_ignored: role
                        == Some(Role::Sidecar {
                            ignore_exit_code: true,
                        }),
                    exit_source: c
                        .exit_observed
                        .map(|(s, _)| s.as_str().to_string())
                        .unwrap_or_default(),
                })
                .collect();
            Some(pb::Pod {
                namespace: p.pod.namespace.clone(),
                name: p.pod.name.clone(),
                uid: p.pod.uid.clone(),
                restart_policy: p
                    .restart_policy
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_default(),
                sidecar_decision: decision,
                containers,
            })
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{ContainerOutcome, Outcome};

    #[test]
    fn a_terminal_phase_is_never_changed() {
        let patch = || serde_json::json!({"status": {"phase": "Succeeded", "conditions": [{"type": "SidecarTerminated"}]}});
        for (current, kept, replaced) in [
            (Some("Running"), true, Some("Running")),
            (None, true, Some("")),
            (Some("Failed"), false, None),
            (Some("Succeeded"), false, None),
        ] {
            let mut p = patch();
            let r = keep_terminal_phase(&mut p, current);
            assert_eq!(r.as_deref(), replaced, "{current:?}");
            assert_eq!(p["status"].get("phase").is_some(), kept, "{current:?}");
            assert!(p["status"]["conditions"].is_array(), "the condition stays");
        }
    }

    fn ev() -> Event {
        Event {
            seq: 7,
            key: "stop_sidecar/u1/abc".into(),
            action: Action {
                kind: "stop_sidecar".into(),
                pod: PodInfo {
                    namespace: "batch".into(),
                    name: "job-x".into(),
                    uid: "u1".into(),
                },
                ..Default::default()
            },
            outcome: Outcome {
                result: "stopped".into(),
                containers: vec![ContainerOutcome {
                    name: "proxy".into(),
                    id: "abc".into(),
                    exit_code: Some(143),
                    exit_code_ignored: true,
                    exit_to_stop_ms: Some(1.25),
                    ..Default::default()
                }],
                finished_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                ..Default::default()
            },
        }
    }

    #[test]
    fn event_names_are_stable_and_distinct() {
        let a = event_name("job-x", "stop_sidecar/u1/abc");
        assert_eq!(a, event_name("job-x", "stop_sidecar/u1/abc"));
        assert_ne!(a, event_name("job-x", "stop_sidecar/u1/abd"));
        assert!(a.starts_with("job-x.") && a.len() == "job-x.".len() + 16);
        assert!(event_name(&"p".repeat(300), "k").len() <= 253);
    }

    #[test]
    fn event_and_condition_shapes() {
        let e = events::build(&note(&ev()), COMPONENT, Some("node-a"));
        assert_eq!(e.reason.as_deref(), Some("SidecarTerminated"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("batch"));
        assert_eq!(
            e.message.as_deref(),
            Some(
                "nodeward stopped sidecar(s) proxy (exit 143, ignored, stopped 1.2 ms after the main containers)"
            )
        );
        let mut e = ev();
        let p = condition_patch(&e);
        assert_eq!(
            p["status"]["phase"],
            serde_json::Value::Null,
            "no main exit codes known"
        );
        e.action.inputs = serde_json::json!({"containers": [
            {"name": "main", "role": "Main", "exit_code": 0},
            {"name": "proxy", "role": {"Sidecar": {"ignore_exit_code": true}}, "exit_code": null}
        ]});
        assert_eq!(condition_patch(&e)["status"]["phase"], "Succeeded");
        e.action.inputs["containers"][0]["exit_code"] = 2.into();
        assert_eq!(condition_patch(&e)["status"]["phase"], "Failed");
        let v = verdict_patch(&e.action, true).unwrap();
        assert_eq!(v["status"]["phase"], "Failed");
        assert!(verdict_patch(&e.action, false).is_none());
        e.action.inputs["containers"][0]["exit_code"] = serde_json::Value::Null;
        assert!(condition_patch(&e)["status"].get("phase").is_none());
        e.outcome.containers[0].exit_code_ignored = false;
        assert!(condition_patch(&e)["status"].get("phase").is_none());
        assert_eq!(p["status"]["conditions"][0]["type"], "SidecarTerminated");
        assert_eq!(p["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
    }
}
