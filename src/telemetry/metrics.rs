//! Prometheus metrics (OpenMetrics text), all prefixed `nodeward_`.
//!
//! [`Metrics`] is cheap to clone (one `Arc`); every method takes `&self` and plain-typed
//! arguments, so callers need not know `prometheus-client`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::journal::JournalStats;

/// Content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label values that are pre-created (at 0) so that their series exist before the first event.
pub const TERMINATION_RESULTS: [&str; 3] = ["stopped", "failed", "skipped"];
pub const LATENCY_STAGES: [&str; 2] = ["exit_to_stop", "exit_to_sidecar_exit"];
pub const EXIT_SOURCES: [&str; 3] = ["pidfd", "cgroup", "relist"];
pub const WATCH_MECHANISMS: [&str; 2] = ["pidfd", "cgroup"];
pub const IMAGE_PULL_RESULTS: [&str; 3] = ["pulled", "present", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CriLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MechanismLabel {
    mechanism: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms … 65.5 s, doubling: sidecar termination stages.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// 0.5 ms … 16.4 s, doubling: CRI round trips.
fn cri_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 50 ms … 6.8 min, doubling: image pulls.
fn image_pull_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// Something that renders the OpenMetrics text exposition (ends with `# EOF`): the agent's
/// metrics, or the controller's own.
pub trait Exposition: Send + Sync + 'static {
    fn try_encode(&self) -> Result<String, std::fmt::Error>;
}

impl Exposition for Metrics {
    fn try_encode(&self) -> Result<String, std::fmt::Error> {
        Metrics::try_encode(self)
    }
}

/// The agent's metrics and the registry that exposes them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    terminations: Family<ResultLabel, Counter>,
    crr_stops: Family<ResultLabel, Counter>,
    meta_writes: Family<ResultLabel, Counter>,
    meta_restarts: Family<ResultLabel, Counter>,
    latency: HistogramFamily<StageLabel>,
    cri_requests: Family<CriLabels, Counter>,
    cri_duration: HistogramFamily<MethodLabel>,
    exit_events: Family<SourceLabel, Counter>,
    watched: Family<MechanismLabel, Gauge>,
    journal_events: Gauge,
    journal_pending: Gauge,
    journal_outbox: Gauge,
    journal_bytes: Gauge,
    runtime_connected: Gauge,
    last_relist: Gauge,
    image_pulls: Family<ResultLabel, Counter>,
    image_pull_duration: Histogram,
    image_pulls_in_flight: Gauge,
    crr_stop_latency: Histogram,
    probe_lateness: Histogram,
    reports: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nodeward");

        // Note: prometheus-client appends `_total` to counters and the unit to names registered
        // with one; names here must not carry them (debug builds panic on a `_total` name).
        let terminations = Family::<ResultLabel, Counter>::default();
        registry.register(
            "sidecar_terminations",
            "Sidecar terminations of finished Job pods, by result",
            terminations.clone(),
        );
        let crr_stops = Family::<ResultLabel, Counter>::default();
        registry.register(
            "crr_container_stops",
            "Containers stopped for ContainerRecreateRequests, by result (stopped, failed)",
            crr_stops.clone(),
        );
        let meta_writes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "container_meta_writes",
            "Writes of the apps.kruise.io/runtime-containers-meta pod annotation, by result (written, failed)",
            meta_writes.clone(),
        );
        let meta_restarts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "container_meta_restarts",
            "Containers stopped because their env from pod metadata is stale during an in-place update, by result (stopped, failed, skipped)",
            meta_restarts.clone(),
        );
        let latency: HistogramFamily<StageLabel> = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "sidecar_termination_latency",
            "Time from the last main container's exit to stopping the sidecars (exit_to_stop) and to the sidecars' exit (exit_to_sidecar_exit)",
            Unit::Seconds,
            latency.clone(),
        );
        let cri_requests = Family::<CriLabels, Counter>::default();
        registry.register(
            "cri_requests",
            "CRI requests by method and gRPC status code",
            cri_requests.clone(),
        );
        let cri_duration: HistogramFamily<MethodLabel> =
            Family::new_with_constructor(cri_histogram);
        registry.register_with_unit(
            "cri_request_duration",
            "CRI request duration by method",
            Unit::Seconds,
            cri_duration.clone(),
        );
        let exit_events = Family::<SourceLabel, Counter>::default();
        registry.register(
            "exit_events",
            "Container exits observed, by the mechanism that saw them first",
            exit_events.clone(),
        );
        let watched = Family::<MechanismLabel, Gauge>::default();
        registry.register(
            "watched_containers",
            "Containers whose exit is being watched, by mechanism",
            watched.clone(),
        );
        let journal_events = Gauge::default();
        registry.register(
            "journal_events",
            "Events kept in the action journal",
            journal_events.clone(),
        );
        let journal_pending = Gauge::default();
        registry.register(
            "journal_pending_actions",
            "Decided actions not yet completed",
            journal_pending.clone(),
        );
        let journal_outbox = Gauge::default();
        registry.register(
            "journal_outbox",
            "Journal events not yet delivered upstream",
            journal_outbox.clone(),
        );
        let journal_bytes = Gauge::default();
        registry.register_with_unit(
            "journal",
            "Size of the journal file",
            Unit::Bytes,
            journal_bytes.clone(),
        );
        let runtime_connected = Gauge::default();
        registry.register(
            "runtime_connected",
            "1 if the container runtime (CRI) is reachable, else 0",
            runtime_connected.clone(),
        );
        let last_relist = Gauge::default();
        registry.register_with_unit(
            "relist_last_success_timestamp",
            "When the last relist of the runtime succeeded (Unix time)",
            Unit::Seconds,
            last_relist.clone(),
        );
        let image_pulls = Family::<ResultLabel, Counter>::default();
        registry.register(
            "image_pulls",
            "NodeImage pull tasks finished, by result (pulled, present: not pulled, failed)",
            image_pulls.clone(),
        );
        let image_pull_duration = image_pull_histogram();
        registry.register_with_unit(
            "image_pull_duration",
            "Duration of NodeImage pull tasks, from the start of pulling to the end",
            Unit::Seconds,
            image_pull_duration.clone(),
        );
        let crr_stop_latency = latency_histogram();
        registry.register_with_unit(
            "crr_stop_latency",
            "Time from the watch event or timer that started a CRR executor pass to the start of a container stop (decision made, Killing event sent; the preStop hook and StopContainer follow)",
            Unit::Seconds,
            crr_stop_latency.clone(),
        );
        let probe_lateness = Histogram::new(exponential_buckets(0.0005, 1.5, 24));
        registry.register_with_unit(
            "probe_lateness",
            "How late a NodePodProbe probe started after its due time (its period's tick)",
            Unit::Seconds,
            probe_lateness.clone(),
        );
        let reports = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reports",
            "Outbox reports (a stopped sidecar's Event and pod condition) that left the outbox, by result (delivered, dropped: refused by the API for good)",
            reports.clone(),
        );
        let image_pulls_in_flight = Gauge::default();
        registry.register(
            "image_pulls_in_flight",
            "CRI PullImage calls in progress",
            image_pulls_in_flight.clone(),
        );
        super::nofile::register(&mut registry);
        let build_info = Family::<VersionLabel, Gauge>::default();
        registry.register("build_info", "Build information", build_info.clone());
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);

        let m = Metrics {
            inner: Arc::new(Inner {
                registry,
                terminations,
                crr_stops,
                meta_writes,
                meta_restarts,
                latency,
                cri_requests,
                cri_duration,
                exit_events,
                watched,
                journal_events,
                journal_pending,
                journal_outbox,
                journal_bytes,
                runtime_connected,
                last_relist,
                image_pulls,
                image_pull_duration,
                image_pulls_in_flight,
                crr_stop_latency,
                probe_lateness,
                reports,
            }),
        };
        // Export the known series at 0 from the start, so that rate() works on the first event.
        for result in TERMINATION_RESULTS {
            drop(m.inner.terminations.get_or_create(&ResultLabel {
                result: result.into(),
            }));
        }
        for stage in LATENCY_STAGES {
            drop(m.inner.latency.get_or_create(&StageLabel {
                stage: stage.into(),
            }));
        }
        for result in ["delivered", "dropped"] {
            m.report_series(result);
        }
        for source in EXIT_SOURCES {
            drop(m.inner.exit_events.get_or_create(&SourceLabel {
                source: source.into(),
            }));
        }
        for mechanism in WATCH_MECHANISMS {
            m.set_watched(mechanism, 0);
        }
        for result in IMAGE_PULL_RESULTS {
            drop(m.inner.image_pulls.get_or_create(&ResultLabel {
                result: result.into(),
            }));
        }
        m
    }

    /// One sidecar termination finished with `result` ("stopped", "failed", "skipped").
    pub fn sidecar_terminated(&self, result: &str) {
        self.inner
            .terminations
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// One outbox report left the outbox: "delivered", or "dropped" (refused by the API for good).
    pub fn report(&self, result: &str) {
        self.report_series(result).inc();
    }

    fn report_series(&self, result: &str) -> Counter {
        self.inner
            .reports
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .clone()
    }

    /// One container stop for a ContainerRecreateRequest finished with `result`.
    pub fn crr_container_stopped(&self, result: &str) {
        self.inner
            .crr_stops
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// One write of a pod's container meta annotation finished with `result`.
    pub fn container_meta_written(&self, result: &str) {
        self.inner
            .meta_writes
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// One container restart for stale env from metadata finished with `result`.
    pub fn container_meta_restarted(&self, result: &str) {
        self.inner
            .meta_restarts
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// The time from the event that started a CRR executor pass to the start of a stop.
    pub fn crr_stop_latency(&self, secs: f64) {
        self.inner.crr_stop_latency.observe(secs);
    }

    /// How late one probe started after its due time.
    pub fn probe_lateness(&self, secs: f64) {
        self.inner.probe_lateness.observe(secs);
    }

    /// A termination latency in seconds for `stage` ("exit_to_stop", "exit_to_sidecar_exit").
    pub fn observe_latency(&self, stage: &str, secs: f64) {
        self.inner
            .latency
            .get_or_create(&StageLabel {
                stage: stage.into(),
            })
            .observe(secs);
    }

    /// One CRI call: `method` (e.g. "StopContainer"), gRPC `code` (e.g. "OK", "NotFound"), duration.
    pub fn cri_request(&self, method: &str, code: &str, secs: f64) {
        self.inner
            .cri_requests
            .get_or_create(&CriLabels {
                method: method.into(),
                code: code.into(),
            })
            .inc();
        self.inner
            .cri_duration
            .get_or_create(&MethodLabel {
                method: method.into(),
            })
            .observe(secs);
    }

    /// A container exit was observed via `source` ("pidfd", "cgroup", "relist").
    pub fn exit_event(&self, source: &str) {
        self.inner
            .exit_events
            .get_or_create(&SourceLabel {
                source: source.into(),
            })
            .inc();
    }

    /// `n` containers are watched via `mechanism` ("pidfd", "cgroup").
    pub fn set_watched(&self, mechanism: &str, n: usize) {
        self.inner
            .watched
            .get_or_create(&MechanismLabel {
                mechanism: mechanism.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_journal(&self, stats: &JournalStats) {
        self.inner.journal_events.set(saturating_i64(stats.events));
        self.inner
            .journal_pending
            .set(saturating_i64(stats.pending));
        self.inner.journal_outbox.set(saturating_i64(stats.outbox));
        self.inner
            .journal_bytes
            .set(saturating_i64(stats.file_bytes));
    }

    /// A pull task ended with `result` ("pulled", "present", "failed") after `secs` of pulling
    /// (`None`: it never started, e.g. a bad reference).
    pub fn image_pull_finished(&self, result: &str, secs: Option<f64>) {
        self.inner
            .image_pulls
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
        if let Some(secs) = secs {
            self.inner.image_pull_duration.observe(secs);
        }
    }

    /// A CRI pull started (`1`) or ended (`-1`).
    pub fn image_pulls_in_flight(&self, delta: i64) {
        self.inner.image_pulls_in_flight.inc_by(delta);
    }

    pub fn set_runtime_connected(&self, connected: bool) {
        self.inner.runtime_connected.set(i64::from(connected));
    }

    /// A relist of the runtime succeeded now.
    pub fn relisted(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.inner
            .last_relist
            .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn try_encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    /// Like [`Metrics::try_encode`]; on an encoding error (which writing to a `String` cannot
    /// cause by itself) it logs and returns what was encoded.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) = text::encode(&mut out, &self.inner.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_contains_expected_samples() {
        let m = Metrics::new();
        m.sidecar_terminated("stopped");
        m.sidecar_terminated("stopped");
        m.observe_latency("exit_to_stop", 0.003);
        m.cri_request("StopContainer", "OK", 0.002);
        m.exit_event("pidfd");
        m.set_watched("cgroup", 4);
        m.set_journal(&JournalStats {
            events: 10,
            pending: 1,
            outbox: 3,
            done_keys: 10,
            file_bytes: 1_703_936,
            last_seq: 10,
        });
        m.set_runtime_connected(true);
        m.image_pull_finished("pulled", Some(0.3));
        m.image_pulls_in_flight(1);
        let clone = m.clone();
        clone.exit_event("pidfd");

        let text = m.try_encode().unwrap();
        assert_eq!(text, m.encode());
        for want in [
            "# TYPE nodeward_sidecar_terminations counter",
            "nodeward_sidecar_terminations_total{result=\"stopped\"} 2",
            "nodeward_sidecar_terminations_total{result=\"failed\"} 0",
            "nodeward_sidecar_terminations_total{result=\"skipped\"} 0",
            "# TYPE nodeward_sidecar_termination_latency_seconds histogram",
            "# UNIT nodeward_sidecar_termination_latency_seconds seconds",
            "nodeward_sidecar_termination_latency_seconds_count{stage=\"exit_to_stop\"} 1",
            "nodeward_sidecar_termination_latency_seconds_bucket{le=\"0.004\",stage=\"exit_to_stop\"} 1",
            "nodeward_sidecar_termination_latency_seconds_bucket{le=\"0.002\",stage=\"exit_to_stop\"} 0",
            "nodeward_sidecar_termination_latency_seconds_count{stage=\"exit_to_sidecar_exit\"} 0",
            "nodeward_cri_requests_total{method=\"StopContainer\",code=\"OK\"} 1",
            "nodeward_cri_request_duration_seconds_count{method=\"StopContainer\"} 1",
            "nodeward_cri_request_duration_seconds_bucket{le=\"0.002\",method=\"StopContainer\"} 1",
            "nodeward_exit_events_total{source=\"pidfd\"} 2",
            "nodeward_exit_events_total{source=\"relist\"} 0",
            "nodeward_watched_containers{mechanism=\"cgroup\"} 4",
            "nodeward_watched_containers{mechanism=\"pidfd\"} 0",
            "nodeward_journal_events 10",
            "nodeward_journal_pending_actions 1",
            "nodeward_journal_outbox 3",
            "nodeward_journal_bytes 1703936",
            "# UNIT nodeward_journal_bytes bytes",
            "nodeward_runtime_connected 1",
            "nodeward_image_pulls_total{result=\"pulled\"} 1",
            "nodeward_image_pulls_total{result=\"failed\"} 0",
            "nodeward_image_pull_duration_seconds_count 1",
            "nodeward_image_pulls_in_flight 1",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing line {want:?} in:\n{text}"
            );
        }
        let build_info = format!(
            "nodeward_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == build_info), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        m.set_runtime_connected(false);
        assert!(
            m.encode()
                .lines()
                .any(|l| l == "nodeward_runtime_connected 0")
        );
    }

    #[test]
    fn bucket_bounds_cover_the_documented_ranges() {
        let lat: Vec<f64> = exponential_buckets(0.001, 2.0, 17).collect();
        assert_eq!(lat.first(), Some(&0.001));
        assert!(*lat.last().unwrap() >= 60.0);
        let cri: Vec<f64> = exponential_buckets(0.0005, 2.0, 16).collect();
        assert_eq!(cri.first(), Some(&0.0005));
        assert!(*cri.last().unwrap() >= 10.0);
    }
}
