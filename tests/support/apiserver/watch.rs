//! Watch streams: replay from the history (or the current state), then live changes, bookmarks,
//! `timeoutSeconds`, and closing on demand. Each event line is shared, not re-serialized.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::kinds::ResourceMeta;
use super::selector::Filter;
use super::store::{Change, Delivery, EventType, Resource, Server, event_for, partial_metadata};
use super::util::{ApiError, Query, event_line, to_bytes};

/// Chunks are flushed once they hold this many bytes of queued events.
const MAX_CHUNK: usize = 256 * 1024;
/// Watch duration when the client gives no `timeoutSeconds`.
const DEFAULT_TIMEOUT_SECS: u64 = 1800;
/// Longest watch (and bookmark interval) honoured.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn later(now: Instant, d: Duration) -> Instant {
    now + d.min(MAX_DURATION)
}

enum Pending {
    Change(Arc<Change>, EventType),
    Raw(Bytes, u64),
}

impl Pending {
    fn take(self, meta_only: bool) -> (Bytes, u64) {
        match self {
            Pending::Change(c, t) if meta_only => (c.meta_line(t), c.rv),
            Pending::Change(c, t) => (c.line(t), c.rv),
            Pending::Raw(b, rv) => (b, rv),
        }
    }
}

fn render(change: &Change, t: EventType, meta_only: bool) -> Bytes {
    if meta_only {
        change.meta_line(t)
    } else {
        change.line(t)
    }
}

