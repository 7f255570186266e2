//! Watching `cgroup.events` of a container's cgroup v2 (`populated 1 → 0` when its last process exits).
//!
//! One inotify instance serves every watched container. Works on pure v2 hosts and on hybrid hosts
//! where runc also places containers in the unified hierarchy.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{Inotify, WatchDescriptor, WatchMask};
use tokio::sync::mpsc;

/// Locate the cgroup v2 mount point from a mountinfo document.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional…] - <fstype> <source> <super opts>"
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The v2 cgroup path of a process from its `/proc/<pid>/cgroup` document (the `0::` line).
pub fn v2_path_of(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "/")
}

/// Whether a `cgroup.events` document says the cgroup still has processes.
pub fn populated(events: &str) -> Option<bool> {
    events.lines().find_map(|l| match l.trim() {
        "populated 1" => Some(true),
        "populated 0" => Some(false),
        _ => None,
    })
}

/// The cgroup v2 facility of this host, as seen by the agent.
#[derive(Clone, Debug)]
pub struct CgroupV2 {
    pub mount: PathBuf,
    pub proc_root: PathBuf,
}

impl CgroupV2 {
    /// Detect a usable cgroup v2 mount, or say why there is none.
    pub fn detect(proc_root: &Path) -> Result<Self, String> {
        let mountinfo = std::fs::read_to_string(proc_root.join("self/mountinfo"))
            .map_err(|e| format!("cannot read mountinfo: {e}"))?;
        let mount = find_cgroup2_mount(&mountinfo).ok_or("no cgroup2 mount")?;
        if !mount.join("cgroup.controllers").exists() {
            return Err(format!("{} is not a cgroup2 root", mount.display()));
        }
        Ok(Self {
            mount,
            proc_root: proc_root.to_path_buf(),
        })
    }

    /// The `cgroup.events` file of the container whose init process is `pid`, if it has a v2
    /// cgroup that belongs to that container and is currently populated.
    pub fn events_file(&self, pid: u32, container_id: &str) -> Option<PathBuf> {
        let doc =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        let rel = v2_path_of(&doc)?;
        if !rel.contains(container_id) {
            return None;
        }
        let file = self
            .mount
            .join(rel.trim_start_matches('/'))
            .join("cgroup.events");
        let now = std::fs::read_to_string(&file).ok()?;
        (populated(&now) == Some(true)).then_some(file)
    }
}

pub enum Command {
    Watch { id: String, events_file: PathBuf },
    Unwatch { id: String },
}

/// Run the watcher: `commands` add and remove containers; the id of a container whose cgroup
/// became empty is sent on `exits` (once).
pub async fn run(
    mut commands: mpsc::UnboundedReceiver<Command>,
    exits: mpsc::UnboundedSender<String>,
) -> io::Result<()> {
    let inotify = Inotify::init()?;
    let mut stream = inotify.into_event_stream([0u8; 4096])?;
    let mut by_wd: HashMap<WatchDescriptor, (String, PathBuf)> = HashMap::new();
    let mut by_id: HashMap<String, WatchDescriptor> = HashMap::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return Ok(()),
                Some(Command::Watch { id, events_file }) => {
                    match stream.watches().add(&events_file, WatchMask::MODIFY) {
                        Ok(wd) => {
                            // The cgroup may have emptied before the watch was armed.
                            let now = std::fs::read_to_string(&events_file).unwrap_or_default();
                            if populated(&now) != Some(true) {
                                let _ = stream.watches().remove(wd);
                                let _ = exits.send(id);
                            } else {
                                by_id.insert(id.clone(), wd.clone());
                                by_wd.insert(wd, (id, events_file));
                            }
                        }
                        Err(e) => tracing::debug!(container = %id, error = %e, "cannot watch cgroup.events"),
                    }
                }
                Some(Command::Unwatch { id }) => {
                    if let Some(wd) = by_id.remove(&id) {
                        by_wd.remove(&wd);
                        let _ = stream.watches().remove(wd);
                    }
                }
            },
            ev = stream.next() => {
                let Some(ev) = ev else { return Ok(()) };
                let ev = ev?;
                let Some((id, file)) = by_wd.get(&ev.wd).cloned() else { continue };
                let gone = ev.mask.contains(inotify::EventMask::IGNORED);
                let now = if gone { String::new() } else { std::fs::read_to_string(&file).unwrap_or_default() };
                if populated(&now) != Some(true) {
                    by_wd.remove(&ev.wd);
                    by_id.remove(&id);
                    if !gone {
                        let _ = stream.watches().remove(ev.wd);
                    }
                    let _ = exits.send(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_mount_in_hybrid_layout() {
        let mi = "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  33 25 0:28 / /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory\n\
                  40 25 0:35 / /sys/fs/cgroup/unified rw shared:16 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            find_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn v2_path_and_populated() {
        let doc = "12:pids:/k8s.io/abc\n0::/k8s.io/abc\n";
        assert_eq!(v2_path_of(doc), Some("/k8s.io/abc"));
        assert_eq!(v2_path_of("0::/\n"), None);
        assert_eq!(v2_path_of("3:memory:/x\n"), None);
        assert_eq!(populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(populated(""), None);
    }
}
