//! The node model (pods and containers seen through CRI), the kernel-side exit watchers that feed
//! it, and the tracker that keeps it current.

pub mod cgroup;
pub mod model;
pub mod pidfd;
pub mod pods;
pub mod tracker;
pub mod view;

/// Where an exit was first noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitSource {
    Pidfd,
    Cgroup,
    Relist,
}

impl ExitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pidfd => "pidfd",
            Self::Cgroup => "cgroup",
            Self::Relist => "relist",
        }
    }
}
