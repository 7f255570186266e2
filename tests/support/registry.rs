//! Extra Debian `docker-registry` instances on 127.0.0.1 for image puller tests: optionally
//! behind htpasswd (bcrypt) basic auth, and stoppable and restartable on the same port (a
//! registry that goes down and comes back). containerd talks plain HTTP to 127.0.0.1 registries.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Registry {
    dir: PathBuf,
    port: u16,
    auth: Option<(String, String)>,
    child: Mutex<Option<Child>>,
}

impl Registry {
    /// Start a registry storing under `dir` (created), with basic auth for `auth` if given.
    pub async fn start(dir: &Path, auth: Option<(&str, &str)>) -> Result<Self> {
        fs::create_dir_all(dir.join("storage"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
        let port = listener.local_addr()?.port();
        drop(listener);
        let auth_section = match auth {
            Some((user, password)) => {
                let hash = bcrypt::hash_with_result(password, 4)
                    .context("hashing the registry password")?
                    .format_for_version(bcrypt::Version::TwoY);
                let htpasswd = dir.join("htpasswd");
                fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: nodeward-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n{auth_section}http:\n  addr: 127.0.0.1:{port}\n  secret: nodeward-test\n",
                dir.join("storage").display()
            ),
        )?;
        let registry = Self {
            dir: dir.to_path_buf(),
            port,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            child: Mutex::new(None),
        };
        registry.up().await?;
        Ok(registry)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>/<name>`.
    pub fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }

    /// Start the registry process (again) and wait until it answers.
    pub async fn up(&self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("registry.log"))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        super::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("spawning docker-registry")?;
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.answers().await {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "docker-registry exited ({status}); see {}",
                    self.dir.join("registry.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry on port {} not answering after 10 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill the registry process (the port stays reserved for [`Registry::up`]).
    pub fn down(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Any HTTP answer to `GET /v2/` (401 with auth).
    async fn answers(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await
        else {
            return false;
        };
        if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.")
    }

    /// Copy image `tag` of the OCI layout `layout` to `<registry>/<name>` with skopeo.
    pub async fn push(&self, layout: &Path, tag: &str, name: &str) -> Result<()> {
        push(layout, tag, &self.image(name), self.auth.as_ref()).await
    }
}

/// Copy image `tag` of the OCI layout `layout` to the registry reference `dest` with skopeo.
pub async fn push(
    layout: &Path,
    tag: &str,
    dest: &str,
    auth: Option<&(String, String)>,
) -> Result<()> {
    let src = format!("oci:{}:{tag}", layout.display());
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ]);
    if let Some((user, password)) = auth {
        cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
    }
    let out = cmd
        .arg(&src)
        .arg(format!("docker://{dest}"))
        .stdin(Stdio::null())
        .output()
        .await
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo copy {src} {dest} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.down();
    }
}
