//! Stopping one container for a CRR, as the kubelet's `killContainer` does: `Killing` Event,
//! preStop bounded by the grace, then CRI `StopContainer` with the rest of the grace (at least
//! 2 s). The kubelet sees the exit and starts the container again.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use serde_json::json;
use tracing::{info, warn};

use super::{
    Crr, Executor, PodContainers, RawContainer, State, SyncError, kill_key, name_of, since,
};
use crate::api::kruise::{
    CRR_STATE_MESSAGE_KILL_ERROR_PREFIX, ContainerRecreateRequestPhase as Phase,
};
use crate::api::well_known::MINIMUM_GRACE_SECONDS;
use crate::cri::kubelet::{NamedPort, PreStop};
use crate::journal::{self, Recorded};

impl Executor {
    /// Stop container `i` of the CRR. `pending` is a kill decided before a restart: it is finished
    /// without running preStop again. Returns the container's new state.
    pub(super) async fn kill(
        &self,
        crr: &Crr,
        i: usize,
        pod: &PodContainers,
        pending: Option<journal::Action>,
        woken: Instant,
    ) -> Result<State, SyncError> {
        let spec = &crr.spec.containers[i];
        let name = spec.name.clone();
        let state = |phase, message: String, is_killed| State {
            name: name.clone(),
            phase,
            message,
            is_killed,
        };
        let Some(raw) = pod.raw.get(&name) else {
            return Ok(state(Phase::Pending, String::new(), false));
        };
        let key = kill_key(&crr.uid().unwrap_or_default(), &name);
        let grace = super::decide::grace(crr);
        let has_pre_stop = raw.pre_stop.is_some() && !grace.is_zero();
        let force = crr.spec.strategy.as_ref().is_some_and(|s| s.force_recreate);
        // The decision must be durable before a side effect that a restarted agent could repeat:
        // a preStop hook, or a forced kill (which a lost decision would repeat on the new
        // instance). A plain stop is idempotent: after a crash the state table sees the instance
        // replaced or exited, or stops the same one again, so its record is written alongside
        // the stop instead of in front of it (one fsync less on the stop path).
        let record_first = has_pre_stop || force;
        let (resumed, decided_at, alongside) = match pending {
            Some(a) => (true, a.decided_at, None),
            None => {
                let action = journal::Action {
                    kind: journal::KIND_RECREATE_CONTAINER.into(),
                    pod: journal::PodInfo {
                        namespace: crr.namespace().unwrap_or_default(),
                        name: crr.spec.pod_name.clone(),
                        uid: crr.pod_uid().unwrap_or_default().to_string(),
                    },
                    containers: vec![journal::ContainerRef {
                        name: name.clone(),
                        id: raw.id.clone(),
                    }],
                    decided_at: SystemTime::now(),
                    reason: format!("ContainerRecreateRequest {}", name_of(crr)),
                    inputs: json!({"crr": name_of(crr), "grace_seconds": grace.as_secs()}),
                };
                let decided_at = action.decided_at;
                if !record_first {
                    (false, decided_at, Some(action))
                } else {
                    match self.cfg.commits.decide(key.clone(), action).await? {
                        Recorded::New(_) => (false, decided_at, None),
                        // Not expected: the pass hands a pending record over as `pending`, and
                        // passes of one pod do not overlap. Finish it without a second preStop.
                        Recorded::Pending => (true, decided_at, None),
                        Recorded::AlreadyDone => {
                            return Ok(state(Phase::Recreating, String::new(), true));
                        }
                    }
                }
            }
        };
        let prestop = if resumed {
            info!(crr = %name_of(crr), pod = %crr.spec.pod_name, container = %name, container_id = %raw.id,
                "finishing a stop decided before the agent restarted (preStop not run again)");
            "not run again (resumed)"
        } else {
            let message = format!(
                "Stopping container {name} by ContainerRecreateRequest {}",
                crr.name_any()
            );
            let since_event = woken.elapsed();
            info!(crr = %name_of(crr), pod = %crr.spec.pod_name, container = %name, container_id = %raw.id,
                grace_s = grace.as_secs(), since_event_ms = since_event.as_secs_f64() * 1e3,
                "stopping container for CRR");
            self.cfg.metrics.crr_stop_latency(since_event.as_secs_f64());
            self.event(crr, &name, EventType::Normal, "Killing", message);
            match raw.pre_stop.as_ref() {
                Some(hook) if !grace.is_zero() => {
                    match tokio::time::timeout(grace, self.pre_stop(hook, raw, grace)).await {
                        Ok(Ok(())) => "ran",
                        Ok(Err(why)) => {
                            warn!(crr = %name_of(crr), container = %name, error = %why, "preStop hook failed");
                            let note = format!("PreStopHook failed: {why}");
                            self.event(crr, &name, EventType::Warning, "FailedPreStopHook", note);
                            "failed"
                        }
                        Err(_) => "cut by the grace period",
                    }
                }
                _ => "none",
            }
        };
        let min = Duration::from_secs(MINIMUM_GRACE_SECONDS as u64);
        let stop_grace = grace.saturating_sub(since(decided_at)).max(min);
        let stop = self.cfg.cri.stop_container(&raw.id, stop_grace);
        let stopped = match alongside {
            None => stop.await,
            Some(action) => {
                let (recorded, stopped) =
                    tokio::join!(self.cfg.commits.decide(key.clone(), action), stop);
                if let Err(e) = recorded {
                    warn!(crr = %name_of(crr), container = %name, error = %e,
                        "recording the stop decision in the journal failed");
                }
                stopped
            }
        };
        let (new_state, outcome) = match stopped {
            Ok(()) => (
                state(Phase::Recreating, String::new(), true),
                journal::RESULT_STOPPED,
            ),
            Err(e) if e.is_not_found() => (
                state(Phase::Recreating, String::new(), true),
                journal::RESULT_STOPPED,
            ),
            Err(e) => (
                state(
                    Phase::Failed,
                    format!("{CRR_STATE_MESSAGE_KILL_ERROR_PREFIX}{e}"),
                    false,
                ),
                journal::RESULT_FAILED,
            ),
        };
        info!(crr = %name_of(crr), container = %name, container_id = %raw.id, result = outcome,
            prestop, stop_grace_s = stop_grace.as_secs(), "container stop for CRR finished");
        self.cfg.metrics.crr_container_stopped(outcome);
        let done = journal::Outcome {
            result: outcome.into(),
            message: new_state.message.clone(),
            containers: vec![journal::ContainerOutcome {
                name: name.clone(),
                id: raw.id.clone(),
                prestop: prestop.into(),
                ..Default::default()
            }],
            finished_at: SystemTime::now(),
        };
        if let Err(e) = self.cfg.commits.complete(key, done).await {
            warn!(error = %e, "recording the stop in the journal failed");
        }
        Ok(new_state)
    }

