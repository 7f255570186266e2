//! Decoding the labels and annotations the kubelet writes on CRI sandboxes and containers
//! (`pkg/kubelet/kuberuntime/labels.go`) into plain data.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::HTTPGetAction;
use serde::Deserialize;

use crate::api::clamp;
use crate::api::well_known as wk;

/// A pod's identity as the kubelet labels it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    /// From kubelet labels; `None` when the object was not created by a kubelet.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Self> {
        Some(Self {
            namespace: labels.get(wk::LABEL_POD_NAMESPACE)?.clone(),
            name: labels.get(wk::LABEL_POD_NAME)?.clone(),
            uid: labels.get(wk::LABEL_POD_UID)?.clone(),
        })
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "Always" => Some(Self::Always),
            "OnFailure" => Some(Self::OnFailure),
            "Never" => Some(Self::Never),
            _ => None,
        }
    }

    /// Restart policy from the sandbox annotations (the pod's annotations).
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Option<Self> {
        annotations
            .get(wk::ANNOTATION_RESTART_POLICY)
            .and_then(|v| Self::parse(v))
    }
}

/// A preStop hook as the kubelet serialises it into the container annotation: the Pod spec's
/// own hook, which is the only one nodeward runs (never one a CRR names).
#[derive(Clone, Debug, PartialEq)]
pub enum PreStop {
    Exec(Vec<String>),
    Sleep(Duration),
    HttpGet(Box<HTTPGetAction>),
    /// A handler nodeward cannot run; kept for the log.
    Unsupported(String),
}

/// A named container port, from the kubelet's ports annotation (for an httpGet hook's named
/// port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHandler {
    exec: Option<RawExec>,
    sleep: Option<RawSleep>,
    http_get: Option<HTTPGetAction>,
    tcp_socket: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawExec {
    #[serde(default)]
    command: Vec<String>,
}

#[derive(Deserialize)]
struct RawSleep {
    seconds: i64,
}

impl PreStop {
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Option<Self> {
        let raw = annotations.get(wk::ANNOTATION_PRESTOP_HANDLER)?;
        Some(Self::parse(raw))
    }

    pub fn parse(raw: &str) -> Self {
        match serde_json::from_str::<RawHandler>(raw) {
            Ok(RawHandler {
                exec: Some(exec), ..
            }) if !exec.command.is_empty() => Self::Exec(exec.command),
            Ok(RawHandler { sleep: Some(s), .. }) => Self::Sleep(clamp::seconds(s.seconds)),
            Ok(RawHandler {
                http_get: Some(h), ..
            }) => Self::HttpGet(Box::new(h)),
            Ok(RawHandler {
                tcp_socket: Some(_),
                ..
            }) => Self::Unsupported("tcpSocket".into()),
            Ok(_) => Self::Unsupported("empty handler".into()),
            Err(e) => Self::Unsupported(format!("unreadable preStop annotation: {e}")),
        }
    }
}

/// The kubelet-written facts of one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerMeta {
    pub name: String,
    pub restart_count: u32,
    /// The kubelet's container hash (its hex annotation), 0 when missing or unreadable.
    pub hash: u64,
    pub grace: Duration,
    pub pre_stop: Option<PreStop>,
    pub ports: Vec<NamedPort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPort {
    #[serde(default)]
    name: String,
    container_port: i32,
}

/// The container's named ports from the kubelet's annotation (unnamed ones and an unreadable
/// annotation give none).
fn named_ports(annotations: &HashMap<String, String>) -> Vec<NamedPort> {
    annotations
        .get(wk::ANNOTATION_CONTAINER_PORTS)
        .and_then(|raw| serde_json::from_str::<Vec<RawPort>>(raw).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| NamedPort {
            name: p.name,
            port: p.container_port,
        })
        .collect()
}

