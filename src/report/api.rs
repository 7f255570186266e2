//! The agent's local gRPC API (`proto/nodeward/agent/v1/agent.proto`), served on a unix socket.
//! Status and pods are answered by the agent's event loop (it owns the node model); events come
//! from the durable journal, and live ones from a broadcast channel.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::pb;
use super::pb::agent_server::{Agent, AgentServer};
use crate::journal::{Event as JournalEvent, Journal};

/// A question for the agent's event loop.
pub enum Query {
    Status(oneshot::Sender<pb::AgentStatus>),
    Pods(oneshot::Sender<Vec<pb::Pod>>),
}

/// Most events returned by one `ListEvents` call.
const MAX_LIST: usize = 1000;

#[derive(Clone)]
pub struct ApiService {
    queries: mpsc::UnboundedSender<Query>,
    journal: Journal,
    live: broadcast::Sender<pb::Event>,
}

impl ApiService {
    pub fn new(
        queries: mpsc::UnboundedSender<Query>,
        journal: Journal,
        live: broadcast::Sender<pb::Event>,
    ) -> Self {
        Self {
            queries,
            journal,
            live,
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(make(tx))
            .map_err(|_| Status::unavailable("agent is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("agent is shutting down"))
    }

    fn backlog(&self, after: u64, limit: usize) -> Result<Vec<pb::Event>, Status> {
        self.journal
            .events_since(after, limit)
            .map(|v| v.iter().map(to_pb).collect())
            .map_err(|e| Status::internal(format!("journal: {e}")))
    }
}

/// RFC 3339 with milliseconds, clamped to 1970..=9999 (humantime's range: past it its Display
/// fails, and `to_string` would panic on a time read from a damaged journal).
fn rfc3339(t: SystemTime) -> String {
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let latest = UNIX_EPOCH + LAST;
    humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, latest)).to_string()
}

/// A journal event as the API shows it.
pub fn to_pb(e: &JournalEvent) -> pb::Event {
    pb::Event {
        seq: e.seq,
        kind: e.action.kind.clone(),
        pod_namespace: e.action.pod.namespace.clone(),
        pod_name: e.action.pod.name.clone(),
        pod_uid: e.action.pod.uid.clone(),
        decided_at: rfc3339(e.action.decided_at),
        finished_at: rfc3339(e.outcome.finished_at),
        reason: e.action.reason.clone(),
        result: e.outcome.result.clone(),
        message: e.outcome.message.clone(),
        containers: e
            .outcome
            .containers
            .iter()
            .map(|c| pb::ContainerOutcome {
                name: c.name.clone(),
                id: c.id.clone(),
                exit_code: c.exit_code,
                exit_code_ignored: c.exit_code_ignored,
                exit_to_stop_ms: c.exit_to_stop_ms,
                exit_to_exit_ms: c.exit_to_exit_ms,
                prestop: c.prestop.clone(),
            })
            .collect(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for ApiService {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        Ok(Response::new(self.ask(Query::Status).await?))
    }

    async fn list_pods(
        &self,
        _: Request<pb::ListPodsRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        let pods = self.ask(Query::Pods).await?;
        Ok(Response::new(pb::ListPodsResponse { pods }))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit as usize {
            0 => MAX_LIST,
            n => n.min(MAX_LIST),
        };
        Ok(Response::new(pb::ListEventsResponse {
            events: self.backlog(req.after_seq, limit)?,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        // Subscribe before reading the backlog so nothing falls between the two.
        let live = self.live.subscribe();
        let mut after = req.into_inner().after_seq;
        let mut backlog = Vec::new();
        loop {
            let page = self.backlog(after, MAX_LIST)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            backlog.extend(page);
        }
        let state = WatchState {
            queue: backlog.into(),
            last: after,
            live,
            svc: self.clone(),
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            state, next_event,
        ))))
    }
}

struct WatchState {
    queue: VecDeque<pb::Event>,
    last: u64,
    live: broadcast::Receiver<pb::Event>,
    svc: ApiService,
}

/// The backlog first, then live events with a higher sequence number. A subscriber that lags
/// behind the broadcast re-reads the journal instead of losing events.
async fn next_event(mut st: WatchState) -> Option<(Result<pb::Event, Status>, WatchState)> {
    loop {
        if let Some(ev) = st.queue.pop_front() {
            st.last = st.last.max(ev.seq);
            return Some((Ok(ev), st));
        }
        match st.live.recv().await {
            Ok(ev) if ev.seq > st.last => st.queue.push_back(ev),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                match st.svc.backlog(st.last, MAX_LIST) {
                    Ok(page) => st.queue.extend(page),
                    Err(e) => return Some((Err(e), st)),
                }
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Serve the API until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    service: ApiService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by tests/fuzz.rs `journal_records`: an event time past year 9999 (a damaged
    /// journal) panicked `ListEvents`.
    #[test]
    fn times_outside_rfc3339_are_clamped() {
        let far = UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
