//! Watching `cgroup.events` of a container's cgroup v2 (`populated 1 → 0` when its last process exits).
//!
//! One inotify instance serves every watched container. Works on pure v2 hosts and on hybrid hosts
//! where runc also places containers in the unified hierarchy.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{Inotify, WatchDescriptor, WatchMask};
use procfs::ProcessCGroups;
use procfs::process::{MountInfos, Process};
use tokio::sync::mpsc;

/// The cgroup v2 mount among a process's mounts.
pub fn cgroup2_mount(mounts: &MountInfos) -> Option<PathBuf> {
    mounts
        .0
        .iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point.clone())
}

/// The v2 cgroup path of a process (its hierarchy-0 entry); `None` for the root cgroup.
pub fn v2_path(groups: &ProcessCGroups) -> Option<&str> {
    groups
        .0
        .iter()
        .find(|g| g.hierarchy == 0 && g.controllers.is_empty())
        .map(|g| g.pathname.trim())
        .filter(|p| !p.is_empty() && *p != "/")
}

/// `<proc_root>/<pid>/cgroup`, parsed.
pub fn cgroups_of(proc_root: &Path, pid: u32) -> Option<ProcessCGroups> {
    Process::new_with_root(proc_root.join(pid.to_string()))
        .ok()?
        .cgroups()
        .ok()
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
        let mounts = Process::new_with_root(proc_root.join("self"))
            .and_then(|p| p.mountinfo())
            .map_err(|e| format!("cannot read mountinfo: {e}"))?;
        let mount = cgroup2_mount(&mounts).ok_or("no cgroup2 mount")?;
        if !mount.join("cgroup.controllers").exists() {
            return Err(format!("{} is not a cgroup2 root", mount.display()));
        }
        Ok(Self {
            mount,
            proc_root: proc_root.to_path_buf(),
        })
    }

    /// For the container whose init process is `pid`: its `cgroup.events` file, if it has a v2
    /// cgroup that belongs to that container and is currently populated, and the root of the
    /// cgroup tree it lives in (e.g. `<mount>/kubepods`).
    pub fn container_cgroup(&self, pid: u32, container_id: &str) -> Option<(PathBuf, PathBuf)> {
        let groups = cgroups_of(&self.proc_root, pid)?;
        let rel = v2_path(&groups)?;
        if !rel.contains(container_id) {
            return None;
        }
        let file = self
            .mount
            .join(rel.trim_start_matches('/'))
            .join("cgroup.events");
        let now = std::fs::read_to_string(&file).ok()?;
        let root = self.mount.join(top_component(rel)?);
        (populated(&now) == Some(true)).then_some((file, root))
    }
}

/// A container id (64 lowercase hex digits) in a cgroup directory name, as runtimes name them:
/// `<id>` (cgroupfs), `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` (systemd).
/// CRI-O's `crio-conmon-<id>.scope` holds the monitor, not the container, and is not matched.
pub fn container_id_in(name: &str) -> Option<&str> {
    if name.contains("conmon") {
        return None;
    }
    let b = name.as_bytes();
    let is_hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
    let mut run = 0;
    for (i, c) in b.iter().enumerate() {
        run = if is_hex(c) { run + 1 } else { 0 };
        if run == 64 && b.get(i + 1).is_none_or(|n| !is_hex(n)) {
            return Some(&name[i + 1 - 64..=i]);
        }
    }
    None
}

/// The first component of a cgroup path (`/kubepods/burstable/pod…/<id>` → `kubepods`).
pub fn top_component(rel: &str) -> Option<&str> {
    rel.trim_start_matches('/')
        .split('/')
        .next()
        .filter(|c| !c.is_empty())
}

/// Directories without a container id are watched at most this deep below a tree root
/// (root → QoS class → pod → container).
const MAX_TREE_DEPTH: usize = 3;

pub enum Command {
    /// Watch a pods cgroup tree (e.g. `kubepods`) for new container cgroups.
    WatchTree {
        root: PathBuf,
    },
    /// Watch one container's `cgroup.events`, known to be populated.
    Watch {
        id: String,
        events_file: PathBuf,
    },
    Unwatch {
        id: String,
    },
}