    /// Publish an Event on the pod in the background: the stop does not wait for the API.
    fn event(&self, crr: &Crr, container: &str, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "RecreateContainer".into(),
            secondary: None,
        };
        let reference = Self::pod_reference(crr, container);
        let (recorder, crr) = (self.recorder.clone(), name_of(crr));
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                warn!(crr = %crr, error = %e, "recording the Event failed");
            }
        });
    }

    /// Run the container's own preStop hook (the Pod spec's, as the kubelet annotated it): exec
    /// through CRI, sleep, httpGet against the pod IP.
    async fn pre_stop(
        &self,
        hook: &PreStop,
        raw: &RawContainer,
        grace: Duration,
    ) -> Result<(), String> {
        match hook {
            PreStop::Exec(cmd) => {
                let resp = self
                    .cfg
                    .cri
                    .exec_sync(&raw.id, cmd.clone(), grace)
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.exit_code != 0 {
                    return Err(format!(
                        "command {cmd:?} exited with {}: {}",
                        resp.exit_code,
                        String::from_utf8_lossy(&resp.stderr).trim()
                    ));
                }
                Ok(())
            }
            PreStop::Sleep(d) => {
                tokio::time::sleep((*d).min(grace)).await;
                Ok(())
            }
            PreStop::HttpGet(http) => {
                let host = match http.host.as_deref().filter(|h| !h.is_empty()) {
                    Some(h) => h.to_string(),
                    None => self.pod_ip(&raw.sandbox).await?,
                };
                let port = resolve_port(http, &raw.ports)?;
                http_get(&host, port, http).await
            }
            PreStop::Unsupported(what) => Err(format!("{what} cannot run")),
        }
    }

    /// The pod's IP from the CRI sandbox status; 127.0.0.1 for a host-network pod without one.
    async fn pod_ip(&self, sandbox: &str) -> Result<String, String> {
        let status = self
            .cfg
            .cri
            .pod_sandbox_status(sandbox)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(ip) = status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .filter(|ip| !ip.is_empty())
        {
            return Ok(ip);
        }
        let host_network = status
            .linux
            .and_then(|l| l.namespaces)
            .and_then(|n| n.options)
            .is_some_and(|o| o.network == k8s_cri::v1::NamespaceMode::Node as i32);
        if host_network {
            Ok("127.0.0.1".into())
        } else {
            Err(format!("sandbox {sandbox} reports no IP"))
        }
    }
}

fn resolve_port(http: &HTTPGetAction, ports: &[NamedPort]) -> Result<u16, String> {
    let port = match &http.port {
        IntOrString::Int(p) => i64::from(*p),
        IntOrString::String(name) => match ports.iter().find(|p| p.name == *name) {
            Some(p) => i64::from(p.port),
            None => name
                .parse()
                .map_err(|_| format!("port {name:?} is not a port of the container"))?,
        },
    };
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {port}"))
}

async fn http_get(host: &str, port: u16, action: &HTTPGetAction) -> Result<(), String> {
    if action
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    {
        return Err("HTTPS preStop hooks are not supported".into());
    }
    let path = match action.path.as_deref() {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
        None => "/".into(),
    };
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
    tokio::spawn(conn);
    let mut req =
        hyper::Request::get(path.as_str()).header(hyper::header::HOST, format!("{host}:{port}"));
    for h in action.http_headers.iter().flatten() {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET http://{host}:{port}{path}: {e}"))?;
    if resp.status().is_client_error() || resp.status().is_server_error() {
        return Err(format!(
            "GET http://{host}:{port}{path}: HTTP {}",
            resp.status()
        ));
    }
    Ok(())
}
