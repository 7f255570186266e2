//! The one Event writer: core/v1 Events as the kubelet and kruise-daemon write them (client-go's
//! recorder): `source` and `reportingComponent` name the writer, `count` 1, first/last timestamps
//! and `eventTime` the moment it happened. Used by the agent (sidecar terminator, CRR executor,
//! image puller) and the controller.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;
use tracing::warn;

/// Where Events about cluster-scoped objects go (as client-go's recorder does).
pub const CLUSTER_EVENT_NAMESPACE: &str = "default";

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One Event to write.
#[derive(Clone, Debug)]
pub struct Note {
    /// What the Event is about (`involvedObject`).
    pub object: ObjectReference,
    pub type_: EventType,
    /// CamelCase, as upstream writes it (`SidecarTerminated`, `Killing`, `PullImageFailed`).
    pub reason: String,
    pub message: String,
    /// The action taken or tried (`StopContainer`, `PullImage`, `Probe`, ...): the API server
    /// requires one on an Event with an `eventTime`, which every Event here has.
    pub action: String,
    /// A stable name makes the write idempotent (a repeat finds it exists); `None`: a generated
    /// name `<object>.<random>`.
    pub name: Option<String>,
    /// When it happened (first and last timestamp, event time).
    pub at: SystemTime,
}

impl Note {
    pub fn new(
        object: ObjectReference,
        type_: EventType,
        reason: impl Into<String>,
        action: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object,
            type_,
            reason: reason.into(),
            message: message.into(),
            action: action.into(),
            name: None,
            at: SystemTime::now(),
        }
    }
}

/// A Pod as an Event's subject (`involvedObject`).
pub fn pod_reference(namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        uid: uid.map(str::to_string),
        ..Default::default()
    }
}

/// Writes Events as one component (and, for the agent, one node).
#[derive(Clone)]
pub struct EventWriter {
    client: kube::Client,
    component: &'static str,
    host: Option<String>,
}

impl EventWriter {
    pub fn new(client: kube::Client, component: &'static str, host: Option<String>) -> Self {
        Self {
            client,
            component,
            host,
        }
    }

    /// The Event object for a note.
    pub fn event(&self, note: &Note) -> Event {
        build(note, self.component, self.host.as_deref())
    }

    /// Write the Event. A name already taken (a repeat of an idempotent write) is success.
    pub async fn write(&self, note: &Note) -> Result<(), kube::Error> {
        let ev = self.event(note);
        let ns = ev.metadata.namespace.clone().unwrap_or_default();
        match Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &ev)
            .await
        {
            Err(e) if !super::is_already_exists(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Write the Event in the background (the caller does not wait for the API); a failure is
    /// logged.
    pub fn spawn(&self, note: Note) {
        let writer = self.clone();
        tokio::spawn(async move {
            if let Err(e) = writer.write(&note).await {
                warn!(error = %e, object = ?note.object.name, reason = %note.reason,
                    "recording the Event failed");
            }
        });
    }
}

/// The core/v1 Event for `note`, written by `component` on `host`.
pub fn build(note: &Note, component: &str, host: Option<&str>) -> Event {
    let at = k8s_openapi::jiff::Timestamp::try_from(note.at)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let namespace = note
        .object
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| CLUSTER_EVENT_NAMESPACE.to_string());
    let object = note.object.name.as_deref().unwrap_or("object");
    Event {
        metadata: ObjectMeta {
            name: note.name.clone(),
            generate_name: note.name.is_none().then(|| format!("{object}.")),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: note.object.clone(),
        reason: Some(note.reason.clone()),
        message: Some(bounded(&note.message)),
        type_: Some(note.type_.as_str().into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: host.map(Into::into),
        }),
        reporting_component: Some(component.into()),
        // The API server requires an instance on an Event with an eventTime.
        reporting_instance: Some(host.unwrap_or(component).into()),
        action: Some(note.action.clone()),
        first_timestamp: Some(Time(at)),
        last_timestamp: Some(Time(at)),
        event_time: Some(MicroTime(at)),
        count: Some(1),
        ..Default::default()
    }
}

/// The API server refuses an Event message over 1 KiB: longer ones are cut at a character.
const MESSAGE_LIMIT: usize = 1024;

fn bounded(message: &str) -> String {
    let mut end = message.len().min(MESSAGE_LIMIT);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_as_client_go_writes_them() {
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some("job-x".into()),
            namespace: Some("batch".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let note = Note::new(
            pod,
            EventType::Warning,
            "FailedPreStopHook",
            "PreStop",
            "boom",
        );
        let ev = build(&note, "nodeward-agent", Some("node-a"));
        assert_eq!(ev.metadata.generate_name.as_deref(), Some("job-x."));
        assert_eq!(ev.metadata.name, None);
        assert_eq!(ev.metadata.namespace.as_deref(), Some("batch"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.count, Some(1));
        assert_eq!(ev.reporting_instance.as_deref(), Some("node-a"));
        assert_eq!(
            ev.source.as_ref().and_then(|s| s.component.as_deref()),
            Some("nodeward-agent")
        );
        let node = ObjectReference {
            kind: Some("NodeImage".into()),
            name: Some("node-a".into()),
            ..Default::default()
        };
        let named = Note {
            name: Some("node-a.1".into()),
            ..Note::new(node, EventType::Normal, "Pulled", "PullImage", "ok")
        };
        let ev = build(&named, "nodeward-controller", None);
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(ev.metadata.name.as_deref(), Some("node-a.1"));
        assert_eq!(ev.metadata.generate_name, None);
        // The API server requires an instance and an action on an Event with an eventTime.
        assert_eq!(
            ev.reporting_instance.as_deref(),
            Some("nodeward-controller")
        );
        assert_eq!(ev.action.as_deref(), Some("PullImage"));
        let long = Note::new(
            ObjectReference::default(),
            EventType::Normal,
            "R",
            "A",
            "é".repeat(600),
        );
        let message = build(&long, "c", None).message.unwrap();
        assert!(message.len() <= MESSAGE_LIMIT && message.len() >= MESSAGE_LIMIT - 1);
    }
}
