//! `nodeward`: the CLI over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures::StreamExt;
use nodeward::gates::FeatureGates;
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
    Agent(Box<AgentArgs>),
    /// Ask a running agent (over its local API socket).
    Ctl(CtlArgs),
    /// Run the controller (one active replica by Lease leader election).
    Controller(Box<ControllerArgs>),
    /// Print the CustomResourceDefinitions of the apps.kruise.io/v1alpha1 kinds (YAML).
    Crds,
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// CRI socket to use; a relative path is taken under --runtime-dir. Default: probe the usual sockets.
    #[arg(long, env = "NODEWARD_CRI_SOCKET")]
    cri_socket: Option<PathBuf>,
    /// Directory holding the runtime sockets (the DaemonSet mounts the runtime's socket directory at /run/cri).
    #[arg(long, default_value = "/var/run", env = "NODEWARD_RUNTIME_DIR")]
    runtime_dir: PathBuf,
    /// Period of the CRI relist that catches anything the event-driven watchers missed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    relist_interval: Duration,
    /// /healthz fails (and the systemd watchdog goes unpinged) when no relist has succeeded for
    /// this long, or three relist intervals if longer: a stuck loop or a silent runtime.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    health_stall_after: Duration,
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
    /// Node name reported by the local API (default: the host name).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Directory of the durable journal.
    #[arg(long, default_value = "/var/lib/nodeward", env = "NODEWARD_STATE_DIR")]
    state_dir: PathBuf,
    /// Keep at most this many events in the journal.
    #[arg(long, default_value_t = 10_000)]
    journal_max_events: usize,
    /// Drop journal events older than this.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    journal_max_age: Duration,
    /// The local gRPC API socket (created 0600).
    #[arg(long, default_value = DEFAULT_API_SOCKET, env = "NODEWARD_API_SOCKET")]
    api_socket: PathBuf,
    /// Listen address of /metrics, /healthz and /readyz (":PORT" for every interface, "IP:PORT");
    /// "off" disables it. Loopback by default: set the node's address to be scraped from afar.
    #[arg(long, default_value = "127.0.0.1:10221")]
    addr: String,
    /// Cluster mode with this kubeconfig. Without it, cluster mode is used when running in a Pod
    /// (in-cluster configuration), standalone otherwise.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Never talk to the Kubernetes API, even when running in a Pod.
    #[arg(long, conflicts_with = "kubeconfig")]
    standalone: bool,
    /// Image puller: CRI image pulls running at once on this node (NodeImage tags beyond it wait).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_pulls: u32,
    /// Image puller: the only namespace pull secrets are read from.
    #[arg(
        long,
        default_value = "kruise-daemon-config",
        env = "KRUISE_DAEMON_CONFIG_NS"
    )]
    pull_secret_namespace: String,
    /// Configuration file (TOML; keys are these long flag names). Precedence: flag > environment >
    /// file > default. A missing file at the default path is not an error.
    #[arg(long, default_value = DEFAULT_AGENT_CONFIG, env = "NODEWARD_CONFIG")]
    config: PathBuf,
    /// Validate the configuration file and flags, print the result and exit (0 valid, 1 invalid)
    /// without touching the runtime, the state directory or the cluster.
    #[arg(long)]
    check_config: bool,
    /// Capabilities on or off, by OpenKruise's gate names (SidecarTerminator, ImagePullJobGate,
    /// PodProbeMarkerGate, InPlaceUpdateEnvFromMetadata; all on by default), e.g.
    /// "PodProbeMarkerGate=false".
    #[arg(long, default_value = "", env = "NODEWARD_FEATURE_GATES", value_parser = parse_gates)]
    feature_gates: FeatureGates,
}

fn parse_gates(s: &str) -> Result<FeatureGates, String> {
    FeatureGates::parse(s).map_err(|e| e.to_string())
}

const DEFAULT_AGENT_CONFIG: &str = "/etc/nodeward/agent.toml";

