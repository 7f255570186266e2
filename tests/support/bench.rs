//! Small helpers shared by the benchmarks.

/// A whole number from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nearest-rank percentile of sorted values; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Set the nice value of the threads of process `pid` whose name (`comm`) passes `pick` (threads
/// started later inherit it from the thread that starts them), with util-linux `renice`.
pub fn renice(pid: u32, nice: i32, pick: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let mut tids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if pick(comm.trim_end()) {
            tids.push(task.file_name());
        }
    }
    if tids.is_empty() {
        return Ok(());
    }
    let status = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p"])
        .args(&tids)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "renice -n {nice} of process {pid}: {status}"
    );
    Ok(())
}
