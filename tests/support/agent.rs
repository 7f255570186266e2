//! Runs the real `nodeward agent` binary as a child process and reads its JSON log lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::testbed::TestBed;
use serde_json::Value;

/// Path of the agent binary: `$NODEWARD_BIN`, else the one cargo built beside the running test or
/// bench (`target/<profile>/nodeward`, next to its `deps/`; cargo builds the binary before the
/// integration tests and benches of its package), else `nodeward` on the PATH.
pub fn agent_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("NODEWARD_BIN") {
        return PathBuf::from(bin);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("nodeward")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nodeward"))
}

pub struct AgentProcess {
    child: Mutex<Child>,
    pid: u32,
    lines: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<Vec<String>>>,
    state: Option<PathBuf>,
}

impl AgentProcess {
    /// Start `nodeward agent` on a test bed: its CRI socket, its pods cgroup tree, JSON logs, a
    /// fresh state directory (journal and API socket) and `extra` arguments.
    pub fn spawn(tb: &TestBed, extra: &[&str]) -> anyhow::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let state = tb.dir().join(format!("agent-{}-{n}", std::process::id()));
        Self::spawn_in(tb, &state, extra)
    }

    /// Like [`spawn`](Self::spawn) with a given state directory (to restart an agent on its journal).
    pub fn spawn_in(tb: &TestBed, state: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_in_env(tb, state, extra, &[])
    }

    /// Like [`spawn_in`](Self::spawn_in) with extra environment variables.
    pub fn spawn_in_env(
        tb: &TestBed,
        state: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_with(tb, &tb.socket(), state, extra, env)
    }

    /// Like [`spawn_in`](Self::spawn_in) speaking CRI on `cri_socket` (e.g. a recording proxy).
    pub fn spawn_on(
        tb: &TestBed,
        cri_socket: &Path,
        state: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn_with(tb, cri_socket, state, extra, &[])
    }

    /// Like [`spawn`](Self::spawn), as root without any capability (`setpriv` clears the bounding,
    /// inheritable and ambient sets before it runs the agent), as the packaged DaemonSet and unit
    /// run it.
    pub fn spawn_without_capabilities(tb: &TestBed, extra: &[&str]) -> anyhow::Result<Self> {
        let setpriv = [
            "setpriv",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--",
        ];
        Self::spawn_under(tb, &setpriv, extra)
    }

    /// Like [`spawn`](Self::spawn), with an open-file limit of `n` (soft and hard: the agent
    /// cannot raise it).
    pub fn spawn_with_fd_limit(tb: &TestBed, n: u32, extra: &[&str]) -> anyhow::Result<Self> {
        let limit = format!("--nofile={n}:{n}");
        Self::spawn_under(tb, &["prlimit", &limit, "--"], extra)
    }

    /// Like [`spawn`](Self::spawn), run through `wrapper` (a program that execs the rest of its
    /// command line, so the pid stays the agent's).
    fn spawn_under(tb: &TestBed, wrapper: &[&str], extra: &[&str]) -> anyhow::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let state = tb
            .dir()
            .join(format!("agent-{}-{}-{n}", wrapper[0], std::process::id()));
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(agent_binary());
        let mut agent = Self::spawn_cmd(Self::agent_args(cmd, tb, &tb.socket(), &state, extra))?;
        agent.state = Some(state);
        Ok(agent)
    }

    /// The number of file descriptors the agent holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count())
    }

    /// Like [`spawn_in`](Self::spawn_in) speaking CRI on `cri_socket`, with extra environment
    /// variables.
    pub fn spawn_with(
        tb: &TestBed,
        cri_socket: &Path,
        state: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(agent_binary());
        cmd.envs(env.iter().copied());
        let mut agent = Self::spawn_cmd(Self::agent_args(cmd, tb, cri_socket, state, extra))?;
        agent.state = Some(state.to_path_buf());
        Ok(agent)
    }

    /// `cmd` with `agent` and the arguments that put it on the test bed.
    fn agent_args(
        mut cmd: Command,
        tb: &TestBed,
        cri_socket: &Path,
        state: &Path,
        extra: &[&str],
    ) -> Command {
        cmd.arg("agent")
            .arg("--cri-socket")
            .arg(cri_socket)
            .arg("--pods-cgroup")
            .arg(tb.cgroup_parent().trim_start_matches('/'))
            .arg("--state-dir")
            .arg(state)
            .arg("--api-socket")
            .arg(state.join("agent.sock"))
            .args(["--addr", "127.0.0.1:0", "--log-format", "json"])
            .args(extra);
        cmd
    }

    /// The state directory given to the agent.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state.as_deref()
    }

    /// The agent's API socket (in its state directory).
    pub fn api_socket(&self) -> Option<PathBuf> {
        self.state.as_ref().map(|s| s.join("agent.sock"))
    }

    /// The metrics address the agent listens on, from its start-up log.
    pub async fn metrics_addr(&self) -> anyhow::Result<String> {
        let line = self
            .wait_for("metrics listener", Duration::from_secs(10), |v| {
                v["message"] == "serving /metrics, /healthz, /readyz"
            })
            .await?;
        line["addr"]
            .as_str()
            .map(str::to_string)
            .context("addr field")
    }

    /// GET `path` from the agent's metrics/health listener (with curl): status code and body.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("http://{}{path}", self.metrics_addr().await?);
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url])
            .output()
            .await
            .context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl {url}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text
            .rsplit_once('\n')
            .context("curl output without a status")?;
        Ok((code.parse().context("status code")?, body.to_string()))
    }

    /// Start `nodeward controller` with `kubeconfig`, its Lease in the packaged namespace
    /// (`nodeward-system`), no HTTP listener, and `extra` flags.
    pub fn spawn_controller(kubeconfig: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let kc = kubeconfig.to_str().context("kubeconfig path")?;
        let mut args = vec![
            "controller",
            "--kubeconfig",
            kc,
            "--lease-namespace",
            super::rbac::NAMESPACE,
            "--addr",
            "off",
        ];
        args.extend_from_slice(extra);
        Self::spawn_nodeward(&args)
    }

    /// Wait (within `timeout`) until this controller leads and runs its reconcilers.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_for("leadership", timeout, |v| {
            v["message"] == "became the leader; starting reconcilers"
        })
        .await
    }

    /// Start `nodeward <args…> --log-format json` (any subcommand, e.g. the controller).
    pub fn spawn_nodeward(args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(agent_binary());
        cmd.args(args).args(["--log-format", "json"]);
        Self::spawn_cmd(cmd)
    }

    /// Start the agent with exactly these arguments after `agent`.
    pub fn spawn_args(args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(agent_binary());
        cmd.arg("agent").args(["--log-format", "json"]).args(args);
        Self::spawn_cmd(cmd)
    }

    fn spawn_cmd(mut cmd: Command) -> anyhow::Result<Self> {
        super::die_with_parent(&mut cmd);
        cmd.env("RUST_LOG", "nodeward=debug")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", agent_binary().display()))?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (l, r) = (lines.clone(), raw.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("NODEWARD_TEST_ECHO").is_some() {
                    eprintln!("agent: {line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l.lock().unwrap().push(v);
                }
                r.lock().unwrap().push(line);
            }
        });
        let pid = child.id();
        Ok(Self {
            child: Mutex::new(child),
            pid,
            lines,
            raw,
            state: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn try_wait(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.lock().unwrap().try_wait()
    }

    /// Every JSON log line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Every raw stderr line so far (including non-JSON ones).
    pub fn raw_lines(&self) -> Vec<String> {
        self.raw.lock().unwrap().clone()
    }

    /// Log lines whose message is `message`.
    pub fn messages(&self, message: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Lines whose message is `message` once there are at least `n` of them: the log goes through
    /// a non-blocking writer, so a line can reach the test after the API write that followed it.
    pub async fn wait_messages(
        &self,
        message: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.messages(message);
            if lines.len() >= n {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {n} \"{message}\" lines after {timeout:?}; log:\n{}",
                    lines.len(),
                    self.raw_lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for a log line matching `pred`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.lines().into_iter().find(|v| pred(v)) {
                return Ok(v);
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "agent exited ({status}) before {what}; log:\n{}",
                    self.raw_lines().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}; log:\n{}",
                    self.raw_lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_ready(&self) -> anyhow::Result<Value> {
        self.wait_for("agent ready", Duration::from_secs(20), |v| {
            v["message"] == "agent ready"
        })
        .await
    }

    /// Wait for the `sidecar stopped` line of one container of a pod.
    pub async fn wait_stopped(
        &self,
        pod_uid: &str,
        container: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let (uid, c) = (pod_uid.to_string(), container.to_string());
        self.wait_for(&format!("sidecar {container} stopped"), timeout, move |v| {
            v["message"] == "sidecar stopped"
                && v["pod_uid"] == uid.as_str()
                && v["container"] == c.as_str()
        })
        .await
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        crate::procs::peak_rss_kib(self.pid() as i32).ok()
    }

    /// Resident set size now (VmRSS) in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::procs::rss_kib(self.pid() as i32).ok()
    }

    /// User + system CPU time consumed so far, in milliseconds.
    pub fn cpu_ms(&self) -> Option<u64> {
        crate::procs::cpu_ms(self.pid() as i32).ok()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&self) {
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("agent did not exit within 10 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for the process to exit by itself.
    pub async fn wait_exit(&self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("agent still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