struct Guard {
    server: Arc<Server>,
    res: Arc<Resource>,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.res.lock().watchers.remove(self.id);
        self.server.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

struct WatchState {
    backlog: VecDeque<Pending>,
    rx: mpsc::Receiver<Delivery>,
    guard: Guard,
    meta: Arc<ResourceMeta>,
    deadline: Instant,
    bookmarks: Option<Duration>,
    next_bookmark: Instant,
    last_rv: u64,
    epoch: tokio::sync::watch::Receiver<u64>,
    done: bool,
    meta_only: bool,
}

fn bookmark_line(meta: &ResourceMeta, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": meta.kind, "apiVersion": meta.api_version(), "metadata": metadata});
    event_line("BOOKMARK", &to_bytes(&object))
}

impl WatchState {
    /// Everything up to the resource's last dispatched change has been sent once nothing is
    /// queued for this watcher (read the resourceVersion first, then check the queue).
    fn bookmark_rv(&self) -> u64 {
        let dispatched = self.guard.res.dispatched_rv.load(Ordering::SeqCst);
        if self.rx.is_empty() && self.backlog.is_empty() {
            self.last_rv.max(dispatched)
        } else {
            self.last_rv
        }
    }
}

async fn next_chunk(mut s: WatchState) -> Option<(Result<Bytes, Infallible>, WatchState)> {
    if s.done {
        return None;
    }
    if let Some(first) = s.backlog.pop_front() {
        let (line, rv) = first.take(s.meta_only);
        s.last_rv = s.last_rv.max(rv);
        if s.backlog.is_empty() {
            return Some((Ok(line), s));
        }
        let mut buf = line.to_vec();
        while buf.len() < MAX_CHUNK {
            let Some(p) = s.backlog.pop_front() else {
                break;
            };
            let (line, rv) = p.take(s.meta_only);
            s.last_rv = s.last_rv.max(rv);
            buf.extend_from_slice(&line);
        }
        return Some((Ok(Bytes::from(buf)), s));
    }
    tokio::select! {
        biased;
        _ = s.epoch.changed() => None,
        d = s.rx.recv() => {
            let (change, t) = d?;
            s.last_rv = change.rv;
            let first = render(&change, t, s.meta_only);
            match s.rx.try_recv() {
                Err(_) => Some((Ok(first), s)),
                Ok((change, t)) => {
                    let mut buf = first.to_vec();
                    buf.extend_from_slice(&render(&change, t, s.meta_only));
                    s.last_rv = change.rv;
                    while buf.len() < MAX_CHUNK {
                        let Ok((change, t)) = s.rx.try_recv() else { break };
                        buf.extend_from_slice(&render(&change, t, s.meta_only));
                        s.last_rv = change.rv;
                    }
                    Some((Ok(Bytes::from(buf)), s))
                }
            }
        }
        _ = tokio::time::sleep_until(s.deadline) => {
            // apiserver ends a timed-out watch with a bookmark when bookmarks are allowed.
            s.done = true;
            if s.bookmarks.is_some() {
                let line = bookmark_line(&s.meta, s.bookmark_rv(), false);
                Some((Ok(line), s))
            } else {
                None
            }
        }
        _ = tokio::time::sleep_until(s.next_bookmark), if s.bookmarks.is_some() => {
            let every = s.bookmarks.unwrap_or(Duration::from_secs(60));
            s.next_bookmark = later(Instant::now(), every);
            let rv = s.bookmark_rv();
            s.last_rv = rv;
            Some((Ok(bookmark_line(&s.meta, rv, false)), s))
        }
    }
}

/// A watch response body. Errors before the stream starts are returned as `ApiError`; a
/// resourceVersion older than the history answers 200 with one `ERROR` event (code 410), as
/// apiserver does.
pub(crate) fn watch(
    server: &Arc<Server>,
    res: Arc<Resource>,
    filter: Filter,
    q: &Query,
    meta_only: bool,
) -> Result<Body, ApiError> {
    let meta = res.meta();
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    if send_initial && !bookmarks {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            "allowWatchBookmarks",
            "Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set",
        ));
    }
    let timeout = q
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT_SECS, |t| t as u64);
    let rv = match q.non_empty("resourceVersion") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
    };
    // Subscribed before the watch counts as open: `close_watches` after `open_watches` saw it
    // ends it.
    let epoch = server.epoch.subscribe();
    let (tx, rx) = mpsc::channel(server.opts.watch_buffer.max(1));
    let filter = Arc::new(filter);
    let mut backlog = VecDeque::new();
    let start_rv;
    let id;
    {
        let mut st = res.lock();
        let current = server.current_rv();
        match rv {
            Some(n) if n != 0 && !send_initial => {
                if n < st.floor {
                    let gone =
                        ApiError::gone(format!("too old resource version: {n} ({})", st.floor));
                    return Ok(Body::from(event_line(
                        "ERROR",
                        &to_bytes(&gone.status_json()),
                    )));
                }
                let from = st.history.partition_point(|c| c.rv <= n);
                for change in st.history.range(from..) {
                    if let Some(t) = event_for(&meta, &filter, change) {
                        backlog.push_back(Pending::Change(change.clone(), t));
                    }
                }
                start_rv = n;
            }
            _ => {
                for (_, obj) in st.range(filter.namespace.as_deref(), None) {
                    if filter.matches(&meta, &obj.value) {
                        let line = if meta_only {
                            event_line("ADDED", &to_bytes(&partial_metadata(&obj.value)))
                        } else {
                            event_line("ADDED", &obj.bytes)
                        };
                        backlog.push_back(Pending::Raw(line, obj.rv));
                    }
                }
                if send_initial {
                    backlog.push_back(Pending::Raw(bookmark_line(&meta, current, true), current));
                }
                start_rv = current;
            }
        }
        id = st.watchers.add(filter, tx);
    }
    server.open_watches.fetch_add(1, Ordering::SeqCst);
    let every = bookmarks.then_some(server.opts.bookmark_interval);
    let now = Instant::now();
    let state = WatchState {
        backlog,
        rx,
        guard: Guard {
            server: server.clone(),
            res,
            id,
        },
        meta,
        deadline: later(now, Duration::from_secs(timeout)),
        bookmarks: every,
        next_bookmark: later(now, every.unwrap_or(Duration::from_secs(60))),
        last_rv: start_rv,
        epoch,
        done: false,
        meta_only,
    };
    Ok(Body::from_stream(futures::stream::unfold(
        state, next_chunk,
    )))
}
