//! The NodePodProbe rules over plain data: which probe workers the spec wants (with upstream's
//! effective timing: every number below 1 counts as 1, none above a year), when a worker probes,
//! how the success and failure thresholds turn results into a state, and the status document
//! (stale entries pruned, `lastTransitionTime` moved only by a change of state).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::clamp;
use crate::api::kruise::{
    ContainerProbeState, MAX_PROBE_MESSAGE_LENGTH, NodePodProbeSpec, NodePodProbeStatus,
    PodProbeStatus, ProbeState,
};

/// One probe worker: a probe of a container of a pod (upstream's `probeKey`). A new pod IP is a
/// new worker, as upstream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_ip: String,
    pub container: String,
    /// `<PodProbeMarker name>#<probe name>`.
    pub probe: String,
}

/// A probe as a worker runs it: the handler and the effective timing.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    pub probe: Probe,
    pub initial_delay: Duration,
    pub timeout: Duration,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// Upstream's effective values: below 1 (unset included) counts as 1 — so an unset period
    /// probes every second, not the kubelet's 10 s — and nothing above a year.
    pub fn of(probe: &Probe) -> Self {
        let seconds = |v: Option<i32>| clamp::seconds(i64::from(v.unwrap_or(0).max(1)));
        let count = |v: Option<i32>| u32::try_from(v.unwrap_or(0).max(1)).unwrap_or(1);
        Self {
            probe: probe.clone(),
            initial_delay: seconds(probe.initial_delay_seconds),
            timeout: seconds(probe.timeout_seconds),
            period: seconds(probe.period_seconds),
            success_threshold: count(probe.success_threshold),
            failure_threshold: count(probe.failure_threshold),
        }
    }

    /// Whether `other` probes differently (not only with other timing).
    pub fn handler_differs(&self, other: &ProbeSpec) -> bool {
        self.probe.exec != other.probe.exec
            || self.probe.http_get != other.probe.http_get
            || self.probe.tcp_socket != other.probe.tcp_socket
            || self.probe.grpc != other.probe.grpc
    }
}

/// Every probe the spec asks this node to run.
pub fn wanted(spec: &NodePodProbeSpec) -> BTreeMap<ProbeKey, ProbeSpec> {
    let mut out = BTreeMap::new();
    for pod in &spec.pod_probes {
        for p in &pod.probes {
            let key = ProbeKey {
                pod_uid: pod.uid.clone(),
                pod_namespace: pod.namespace.clone(),
                pod_name: pod.name.clone(),
                pod_ip: pod.ip.clone(),
                container: p.container_name.clone(),
                probe: p.name.clone(),
            };
            out.insert(key, ProbeSpec::of(&p.probe));
        }
    }
    out
}

/// How the running workers must change.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub start: Vec<(ProbeKey, ProbeSpec)>,
    /// Running workers whose probe changed (a new handler resets the state to Unknown).
    pub update: Vec<(ProbeKey, ProbeSpec)>,
    pub stop: Vec<ProbeKey>,
}

pub fn plan(
    running: &BTreeMap<ProbeKey, ProbeSpec>,
    wanted: &BTreeMap<ProbeKey, ProbeSpec>,
) -> Plan {
    let mut plan = Plan::default();
    for (key, spec) in wanted {
        match running.get(key) {
            None => plan.start.push((key.clone(), spec.clone())),
            Some(old) if old != spec => plan.update.push((key.clone(), spec.clone())),
            Some(_) => {}
        }
    }
    plan.stop = running
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    plan
}

/// The container a worker probes, as the node model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    /// Its sandbox: the pod IP comes from the runtime.
    pub sandbox_id: String,
    pub running: bool,
    /// Unix nanoseconds, 0 when not known yet.
    pub started_at: i64,
}

/// What a worker does at a tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No such container (yet): nothing changes.
    Wait,
    /// The container is not running: Failed without probing (the kernel-exit-driven model
    /// knows; upstream also probes the stopped container, which can only fail).
    NotRunning(String),
    /// Within the initial delay from the container's start.
    Delay,
    Probe,
}

