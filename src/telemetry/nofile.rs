//! The open-file limit: raised from its soft to its hard value at start, as Go daemons do (the
//! kubelet, containerd): the agent holds a pidfd per tracked container and a connection per
//! client, and a default soft limit of 1024 is reached at a few hundred pods.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The operations that count a failure for want of a file descriptor.
pub const OPERATIONS: [&str; 2] = ["http_accept", "pidfd_open"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

/// Failures for want of a file descriptor, by operation: one process-wide family, registered in
/// the agent's and the controller's registries alike.
static EXHAUSTED: LazyLock<Family<OperationLabel, Counter>> = LazyLock::new(|| {
    let family = Family::<OperationLabel, Counter>::default();
    for operation in OPERATIONS {
        let _ = family
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .get();
    }
    family
});

/// True for the errors of a process (EMFILE) or system (ENFILE) out of file descriptors.
pub fn is_exhausted(e: &std::io::Error) -> bool {
    let errno = e.raw_os_error();
    errno == Some(rustix::io::Errno::MFILE.raw_os_error())
        || errno == Some(rustix::io::Errno::NFILE.raw_os_error())
}

/// Count `e` under `operation` when it says the file descriptors ran out; true if it did.
pub fn count_if_exhausted(operation: &'static str, e: &std::io::Error) -> bool {
    let exhausted = is_exhausted(e);
    if exhausted {
        EXHAUSTED
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }
    exhausted
}

/// Register `open_files_exhausted` (`…_total{operation}`) in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "open_files_exhausted",
        "Operations that failed because the process or the system ran out of file descriptors (EMFILE, ENFILE), by operation",
        EXHAUSTED.clone(),
    );
}

/// Raise RLIMIT_NOFILE's soft limit to its hard limit; the limits before and after.
pub fn raise() -> (Rlimit, std::io::Result<Rlimit>) {
    let before = getrlimit(Resource::Nofile);
    if before.current == before.maximum {
        return (before, Ok(before));
    }
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    let after = setrlimit(Resource::Nofile, raised)
        .map(|()| getrlimit(Resource::Nofile))
        .map_err(std::io::Error::from);
    (before, after)
}

/// Raise the limit and say so in the log.
pub fn raise_and_log() {
    match raise() {
        (before, Ok(after)) => tracing::info!(
            soft_before = ?before.current,
            soft = ?after.current,
            hard = ?after.maximum,
            "open-file limit"
        ),
        (before, Err(e)) => tracing::warn!(
            soft = ?before.current,
            hard = ?before.maximum,
            error = %e,
            "cannot raise the open-file limit"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptor_exhaustion_is_counted() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        let enfile = std::io::Error::from_raw_os_error(rustix::io::Errno::NFILE.raw_os_error());
        let other = std::io::Error::from_raw_os_error(rustix::io::Errno::CONNRESET.raw_os_error());
        let label = OperationLabel {
            operation: "http_accept".into(),
        };
        let before = EXHAUSTED.get_or_create(&label).get();
        assert!(count_if_exhausted("http_accept", &emfile));
        assert!(count_if_exhausted("http_accept", &enfile));
        assert!(!count_if_exhausted("http_accept", &other));
        assert!(!count_if_exhausted(
            "http_accept",
            &std::io::Error::other("x")
        ));
        assert_eq!(EXHAUSTED.get_or_create(&label).get() - before, 2);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum;
        let low = hard.map_or(1024, |h| h.min(1024));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: hard,
            },
        )
        .unwrap();
        let (before, after) = raise();
        assert_eq!(before.current, Some(low));
        let after = after.unwrap();
        assert_eq!(after.current, hard);
        assert_eq!(after.maximum, hard);
    }
}
