//! The controller's own metrics (not the agent's series): reconcile runs, failures by reason and
//! duration per reconciler, whether this replica leads, and the CloneSet writes its cache never
//! showed.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use kube::runtime::controller::Action;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::telemetry::metrics::Exposition;

/// The reconcilers, whose series exist (at 0) from the start.
pub const RECONCILERS: [&str; 6] = [
    "cloneset",
    "crr",
    "imagepulljob",
    "node",
    "nodeimage",
    "vk_sidecar",
];

/// Why a reconcile failed, as a label value.
pub trait Reason {
    fn reason(&self) -> &'static str;
}

/// An API error by kind: `conflict`, `not_found`, `forbidden`, `invalid`, else `api`.
impl Reason for kube::Error {
    fn reason(&self) -> &'static str {
        match self {
            kube::Error::Api(s) if s.is_conflict() => "conflict",
            kube::Error::Api(s) if s.is_not_found() => "not_found",
            kube::Error::Api(s) if s.is_forbidden() => "forbidden",
            kube::Error::Api(s) if s.is_invalid() => "invalid",
            _ => "api",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcilerLabel {
    reconciler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reconciler: String,
    reason: String,
}

/// The controller's registry (prefix `nodeward_controller`).
#[derive(Clone)]
pub struct ControllerMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs: Family<ReconcilerLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ReconcilerLabel, Histogram, fn() -> Histogram>,
    leader: Gauge,
    expectations_timed_out: Counter,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerMetrics").finish_non_exhaustive()
    }
}

/// 1 ms … 32.8 s, doubling: one reconcile pass (API round trips included).
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nodeward_controller");
        crate::telemetry::nofile::register(&mut registry);
        let runs = Family::<ReconcilerLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile passes, by reconciler",
            runs.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconcile passes that failed, by reconciler and reason",
            failures.clone(),
        );
        let duration: Family<ReconcilerLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of a reconcile pass, by reconciler",
            Unit::Seconds,
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and runs the reconcilers",
            leader.clone(),
        );
        let expectations_timed_out = Counter::default();
        registry.register(
            "cloneset_expectations_timed_out",
            "CloneSet passes that went on without writes their cache never showed (after 5 min); \
             more than a few mean a watch that misses events",
            expectations_timed_out.clone(),
        );
        for r in RECONCILERS {
            let label = ReconcilerLabel {
                reconciler: r.into(),
            };
            drop(runs.get_or_create(&label));
            drop(duration.get_or_create(&label));
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                runs,
                failures,
                duration,
                leader,
                expectations_timed_out,
            }),
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// A CloneSet pass stopped waiting for writes its cache never showed.
    pub fn expectations_timed_out(&self) {
        self.inner.expectations_timed_out.inc();
    }

    /// `reconcile`, counted and timed as `reconciler`: what kube's `Controller::run` calls.
    pub fn counted<K, C, E, F, Fut>(
        &self,
        reconciler: &'static str,
        reconcile: F,
    ) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>> + use<K, C, E, F, Fut>
    where
        K: Send + Sync + 'static,
        C: Send + Sync + 'static,
        E: Reason + Send + 'static,
        F: Fn(Arc<K>, Arc<C>) -> Fut,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let metrics = self.clone();
        move |obj, ctx| {
            let (metrics, pass) = (metrics.clone(), reconcile(obj, ctx));
            Box::pin(async move { metrics.measure(reconciler, pass).await })
        }
    }

    /// Count and time one reconcile pass of `reconciler`.
    pub async fn measure<T, E: Reason>(
        &self,
        reconciler: &'static str,
        pass: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let out = pass.await;
        let label = ReconcilerLabel {
            reconciler: reconciler.into(),
        };
        self.inner.runs.get_or_create(&label).inc();
        self.inner
            .duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &out {
            self.inner
                .failures
                .get_or_create(&FailureLabels {
                    reconciler: reconciler.into(),
                    reason: e.reason().into(),
                })
                .inc();
        }
        out
    }
}

impl Exposition for ControllerMetrics {
    fn try_encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4 * 1024);
        text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Boom;
    impl Reason for Boom {
        fn reason(&self) -> &'static str {
            "api"
        }
    }

    #[tokio::test]
    async fn counts_times_and_labels_failures() {
        let m = ControllerMetrics::new();
        m.set_leader(true);
        let ok: Result<(), Boom> = m.measure("crr", async { Ok(()) }).await;
        assert!(ok.is_ok());
        let failed: Result<(), Boom> = m.measure("crr", async { Err(Boom) }).await;
        assert!(failed.is_err());
        let text = m.try_encode().unwrap();
        assert!(text.contains(r#"nodeward_controller_reconciles_total{reconciler="crr"} 2"#));
        assert!(
            text.contains(r#"nodeward_controller_reconciles_total{reconciler="vk_sidecar"} 0"#)
        );
        assert!(text.contains(
            r#"nodeward_controller_reconcile_failures_total{reconciler="crr",reason="api"} 1"#
        ));
        assert!(text.contains(
            r#"nodeward_controller_reconcile_duration_seconds_count{reconciler="crr"} 2"#
        ));
        assert!(text.contains("nodeward_controller_leader 1"));
        assert!(text.contains("nodeward_controller_cloneset_expectations_timed_out_total 0"));
        m.expectations_timed_out();
        let text = m.try_encode().unwrap();
        assert!(text.contains("nodeward_controller_cloneset_expectations_timed_out_total 1"));
        assert!(!text.contains("nodeward_sidecar"), "no agent series");
    }
}
