//! Report: the NodeImage status, written as a full `/status` replace with optimistic concurrency
//! (re-read on conflict), skipped when unchanged, coalesced, and rate limited (0.5 writes/s,
//! burst 5) so that a fleet of agents cannot flood the API server; and the `PullImageSucceed` /
//! `PullImageFailed` Events.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::decide::{PullTask, WriteWhen, write_when};
use crate::api::kruise::{
    API_VERSION, EVENT_REASON_PULL_IMAGE_FAILED, EVENT_REASON_PULL_IMAGE_SUCCEED, NodeImage,
    NodeImageStatus,
};
use crate::cluster::COMPONENT;
use crate::cluster::events::{EventType, EventWriter, Note};
use crate::cluster::{is_conflict, is_not_found};

/// Status writes per second in the long run, and the burst allowed.
pub const WRITE_PERIOD: Duration = Duration::from_secs(2);
pub const WRITE_BURST: u32 = 5;

/// Writes the latest desired status of NodeImage `name` until `desired` closes. The object is
/// read before the first write and after a conflict; otherwise the last write's answer gives the
/// resourceVersion and the status last written (the watch's copies may be older than that),
/// unless the watch (`observed`) has a later spec: a write based on the older answer would only
/// conflict, spending a write of the rate limit and a round trip right when a new spec wants
/// its first status.
pub async fn write_statuses(
    api: Api<NodeImage>,
    name: String,
    mut desired: watch::Receiver<Option<NodeImageStatus>>,
    observed: watch::Receiver<Option<NodeImage>>,
) {
    let burst = NonZeroU32::new(WRITE_BURST).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(WRITE_PERIOD)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    let limiter = RateLimiter::direct(quota);
    // The object as last written or seen; `None`: read it before writing.
    let mut server: Option<NodeImage> = None;
    let mut pending_since: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        let want = desired.borrow_and_update().clone();
        let Some(want) = want else {
            pending_since = None;
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        };
        if let Some(newer) = later_spec(server.as_ref(), observed.borrow().as_ref()) {
            server = Some(newer);
        }
        let current = match &server {
            Some(obj) => obj.clone(),
            None => match api.get_opt(&name).await {
                Ok(Some(obj)) => {
                    server = Some(obj.clone());
                    obj
                }
                Ok(None) => {
                    // Nothing to write to until the NodeImage exists again.
                    if desired.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    let wait = retry_wait(failures);
                    warn!(nodeimage = %name, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read NodeImage");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            },
        };
        if current.status.as_ref() == Some(&want) {
            pending_since = None;
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        }
        let when = write_when(&want, current.status.as_ref());
        if when != WriteWhen::Now {
            let since = *pending_since.get_or_insert_with(Instant::now);
            let due = since + when.coalesce();
            if Instant::now() < due {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    r = desired.changed() => if r.is_err() { return },
                }
                continue;
            }
        }
        limiter.until_ready().await;
        // Whatever changed while waiting for the limiter goes out in this write, on the latest
        // object the watch brought meanwhile (the controller may have written the spec: a write
        // on the older one would only conflict and wait for the limiter again).
        let want = desired.borrow_and_update().clone().unwrap_or(want);
        let mut obj = match later_spec(Some(&current), observed.borrow().as_ref()) {
            Some(newer) => newer,
            None => current,
        };
        obj.status = Some(want);
        match api
            .replace_status(&name, &PostParams::default(), &obj)
            .await
        {
            Ok(written) => {
                failures = 0;
                pending_since = None;
                let s = written.status.clone().unwrap_or_default();
                debug!(nodeimage = %name, desired = s.desired, waiting = s.waiting, pulling = s.pulling, succeeded = s.succeeded, failed = s.failed, "NodeImage status written");
                server = Some(written);
            }
            Err(e) if is_conflict(&e) => {
                debug!(nodeimage = %name, "NodeImage changed meanwhile; re-reading");
                server = None;
            }
            Err(e) if is_not_found(&e) => {
                info!(nodeimage = %name, "NodeImage is gone; status not written");
                server = None;
                desired.borrow_and_update();
            }
            Err(e) => {
                failures += 1;
                let wait = retry_wait(failures);
                warn!(nodeimage = %name, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot write NodeImage status");
                server = None;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `observed` when it carries a later spec (`metadata.generation`) than `written`.
fn later_spec(written: Option<&NodeImage>, observed: Option<&NodeImage>) -> Option<NodeImage> {
    let (written, observed) = (written?, observed?);
    (observed.metadata.generation > written.metadata.generation).then(|| observed.clone())
}

/// 1 s doubling to 30 s.
fn retry_wait(failures: u32) -> Duration {
    crate::backoff::after(failures, Duration::from_secs(1), Duration::from_secs(30))
}

/// Records the puller's Events (core/v1, as kruise-daemon does).
#[derive(Clone)]
pub struct Events {
    events: EventWriter,
    node: String,
    /// The NodeImage (name = node; uid once known).
    node_image: watch::Receiver<Option<NodeImage>>,
}

impl Events {
    pub fn new(
        client: kube::Client,
        node: String,
        node_image: watch::Receiver<Option<NodeImage>>,
    ) -> Self {
        Self {
            events: EventWriter::new(client, COMPONENT, Some(node.clone())),
            node,
            node_image,
        }
    }

    fn node_image_ref(&self) -> ObjectReference {
        let uid = self
            .node_image
            .borrow()
            .as_ref()
            .and_then(|n| n.metadata.uid.clone());
        ObjectReference {
            api_version: Some(API_VERSION.into()),
            kind: Some("NodeImage".into()),
            name: Some(self.node.clone()),
            uid,
            ..Default::default()
        }
    }

    /// `Normal PullImageSucceed` on the NodeImage.
    pub async fn pull_succeeded(&self, task: &PullTask, elapsed: Duration) {
        let elapsed = humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64));
        let message = format!("Image {}, elapsed time {elapsed}", task.key);
        self.record(
            self.node_image_ref(),
            EventType::Normal,
            EVENT_REASON_PULL_IMAGE_SUCCEED,
            &message,
        )
        .await;
    }

    /// `Warning PullImageFailed` on the NodeImage and on each owning ImagePullJob.
    pub async fn pull_failed(&self, task: &PullTask, error: &str) {
        let message = format!("Image {} {error}", task.key);
        self.record(
            self.node_image_ref(),
            EventType::Warning,
            EVENT_REASON_PULL_IMAGE_FAILED,
            &message,
        )
        .await;
        for owner in &task.owners {
            self.record(
                owner.clone(),
                EventType::Warning,
                EVENT_REASON_PULL_IMAGE_FAILED,
                &message,
            )
            .await;
        }
    }

    async fn record(&self, object: ObjectReference, type_: EventType, reason: &str, message: &str) {
        let note = Note::new(object, type_, reason, "PullImage", message);
        if let Err(e) = self.events.write(&note).await {
            warn!(error = %e, object = ?note.object.name, reason, "recording the event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits() {
        let s: Vec<u64> = (1..=8).map(|n| retry_wait(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_later_spec_from_the_watch_replaces_the_last_answer() {
        let at = |generation, rv: &str| {
            let mut n = NodeImage::new("n", Default::default());
            n.metadata.generation = Some(generation);
            n.metadata.resource_version = Some(rv.into());
            n
        };
        let written = at(3, "20");
        // The echo of our own write or an older event: keep the answer.
        assert!(later_spec(Some(&written), Some(&at(3, "20"))).is_none());
        assert!(later_spec(Some(&written), Some(&at(2, "15"))).is_none());
        // A new spec: write on top of it.
        let newer = later_spec(Some(&written), Some(&at(4, "21"))).unwrap();
        assert_eq!(newer.metadata.resource_version.as_deref(), Some("21"));
        // Nothing written yet (the object is read first) or nothing seen.
        assert!(later_spec(None, Some(&at(4, "21"))).is_none());
        assert!(later_spec(Some(&written), None).is_none());
    }
}