/// What the watcher reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// A cgroup for this container (or sandbox) id appeared: the runtime is starting it.
    Created(String),
    /// The container's cgroup had processes and now has none: it exited.
    Emptied(String),
}

enum Watched {
    /// The parent of tree roots that do not exist yet (the kubelet has not created them).
    Parent {
        path: PathBuf,
        wanted: Vec<std::ffi::OsString>,
    },
    Dir {
        path: PathBuf,
        depth: usize,
    },
    Events {
        id: String,
        file: PathBuf,
        seen_populated: bool,
    },
}

struct Watcher {
    watches: inotify::Watches,
    by_wd: HashMap<WatchDescriptor, Watched>,
    events_by_id: HashMap<String, WatchDescriptor>,
    trees: HashSet<PathBuf>,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Watcher {
    fn watch_events(&mut self, id: &str, file: PathBuf, seen_populated: bool) {
        if self.events_by_id.contains_key(id) {
            return;
        }
        match self.watches.add(&file, WatchMask::MODIFY) {
            Ok(wd) => {
                self.events_by_id.insert(id.to_string(), wd.clone());
                self.by_wd.insert(
                    wd.clone(),
                    Watched::Events {
                        id: id.to_string(),
                        file,
                        seen_populated,
                    },
                );
                // The state may have changed before the watch was armed.
                self.check_events(&wd);
            }
            Err(e) => tracing::debug!(container = %id, error = %e, "cannot watch cgroup.events"),
        }
    }

    fn unwatch_events(&mut self, id: &str) {
        if let Some(wd) = self.events_by_id.remove(id) {
            self.by_wd.remove(&wd);
            let _ = self.watches.remove(wd);
        }
    }

    /// Re-read a watched `cgroup.events`; report `Emptied` on a populated 1 → 0 transition.
    fn check_events(&mut self, wd: &WatchDescriptor) {
        let Some(Watched::Events {
            id,
            file,
            seen_populated,
        }) = self.by_wd.get_mut(wd)
        else {
            return;
        };
        let now = std::fs::read_to_string(&*file)
            .ok()
            .and_then(|d| populated(&d));
        match now {
            Some(true) => *seen_populated = true,
            // Not yet populated: the runtime is still moving the first process in.
            Some(false) if !*seen_populated => {}
            // Emptied, or the cgroup was removed.
            _ => {
                let id = id.clone();
                self.unwatch_events(&id);
                let _ = self.notices.send(Notice::Emptied(id));
            }
        }
    }

    /// Watch a tree root now, or its parent until the root is created.
    fn watch_tree(&mut self, root: PathBuf) {
        if self.trees.contains(&root) {
            return;
        }
        if root.is_dir() {
            self.watch_dir(&root, 0);
            return;
        }
        let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
            return;
        };
        match self
            .watches
            .add(parent, WatchMask::CREATE | WatchMask::ONLYDIR)
        {
            Ok(wd) => {
                let entry = self.by_wd.entry(wd).or_insert_with(|| Watched::Parent {
                    path: parent.to_path_buf(),
                    wanted: Vec::new(),
                });
                if let Watched::Parent { wanted, .. } = entry {
                    wanted.push(name.to_os_string());
                }
                // Created between the check and the watch.
                if root.is_dir() {
                    self.watch_dir(&root, 0);
                }
            }
            Err(e) => {
                tracing::debug!(path = %parent.display(), error = %e, "cannot watch cgroup directory")
            }
        }
    }