impl ContainerMeta {
    pub fn from_cri(
        labels: &HashMap<String, String>,
        annotations: &HashMap<String, String>,
        fallback_name: &str,
    ) -> Self {
        let name = labels
            .get(wk::LABEL_CONTAINER_NAME)
            .cloned()
            .unwrap_or_else(|| fallback_name.to_string());
        let restart_count = annotations
            .get(wk::ANNOTATION_RESTART_COUNT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let hash = annotations
            .get(wk::ANNOTATION_CONTAINER_HASH)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        let grace_secs = annotations
            .get(wk::ANNOTATION_TERMINATION_GRACE_PERIOD)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .unwrap_or(wk::DEFAULT_TERMINATION_GRACE_SECONDS);
        Self {
            name,
            restart_count,
            hash,
            grace: clamp::seconds(grace_secs),
            pre_stop: PreStop::from_annotations(annotations),
            ports: named_ports(annotations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn named_ports_from_the_annotation() {
        let a = map(&[(
            wk::ANNOTATION_CONTAINER_PORTS,
            r#"[{"name":"web","containerPort":8080,"protocol":"TCP"},{"containerPort":9}]"#,
        )]);
        let m = ContainerMeta::from_cri(&HashMap::new(), &a, "c");
        assert_eq!(
            m.ports,
            vec![NamedPort {
                name: "web".into(),
                port: 8080
            }]
        );
        let a = map(&[(wk::ANNOTATION_CONTAINER_PORTS, "not json")]);
        assert!(
            ContainerMeta::from_cri(&HashMap::new(), &a, "c")
                .ports
                .is_empty()
        );
        let a = map(&[(wk::ANNOTATION_TERMINATION_GRACE_PERIOD, "360000000000")]);
        assert_eq!(
            ContainerMeta::from_cri(&HashMap::new(), &a, "c").grace,
            Duration::from_secs(clamp::MAX_SECONDS as u64)
        );
    }

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_ref_needs_all_three_labels() {
        let l = map(&[
            (wk::LABEL_POD_NAME, "p"),
            (wk::LABEL_POD_NAMESPACE, "ns"),
            (wk::LABEL_POD_UID, "u"),
        ]);
        let p = PodRef::from_labels(&l).unwrap();
        assert_eq!(p.to_string(), "ns/p");
        assert!(PodRef::from_labels(&map(&[(wk::LABEL_POD_NAME, "p")])).is_none());
    }

    #[test]
    fn container_meta_defaults_and_values() {
        let m = ContainerMeta::from_cri(&HashMap::new(), &HashMap::new(), "fallback");
        assert_eq!(m.name, "fallback");
        assert_eq!(m.restart_count, 0);
        assert_eq!(m.grace, Duration::from_secs(30));
        assert_eq!(m.pre_stop, None);

        let m = ContainerMeta::from_cri(
            &map(&[(wk::LABEL_CONTAINER_NAME, "side")]),
            &map(&[
                (wk::ANNOTATION_RESTART_COUNT, "3"),
                (wk::ANNOTATION_TERMINATION_GRACE_PERIOD, "5"),
                (
                    wk::ANNOTATION_PRESTOP_HANDLER,
                    r#"{"exec":{"command":["sh","-c","x"]}}"#,
                ),
            ]),
            "fallback",
        );
        assert_eq!(m.name, "side");
        assert_eq!(m.restart_count, 3);
        assert_eq!(m.grace, Duration::from_secs(5));
        assert_eq!(
            m.pre_stop,
            Some(PreStop::Exec(vec!["sh".into(), "-c".into(), "x".into()]))
        );
    }

    #[test]
    fn prestop_variants() {
        assert_eq!(
            PreStop::parse(r#"{"sleep":{"seconds":4}}"#),
            PreStop::Sleep(Duration::from_secs(4))
        );
        let PreStop::HttpGet(h) = PreStop::parse(r#"{"httpGet":{"path":"/q","port":"web"}}"#)
        else {
            panic!("not an httpGet hook");
        };
        assert_eq!(h.path.as_deref(), Some("/q"));
        assert_eq!(h.port, IntOrString::String("web".into()));
        assert_eq!(
            PreStop::parse(r#"{"sleep":{"seconds":99999999999999}}"#),
            PreStop::Sleep(Duration::from_secs(clamp::MAX_SECONDS as u64))
        );
        assert!(matches!(PreStop::parse("garbage"), PreStop::Unsupported(_)));
        assert!(matches!(
            PreStop::parse(r#"{"exec":{"command":[]}}"#),
            PreStop::Unsupported(_)
        ));
    }

    #[test]
    fn restart_policy_from_annotation() {
        let a = map(&[(wk::ANNOTATION_RESTART_POLICY, "OnFailure")]);
        assert_eq!(
            RestartPolicy::from_annotations(&a),
            Some(RestartPolicy::OnFailure)
        );
        let a = map(&[(wk::ANNOTATION_RESTART_POLICY, "bogus")]);
        assert_eq!(RestartPolicy::from_annotations(&a), None);
    }
}
