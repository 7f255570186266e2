//! nodeward's test kit (crate `nodeward-testkit`, used by the integration tests, benchmarks and
//! the demo as `use nodeward_testkit as support;`, compiled once): a private containerd with a local
//! registry ([`testbed::TestBed`]) and a fixture playing the kubelet's CRI role
//! ([`kubelet::Kubelet`]). Nothing here depends on the test harness.
//!
//! Needs root and the Debian packages of `scripts/deps.sh`. Images are built once into
//! `target/testbed-images/`. Each test bed lives in `/tmp/nodeward-tb-*` with cgroups under
//! `/sys/fs/cgroup/*/nodeward-tb-*`; its guard process (`nodeward-testbed-guard`) removes all of
//! it when the test bed is shut down or dropped, or when the process exits or dies. Set
//! `NODEWARD_TESTBED_KEEP_LOGS=<dir>` to keep the logs of containerd, the registry, the guard and
//! the pods' containers in `<dir>/nodeward-tb-*/`.

pub mod agent;
pub mod apiserver;
pub mod bench;
pub mod cluster;
pub mod cri_proxy;
pub mod helm;
pub mod images;
pub mod k8s;
pub mod kruise;
pub mod kubelet;
pub mod procs;
pub mod rbac;
pub mod registry;
pub mod testbed;
pub mod wait;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The nodeward repository (this crate lives in its `tests/support`).
pub fn repo() -> &'static Path {
    static REPO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    REPO.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        here.parent()
            .and_then(Path::parent)
            .unwrap_or(here)
            .to_path_buf()
    })
}

/// The child is SIGKILLed when the test process dies: no process outlives a killed test.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// The child runs in its own session: no terminal signal meant for the test process reaches it.
#[allow(unsafe_code)]
pub fn own_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}