    fn watch_dir(&mut self, path: &Path, depth: usize) {
        let wd = match self
            .watches
            .add(path, WatchMask::CREATE | WatchMask::ONLYDIR)
        {
            Ok(wd) => wd,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot watch cgroup directory");
                return;
            }
        };
        if depth == 0 {
            self.trees.insert(path.to_path_buf());
        }
        self.by_wd.insert(
            wd,
            Watched::Dir {
                path: path.to_path_buf(),
                depth,
            },
        );
        // Children created before the watch was armed.
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.on_new_dir(&e.path(), depth + 1);
                }
            }
        }
    }

    fn on_new_dir(&mut self, path: &Path, depth: usize) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        if let Some(id) = container_id_in(name) {
            let id = id.to_string();
            let _ = self.notices.send(Notice::Created(id.clone()));
            let events = path.join("cgroup.events");
            if events.exists() {
                self.watch_events(&id, events, false);
            }
        } else if depth <= MAX_TREE_DEPTH {
            self.watch_dir(path, depth);
        }
    }

    fn on_event(&mut self, ev: inotify::Event<std::ffi::OsString>) {
        let removed = ev.mask.contains(inotify::EventMask::IGNORED);
        match self.by_wd.get(&ev.wd) {
            None => {}
            Some(Watched::Events { .. }) => self.check_events(&ev.wd),
            Some(Watched::Parent { path, wanted }) => {
                if let Some(name) = ev.name.filter(|n| wanted.contains(n)) {
                    let root = path.join(name);
                    if !self.trees.contains(&root) {
                        self.watch_dir(&root, 0);
                    }
                }
            }
            Some(Watched::Dir { path, depth }) => {
                if removed {
                    let path = path.clone();
                    self.by_wd.remove(&ev.wd);
                    self.trees.remove(&path);
                } else if ev.mask.contains(inotify::EventMask::CREATE)
                    && ev.mask.contains(inotify::EventMask::ISDIR)
                    && let Some(name) = ev.name
                {
                    let child = path.join(name);
                    let depth = depth + 1;
                    self.on_new_dir(&child, depth);
                }
            }
        }
    }
}

/// Run the watcher until `commands` closes: trees report new container cgroups, watched
/// `cgroup.events` files report exits.
pub async fn run(
    mut commands: mpsc::UnboundedReceiver<Command>,
    notices: mpsc::UnboundedSender<Notice>,
) -> io::Result<()> {
    let inotify = Inotify::init()?;
    let mut stream = inotify.into_event_stream([0u8; 8192])?;
    let mut w = Watcher {
        watches: stream.watches(),
        by_wd: HashMap::new(),
        events_by_id: HashMap::new(),
        trees: HashSet::new(),
        notices,
    };
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return Ok(()),
                Some(Command::WatchTree { root }) => w.watch_tree(root),
                Some(Command::Watch { id, events_file }) => w.watch_events(&id, events_file, true),
                Some(Command::Unwatch { id }) => w.unwatch_events(&id),
            },
            ev = stream.next() => match ev {
                None => return Ok(()),
                Some(ev) => w.on_event(ev?),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromRead;

    #[test]
    fn finds_cgroup2_mount_in_hybrid_layout() {
        let mi = "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  33 25 0:28 / /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory\n\
                  40 25 0:35 / /sys/fs/cgroup/unified rw shared:16 - cgroup2 cgroup2 rw\n";
        let mounts = |doc: &str| MountInfos::from_read(doc.as_bytes()).unwrap();
        assert_eq!(
            cgroup2_mount(&mounts(mi)),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount(&mounts("1 2 0:1 / / rw - ext4 /dev/vda rw\n")),
            None
        );
    }

    #[test]
    fn container_ids_in_cgroup_names() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(container_id_in(id), Some(id));
        assert_eq!(
            container_id_in(&format!("cri-containerd-{id}.scope")),
            Some(id)
        );
        assert_eq!(container_id_in(&format!("crio-{id}.scope")), Some(id));
        assert_eq!(container_id_in(&format!("crio-conmon-{id}.scope")), None);
        assert_eq!(container_id_in(&format!("{id}0")), None);
        assert_eq!(container_id_in("kubepods-burstable-pod1234.slice"), None);
        assert_eq!(
            container_id_in("pod7f3c1a2e-0000-4000-8000-000000000000"),
            None
        );
        assert_eq!(
            top_component("/kubepods/burstable/pod1/x"),
            Some("kubepods")
        );
        assert_eq!(top_component("/"), None);
    }

    #[test]
    fn v2_path_and_populated() {
        let groups = |doc: &str| ProcessCGroups::from_read(doc.as_bytes()).unwrap();
        assert_eq!(
            v2_path(&groups("12:pids:/k8s.io/abc\n0::/k8s.io/abc\n")),
            Some("/k8s.io/abc")
        );
        assert_eq!(v2_path(&groups("0::/\n")), None);
        assert_eq!(v2_path(&groups("3:memory:/x\n")), None);
        assert_eq!(populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(populated(""), None);
    }
}
