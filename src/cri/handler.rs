//! The kubelet's network handlers against a pod, shared by preStop hooks (`kill`) and
//! NodePodProbe probes (`podprobe::act`): the pod IP from the CRI sandbox status, a port by number
//! or by the container's port name, an HTTP/1 GET, a TCP connect.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::CriClient;
use super::kubelet::NamedPort;

/// The pod's IP from the CRI sandbox status; 127.0.0.1 for a host-network pod without one.
pub async fn pod_ip(cri: &CriClient, sandbox: &str) -> Result<String, String> {
    let status = cri
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

/// A port by number, or by the name of one of the container's ports (a numeric string counts
/// as a number); 1–65535.
pub fn resolve_port(port: &IntOrString, ports: &[NamedPort]) -> Result<u16, String> {
    let port = match port {
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
        .ok_or_else(|| format!("invalid port number: {port}"))
}

/// What an HTTP GET answered.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    /// `http://host:port/path`, for messages.
    pub url: String,
    pub status: hyper::StatusCode,
    /// The first `body_limit` bytes of the body.
    pub body: Vec<u8>,
}

/// GET `action.path` from `host:port` over plain HTTP/1 with the action's headers, reading at
/// most `body_limit` bytes of the answer. The caller bounds the time.
pub async fn http_get(
    host: &str,
    port: u16,
    action: &HTTPGetAction,
    body_limit: usize,
) -> Result<HttpAnswer, String> {
    let path = match action.path.as_deref() {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
        None => "/".into(),
    };
    let url = format!("http://{host}:{port}{path}");
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
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let mut body = Vec::new();
    let mut stream = resp.into_body();
    while body.len() < body_limit {
        match stream.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = body_limit - body.len();
                    body.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(e)) => return Err(format!("GET {url}: reading the body: {e}")),
            None => break,
        }
    }
    Ok(HttpAnswer { url, status, body })
}

/// Open (and close) a TCP connection to `host:port` within `timeout`.
pub async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_resolve_by_name_or_number() {
        let ports = [NamedPort {
            name: "admin".into(),
            port: 9090,
        }];
        let named = |n: &str| IntOrString::String(n.into());
        assert_eq!(resolve_port(&named("admin"), &ports), Ok(9090));
        assert_eq!(resolve_port(&named("8080"), &ports), Ok(8080));
        assert_eq!(resolve_port(&IntOrString::Int(80), &[]), Ok(80));
        assert!(resolve_port(&IntOrString::Int(0), &[]).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &[]).is_err());
        assert!(resolve_port(&named("web"), &ports).is_err());
    }
}
