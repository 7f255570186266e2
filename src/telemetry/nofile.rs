//! The open-file limit: raised from its soft to its hard value at start, as Go daemons do (the
//! kubelet, containerd): the agent holds a pidfd per tracked container and a connection per
//! client, and a default soft limit of 1024 is reached at a few hundred pods.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

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
