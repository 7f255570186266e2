//! Waiting for a container's init process to exit through a pidfd (Linux ≥ 5.3).
//!
//! The agent is not the parent of container processes, so it cannot reap them or read their exit
//! status; a pidfd only tells *that* the process exited. The exit code comes from CRI afterwards.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Whether this kernel supports `pidfd_open` (checked on our own pid).
pub fn supported() -> Result<(), io::Error> {
    let me = Pid::from_raw(std::process::id() as i32)
        .ok_or_else(|| io::Error::other("own pid is not positive"))?;
    pidfd_open(me, PidfdFlags::NONBLOCK)
        .map(drop)
        .map_err(io::Error::from)
}

/// An open pidfd known to refer to the init process of one container.
pub struct ContainerPidfd {
    fd: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum PidfdError {
    #[error("pid {0} is not valid")]
    InvalidPid(u32),
    #[error("pidfd_open({pid}): {source}")]
    Open { pid: u32, source: io::Error },
    #[error(
        "pid {pid} does not belong to container {container} (agent not in the host PID namespace, or the process is gone)"
    )]
    NotContainer { pid: u32, container: String },
}

impl ContainerPidfd {
    /// Open a pidfd on `pid` and verify, *after* opening it, that the process lives in the cgroup of
    /// `container_id`. Checking after opening closes the pid-reuse race: if the container's process
    /// had exited and its pid been reused, the process now holding the pid is not in that cgroup.
    pub fn open(pid: u32, container_id: &str, proc_root: &Path) -> Result<Self, PidfdError> {
        let raw = Pid::from_raw(pid as i32).ok_or(PidfdError::InvalidPid(pid))?;
        let fd = pidfd_open(raw, PidfdFlags::NONBLOCK).map_err(|e| {
            let source = io::Error::from(e);
            crate::telemetry::nofile::count_if_exhausted("pidfd_open", &source);
            PidfdError::Open { pid, source }
        })?;
        let in_container = super::cgroup::cgroups_of(proc_root, pid)
            .is_some_and(|groups| groups.0.iter().any(|g| g.pathname.contains(container_id)));
        if !in_container {
            return Err(PidfdError::NotContainer {
                pid,
                container: container_id.to_string(),
            });
        }
        Ok(Self { fd })
    }

    /// Resolve when the process has exited.
    // The crate denies unsafe code; this is the one exception: tokio's registration of a raw fd
    // is `unsafe` because it cannot prove the fd stays open, which an owned fd moved into the
    // `AsyncFd` guarantees.
    #[allow(unsafe_code)]
    pub async fn exited(self) -> io::Result<()> {
        // SAFETY: the OwnedFd is moved into the AsyncFd, which deregisters it before closing it.
        let afd = unsafe { AsyncFd::register_with_interest(self.fd, Interest::READABLE)? };
        let _ready = afd.readable().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn kernel_supports_pidfd() {
        supported().unwrap();
    }

    #[test]
    fn rejects_process_outside_container_cgroup() {
        let me = std::process::id();
        let err = ContainerPidfd::open(me, "0123456789abcdef-not-a-container", Path::new("/proc"))
            .err()
            .unwrap();
        assert!(matches!(err, PidfdError::NotContainer { .. }), "{err}");
    }

    #[tokio::test]
    async fn wakes_on_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        // Any substring of our child's cgroup file satisfies the check; "/" is always present.
        let fd = ContainerPidfd::open(child.id(), "/", Path::new("/proc")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), fd.exited())
            .await
            .unwrap()
            .unwrap();
        child.wait().unwrap();
    }
}
