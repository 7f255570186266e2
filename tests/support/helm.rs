//! helm (Helm v4), built once from its Go module by `scripts/helm.sh build` (cached under
//! `~/.cache/nodeward-helm`), run with its own cache, config and data directories under
//! `target/helm-home` (nothing of the user's helm setup is read or written).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The chart, relative to the repository.
pub const CHART: &str = "packaging/helm/nodeward";

/// The helm binary; panics with the build's error when it cannot be built.
pub fn binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(crate::repo().join("scripts/helm.sh"))
            .arg("build")
            .output()
            .expect("run scripts/helm.sh");
        assert!(
            out.status.success(),
            "building helm failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("a path").trim())
    })
}

/// `helm <args>` in the repository, with `env` → (success, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let home = crate::repo().join("target/helm-home");
    let out = Command::new(binary())
        .args(args)
        .current_dir(crate::repo())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .envs(env.iter().copied())
        .output()
        .expect("run helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
