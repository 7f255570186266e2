//! A private containerd speaking CRI v1, with a local registry serving busybox-based images, for
//! integration tests and benchmarks. Every test bed lives in its own `/tmp/nodeward-tb-*` dir
//! and cgroup parent, and is torn down by a guard process (`testbed-guard.sh`) when it is shut
//! down, dropped, or when the test process exits or dies in any way.

use std::fs::{self, File, OpenOptions};
use std::io::PipeWriter;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::future::try_join_all;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ListPodSandboxRequest, PullImageRequest, RemovePodSandboxRequest,
    StopPodSandboxRequest, VersionRequest,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, watch};
use tonic::transport::Channel;

use super::kubelet::{RELIST_PERIOD, Relist};
use super::{images, registry};

/// How long containerd may take to answer CRI after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd may take to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the guard may take to tear everything down.
const GUARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one CRI call made by the test bed itself.
const CRI_CALL_TIMEOUT: Duration = Duration::from_secs(15);

pub struct TestBed {
    dir: PathBuf,
    /// `nodeward-tb-<suffix>`: the cgroup parent's name under every hierarchy root.
    cgroup_name: String,
    registry_port: u16,
    containerd: Mutex<Option<Child>>,
    registry: Mutex<Option<Child>>,
    guard: Mutex<Option<Guard>>,
    background: Mutex<Option<Runtime>>,
    background_handle: Handle,
    shut_down: AtomicBool,
    /// The kubelet fixture's node-wide container relist, started by the first pod.
    relist: OnceLock<watch::Receiver<Arc<Relist>>>,
    /// Tests sharing a test bed hold it shared; one stopping or restarting containerd holds it
    /// exclusively.
    access: RwLock<()>,
}

/// The guard process and the write end of its stdin pipe: closing it starts the teardown.
struct Guard {
    child: Child,
    pipe: Option<PipeWriter>,
}