#[derive(clap::Args)]
struct ControllerArgs {
    /// Kubeconfig; default: in-cluster configuration, then $KUBECONFIG, then ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "nodeward-system", env = "POD_NAMESPACE")]
    lease_namespace: String,
    #[arg(long, default_value = "nodeward-controller")]
    lease_name: String,
    /// Lease duration; the leader renews it 5 s before it expires.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// This replica's identity in the Lease (default: POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Listen address of /metrics, /healthz and /readyz; "off" disables it.
    #[arg(long, default_value = ":10222")]
    addr: String,
    /// Namespace the agents read pull secrets from; ImagePullJob secrets are copied there.
    #[arg(
        long,
        default_value = "kruise-daemon-config",
        env = "KRUISE_DAEMON_CONFIG_NS"
    )]
    pull_secret_namespace: String,
    /// How long a Node must be Ready before it gets its NodeImage.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    nodeimage_creation_delay: Duration,
    /// How long an agent may leave a NodeImage tag unanswered before it is failed.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    nodeimage_response_timeout: Duration,
    /// Seconds added to the TTL of an Always job's NodeImage tags.
    #[arg(long, default_value_t = 300)]
    default_ttlseconds_for_always_nodeimage: i32,
    /// Listen address of the admission webhooks (HTTPS); "off" (the default outside the
    /// shipped Deployment) serves none.
    #[arg(long, default_value = "off")]
    webhook_addr: String,
    /// The webhook's Service (its DNS names go into the certificate), in the Lease's namespace.
    #[arg(long, default_value = "nodeward-controller-webhook")]
    webhook_service: String,
    /// The Secret holding the webhook's certificate, in the Lease's namespace.
    #[arg(long, default_value = "nodeward-controller-webhook-certs")]
    webhook_secret: String,
    /// The MutatingWebhookConfiguration (CRR) whose CA bundle the controller keeps.
    #[arg(long, default_value = "nodeward-crr")]
    webhook_configuration: String,
    /// The ValidatingWebhookConfiguration (PodProbeMarker) whose CA bundle the controller keeps.
    #[arg(long, default_value = "nodeward-validate")]
    webhook_validating_configuration: String,
    /// Reconcilers on or off, by OpenKruise's gate names (SidecarTerminator: the virtual-node
    /// sidecar image swap; ImagePullJobGate; PodProbeMarkerGate; all on by default).
    #[arg(long, default_value = "", env = "NODEWARD_FEATURE_GATES", value_parser = parse_gates)]
    feature_gates: FeatureGates,
}

const DEFAULT_API_SOCKET: &str = "/run/nodeward/agent.sock";

