//! `nodeward`: the CLI over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::StreamExt;
use nodeward::telemetry::{self, LogFormat};
use signal_hook::consts::{SIGINT, SIGTERM};

#[derive(Parser)]
#[command(
    name = "nodeward",
    version,
    about = "Node agent bringing OpenKruise's node-side features to every node"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "NODEWARD_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent.
    Agent(AgentArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// CRI socket to use; a relative path is taken under --runtime-dir. Default: probe the usual sockets.
    #[arg(long, env = "NODEWARD_CRI_SOCKET")]
    cri_socket: Option<PathBuf>,
    /// Directory holding the runtime sockets (the DaemonSet mounts the host's /var/run at /hostvarrun).
    #[arg(long, default_value = "/var/run", env = "NODEWARD_RUNTIME_DIR")]
    runtime_dir: PathBuf,
    /// Period of the CRI relist that catches anything the event-driven watchers missed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    relist_interval: Duration,
    /// Do not watch container init processes through pidfds.
    #[arg(long)]
    no_pidfd: bool,
    /// Do not watch cgroup v2 cgroup.events files.
    #[arg(long)]
    no_cgroup_events: bool,
    /// Cgroup trees (under the cgroup v2 mount) where the kubelet creates pod cgroups, watched for
    /// new containers; repeat or separate with commas.
    #[arg(long, value_delimiter = ',', default_value = "kubepods,kubepods.slice")]
    pods_cgroup: Vec<String>,
    /// Where the host's /proc is visible.
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("nodeward {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Agent(args) => {
            telemetry::init(cli.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("nodeward: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(agent(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nodeward: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])?;
    let handle = signals.handle();
    let shutdown = async move {
        let mut signals = signals;
        if let Some(sig) = signals.next().await {
            tracing::info!(signal = sig, "signal received");
        }
    };
    let cfg = nodeward::agent::Config {
        cri_socket: args.cri_socket,
        runtime_dir: args.runtime_dir,
        relist_interval: args.relist_interval,
        pidfd: !args.no_pidfd,
        cgroup_events: !args.no_cgroup_events,
        pods_cgroups: args.pods_cgroup,
        proc_root: args.proc_root,
    };
    let res = nodeward::agent::run(cfg, shutdown).await;
    handle.close();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
