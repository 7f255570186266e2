//! The node's processes as the host's /proc shows them (procfs): daemons running in pods found by
//! their command line, and their footprint (the peers benchmark compares nodeward's with
//! OpenKruise's).

use std::time::Duration;

use anyhow::{Context, Result};

/// Pids whose command line (`argv[0]`'s file name, then the arguments) `pick` accepts.
pub fn find(pick: impl Fn(&str, &[String]) -> bool) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter(|p| {
            p.cmdline().is_ok_and(|argv| {
                argv.split_first().is_some_and(|(exe, args)| {
                    let name = exe.rsplit('/').next().unwrap_or(exe);
                    pick(name, args)
                })
            })
        })
        .map(|p| p.pid)
        .collect()
}

/// Resident set size (VmRSS) in KiB.
pub fn rss_kib(pid: i32) -> Result<u64> {
    let status = procfs::process::Process::new(pid)?.status()?;
    status
        .vmrss
        .with_context(|| format!("pid {pid} has no VmRSS"))
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: i32) -> Result<u64> {
    let status = procfs::process::Process::new(pid)?.status()?;
    status
        .vmhwm
        .with_context(|| format!("pid {pid} has no VmHWM"))
}

/// User + system CPU time so far, in ms.
pub fn cpu_ms(pid: i32) -> Result<u64> {
    let stat = procfs::process::Process::new(pid)?.stat()?;
    let ticks = stat.utime.saturating_add(stat.stime);
    Ok(ticks.saturating_mul(1000) / procfs::ticks_per_second().max(1))
}

/// A process's footprint over a window: RSS at its end (MiB) and CPU used during it (% of one
/// core).
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub rss_mib: f64,
    pub cpu_pct: f64,
}

/// The footprint of each of `pids`, measured over the same `window`.
pub async fn footprints(pids: &[i32], window: Duration) -> Result<Vec<Footprint>> {
    let before: Vec<u64> = pids.iter().map(|&p| cpu_ms(p)).collect::<Result<_>>()?;
    let start = tokio::time::Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = start.elapsed().as_millis().max(1) as f64;
    pids.iter()
        .zip(before)
        .map(|(&pid, cpu0)| {
            Ok(Footprint {
                rss_mib: rss_kib(pid)? as f64 / 1024.0,
                cpu_pct: cpu_ms(pid)?.saturating_sub(cpu0) as f64 / elapsed * 100.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_measured() {
        let me = std::process::id() as i32;
        let (rss, peak) = (
            super::rss_kib(me).unwrap(),
            super::peak_rss_kib(me).unwrap(),
        );
        assert!(rss > 0 && peak >= rss, "rss {rss} KiB, peak {peak} KiB");
        super::cpu_ms(me).unwrap();
        let argv0 = std::env::args().next().unwrap();
        let name = argv0.rsplit('/').next().unwrap().to_string();
        assert!(
            super::find(|n, _| n == name).contains(&me),
            "{name} not found"
        );
        assert!(super::rss_kib(i32::MAX).is_err(), "no such process");
    }
}