/// The step for `target` at `now_nanos`.
pub fn step(target: Option<&Target>, container: &str, spec: &ProbeSpec, now_nanos: i64) -> Step {
    let Some(t) = target else { return Step::Wait };
    if !t.running {
        return Step::NotRunning(format!("Container({container}) is Non-running"));
    }
    if t.started_at <= 0 {
        return Step::Delay;
    }
    let delay = i64::try_from(spec.initial_delay.as_nanos()).unwrap_or(i64::MAX);
    if now_nanos.saturating_sub(t.started_at) < delay {
        Step::Delay
    } else {
        Step::Probe
    }
}

/// The thresholds: a state is reported once it has been seen `success_threshold` (or
/// `failure_threshold`) times in a row, as upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thresholds {
    last: Option<ProbeState>,
    run: u32,
}

impl Thresholds {
    /// Count one result; the state to report, if the run reached its threshold.
    pub fn observe(&mut self, result: ProbeState, spec: &ProbeSpec) -> Option<ProbeState> {
        if self.last == Some(result) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let needed = match result {
            ProbeState::Succeeded => spec.success_threshold,
            ProbeState::Failed => spec.failure_threshold,
            ProbeState::Unknown => 1,
        };
        (self.run >= needed).then_some(result)
    }
}

/// A probe's message as the status keeps it: at most [`MAX_PROBE_MESSAGE_LENGTH`] characters,
/// cut at a character boundary (upstream cuts bytes, possibly inside a character).
pub fn message(text: &str) -> String {
    text.chars().take(MAX_PROBE_MESSAGE_LENGTH).collect()
}

/// One worker's latest reported result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    pub state: ProbeState,
    pub message: String,
    /// When it was probed.
    pub at: Time,
}

/// A result is sent to the status when its state or message changed, or to refresh
/// `lastProbeTime` once this long passed (upstream's `maxSyncProbeTime`).
pub const REFRESH: Duration = Duration::from_secs(600);

/// Whether a new result is worth a status write after `previous`.
pub fn worth_reporting(previous: Option<&Reported>, next: &Reported) -> bool {
    let Some(p) = previous else { return true };
    let age = next.at.0.duration_since(p.at.0).unsigned_abs();
    p.state != next.state || p.message != next.message || age >= REFRESH
}

/// The status to write: `old` pruned to the probes the spec still has, with `results` (by pod
/// uid and probe name) merged in; `lastTransitionTime` moves only when a state changes.
pub fn status(
    old: Option<&NodePodProbeStatus>,
    spec: &NodePodProbeSpec,
    results: &BTreeMap<(String, String), Reported>,
    now: &Time,
) -> NodePodProbeStatus {
    let valid: BTreeMap<(&str, &str), (&str, &str)> = spec
        .pod_probes
        .iter()
        .flat_map(|pod| {
            pod.probes.iter().map(move |p| {
                (
                    (pod.uid.as_str(), p.name.as_str()),
                    (pod.namespace.as_str(), pod.name.as_str()),
                )
            })
        })
        .collect();
    let mut pods: Vec<PodProbeStatus> = old
        .map(|s| s.pod_probe_statuses.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut pod| {
            pod.probe_states
                .retain(|s| valid.contains_key(&(pod.uid.as_str(), s.name.as_str())));
            (!pod.probe_states.is_empty()).then_some(pod)
        })
        .collect();
    for ((uid, probe), r) in results {
        let Some((namespace, name)) = valid.get(&(uid.as_str(), probe.as_str())) else {
            continue;
        };
        let index = match pods.iter().position(|p| p.uid == *uid) {
            Some(i) => i,
            None => {
                pods.push(PodProbeStatus {
                    name: (*name).to_string(),
                    namespace: (*namespace).to_string(),
                    uid: uid.clone(),
                    probe_states: Vec::new(),
                });
                pods.len() - 1
            }
        };
        let states = &mut pods[index].probe_states;
        match states.iter_mut().find(|s| s.name == *probe) {
            Some(s) => {
                if s.state != r.state {
                    s.last_transition_time = Some(now.clone());
                }
                s.state = r.state;
                s.message = r.message.clone();
                s.last_probe_time = Some(r.at.clone());
            }
            None => states.push(ContainerProbeState {
                name: probe.clone(),
                state: r.state,
                last_probe_time: Some(r.at.clone()),
                last_transition_time: Some(now.clone()),
                message: r.message.clone(),
            }),
        }
    }
    NodePodProbeStatus {
        pod_probe_statuses: pods,
    }
}

