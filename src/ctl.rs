//! `nodeward ctl`: talks to a running agent over its local API socket.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use futures::StreamExt;

use crate::report::pb;
use crate::report::pb::agent_client::AgentClient;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Connect to the agent, with a clear message when it is not there or not accessible.
pub async fn connect(socket: &Path) -> anyhow::Result<AgentClient<tonic::transport::Channel>> {
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "the nodeward agent is not running (no socket at {})",
                socket.display()
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot access {}: permission denied (the API socket is root-only; try sudo)",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
            "the nodeward agent is not running (stale socket at {})",
            socket.display()
        ),
        Err(e) => bail!("cannot connect to {}: {e}", socket.display()),
    }
    Ok(AgentClient::new(crate::cri::channel(socket)))
}

fn json_line(out: &mut impl Write, v: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// Left-aligned columns separated by two spaces, like kubectl.
fn table(out: &mut impl Write, rows: &[Vec<String>]) -> anyhow::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub async fn status(socket: &Path, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let s = connect(socket)
        .await?
        .get_status(pb::GetStatusRequest {})
        .await
        .context("GetStatus")?
        .into_inner();
    if output == Output::Json {
        return json_line(out, &s);
    }
    let mut rows = vec![
        vec!["version".into(), s.version.clone()],
        vec!["node".into(), s.node.clone()],
        vec!["mode".into(), s.mode.clone()],
        vec![
            "runtime".into(),
            format!(
                "{} {} ({}, {})",
                s.runtime_name,
                s.runtime_version,
                s.runtime_socket,
                if s.runtime_connected {
                    "connected"
                } else {
                    "DISCONNECTED"
                }
            ),
        ],
        vec!["ready".into(), s.ready.to_string()],
        vec!["uptime".into(), format!("{}s", s.uptime_seconds)],
        vec![
            "pods".into(),
            format!(
                "{} ({} containers, {} running)",
                s.pods, s.containers, s.running_containers
            ),
        ],
        vec!["in flight".into(), s.actions_in_flight.to_string()],
        vec!["last event".into(), s.last_event_seq.to_string()],
        vec!["outbox".into(), s.outbox.to_string()],
    ];
    for w in &s.watchers {
        let state = if w.enabled { "on" } else { "off" };
        rows.push(vec![
            format!("watch {}", w.name),
            format!("{state}: {}", w.detail),
        ]);
    }
    table(out, &rows)
}

pub async fn pods(socket: &Path, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let pods = connect(socket)
        .await?
        .list_pods(pb::ListPodsRequest {})
        .await
        .context("ListPods")?
        .into_inner()
        .pods;
    if output == Output::Json {
        return json_line(out, &pods);
    }
    let mut rows = vec![
        [
            "NAMESPACE",
            "POD",
            "POLICY",
            "CONTAINER",
            "ROLE",
            "STATE",
            "EXIT",
            "RESTARTS",
            "DECISION",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for p in &pods {
        for c in &p.containers {
            rows.push(vec![
                p.namespace.clone(),
                p.name.clone(),
                if p.restart_policy.is_empty() {
                    "?".into()
                } else {
                    p.restart_policy.clone()
                },
                c.name.clone(),
                c.role.clone(),
                c.state.clone(),
                opt(c.exit_code),
                c.restart_count.to_string(),
                p.sidecar_decision.clone(),
            ]);
        }
    }
    table(out, &rows)
}

fn event_rows(events: &[pb::Event]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for e in events {
        for c in &e.containers {
            rows.push(vec![
                e.seq.to_string(),
                e.finished_at.clone(),
                e.kind.clone(),
                format!("{}/{}", e.pod_namespace, e.pod_name),
                c.name.clone(),
                e.result.clone(),
                opt(c.exit_code),
                ms(c.exit_to_stop_ms),
                ms(c.exit_to_exit_ms),
            ]);
        }
        if e.containers.is_empty() {
            rows.push(vec![
                e.seq.to_string(),
                e.finished_at.clone(),
                e.kind.clone(),
                format!("{}/{}", e.pod_namespace, e.pod_name),
                "-".into(),
                e.result.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    rows
}

const EVENT_HEADER: [&str; 9] = [
    "SEQ",
    "TIME",
    "ACTION",
    "POD",
    "CONTAINER",
    "RESULT",
    "EXIT",
    "TO_STOP_MS",
    "TO_EXIT_MS",
];

pub async fn events(
    socket: &Path,
    after: u64,
    follow: bool,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = connect(socket).await?;
    let header = || {
        vec![
            EVENT_HEADER
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        ]
    };
    if !follow {
        let events = client
            .list_events(pb::ListEventsRequest {
                after_seq: after,
                limit: 0,
            })
            .await
            .context("ListEvents")?
            .into_inner()
            .events;
        if output == Output::Json {
            for e in &events {
                json_line(out, e)?;
            }
            return Ok(());
        }
        let mut rows = header();
        rows.extend(event_rows(&events));
        return table(out, &rows);
    }
    let mut stream = client
        .watch_events(pb::WatchEventsRequest { after_seq: after })
        .await
        .context("WatchEvents")?
        .into_inner();
    if output == Output::Table {
        table(out, &header())?;
    }
    while let Some(e) = stream.next().await {
        let e = e.context("WatchEvents stream")?;
        match output {
            Output::Json => json_line(out, &e)?,
            Output::Table => table(out, &event_rows(std::slice::from_ref(&e)))?,
        }
        out.flush()?;
    }
    Ok(())
}
