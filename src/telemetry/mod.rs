//! Logging set-up: structured `tracing` output as text or JSON, filtered by `RUST_LOG`.

pub mod http;
pub mod metrics;
pub mod nofile;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global subscriber. Logs go to stderr through a writer thread, so a slow reader
/// (a full pipe, a busy journald) never stalls a task that logs on its way to a stop; the line's
/// timestamp is still taken when it is logged. `RUST_LOG` overrides the default `info`. Keep the
/// returned guard until exit: dropping it flushes the lines still queued.
#[must_use = "dropping the guard stops logging"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Not lossy: past 8192 queued lines a caller waits rather than a line being lost. (The
    // default 128k-line queue is allocated up front: 4 MiB of RSS.)
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}