/// A stable spread of the workers' first probes over one period, so that many probes with the
/// same period do not all fire at once after a start (upstream draws a random delay).
pub fn jitter(key: &ProbeKey, period: Duration) -> Duration {
    let h = crate::hash::fnv1a_64(
        [&key.pod_uid, &key.container, &key.probe]
            .into_iter()
            .flat_map(|part| part.bytes().chain([0])),
    );
    let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(h % period_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kruise::{ContainerProbe, PodProbe};
    use k8s_openapi::api::core::v1::ExecAction;
    use k8s_openapi::jiff::Timestamp;

    fn exec_probe(period: Option<i32>) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            period_seconds: period,
            ..Default::default()
        }
    }

    fn spec(pods: &[(&str, &[&str])]) -> NodePodProbeSpec {
        NodePodProbeSpec {
            pod_probes: pods
                .iter()
                .map(|(uid, probes)| PodProbe {
                    name: format!("pod-{uid}"),
                    namespace: "ns".into(),
                    uid: (*uid).into(),
                    ip: "10.0.0.1".into(),
                    probes: probes
                        .iter()
                        .map(|p| ContainerProbe {
                            name: (*p).into(),
                            container_name: "app".into(),
                            probe: exec_probe(Some(1)),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn timing_below_one_counts_as_one_and_above_a_year_is_cut() {
        let s = ProbeSpec::of(&Probe {
            initial_delay_seconds: Some(-5),
            timeout_seconds: None,
            period_seconds: Some(i32::MAX),
            success_threshold: Some(0),
            failure_threshold: Some(3),
            ..exec_probe(None)
        });
        assert_eq!(s.initial_delay, Duration::from_secs(1));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(s.period, clamp::seconds(i64::MAX));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
    }

    #[test]
    fn plan_starts_updates_and_stops_workers() {
        let running = wanted(&spec(&[("a", &["m#x", "m#y"])]));
        let mut next = spec(&[("a", &["m#x"]), ("b", &["m#x"])]);
        next.pod_probes[0].probes[0].probe = exec_probe(Some(5));
        let p = plan(&running, &wanted(&next));
        assert_eq!(p.start.len(), 1);
        assert_eq!(p.start[0].0.pod_uid, "b");
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].1.period, Duration::from_secs(5));
        assert_eq!(p.stop.len(), 1);
        assert_eq!(p.stop[0].probe, "m#y");
        assert_eq!(plan(&running, &running), Plan::default());
    }

    #[test]
    fn steps() {
        let spec = ProbeSpec::of(&Probe {
            initial_delay_seconds: Some(5),
            ..exec_probe(None)
        });
        let s = 1_000_000_000i64;
        let running = |started_at| Target {
            id: "c".into(),
            sandbox_id: "s".into(),
            running: true,
            started_at,
        };
        let table = [
            (None, 100 * s, Step::Wait),
            (
                Some(Target {
                    running: false,
                    ..running(s)
                }),
                100 * s,
                Step::NotRunning("Container(app) is Non-running".into()),
            ),
            (Some(running(0)), 100 * s, Step::Delay),
            (Some(running(98 * s)), 100 * s, Step::Delay),
            (Some(running(95 * s)), 100 * s, Step::Probe),
            (Some(running(i64::MAX)), i64::MIN, Step::Delay),
        ];
        for (target, now, want) in table {
            assert_eq!(step(target.as_ref(), "app", &spec, now), want, "{target:?}");
        }
    }

    #[test]
    fn thresholds_need_runs() {
        let spec = ProbeSpec::of(&Probe {
            success_threshold: Some(2),
            failure_threshold: Some(3),
            ..exec_probe(None)
        });
        let mut t = Thresholds::default();
        use ProbeState::{Failed, Succeeded};
        let seen: Vec<_> = [Succeeded, Succeeded, Failed, Failed, Failed, Succeeded]
            .into_iter()
            .map(|r| t.observe(r, &spec))
            .collect();
        assert_eq!(
            seen,
            [None, Some(Succeeded), None, None, Some(Failed), None]
        );
    }

    #[test]
    fn messages_are_cut_at_a_character() {
        assert_eq!(message("ok"), "ok");
        let long = "é".repeat(MAX_PROBE_MESSAGE_LENGTH + 10);
        assert_eq!(message(&long).chars().count(), MAX_PROBE_MESSAGE_LENGTH);
    }

    #[test]
    fn only_changes_or_stale_results_are_reported() {
        let r = |state, message: &str, secs| Reported {
            state,
            message: message.into(),
            at: at(secs),
        };
        let first = r(ProbeState::Succeeded, "ok", 1000);
        assert!(worth_reporting(None, &first));
        assert!(!worth_reporting(
            Some(&first),
            &r(ProbeState::Succeeded, "ok", 1010)
        ));
        assert!(worth_reporting(
            Some(&first),
            &r(ProbeState::Failed, "ok", 1010)
        ));
        assert!(worth_reporting(
            Some(&first),
            &r(ProbeState::Succeeded, "ok2", 1010)
        ));
        assert!(worth_reporting(
            Some(&first),
            &r(ProbeState::Succeeded, "ok", 1600)
        ));
    }

    #[test]
    fn status_prunes_merges_and_keeps_transition_times() {
        let spec = spec(&[("a", &["m#x"]), ("b", &["m#x"])]);
        let old = NodePodProbeStatus {
            pod_probe_statuses: vec![
                PodProbeStatus {
                    name: "pod-a".into(),
                    namespace: "ns".into(),
                    uid: "a".into(),
                    probe_states: vec![
                        ContainerProbeState {
                            name: "m#x".into(),
                            state: ProbeState::Succeeded,
                            last_probe_time: Some(at(10)),
                            last_transition_time: Some(at(5)),
                            message: String::new(),
                        },
                        ContainerProbeState {
                            name: "m#gone".into(),
                            ..Default::default()
                        },
                    ],
                },
                PodProbeStatus {
                    uid: "gone".into(),
                    probe_states: vec![ContainerProbeState {
                        name: "m#x".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let mut results = BTreeMap::new();
        let reported = |state| Reported {
            state,
            message: "m".into(),
            at: at(20),
        };
        results.insert(("a".into(), "m#x".into()), reported(ProbeState::Succeeded));
        results.insert(("b".into(), "m#x".into()), reported(ProbeState::Failed));
        results.insert(("a".into(), "m#other".into()), reported(ProbeState::Failed));
        let st = status(Some(&old), &spec, &results, &at(21));
        assert_eq!(st.pod_probe_statuses.len(), 2);
        let a = &st.pod_probe_statuses[0];
        assert_eq!(a.uid, "a");
        assert_eq!(a.probe_states.len(), 1);
        assert_eq!(a.probe_states[0].last_transition_time, Some(at(5)));
        assert_eq!(a.probe_states[0].last_probe_time, Some(at(20)));
        let b = &st.pod_probe_statuses[1];
        assert_eq!((b.name.as_str(), b.namespace.as_str()), ("pod-b", "ns"));
        assert_eq!(b.probe_states[0].state, ProbeState::Failed);
        assert_eq!(b.probe_states[0].last_transition_time, Some(at(21)));
        let st2 = status(Some(&st), &spec, &results, &at(30));
        assert_eq!(st2, st, "unchanged results write nothing new");
    }

    #[test]
    fn jitter_stays_within_the_period() {
        let key = ProbeKey {
            pod_uid: "u".into(),
            pod_namespace: "n".into(),
            pod_name: "p".into(),
            pod_ip: "ip".into(),
            container: "c".into(),
            probe: "m#x".into(),
        };
        assert!(jitter(&key, Duration::from_secs(1)) < Duration::from_secs(1));
        assert_eq!(jitter(&key, Duration::ZERO), Duration::ZERO);
    }
}
