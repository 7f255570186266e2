//! Per-object retries for the reconcilers: the n-th consecutive failure of one object is retried
//! after [`crate::backoff::after`]`(n, 1 s, 5 min)`, and a success forgets it (client-go's
//! per-item exponential rate limiter; kube's `Controller` leaves the error policy to its caller).
//! One object failing over and over no longer costs a request every 2 s, and one failure does not
//! slow any other object.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use tracing::warn;

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// The failure counts of one reconciler's objects, by `namespace/name`.
#[derive(Clone, Debug)]
pub struct Retries {
    reconciler: &'static str,
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

fn key_of<K: kube::Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl Retries {
    pub fn new(reconciler: &'static str) -> Self {
        Self {
            reconciler,
            failures: Arc::default(),
        }
    }

    /// One more consecutive failure of `key`: how long to wait before the next attempt.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        crate::backoff::after(*n, FIRST_RETRY, MAX_RETRY)
    }

    /// `key` reconciled: its next failure waits [`FIRST_RETRY`] again.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// `reconcile`, forgetting an object's failures when it succeeds.
    pub fn wrap<K, C, E, F>(
        &self,
        mut reconcile: F,
    ) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>> + use<K, C, E, F>
    where
        K: kube::Resource + Send + Sync + 'static,
        C: Send + Sync + 'static,
        E: Send + 'static,
        F: FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>>,
    {
        let retries = self.clone();
        move |obj, ctx| {
            let key = key_of(obj.as_ref());
            let (retries, pass) = (retries.clone(), reconcile(obj, ctx));
            Box::pin(async move {
                let out = pass.await;
                if out.is_ok() {
                    retries.succeeded(&key);
                }
                out
            })
        }
    }

    /// The error policy: log the failure and retry the object after its backoff.
    pub fn error_policy<K, C, E>(&self) -> impl Fn(Arc<K>, &E, Arc<C>) -> Action + use<K, C, E>
    where
        K: kube::Resource,
        E: Display,
    {
        let retries = self.clone();
        move |obj, err, _| {
            let key = key_of(obj.as_ref());
            let wait = retries.failed(&key);
            warn!(reconciler = retries.reconciler, object = %key, error = %err, retry_in_ms = wait.as_millis() as u64, "reconcile failed; retrying");
            Action::requeue(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_object_backs_off_on_its_own_and_a_success_resets_it() {
        let r = Retries::new("crr");
        let s = Duration::from_secs;
        assert_eq!(
            [r.failed("a/x"), r.failed("a/x"), r.failed("a/x")],
            [s(1), s(2), s(4)]
        );
        assert_eq!(r.failed("a/y"), s(1), "another object is not slowed");
        for _ in 0..20 {
            r.failed("a/x");
        }
        assert_eq!(r.failed("a/x"), MAX_RETRY);
        r.succeeded("a/x");
        assert_eq!(r.failed("a/x"), s(1));
    }
}
