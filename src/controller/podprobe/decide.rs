//! Pure decisions of the PodProbeMarker and NodePodProbe controllers (upstream
//! `podprobemarker/pod_probe_marker_controller.go`, `nodepodprobe/node_pod_probe_controller.go`):
//! which pods a marker probes, a node's NodePodProbe spec computed from scratch, and what a
//! pod's probe results write on it; the admission rules are in [`validate`]. No I/O here.

pub mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};

use crate::api::kruise::{
    ContainerProbe, NodePodProbeSpec, PodProbe, PodProbeMarker, PodProbeStatus, ProbeState,
};

/// Condition types a marker may not write: the kubelet's own and OpenKruise's readiness gates
/// (upstream refuses them as probe names only; writing one would fight their owner).
pub const RESERVED_CONDITIONS: [&str; 8] = [
    "PodScheduled",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodReadyToStartContainers",
    "DisruptionTarget",
    "KruisePodReady",
    "InPlaceUpdateReady",
];

/// Whether a pod's probes run: on a node, initialized, not finished, not being deleted
/// (upstream `IsPodActive` and `Initialized=True`).
pub fn is_probed(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let initialized = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
        && initialized
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
}

/// Whether `marker` selects `pod`: same namespace, and a selector with at least one term that
/// matches its labels (an empty or invalid selector selects nothing).
pub fn selects(marker: &PodProbeMarker, pod: &Pod) -> bool {
    let sel = &marker.spec.selector;
    let empty = sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty);
    !empty
        && marker.namespace() == pod.namespace()
        && Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(pod.labels()))
}

/// A probe's name in a NodePodProbe: `<marker>#<probe>`.
pub fn probe_key(marker: &str, probe: &str) -> String {
    format!("{marker}#{probe}")
}

/// The marker's name in a `<marker>#<probe>` key.
pub fn marker_of(key: &str) -> Option<(&str, &str)> {
    key.split_once('#')
}

/// A probe left out of a pod's NodePodProbe entry, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub pod: String,
    pub probe: String,
    pub reason: String,
}

/// The probes `marker` runs on `pod`, named ports resolved to numbers from the container's ports
/// (upstream `convertTcpSocketProbeCheckPort` / `convertHttpGetProbeCheckPort`); a probe whose
/// port cannot be resolved is skipped.
pub fn container_probes(
    marker: &PodProbeMarker,
    pod: &Pod,
    skipped: &mut Vec<Skipped>,
) -> Vec<ContainerProbe> {
    let mut out = Vec::new();
    for p in &marker.spec.probes {
        let key = probe_key(&marker.name_any(), &p.name);
        match resolve_ports(pod, &p.container_name, &p.probe) {
            Ok(probe) => out.push(ContainerProbe {
                name: key,
                container_name: p.container_name.clone(),
                probe,
            }),
            Err(reason) => skipped.push(Skipped {
                pod: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                probe: key,
                reason,
            }),
        }
    }
    out
}

fn resolve_ports(pod: &Pod, container: &str, probe: &Probe) -> Result<Probe, String> {
    let mut probe = probe.clone();
    let named = |port: &IntOrString| -> Result<IntOrString, String> {
        let IntOrString::String(name) = port else {
            return Ok(port.clone());
        };
        let c = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == container))
            .ok_or_else(|| format!("no container {container} in the pod"))?;
        let number = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .or_else(|| name.parse().ok())
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| format!("container {container} has no port named {name}"))?;
        Ok(IntOrString::Int(number))
    };
    if let Some(h) = probe.http_get.as_mut() {
        h.port = named(&h.port)?;
    }
    if let Some(t) = probe.tcp_socket.as_mut() {
        t.port = named(&t.port)?;
    }
    Ok(probe)
}

/// A node's NodePodProbe spec, from scratch: every probed pod of `pods` (the node's) that a
/// marker of `markers` (not being deleted) selects, with the probes of every such marker. Pods
/// are ordered by namespace, name and uid, markers by name, probes as the marker lists them, so
/// the same inputs always give the same spec. Pods that are gone, finished or no longer selected,
/// and probes removed from their marker, simply are not there (upstream only appends).
pub fn node_spec(pods: &[Pod], markers: &[&PodProbeMarker]) -> (NodePodProbeSpec, Vec<Skipped>) {
    let mut markers: Vec<&PodProbeMarker> = markers
        .iter()
        .copied()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    markers.sort_by_key(|m| m.name_any());
    let mut pods: Vec<&Pod> = pods.iter().filter(|p| is_probed(p)).collect();
    pods.sort_by_key(|p| (p.namespace(), p.name_any(), p.uid()));
    let mut skipped = Vec::new();
    let mut pod_probes = Vec::new();
    for pod in pods {
        let probes: Vec<ContainerProbe> = markers
            .iter()
            .filter(|m| selects(m, pod))
            .flat_map(|m| container_probes(m, pod, &mut skipped))
            .collect();
        if probes.is_empty() {
            continue;
        }
        pod_probes.push(PodProbe {
            name: pod.name_any(),
            namespace: pod.namespace().unwrap_or_default(),
            uid: pod.uid().unwrap_or_default(),
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            probes,
        });
    }
    (NodePodProbeSpec { pod_probes }, skipped)
}

