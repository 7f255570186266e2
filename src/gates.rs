//! Feature gates, by OpenKruise's names, so that a cluster moving from kruise-daemon keeps its
//! switches: `--feature-gates=PodProbeMarkerGate=false,...` on the agent and the controller
//! (Kubernetes' syntax). Each gate turns one capability on or off in both halves; the CRR
//! executor and its controller have no gate (upstream has none either). Two gates are
//! nodeward's own: `CloneSetController` (off by default: kruise-manager's CloneSet controller
//! must not run beside it) and upstream's `CloneSetEventHandlerOptimization` (on here).

use std::collections::BTreeMap;
use std::fmt;

/// The gates and what each switches.
pub const GATES: [(&str, &str); 6] = [
    (
        SIDECAR_TERMINATOR,
        "the Job sidecar terminator (agent) and the virtual-node sidecar image swap (controller)",
    ),
    (
        IMAGE_PULL_JOB_GATE,
        "image pre-pull: the NodeImage puller (agent), ImagePullJob, ImageListPullJob and NodeImage (controller)",
    ),
    (
        POD_PROBE_MARKER_GATE,
        "custom pod probes: the NodePodProbe prober (agent), PodProbeMarker and NodePodProbe (controller)",
    ),
    (
        IN_PLACE_UPDATE_ENV_FROM_METADATA,
        "container meta: the runtime-containers-meta annotation and stale-env restarts (agent)",
    ),
    (
        CLONESET_CONTROLLER,
        "the CloneSet controller (controller; off by default, never beside kruise-manager's)",
    ),
    (
        CLONESET_EVENT_HANDLER_OPTIMIZATION,
        "CloneSet pod updates that cannot change a decision start no reconcile (controller)",
    ),
];

pub const SIDECAR_TERMINATOR: &str = "SidecarTerminator";
pub const IMAGE_PULL_JOB_GATE: &str = "ImagePullJobGate";
pub const POD_PROBE_MARKER_GATE: &str = "PodProbeMarkerGate";
pub const IN_PLACE_UPDATE_ENV_FROM_METADATA: &str = "InPlaceUpdateEnvFromMetadata";
pub const CLONESET_CONTROLLER: &str = "CloneSetController";
pub const CLONESET_EVENT_HANDLER_OPTIMIZATION: &str = "CloneSetEventHandlerOptimization";

/// Which capabilities run. Every gate but `CloneSetController` is on unless turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureGates {
    pub sidecar_terminator: bool,
    pub image_pull: bool,
    pub pod_probe: bool,
    pub container_meta: bool,
    pub cloneset: bool,
    pub cloneset_event_optimization: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        Self {
            sidecar_terminator: true,
            image_pull: true,
            pod_probe: true,
            container_meta: true,
            cloneset: false,
            cloneset_event_optimization: true,
        }
    }
}

/// A `--feature-gates` value that does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("feature gate {0:?}: expected NAME=true|false")]
    Syntax(String),
    #[error("unknown feature gate {0:?} (known: {known})", known = known())]
    Unknown(String),
}

fn known() -> String {
    GATES.map(|(name, _)| name).join(", ")
}

impl FeatureGates {
    /// Kubernetes' syntax: `A=true,B=false`, spaces ignored, an empty value is the defaults.
    pub fn parse(value: &str) -> Result<Self, GateError> {
        let mut gates = Self::default();
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, on) = pair
                .split_once('=')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| GateError::Syntax(pair.to_string()))?;
            let on = match on.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(GateError::Syntax(pair.to_string())),
            };
            *gates.slot(name)? = on;
        }
        Ok(gates)
    }

    fn slot(&mut self, name: &str) -> Result<&mut bool, GateError> {
        match name {
            SIDECAR_TERMINATOR => Ok(&mut self.sidecar_terminator),
            IMAGE_PULL_JOB_GATE => Ok(&mut self.image_pull),
            POD_PROBE_MARKER_GATE => Ok(&mut self.pod_probe),
            IN_PLACE_UPDATE_ENV_FROM_METADATA => Ok(&mut self.container_meta),
            CLONESET_CONTROLLER => Ok(&mut self.cloneset),
            CLONESET_EVENT_HANDLER_OPTIMIZATION => Ok(&mut self.cloneset_event_optimization),
            other => Err(GateError::Unknown(other.to_string())),
        }
    }

    /// Each gate and its state, by name.
    pub fn states(&self) -> BTreeMap<&'static str, bool> {
        BTreeMap::from([
            (SIDECAR_TERMINATOR, self.sidecar_terminator),
            (IMAGE_PULL_JOB_GATE, self.image_pull),
            (POD_PROBE_MARKER_GATE, self.pod_probe),
            (IN_PLACE_UPDATE_ENV_FROM_METADATA, self.container_meta),
            (CLONESET_CONTROLLER, self.cloneset),
            (
                CLONESET_EVENT_HANDLER_OPTIMIZATION,
                self.cloneset_event_optimization,
            ),
        ])
    }
}

impl fmt::Display for FeatureGates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .states()
            .into_iter()
            .map(|(name, on)| format!("{name}={on}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_as_kubernetes_does() {
        assert_eq!(FeatureGates::parse(""), Ok(FeatureGates::default()));
        let g = FeatureGates::parse(" PodProbeMarkerGate=false, ImagePullJobGate=FALSE ,").unwrap();
        assert!(!g.pod_probe && !g.image_pull && g.sidecar_terminator && g.container_meta);
        assert_eq!(
            g.to_string(),
            "CloneSetController=false,CloneSetEventHandlerOptimization=true,ImagePullJobGate=false,InPlaceUpdateEnvFromMetadata=true,PodProbeMarkerGate=false,SidecarTerminator=true"
        );
        assert_eq!(FeatureGates::parse(&g.to_string()), Ok(g));
        assert_eq!(
            FeatureGates::parse("PodProbeMarkerGate"),
            Err(GateError::Syntax("PodProbeMarkerGate".into()))
        );
        assert_eq!(
            FeatureGates::parse("PodProbeMarkerGate=maybe"),
            Err(GateError::Syntax("PodProbeMarkerGate=maybe".into()))
        );
        let unknown = FeatureGates::parse("KruiseDaemon=true").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown feature gate \"KruiseDaemon\" (known: SidecarTerminator, ImagePullJobGate, PodProbeMarkerGate, InPlaceUpdateEnvFromMetadata, CloneSetController, CloneSetEventHandlerOptimization)"
        );
    }
}
