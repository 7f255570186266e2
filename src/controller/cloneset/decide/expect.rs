//! Expectations (upstream `pkg/util/expectations`): what the controller wrote and its pod cache
//! has not shown yet. While any is pending, a CloneSet is not reconciled again (no double
//! create or delete from a lagging cache), for at most [`TIMEOUT`].
//!
//! Upstream observes its events; here the cache itself is compared with what was written, so an
//! event lost or filtered out cannot leave an expectation behind.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long an expectation may stay unmet before the controller goes on without it (upstream
/// `--expectation-timeout=5m`).
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// What one CloneSet's writes expect to see in the cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Pods and PVCs created (`pod/<name>`, `pvc/<name>`): seen once present.
    pub created: BTreeSet<String>,
    /// Objects deleted, by key, with their uid: seen once absent, being deleted, or replaced.
    pub deleted: BTreeMap<String, String>,
    /// Pods patched, by key, with the resourceVersion written: seen once the cache's is at least
    /// that new.
    pub updated: BTreeMap<String, String>,
}

/// One object as the cache shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub uid: String,
    pub resource_version: String,
    pub deleting: bool,
}

impl Expected {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.deleted.is_empty() && self.updated.is_empty()
    }

    /// Forget what `cached` (key → object) shows done; what is left is still pending.
    pub fn observe(&mut self, cached: impl Fn(&str) -> Option<Cached>) {
        self.created.retain(|key| cached(key).is_none());
        self.deleted
            .retain(|key, uid| cached(key).is_some_and(|c| !c.deleting && &c.uid == uid));
        self.updated.retain(|key, rv| {
            cached(key).is_some_and(|c| !c.deleting && !at_least(&c.resource_version, rv))
        });
    }
}

/// Whether resourceVersion `seen` is `wanted` or newer: compared as numbers when both are (etcd's
/// revisions are), else only equality counts.
pub fn at_least(seen: &str, wanted: &str) -> bool {
    match (seen.parse::<u64>(), wanted.parse::<u64>()) {
        (Ok(s), Ok(w)) => s >= w,
        _ => seen == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(uid: &str, rv: &str, deleting: bool) -> Cached {
        Cached {
            uid: uid.into(),
            resource_version: rv.into(),
            deleting,
        }
    }

    #[test]
    fn the_cache_meets_what_was_written() {
        let mut e = Expected::default();
        e.created.insert("pod/a".into());
        e.created.insert("pvc/d-a".into());
        e.deleted.insert("pod/b".into(), "ub".into());
        e.deleted.insert("pod/c".into(), "uc".into());
        e.deleted.insert("pod/g".into(), "ug".into());
        e.updated.insert("pod/x".into(), "120".into());
        e.updated.insert("pod/y".into(), "120".into());
        let view = |key: &str| match key {
            "pod/a" => Some(cached("ua", "100", false)),
            // Still there, not deleting: pending.
            "pod/b" => Some(cached("ub", "100", false)),
            // Being deleted: seen.
            "pod/c" => Some(cached("uc", "100", true)),
            // pod/g gone: seen. pvc/d-a not in the cache: pending.
            "pod/x" => Some(cached("ux", "119", false)),
            "pod/y" => Some(cached("uy", "121", false)),
            _ => None,
        };
        e.observe(view);
        assert_eq!(e.created.iter().collect::<Vec<_>>(), ["pvc/d-a"]);
        assert_eq!(e.deleted.keys().collect::<Vec<_>>(), ["pod/b"]);
        assert_eq!(e.updated.keys().collect::<Vec<_>>(), ["pod/x"]);
        assert!(!e.is_empty());
    }

    #[test]
    fn a_pod_made_again_under_the_same_name_is_a_deletion_seen() {
        let mut e = Expected::default();
        e.deleted.insert("pod/a".into(), "old".into());
        e.observe(|_| Some(cached("new", "5", false)));
        assert!(e.is_empty());
    }

    #[test]
    fn resource_versions() {
        assert!(at_least("10", "9"));
        assert!(at_least("10", "10"));
        assert!(!at_least("9", "10"));
        assert!(at_least("abc", "abc"));
        assert!(!at_least("abc", "abd"));
    }
}