/// What a pod's probe results write on it: conditions by type, and labels and annotations to set
/// (`Some`) or remove (`None`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Marks {
    pub conditions: Vec<PodCondition>,
    pub labels: BTreeMap<String, Option<String>>,
    pub annotations: BTreeMap<String, Option<String>>,
}

/// The marks of one pod's results (upstream `updatePodProbeStatus`): for each probe state, the
/// marker's probe (looked up by `marker`, in the pod's namespace) gives the condition (`True` on
/// Succeeded, `False` otherwise; the first probe of a condition type wins) and the policy of that
/// state sets its labels and annotations, after the keys of the other state's policy are removed.
/// States of markers or probes that no longer exist mark nothing.
pub fn marks<'a>(
    status: &PodProbeStatus,
    marker: impl Fn(&str) -> Option<&'a PodProbeMarker>,
) -> Marks {
    let mut out = Marks::default();
    for state in &status.probe_states {
        let Some((marker_name, probe_name)) = marker_of(&state.name) else {
            continue;
        };
        let Some(m) = marker(marker_name).filter(|m| m.metadata.deletion_timestamp.is_none())
        else {
            continue;
        };
        let Some(probe) = m.spec.probes.iter().find(|p| p.name == probe_name) else {
            continue;
        };
        let ctype = &probe.pod_condition_type;
        if !ctype.is_empty()
            && !RESERVED_CONDITIONS.contains(&ctype.as_str())
            && !out.conditions.iter().any(|c| &c.type_ == ctype)
        {
            out.conditions.push(PodCondition {
                type_: ctype.clone(),
                status: if state.state == ProbeState::Succeeded {
                    "True"
                } else {
                    "False"
                }
                .into(),
                last_probe_time: state.last_probe_time.clone(),
                last_transition_time: state.last_transition_time.clone(),
                message: (!state.message.is_empty()).then(|| state.message.clone()),
                ..Default::default()
            });
        }
        let matched = probe.marker_policy.iter().find(|p| p.state == state.state);
        for other in probe
            .marker_policy
            .iter()
            .filter(|p| p.state != state.state)
        {
            for k in other.labels.keys() {
                out.labels.insert(k.clone(), None);
            }
            for k in other.annotations.keys() {
                out.annotations.insert(k.clone(), None);
            }
        }
        if let Some(policy) = matched {
            for (k, v) in &policy.labels {
                out.labels.insert(k.clone(), Some(v.clone()));
            }
            for (k, v) in &policy.annotations {
                out.annotations.insert(k.clone(), Some(v.clone()));
            }
        }
    }
    out
}

/// The strategic merge patch of `pods/status` that brings `pod` to `marks`, carrying the
/// resourceVersion read (so a pod changed meanwhile is a conflict, not an overwrite); `None` when
/// the pod already shows them. A condition is replaced only when its status or message differs
/// (its times then come from the probe state), as upstream's `SetPodConditionIfMsgChanged`.
pub fn pod_patch(pod: &Pod, marks: &Marks) -> Option<Value> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let conditions: Vec<&PodCondition> = marks
        .conditions
        .iter()
        .filter(|want| {
            !current.iter().any(|c| {
                c.type_ == want.type_ && c.status == want.status && c.message == want.message
            })
        })
        .collect();
    let changes = |want: &BTreeMap<String, Option<String>>, have: &BTreeMap<String, String>| {
        want.iter()
            .filter(|(k, v)| have.get(*k) != v.as_ref())
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<String, Value>>()
    };
    let labels = changes(&marks.labels, pod.labels());
    let annotations = changes(&marks.annotations, pod.annotations());
    if conditions.is_empty() && labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut patch = json!({"metadata": {"resourceVersion": pod.resource_version()}});
    if !labels.is_empty() {
        patch["metadata"]["labels"] = Value::Object(labels);
    }
    if !annotations.is_empty() {
        patch["metadata"]["annotations"] = Value::Object(annotations);
    }
    if !conditions.is_empty() {
        patch["status"] = json!({"conditions": conditions});
    }
    Some(patch)
}

/// Whether some NodePodProbe spec still runs a probe of `marker` (namespace, name): its
/// finalizer stays until none does. Matches the marker name exactly (upstream matches a
/// substring, so removing marker `way` also dropped the probes of `gateway`).
pub fn still_probed(spec: &NodePodProbeSpec, namespace: &str, marker: &str) -> bool {
    spec.pod_probes
        .iter()
        .filter(|p| p.namespace == namespace)
        .flat_map(|p| &p.probes)
        .any(|p| marker_of(&p.name).is_some_and(|(m, _)| m == marker))
}

#[cfg(test)]
mod tests;