#[derive(clap::Args)]
struct CtlArgs {
    /// The agent's local API socket.
    #[arg(long, global = true, default_value = DEFAULT_API_SOCKET, env = "NODEWARD_API_SOCKET")]
    api_socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: nodeward::ctl::Output,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Runtime, watchers, readiness and counts.
    Status,
    /// Pods and containers with their roles and states.
    Pods,
    /// Actions taken.
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep streaming new events.
        #[arg(short, long)]
        follow: bool,
    },
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
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive: {s:?}"));
    }
    // Duration::from_secs_f64 panics on values too large for a Duration.
    if secs > nodeward::api::clamp::MAX_SECONDS as f64 {
        return Err(format!("duration must be at most a year: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse the command line, adding the agent's configuration file; returns the file used, if any.
fn parse_cli(argv: Vec<std::ffi::OsString>) -> anyhow::Result<(Cli, Option<PathBuf>)> {
    use anyhow::Context as _;
    let matches = Cli::command().try_get_matches_from(&argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let (Command::Agent(agent), Some(agent_matches)) =
        (&cli.command, matches.subcommand_matches("agent"))
    else {
        return Ok((cli, None));
    };
    let explicit =
        agent_matches.value_source("config") != Some(clap::parser::ValueSource::DefaultValue);
    let text = match std::fs::read_to_string(&agent.config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok((cli, None)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", agent.config.display())),
    };
    let mut cmd = Cli::command();
    cmd.build();
    let agent_cmd = cmd
        .find_subcommand("agent")
        .context("no agent subcommand")?;
    let extra = nodeward::config_file::file_args(&text, agent_cmd, agent_matches)
        .with_context(|| format!("config file {}", agent.config.display()))?;
    let path = agent.config.clone();
    let mut argv = argv;
    argv.extend(extra);
    let cli =
        Cli::try_parse_from(argv).with_context(|| format!("config file {}", path.display()))?;
    Ok((cli, Some(path)))
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let checking = argv.iter().any(|a| a == "--check-config");
    let (cli, config_file) = match parse_cli(argv) {
        Ok(parsed) => parsed,
        Err(e) => match e.downcast::<clap::Error>() {
            // Usage errors keep clap's exit code (2), except for --check-config, which promises 0/1.
            Ok(clap_err) if !checking || !clap_err.use_stderr() => clap_err.exit(),
            Ok(clap_err) => {
                let _ = clap_err.print();
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("nodeward: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    match cli.command {
        Command::Crds => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(nodeward::api::kruise::crds_yaml().as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nodeward crds: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Version => {
            println!("nodeward {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Ctl(args) => run_with(
            tokio::runtime::Builder::new_current_thread(),
            ctl(args),
            "nodeward ctl",
        ),
        Command::Controller(args) => {
            let _logs = telemetry::init(cli.log_format);
            run_with(
                tokio::runtime::Builder::new_multi_thread(),
                controller(args),
                "nodeward controller",
            )
        }
        Command::Agent(args) if args.check_config => match check_agent_config(&args) {
            Ok(summary) => {
                let file = config_file.map_or("none".to_owned(), |p| p.display().to_string());
                println!("nodeward agent: configuration OK (config file: {file}; {summary})");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nodeward agent: invalid configuration: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Agent(args) => {
            let _logs = telemetry::init(cli.log_format);
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(2);
            run_with(rt, agent(*args), "nodeward")
        }
    }
}

/// Run `task` on a runtime from `builder`; print its error on one line and map it to the exit code.
fn run_with(
    mut builder: tokio::runtime::Builder,
    task: impl std::future::Future<Output = anyhow::Result<()>>,
    what: &str,
) -> ExitCode {
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{what}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`nodeward ctl events | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the agent would run in cluster mode with `args`.
fn cluster_mode(args: &AgentArgs) -> bool {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    !args.standalone && (args.kubeconfig.is_some() || in_cluster)
}

/// Check what `agent` would reject at start, without side effects; a one-line summary when valid.
fn check_agent_config(args: &AgentArgs) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let addr = parse_addr_or_off(&args.addr)?;
    for (what, path) in [
        ("--state-dir", &args.state_dir),
        ("--api-socket", &args.api_socket),
        ("--runtime-dir", &args.runtime_dir),
        ("--proc-root", &args.proc_root),
    ] {
        anyhow::ensure!(
            path.is_absolute(),
            "{what} must be an absolute path, got {}",
            path.display()
        );
    }
    anyhow::ensure!(
        args.journal_max_events > 0,
        "--journal-max-events must be positive"
    );
    let mode = if cluster_mode(args) {
        anyhow::ensure!(
            args.node_name.as_deref().is_some_and(|n| !n.is_empty()),
            "cluster mode needs this node's name: set NODE_NAME (downward API spec.nodeName) or --node-name"
        );
        if let Some(path) = &args.kubeconfig {
            kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
        }
        "cluster"
    } else {
        "standalone"
    };
    let addr = addr.map_or("off".to_owned(), |a| a.to_string());
    Ok(format!("mode: {mode}; metrics/health: {addr}"))
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let (shutdown, handle) = shutdown_signal()?;
    nodeward::telemetry::nofile::raise_and_log();
    let addr = parse_addr_or_off(&args.addr)?;
    let cluster_mode = cluster_mode(&args);
    let given_name = args.node_name.filter(|n| !n.is_empty());
    let cluster = if cluster_mode {
        if given_name.is_none() {
            anyhow::bail!(
                "cluster mode needs this node's name: set NODE_NAME (downward API spec.nodeName) or --node-name"
            );
        }
        Some(nodeward::cluster::client(args.kubeconfig.as_deref()).await?)
    } else {
        None
    };
    let node_name = given_name.unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    });
    let cfg = nodeward::agent::Config {
        node_name,
        state_dir: args.state_dir,
        retention: nodeward::journal::Retention {
            max_events: args.journal_max_events,
            max_age: args.journal_max_age,
        },
        api_socket: args.api_socket,
        addr,
        failpoint: failpoint(
            std::env::var("NODEWARD_FAILPOINT").ok(),
            cfg!(debug_assertions),
        ),
        cluster,
        cri_socket: args.cri_socket,
        runtime_dir: args.runtime_dir,
        relist_interval: args.relist_interval,
        stall_after: args.health_stall_after,
        pidfd: !args.no_pidfd,
        cgroup_events: !args.no_cgroup_events,
        pods_cgroups: args.pods_cgroup,
        proc_root: args.proc_root,
        max_concurrent_pulls: args.max_concurrent_pulls as usize,
        pull_secret_namespace: args.pull_secret_namespace,
        gates: args.feature_gates,
    };
    let res = nodeward::agent::run(cfg, shutdown).await;
    handle.close();
    res
}

fn parse_addr_or_off(s: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    match s {
        "off" | "" => Ok(None),
        a => Ok(Some(
            nodeward::telemetry::http::parse_addr(a).map_err(anyhow::Error::msg)?,
        )),
    }
}

fn shutdown_signal() -> anyhow::Result<(
    impl std::future::Future<Output = ()>,
    signal_hook_tokio::Handle,
)> {
    let signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])?;
    let handle = signals.handle();
    let fut = async move {
        let mut signals = signals;
        if let Some(sig) = signals.next().await {
            tracing::info!(signal = sig, "signal received");
        }
    };
    Ok((fut, handle))
}

async fn controller(args: Box<ControllerArgs>) -> anyhow::Result<()> {
    let args = *args;
    nodeward::telemetry::nofile::raise_and_log();
    let (shutdown, handle) = shutdown_signal()?;
    let client = nodeward::cluster::client(args.kubeconfig.as_deref()).await?;
    let identity = args.identity.filter(|i| !i.is_empty()).unwrap_or_else(|| {
        format!(
            "{}-{}",
            rustix::system::uname().nodename().to_string_lossy(),
            std::process::id()
        )
    });
    let webhook =
        parse_addr_or_off(&args.webhook_addr)?.map(|addr| nodeward::controller::webhook::Config {
            addr,
            namespace: args.lease_namespace.clone(),
            service: args.webhook_service,
            secret: args.webhook_secret,
            configuration: args.webhook_configuration,
            validating_configuration: args.webhook_validating_configuration,
        });
    let cfg = nodeward::controller::Config {
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        identity,
        lease_duration: args.lease_duration,
        lease_grace: Duration::from_secs(5),
        addr: parse_addr_or_off(&args.addr)?,
        image_pull: nodeward::controller::imagepull::Config {
            pull_secret_namespace: args.pull_secret_namespace,
            node_image_creation_delay: args.nodeimage_creation_delay,
            node_image_response_timeout: args.nodeimage_response_timeout,
            default_ttl_seconds_for_always: args.default_ttlseconds_for_always_nodeimage,
        },
        webhook,
        gates: args.feature_gates,
    };
    let res = nodeward::controller::run(client, cfg, shutdown).await;
    handle.close();
    res
}

async fn ctl(args: CtlArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let socket = &args.api_socket;
    match args.command {
        CtlCommand::Status => nodeward::ctl::status(socket, args.output, &mut out).await,
        CtlCommand::Pods => nodeward::ctl::pods(socket, args.output, &mut out).await,
        CtlCommand::Events { after, follow } => {
            nodeward::ctl::events(socket, after, follow, args.output, &mut out).await
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Crash-test fault injection exists in debug builds (what the tests run) only: a release build
/// ignores the variable.
fn failpoint(value: Option<String>, debug_build: bool) -> Option<String> {
    value.filter(|f| debug_build && !f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoints_only_in_debug_builds() {
        let set = || Some("after-decide".to_string());
        assert_eq!(failpoint(set(), true), set());
        assert_eq!(failpoint(set(), false), None);
        assert_eq!(failpoint(Some(String::new()), true), None);
        assert_eq!(failpoint(None, true), None);
    }

    /// The agent's HTTP port listens on loopback unless told otherwise (the DaemonSet passes the
    /// node's address).
    #[test]
    fn the_agent_listens_on_loopback_by_default() {
        let Command::Agent(args) = Cli::try_parse_from(["nodeward", "agent"]).unwrap().command
        else {
            panic!("not the agent");
        };
        assert_eq!(args.addr, "127.0.0.1:10221");
        let addr = parse_addr_or_off(&args.addr).unwrap().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("100000000000000000000000000000000d").is_err());
        assert!(parse_duration("366d").is_err());
        assert_eq!(parse_duration("365d"), Ok(Duration::from_secs(365 * 86400)));
    }
}
