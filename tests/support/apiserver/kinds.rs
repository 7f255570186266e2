//! What differs between kinds: registration data, defaulting, validation, status handling,
//! selectable fields and list merge strategies.

use serde_json::{Map, Value, json};

use super::util::{ApiError, dotted, metadata};

/// A served resource (one group/version/plural).
#[derive(Debug, Clone)]
pub(crate) struct ResourceMeta {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores `.status` and `/status` only
    /// changes `.status`.
    pub status: bool,
    pub short_names: Vec<String>,
    /// A custom resource: no strategic merge patch, updates need a resourceVersion.
    pub custom: bool,
}

impl ResourceMeta {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn builtin(&self) -> Builtin {
        if self.custom {
            return Builtin::Other;
        }
        match (self.group.as_str(), self.kind.as_str()) {
            ("", "Pod") => Builtin::Pod,
            ("", "Node") => Builtin::Node,
            ("", "Namespace") => Builtin::Namespace,
            ("", "Event") => Builtin::Event,
            ("events.k8s.io", "Event") => Builtin::EventV1,
            ("", "Secret") => Builtin::Secret,
            ("apiextensions.k8s.io", "CustomResourceDefinition") => Builtin::Crd,
            _ => Builtin::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Pod,
    Node,
    Namespace,
    Event,
    EventV1,
    Secret,
    Crd,
    Other,
}

pub(crate) fn builtin_resources() -> Vec<ResourceMeta> {
    let r = |group: &str,
             version: &str,
             kind: &str,
             plural: &str,
             namespaced: bool,
             status: bool,
             short: &[&str]| ResourceMeta {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        status,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        custom: false,
    };
    vec![
        r("", "v1", "Pod", "pods", true, true, &["po"]),
        r("", "v1", "Node", "nodes", false, true, &["no"]),
        r("", "v1", "Namespace", "namespaces", false, true, &["ns"]),
        r("", "v1", "Event", "events", true, false, &["ev"]),
        r("", "v1", "Secret", "secrets", true, false, &[]),
        r("", "v1", "ConfigMap", "configmaps", true, false, &["cm"]),
        r(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            false,
            &["sa"],
        ),
        r(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            false,
            &[],
        ),
        r(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            false,
            &["ev"],
        ),
        r(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
            &["crd", "crds"],
        ),
    ]
}

/// The kinds of OpenKruise that nodeward serves, registered by default.
pub(crate) fn kruise_resources() -> Vec<ResourceMeta> {
    let r = |kind: &str, plural: &str, namespaced: bool, short: &[&str]| ResourceMeta {
        group: "apps.kruise.io".into(),
        version: "v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        status: true,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        custom: true,
    };
    vec![
        r(
            "ContainerRecreateRequest",
            "containerrecreaterequests",
            true,
            &["crr"],
        ),
        r("ImagePullJob", "imagepulljobs", true, &[]),
        r("ImageListPullJob", "imagelistpulljobs", true, &[]),
        r("NodeImage", "nodeimages", false, &[]),
        r("NodePodProbe", "nodepodprobes", false, &[]),
        r("PodProbeMarker", "podprobemarkers", true, &[]),
    ]
}

/// How a list is merged by strategic merge patch and owned by server-side apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Replaced as a whole.
    Atomic,
    /// Elements identified by this key.
    Map(&'static str),
    /// Scalars merged as a set.
    Set,
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// `path` is the chain of object keys from the root (list positions left out).
pub(crate) fn list_kind(meta: &ResourceMeta, path: &[&str]) -> ListKind {
    match path {
        ["metadata", "finalizers"] => return ListKind::Set,
        ["metadata", "ownerReferences"] => return ListKind::Map("uid"),
        _ => {}
    }
    match meta.builtin() {
        Builtin::Pod => match path {
            ["spec", c] if CONTAINER_LISTS.contains(c) => ListKind::Map("name"),
            ["spec", c, field] if CONTAINER_LISTS.contains(c) => match *field {
                "env" => ListKind::Map("name"),
                "ports" => ListKind::Map("containerPort"),
                "volumeMounts" => ListKind::Map("mountPath"),
                "volumeDevices" => ListKind::Map("devicePath"),
                _ => ListKind::Atomic,
            },
            [
                "spec",
                "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims",
            ] => ListKind::Map("name"),
            ["spec", "hostAliases"] => ListKind::Map("ip"),
            ["status", "conditions"] => ListKind::Map("type"),
            [
                "status",
                "containerStatuses"
                | "initContainerStatuses"
                | "ephemeralContainerStatuses"
                | "resourceClaimStatuses",
            ] => ListKind::Map("name"),
            ["status", "podIPs" | "hostIPs"] => ListKind::Map("ip"),
            _ => ListKind::Atomic,
        },
        Builtin::Node => match path {
            ["status", "conditions" | "addresses"] => ListKind::Map("type"),
            ["spec", "podCIDRs"] => ListKind::Set,
            _ => ListKind::Atomic,
        },
        Builtin::Namespace => match path {
            ["status", "conditions"] => ListKind::Map("type"),
            _ => ListKind::Atomic,
        },
        _ => ListKind::Atomic,
    }
}

/// Field selectors a kind supports besides `metadata.name` and `metadata.namespace`.
fn kind_fields(meta: &ResourceMeta) -> &'static [&'static str] {
    match meta.builtin() {
        Builtin::Pod => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Builtin::Node => &["spec.unschedulable"],
        Builtin::Namespace => &["status.phase"],
        Builtin::Secret => &["type"],
        Builtin::Event => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Builtin::EventV1 => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        _ => &[],
    }
}

pub(crate) fn supported_field(meta: &ResourceMeta, field: &str) -> bool {
    field == "metadata.name" || field == "metadata.namespace" || kind_fields(meta).contains(&field)
}

/// The value a field selector compares with (`""` when the field is unset).
pub(crate) fn field_value(meta: &ResourceMeta, obj: &Value, field: &str) -> String {
    let value = match field {
        "source" if meta.builtin() == Builtin::Event => dotted(obj, "source.component"),
        _ => dotted(obj, field),
    };
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if matches!(field, "spec.unschedulable" | "spec.hostNetwork") => "false".into(),
        _ => String::new(),
    }
}

fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let requests = dotted(c, "resources.requests").and_then(Value::as_object);
            let limits = dotted(c, "resources.limits").and_then(Value::as_object);
            for r in ["cpu", "memory"] {
                let req = requests.and_then(|m| m.get(r));
                let lim = limits.and_then(|m| m.get(r));
                any |= req.is_some() || lim.is_some();
                if lim.is_none() || req.is_some_and(|q| Some(q) != lim) {
                    guaranteed = false;
                }
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Defaults applied on create and update (the part of apiserver defaulting our code can see).
pub(crate) fn apply_defaults(meta: &ResourceMeta, obj: &mut Map<String, Value>) {
    if meta.builtin() != Builtin::Pod {
        return;
    }
    let spec = obj.entry("spec").or_insert_with(|| json!({}));
    let Value::Object(spec) = spec else { return };
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
    ];
    for (k, v) in defaults {
        spec.entry(k).or_insert(v);
    }
    for list in CONTAINER_LISTS {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let policy = pull_policy(c.get("image").and_then(Value::as_str).unwrap_or(""));
            c.entry("imagePullPolicy").or_insert(json!(policy));
            c.entry("terminationMessagePath")
                .or_insert(json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy").or_insert(json!("File"));
            c.entry("resources").or_insert(json!({}));
        }
    }
}

/// What the create strategy does to `.status` (and other server-owned fields).
pub(crate) fn prepare_create(meta: &ResourceMeta, obj: &mut Map<String, Value>, name: &str) {
    match meta.builtin() {
        Builtin::Pod => {
            let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
            obj.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        Builtin::Namespace => {
            obj.insert("status".into(), json!({"phase": "Active"}));
            let spec = obj.entry("spec").or_insert_with(|| json!({}));
            if let Value::Object(spec) = spec {
                spec.entry("finalizers").or_insert(json!(["kubernetes"]));
            }
            let md = super::util::metadata_mut(obj);
            let labels = md.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(labels) = labels {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        Builtin::Crd => {
            let status = crd_status(obj);
            obj.insert("status".into(), status);
        }
        _ if meta.status && meta.custom => {
            obj.remove("status");
        }
        _ => {}
    }
}

/// Status of a CRD as the apiextensions controllers leave it: names accepted, established.
pub(crate) fn crd_status(obj: &Map<String, Value>) -> Value {
    let names = obj
        .get("spec")
        .and_then(|s| s.get("names"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let stored: Vec<Value> = obj
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let now = super::util::now();
    json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    })
}

/// The resources a CRD object serves.
pub(crate) fn crd_resources(obj: &Value) -> Result<Vec<ResourceMeta>, String> {
    let spec = obj.get("spec").ok_or("spec: Required value")?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    let group = s(spec.get("group"));
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = s(names.get("plural"));
    let kind = s(names.get("kind"));
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err("spec.group, spec.names.plural and spec.names.kind are required".into());
    }
    let singular = match s(names.get("singular")) {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let short_names = names
        .get("shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?;
    Ok(versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .map(|v| ResourceMeta {
            group: group.clone(),
            version: s(v.get("name")),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            status: dotted(v, "subresources.status").is_some(),
            short_names: Vec::clone(&short_names),
            custom: true,
        })
        .filter(|m| !m.version.is_empty())
        .collect())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value or the name part of a qualified name.
fn is_label_value(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_value(name, false),
        None => is_label_value(s, false),
    }
}

/// Validation of what our code writes: names, labels, annotations, finalizers, and the pod
/// fields the apiserver insists on.
pub(crate) fn validate(
    meta: &ResourceMeta,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = super::util::meta_str(obj, "name");
    let invalid =
        |field: &str, msg: &str| ApiError::invalid(&meta.kind, &meta.group, name, field, msg);
    let name_ok = if meta.builtin() == Builtin::Namespace {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !name_ok {
        return Err(invalid(
            "metadata.name",
            &format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    let md = metadata(obj);
    if let Some(labels) = md.and_then(|m| m.get("labels")) {
        let Some(labels) = labels.as_object() else {
            return Err(invalid("metadata.labels", "Invalid value: must be a map"));
        };
        for (k, v) in labels {
            if !is_qualified_name(k) {
                return Err(invalid(
                    "metadata.labels",
                    &format!(
                        "Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"
                    ),
                ));
            }
            if !v.as_str().is_some_and(|v| is_label_value(v, true)) {
                return Err(invalid(
                    &format!("metadata.labels[{k}]"),
                    &format!(
                        "Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                    ),
                ));
            }
        }
    }
    if let Some(annotations) = md.and_then(|m| m.get("annotations")) {
        let Some(annotations) = annotations.as_object() else {
            return Err(invalid(
                "metadata.annotations",
                "Invalid value: must be a map",
            ));
        };
        let mut size = 0;
        for (k, v) in annotations {
            if !is_qualified_name(k) {
                return Err(invalid(
                    "metadata.annotations",
                    &format!(
                        "Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"
                    ),
                ));
            }
            let Some(v) = v.as_str() else {
                return Err(invalid(
                    &format!("metadata.annotations[{k}]"),
                    "Invalid value: must be a string",
                ));
            };
            size += k.len() + v.len();
        }
        if size > 256 * 1024 {
            return Err(invalid(
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    if let Some(f) = md.and_then(|m| m.get("finalizers"))
        && !f
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())))
    {
        return Err(invalid(
            "metadata.finalizers",
            "Invalid value: must be a list of non-empty strings",
        ));
    }
    if let Some(owners) = md.and_then(|m| m.get("ownerReferences")) {
        let ok = owners.as_array().is_some_and(|a| {
            a.iter().all(|o| {
                ["apiVersion", "kind", "name", "uid"].iter().all(|k| {
                    o.get(k)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                })
            })
        });
        if !ok {
            return Err(invalid(
                "metadata.ownerReferences",
                "Invalid value: apiVersion, kind, name and uid are required",
            ));
        }
    }
    if meta.builtin() == Builtin::Pod {
        validate_pod(obj, old).map_err(|(field, msg)| invalid(&field, &msg))?;
    }
    if meta.builtin() == Builtin::Event {
        validate_event(obj).map_err(|(field, msg)| invalid(&field, &msg))?;
    }
    if meta.builtin() == Builtin::Crd {
        let served = crd_resources(obj).map_err(|msg| invalid("spec", &msg))?;
        if served.is_empty() {
            return Err(invalid(
                "spec.versions",
                "Required value: must have at least one served version",
            ));
        }
        let expected = served
            .first()
            .map(|m| format!("{}.{}", m.plural, m.group))
            .unwrap_or_default();
        if name != expected {
            return Err(invalid(
                "metadata.name",
                &format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
            ));
        }
    }
    Ok(())
}

/// A core/v1 Event with an `eventTime` (a "new" Event) needs what the real server's
/// `legacyValidateEvent` asks of one: reporting component and instance, an action, a reason,
/// and a message of at most 1 KiB.
fn validate_event(obj: &Value) -> Result<(), (String, String)> {
    let set = |field: &str| obj.get(field).is_some_and(|v| !v.is_null());
    if !set("eventTime") {
        return Ok(());
    }
    for field in [
        "reportingComponent",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if obj
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err((field.into(), "Required value".into()));
        }
    }
    let message = obj.get("message").and_then(Value::as_str).unwrap_or("");
    if message.len() > 1024 {
        return Err((
            "message".into(),
            "Too long: may not be more than 1024 bytes".into(),
        ));
    }
    Ok(())
}

fn validate_pod(obj: &Value, old: Option<&Value>) -> Result<(), (String, String)> {
    let containers = dotted(obj, "spec.containers").and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return Err(("spec.containers".into(), "Required value".into()));
    };
    let mut names = std::collections::HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if !is_dns_label(name) {
            return Err((
                format!("spec.containers[{i}].name"),
                format!("Invalid value: {name:?}: a lowercase RFC 1123 label is required"),
            ));
        }
        if !names.insert(name) {
            return Err((
                format!("spec.containers[{i}].name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err((
                format!("spec.containers[{i}].image"),
                "Required value".into(),
            ));
        }
    }
    let Some(old) = old else { return Ok(()) };
    let (Some(old_spec), Some(new_spec)) = (old.get("spec"), obj.get("spec")) else {
        return Ok(());
    };
    // Pod spec is immutable but for images, activeDeadlineSeconds, tolerations and
    // schedulingGates: put the old values of those into the new spec and compare.
    let mut relaxed = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let old_list = old_spec.get(list).and_then(Value::as_array);
        if let (Some(old_list), Some(Value::Array(new_list))) = (old_list, relaxed.get_mut(list))
            && old_list.len() == new_list.len()
        {
            for (o, n) in old_list.iter().zip(new_list.iter_mut()) {
                if let (Some(img), Value::Object(n)) = (o.get("image"), n) {
                    n.insert("image".into(), img.clone());
                }
            }
        }
    }
    if let Value::Object(relaxed) = &mut relaxed {
        for field in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
            match old_spec.get(field) {
                Some(v) => relaxed.insert(field.into(), v.clone()),
                None => relaxed.remove(field),
            };
        }
    }
    if &relaxed != old_spec {
        return Err((
            "spec".into(),
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
        ));
    }
    Ok(())
}

/// Whether a `/status` write may also change labels and annotations (core kinds allow it;
/// custom resources only take `.status`).
pub(crate) fn status_writes_metadata(meta: &ResourceMeta) -> bool {
    matches!(
        meta.builtin(),
        Builtin::Pod | Builtin::Node | Builtin::Namespace
    )
}
