//! Act: one worker per (image, tag, version). It waits for a pull slot (`Waiting`), reports
//! `Pulling`, skips the pull when the image is present and the policy is `IfNotPresent`, else
//! pulls with the matching credentials, retrying with backoff within the per-attempt timeout and
//! the overall deadline, and reports `Succeeded` or `Failed`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::credentials::Keyring;
use super::decide::{PullTask, TagKey, backoff_schedule};
use super::reference::ImageRef;
use super::report::Events;
use crate::api::kruise::{
    ImagePullPhase, ImagePullPolicy, ImageTagStatus, NODE_IMAGE_MESSAGE_DEADLINE_EXCEEDED,
};
use crate::cri::CriClient;
use crate::cri::image::{RegistryAuth, pull_request};
use crate::telemetry::metrics::Metrics;

/// How long after an attempt's timeout the CRI call's own deadline fires (a backstop only).
const PULL_BACKSTOP: Duration = Duration::from_secs(5);

/// A worker's new status for its tag.
#[derive(Debug)]
pub struct Update {
    pub key: TagKey,
    pub version: i64,
    pub status: ImageTagStatus,
}

/// What the workers share.
pub struct Puller {
    pub cri: CriClient,
    /// Secrets of the one namespace pull secrets are read from.
    pub secrets: Api<Secret>,
    pub secret_namespace: String,
    /// The node's pull slots (`--max-concurrent-pulls`).
    pub slots: Arc<Semaphore>,
    pub metrics: Metrics,
    pub events: Events,
}

/// How a task ended well.
enum Done {
    Pulled(String),
    Present(String),
}

/// Now, in whole seconds: what the API server stores of a `Time`, so that a status read back
/// equals the one written.
fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn tag_status(task: &PullTask, phase: ImagePullPhase) -> ImageTagStatus {
    ImageTagStatus {
        tag: task.key.tag.clone(),
        phase,
        progress: 0,
        start_time: None,
        completion_time: None,
        version: task.version,
        image_id: String::new(),
        message: String::new(),
    }
}

/// The status a task starts with.
pub fn waiting(task: &PullTask) -> ImageTagStatus {
    tag_status(task, ImagePullPhase::Waiting)
}

/// Decrements the in-flight gauge when a CRI pull ends or is abandoned.
struct InFlight(Metrics);

impl InFlight {
    fn new(metrics: &Metrics) -> Self {
        metrics.image_pulls_in_flight(1);
        Self(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.image_pulls_in_flight(-1);
    }
}

impl Puller {
    /// Run one task to its end, sending each status change to `tx`.
    pub async fn run(self: Arc<Self>, task: PullTask, tx: mpsc::UnboundedSender<Update>) {
        let send = |status: ImageTagStatus| {
            let _ = tx.send(Update {
                key: task.key.clone(),
                version: task.version,
                status,
            });
        };
        let (image, tag, version) = (&task.key.image, &task.key.tag, task.version);
        let reference = match &task.reference {
            Ok(r) => r,
            Err(e) => {
                let message = e.to_string();
                warn!(%image, %tag, version, error = %message, "image pull failed: bad reference");
                let mut status = tag_status(&task, ImagePullPhase::Failed);
                (status.start_time, status.completion_time) = (Some(now()), Some(now()));
                status.message = message.clone();
                send(status);
                self.metrics.image_pull_finished("failed", None);
                self.events.pull_failed(&task, &message).await;
                return;
            }
        };
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let started = Instant::now();
        let mut status = tag_status(&task, ImagePullPhase::Pulling);
        status.start_time = Some(now());
        send(status.clone());
        info!(%image, %tag, version, reference = %reference.pull_ref(), policy = %task.policy, "image pull started");
        let result = self.pull(&task, reference, slot, started).await;
        let elapsed = started.elapsed();
        status.completion_time = Some(now());
        match result {
            Ok(done) => {
                let (id, how) = match done {
                    Done::Pulled(id) => (id, "pulled"),
                    Done::Present(id) => (id, "present"),
                };
                status.phase = ImagePullPhase::Succeeded;
                status.progress = 100;
                status.image_id = format!("{image}@{id}");
                info!(%image, %tag, version, image_id = %status.image_id, result = how, elapsed_ms = elapsed.as_millis() as u64, "image pull succeeded");
                send(status);
                self.metrics
                    .image_pull_finished(how, Some(elapsed.as_secs_f64()));
                self.events.pull_succeeded(&task, elapsed).await;
            }
            Err(message) => {
                status.phase = ImagePullPhase::Failed;
                status.message = message.clone();
                warn!(%image, %tag, version, error = %message, elapsed_ms = elapsed.as_millis() as u64, "image pull failed");
                send(status);
                self.metrics
                    .image_pull_finished("failed", Some(elapsed.as_secs_f64()));
                self.events.pull_failed(&task, &message).await;
            }
        }
    }