impl TestBed {
    /// Start a test bed: images (cached), registry, containerd with the CRI plugin, images
    /// pre-pulled. Takes a second or two with cached images.
    pub async fn start() -> Result<TestBed> {
        check_tools()?;
        let background = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testbed-bg")
            .enable_all()
            .build()
            .context("building the test bed's background runtime")?;
        let dir = tempfile::Builder::new()
            .prefix("nodeward-tb-")
            .tempdir_in("/tmp")
            .context("creating the test bed dir")?
            .keep();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("test bed dir name is not UTF-8")?
            .to_owned();
        // Until the guard runs, nothing but the (empty) dir exists; make sure it goes on failure.
        let guard = create_layout(&dir).and_then(|()| spawn_guard(&dir, &name));
        let guard = match guard {
            Ok(guard) => guard,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut bed = TestBed {
            dir,
            cgroup_name: name,
            registry_port: 0,
            containerd: Mutex::new(None),
            registry: Mutex::new(None),
            guard: Mutex::new(Some(guard)),
            background_handle: background.handle().clone(),
            background: Mutex::new(Some(background)),
            shut_down: AtomicBool::new(false),
            relist: OnceLock::new(),
            access: RwLock::new(()),
        };
        // On error `bed` is dropped, which tears down whatever was started.
        bed.boot()
            .await
            .with_context(|| format!("starting the test bed in {}", bed.dir.display()))?;
        Ok(bed)
    }

    /// One test bed per process, started on first use and torn down by its guard when the
    /// process exits. Usable from any thread and any tokio runtime: it is started on a thread of
    /// its own, and the methods needing CRI open a channel in the caller's runtime.
    ///
    /// Panics when the test bed cannot start (it is meant for tests and benchmarks).
    pub fn shared() -> &'static TestBed {
        static SHARED: OnceLock<Result<TestBed, String>> = OnceLock::new();
        let bed = SHARED.get_or_init(|| {
            std::thread::Builder::new()
                .name("testbed-start".into())
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("building a runtime: {e}"))?;
                    rt.block_on(TestBed::start()).map_err(|e| format!("{e:#}"))
                })
                .map_err(|e| format!("spawning the start thread: {e}"))
                .and_then(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err("the start thread panicked".into()))
                })
        });
        match bed {
            Ok(bed) => bed,
            Err(e) => panic!("the shared test bed failed to start: {e}"),
        }
    }

    /// The test bed's private dir (`/tmp/nodeward-tb-*`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runtime dir to give an agent (`--runtime-dir`): holds `containerd/containerd.sock`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// containerd's CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("containerd/containerd.sock")
    }

    /// Where containerd, the registry, the guard and the pods write their logs.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn containerd_log(&self) -> PathBuf {
        self.log_dir().join("containerd.log")
    }

    pub fn registry_port(&self) -> u16 {
        self.registry_port
    }

    /// Cgroup parent of every pod sandbox of this test bed (cgroupfs driver); each pod and
    /// container has its v1 and v2 cgroups under `/sys/fs/cgroup/<hierarchy><cgroup_parent>`.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.cgroup_name)
    }

    /// Full reference of a test bed image: `busybox`, `noshell`, `pause` (optionally with a
    /// tag, default `latest`). Always names the local registry, never docker.io.
    pub fn image(&self, name: &str) -> String {
        let local = format!("127.0.0.1:{}/", self.registry_port);
        let name = name.strip_prefix(&local).unwrap_or(name);
        if name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
        {
            format!("{local}{name}")
        } else {
            format!("{local}{name}:latest")
        }
    }

    /// A CRI runtime service client bound to the caller's tokio runtime (the channel is lazy and
    /// reconnects after containerd restarts). Must be called inside a runtime.
    pub fn cri(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(nodeward::cri::channel(&self.socket()))
    }

    /// A CRI image service client bound to the caller's tokio runtime.
    pub fn image_service(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(nodeward::cri::channel(&self.socket()))
    }

    /// The test bed's own multi-thread runtime, for fixtures' background tasks; it lives as long
    /// as the test bed.
    pub fn background(&self) -> Handle {
        self.background_handle.clone()
    }

    /// The kubelet fixture's relist of this node's containers (started on first use, every
    /// [`RELIST_PERIOD`] unless [`TestBed::start_relist`] said otherwise).
    pub fn relist(&self) -> watch::Receiver<Arc<Relist>> {
        self.relist
            .get_or_init(|| Relist::start(self, RELIST_PERIOD))
            .clone()
    }

    /// Start the kubelet fixture's relist with this period; fails once it runs (the first pod
    /// starts it).
    pub fn start_relist(&self, period: Duration) -> Result<()> {
        let mut started = false;
        self.relist.get_or_init(|| {
            started = true;
            Relist::start(self, period)
        });
        ensure!(started, "the kubelet fixture's relist already runs");
        Ok(())
    }

    /// Hold while using a shared test bed in a way that a containerd restart by another test
    /// would disturb (e.g. creating pods).
    pub async fn lock_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.access.read().await
    }

    /// Hold while stopping or restarting containerd of a shared test bed: waits for the holders
    /// of [`TestBed::lock_shared`] and keeps new ones out.
    pub async fn lock_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.access.write().await
    }

    /// containerd's pid while it runs.
    pub fn containerd_pid(&self) -> Option<u32> {
        lock(&self.containerd).as_ref().map(Child::id)
    }

    /// SIGTERM containerd and wait for it to exit (SIGKILL after 20 s). Containers keep running
    /// under their shims.
    pub async fn stop_containerd(&self) -> Result<()> {
        let child = lock(&self.containerd).take();
        let mut child = child.context("containerd is not running")?;
        let _ = kill(pid_of(&child), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child
                .try_wait()
                .context("waiting for containerd")?
                .is_some()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("containerd did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Start containerd again (same config, state and socket) and wait until CRI answers.
    pub async fn start_containerd(&self) -> Result<()> {
        {
            let mut slot = lock(&self.containerd);
            if let Some(child) = slot.as_mut()
                && child.try_wait().ok().flatten().is_none()
            {
                bail!("containerd is already running (pid {})", child.id());
            }
            *slot = Some(self.spawn_containerd()?);
        }
        self.wait_cri_ready().await
    }

    /// Stop containerd, start it again and wait until CRI answers; containers survive this.
    pub async fn restart_containerd(&self) -> Result<()> {
        self.stop_containerd().await?;
        self.start_containerd().await
    }

    /// Tear the test bed down: stop and remove every pod sandbox through CRI, stop containerd
    /// and the registry, then let the guard kill leftovers, unmount, remove the cgroups and the
    /// dir. Best-effort and idempotent; reports what failed. Shutting down the shared test bed
    /// ends it for the whole process (fine at the end of a benchmark); left alone, its guard
    /// tears it down when the process exits.
    pub async fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut problems = Vec::new();
        // First the fixtures' background tasks, so that nothing restarts containers meanwhile.
        self.stop_background();
        if self.containerd_running() {
            if let Err(e) = self.remove_all_sandboxes().await {
                problems.push(format!("removing pod sandboxes: {e:#}"));
            }
            if let Err(e) = self.stop_containerd().await {
                problems.push(format!("stopping containerd: {e:#}"));
            }
        }
        kill_child(&self.registry);
        kill_child(&self.containerd);
        let guard = lock(&self.guard).take();
        if let Some(mut guard) = guard {
            guard.pipe = None;
            let deadline = Instant::now() + GUARD_TIMEOUT;
            loop {
                match guard.child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        problems.push(format!(
                            "the guard failed ({status}); see {}/guard.log if still there, or \
                             set NODEWARD_TESTBED_KEEP_LOGS=<dir> to keep the logs",
                            self.log_dir().display()
                        ));
                        break;
                    }
                    Ok(None) if Instant::now() > deadline => {
                        problems.push(format!("the guard did not finish within {GUARD_TIMEOUT:?}"));
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => {
                        problems.push(format!("waiting for the guard: {e}"));
                        break;
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("test bed teardown: {}", problems.join("; ")))
        }
    }

    async fn boot(&mut self) -> Result<()> {
        let layout = tokio::task::spawn_blocking(images::ensure_layout)
            .await
            .context("the image build task failed")??;
        self.start_registry().await?;
        try_join_all(images::IMAGES.map(|name| {
            let (layout, dest) = (&layout, self.image(name));
            async move { registry::push(layout, name, &dest, None).await }
        }))
        .await?;
        fs::write(self.dir.join("containerd.toml"), self.containerd_config())
            .context("writing containerd.toml")?;
        self.start_containerd().await?;
        let mut images = self.image_service();
        for name in images::IMAGES {
            let image = self.image(name);
            let req = PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            cri_call("PullImage", images.pull_image(req))
                .await
                .with_context(|| format!("pre-pulling {image}"))?;
        }
        Ok(())
    }

    async fn start_registry(&mut self) -> Result<()> {
        let config = self.dir.join("registry.yml");
        let mut last_error = None;
        // A free port may be taken by someone else before the registry binds it: retry.
        for _ in 0..3 {
            let port = free_port()?;
            fs::write(&config, self.registry_config(port)).context("writing registry.yml")?;
            let log = log_file(&self.log_dir().join("registry.log"))?;
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .context("spawning docker-registry")?;
            *lock(&self.registry) = Some(child);
            match self.wait_registry(port).await {
                Ok(()) => {
                    self.registry_port = port;
                    return Ok(());
                }
                Err(e) => {
                    kill_child(&self.registry);
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no attempt made")))
            .context("starting docker-registry")
    }

    async fn wait_registry(&self, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = try_wait(&self.registry)? {
                bail!(
                    "docker-registry exited ({status}): {}",
                    tail(&self.log_dir().join("registry.log"))
                );
            }
            // Not just a listener: another process may have taken the port meanwhile.
            let answer = registry_answers(port).await;
            if answer.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return answer
                    .with_context(|| format!("docker-registry on port {port} after 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn spawn_containerd(&self) -> Result<Child> {
        let log = log_file(&self.containerd_log())?;
        Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("spawning containerd")
    }

    async fn wait_cri_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = try_wait(&self.containerd)? {
                bail!(
                    "containerd exited ({status}); log tail: {}",
                    tail(&self.containerd_log())
                );
            }
            let req = VersionRequest {
                version: nodeward::cri::connect::CRI_API_VERSION.into(),
            };
            let error =
                match tokio::time::timeout(Duration::from_secs(2), self.cri().version(req)).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(s)) => nodeward::cri::connect::describe_status(&s),
                    Err(_) => "CRI Version timed out".into(),
                };
            if Instant::now() > deadline {
                bail!(
                    "containerd's CRI not ready after {READY_TIMEOUT:?} ({error}); log tail: {}",
                    tail(&self.containerd_log())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn containerd_running(&self) -> bool {
        lock(&self.containerd)
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    async fn remove_all_sandboxes(&self) -> Result<()> {
        let mut cri = self.cri();
        let sandboxes = cri_call(
            "ListPodSandbox",
            cri.list_pod_sandbox(ListPodSandboxRequest::default()),
        )
        .await?
        .items;
        let mut problems = Vec::new();
        for sandbox in sandboxes {
            let pod_sandbox_id = sandbox.id;
            let stop = StopPodSandboxRequest {
                pod_sandbox_id: pod_sandbox_id.clone(),
            };
            if let Err(e) = cri_call("StopPodSandbox", cri.stop_pod_sandbox(stop)).await {
                problems.push(format!("{pod_sandbox_id}: {e:#}"));
            }
            let remove = RemovePodSandboxRequest {
                pod_sandbox_id: pod_sandbox_id.clone(),
            };
            if let Err(e) = cri_call("RemovePodSandbox", cri.remove_pod_sandbox(remove)).await {
                problems.push(format!("{pod_sandbox_id}: {e:#}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }

    fn stop_background(&self) {
        if let Some(rt) = lock(&self.background).take() {
            rt.shutdown_background();
        }
    }

    fn registry_config(&self, port: u16) -> String {
        format!(
            "version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: nodeward-testbed
",
            root = self.dir.join("registry").display(),
        )
    }

    fn containerd_config(&self) -> String {
        let d = self.dir.display();
        let port = self.registry_port;
        format!(
            r#"# Generated by tests/support/testbed.rs. Everything lives under the test bed dir except the
# shims' sockets, which containerd 1.6 always puts in /run/containerd/s.
version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{d}/run/containerd/containerd.sock"

[ttrpc]
  address = "{d}/run/containerd/containerd.sock.ttrpc"

[debug]
  address = "{d}/run/containerd/debug.sock"
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.runtime.v1.linux"]
    runtime_root = "{d}/state/runc-v1"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "127.0.0.1:{port}/pause:latest"
    # Without this runc fails with "failed to update /proc/self/oom_score_adj: Permission
    # denied" here.
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          # runc's state, by default under /run/containerd/runc.
          Root = "{d}/state/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{d}/cni/bin"
      conf_dir = "{d}/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:{port}"]
      endpoint = ["http://127.0.0.1:{port}"]
"#
        )
    }
}

impl Drop for TestBed {
    /// Synchronous part of [`TestBed::shutdown`]: no CRI, just kill containerd and the registry
    /// and have the guard clean up (waiting for it).
    fn drop(&mut self) {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_background();
        kill_child(&self.containerd);
        kill_child(&self.registry);
        if let Some(mut guard) = lock(&self.guard).take() {
            guard.pipe = None;
            let deadline = Instant::now() + GUARD_TIMEOUT;
            while matches!(guard.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One CRI call with the test bed's timeout; errors name the call and carry the status in one
/// line.
pub async fn cri_call<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(CRI_CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => bail!(
            "CRI {what}: {}",
            nodeward::cri::connect::describe_status(&status)
        ),
        Err(_) => bail!("CRI {what}: no answer within {CRI_CALL_TIMEOUT:?}"),
    }
}

fn check_tools() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("the test bed starts containerd and needs root");
    }
    let missing: Vec<&str> = ["containerd", "runc", "umoci", "skopeo", "docker-registry"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        bail!("missing {} (run scripts/deps.sh)", missing.join(", "))
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn create_layout(dir: &Path) -> Result<()> {
    for sub in [
        "run/containerd",
        "root",
        "state",
        "registry",
        "logs",
        "opt",
        "cni/bin",
        "cni/net.d",
    ] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    Ok(())
}

fn spawn_guard(dir: &Path, cgroup_name: &str) -> Result<Guard> {
    let script = super::repo().join("tests/support/testbed-guard.sh");
    let (reader, writer) = std::io::pipe().context("creating the guard's pipe")?;
    let log = log_file(&dir.join("logs/guard.log"))?;
    let mut cmd = Command::new("bash");
    cmd.arg0("nodeward-testbed-guard")
        .arg(&script)
        .env("TB_DIR", dir)
        .env("TB_CGROUP", cgroup_name)
        .stdin(reader)
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: no terminal signal meant for the test process reaches it.
    super::own_session(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning the guard {}", script.display()))?;
    // `cmd` (holding the pipe's read end) is dropped here: only the guard keeps it open.
    Ok(Guard {
        child,
        pipe: Some(writer),
    })
}

/// Whether a distribution registry answers `GET /v2/` with 200 on `port`.
async fn registry_answers(port: u16) -> Result<()> {
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    ensure!(
        head.starts_with(b"HTTP/1.") && head.ends_with(b" 200"),
        "GET /v2/ answered {:?}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}

fn log_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free local port")?;
    Ok(listener.local_addr()?.port())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// The exit status of the child in `slot`, if it has exited (`None` also when there is none).
fn try_wait(slot: &Mutex<Option<Child>>) -> Result<Option<std::process::ExitStatus>> {
    match lock(slot).as_mut() {
        Some(child) => child.try_wait().context("checking a child process"),
        None => Ok(None),
    }
}

/// SIGKILL and reap the child in `slot`, if any.
fn kill_child(slot: &Mutex<Option<Child>>) {
    if let Some(mut child) = lock(slot).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last lines of a log file, on one line, for error messages.
fn tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join(" | ")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
