//! Running one probe, as kruise-daemon's prober does: `exec` through CRI ExecSync in the
//! container (stdout on success, stderr on a non-zero exit), `httpGet` and `tcpSocket` against
//! the pod IP. Each is bounded by the probe's timeout.
//!
//! The pod IP is the runtime's (the CRI sandbox status), not the `IP` the NodePodProbe names,
//! and a probe with a `host` is not run (upstream's webhook refuses one): whoever can write a
//! NodePodProbe cannot point the agent, on the host network, at another address and read the
//! answer back from the status.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

use super::decide;
use crate::api::kruise::ProbeState;
use crate::cri::{CriClient, handler};

/// Why a probe naming a host is not run (upstream's webhook message).
const HOST_REFUSED: &str = "host field in probes is not allowed";

/// At most this much of an HTTP answer's body is read for the message (upstream reads 10 KiB).
const BODY_READ: usize = 10 * 1024;

/// The probe's verdict and message; `Err` when the probe could not run (no handler, an invalid
/// port, a runtime error), which leaves the state as it was — as upstream.
pub async fn probe(
    cri: &CriClient,
    probe: &Probe,
    container_id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(ProbeState, String), String> {
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let answer = cri
            .exec_sync(container_id, cmd, timeout)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(if answer.exit_code == 0 {
            (ProbeState::Succeeded, text(&answer.stdout))
        } else {
            (ProbeState::Failed, text(&answer.stderr))
        });
    }
    if let Some(http) = &probe.http_get {
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err("HTTPS probes are not supported".into());
        }
        if http.host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(HOST_REFUSED.into());
        }
        let host = pod_ip;
        let port = handler::resolve_port(&http.port, &[])?;
        let answer =
            tokio::time::timeout(timeout, handler::http_get(host, port, http, BODY_READ)).await;
        return Ok(match answer {
            Err(_) => (
                ProbeState::Failed,
                format!("GET http://{host}:{port}: timeout after {timeout:?}"),
            ),
            Ok(Err(e)) => (ProbeState::Failed, e),
            Ok(Ok(a)) if a.status.is_success() => (ProbeState::Succeeded, text(&a.body)),
            Ok(Ok(a)) if a.status.is_redirection() => (
                ProbeState::Succeeded,
                format!(
                    "Probe terminated redirects, Response body: {}",
                    text(&a.body)
                ),
            ),
            Ok(Ok(a)) => (
                ProbeState::Failed,
                format!("HTTP probe failed with statuscode: {}", a.status.as_u16()),
            ),
        });
    }
    if let Some(tcp) = &probe.tcp_socket {
        if tcp.host.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(HOST_REFUSED.into());
        }
        let host = pod_ip;
        let port = handler::resolve_port(&tcp.port, &[])?;
        return Ok(match handler::tcp_connect(host, port, timeout).await {
            Ok(()) => (ProbeState::Succeeded, String::new()),
            Err(e) => (ProbeState::Failed, e),
        });
    }
    Err("missing probe handler (exec, httpGet or tcpSocket)".into())
}

/// Output as a status message: lossy UTF-8, cut as [`decide::message`] does.
fn text(bytes: &[u8]) -> String {
    decide::message(&String::from_utf8_lossy(bytes))
}