    async fn pull(
        &self,
        task: &PullTask,
        reference: &ImageRef,
        slot: OwnedSemaphorePermit,
        started: Instant,
    ) -> Result<Done, String> {
        let pull_ref = reference.pull_ref();
        if task.policy == ImagePullPolicy::IfNotPresent {
            match self.cri.image_id(&pull_ref).await {
                Ok(Some(id)) => return Ok(Done::Present(id)),
                Ok(None) => {}
                Err(e) => {
                    warn!(image = %pull_ref, error = %e, "cannot tell whether the image is present; pulling")
                }
            }
        }
        let deadline_at = task.deadline.map(|d| started + d);
        let deadline_message = |last: &str| {
            if last.is_empty() {
                NODE_IMAGE_MESSAGE_DEADLINE_EXCEEDED.to_string()
            } else {
                format!("{NODE_IMAGE_MESSAGE_DEADLINE_EXCEEDED} (last error: {last})")
            }
        };
        let mut held = Some(slot);
        let mut delays = backoff_schedule(task.attempts);
        let mut last_error = String::new();
        for attempt in 1..=task.attempts {
            let slot = match held.take() {
                Some(slot) => slot,
                None => self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| "the agent is shutting down".to_string())?,
            };
            let mut limit = task.timeout;
            let mut cut_by_deadline = false;
            if let Some(at) = deadline_at {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(deadline_message(&last_error));
                }
                if left < limit {
                    (limit, cut_by_deadline) = (left, true);
                }
            }
            let credentials = self.credentials(task, reference).await;
            match tokio::time::timeout(limit, self.pull_once(task, &pull_ref, &credentials, limit))
                .await
            {
                Ok(Ok(id)) => return Ok(Done::Pulled(id)),
                Ok(Err(e)) => last_error = e,
                Err(_) if cut_by_deadline => return Err(deadline_message(&last_error)),
                Err(_) => {
                    last_error = format!(
                        "pulling image {pull_ref} timed out after {}",
                        humantime::format_duration(limit)
                    )
                }
            }
            let Some(delay) = delays.next() else { break };
            warn!(image = %task.key.image, tag = %task.key.tag, version = task.version, attempt, attempts = task.attempts, retry_in_ms = delay.as_millis() as u64, error = %last_error, "image pull attempt failed");
            // Others may pull while this one waits.
            drop(slot);
            if let Some(at) = deadline_at
                && Instant::now() + delay >= at
            {
                tokio::time::sleep_until(at).await;
                return Err(deadline_message(&last_error));
            }
            tokio::time::sleep(delay).await;
        }
        Err(last_error)
    }

    /// One attempt: anonymous when no credentials match, else each matching credential in turn
    /// until one works (no anonymous fallback when all fail).
    async fn pull_once(
        &self,
        task: &PullTask,
        pull_ref: &str,
        credentials: &[RegistryAuth],
        limit: Duration,
    ) -> Result<String, String> {
        // The attempt's `limit` is enforced by the caller; the CRI call's own deadline is only
        // the backstop, later, so the two never race to name the timeout.
        let backstop = limit.saturating_add(PULL_BACKSTOP);
        let pull = |auth: Option<&RegistryAuth>| {
            let req = pull_request(pull_ref, auth, &task.labels, &task.annotations);
            async move {
                let _in_flight = InFlight::new(&self.metrics);
                self.cri.pull_image(req, backstop).await
            }
        };
        if credentials.is_empty() {
            return pull(None).await.map_err(|e| e.to_string());
        }
        let mut errors = Vec::new();
        for auth in credentials {
            match pull(Some(auth)).await {
                Ok(id) => return Ok(id),
                Err(e) => errors.push(format!(
                    "with the credentials of {:?} for {}: {e}",
                    auth.username, auth.server_address
                )),
            }
        }
        Err(format!(
            "all {} matching pull credentials failed: {}",
            errors.len(),
            errors.join("; ")
        ))
    }

    /// The credentials for `reference` from the task's pull secrets. Secrets outside the
    /// configured namespace are never read; missing or malformed ones are skipped.
    async fn credentials(&self, task: &PullTask, reference: &ImageRef) -> Vec<RegistryAuth> {
        let mut keyring = Keyring::default();
        for secret in &task.pull_secrets {
            if !secret.namespace.is_empty() && secret.namespace != self.secret_namespace {
                warn!(image = %task.key, secret = %format!("{}/{}", secret.namespace, secret.name), allowed = %self.secret_namespace, "pull secret outside the pull-secret namespace ignored");
                continue;
            }
            match self.secrets.get_opt(&secret.name).await {
                Ok(Some(s)) => {
                    let data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    match keyring.add_secret(&data) {
                        Ok(n) => debug!(secret = %secret.name, entries = n, "pull secret read"),
                        Err(e) => warn!(secret = %secret.name, error = %e, "pull secret skipped"),
                    }
                }
                Ok(None) => {
                    warn!(secret = %secret.name, namespace = %self.secret_namespace, "pull secret not found; skipped")
                }
                Err(e) => {
                    warn!(secret = %secret.name, error = %e, "cannot read pull secret; skipped")
                }
            }
        }
        keyring.lookup(&reference.registry_path())
    }
}
