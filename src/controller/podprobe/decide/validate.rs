//! The PodProbeMarker admission rules (upstream `webhook/podprobemarker/validating`), with
//! upstream's messages, as Kubernetes field errors (`<path>: <kind>: <detail>`). Differences: every
//! error is reported (upstream stops at some), paths carry the probe's index, a probe may not
//! write the kubelet's own condition types, probe durations are at most a year (the agent clamps
//! them all the same), an httpGet path must start with `/` (upstream only parses it), and a
//! gRPC-only probe is refused as unsupported. No I/O here.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::RESERVED_CONDITIONS;
use crate::api::clamp::MAX_SECONDS;
use crate::api::kruise::{PodContainerProbe, PodProbeMarker, ProbeState};

/// Probe names upstream refuses (they would shadow the pod's own conditions).
const RESERVED_NAMES: [&str; 6] = [
    "PodScheduled",
    "Initialized",
    "Ready",
    "ContainersReady",
    "KruisePodReady",
    "InPlaceUpdateReady",
];

/// The errors of `ppm` (and, on an update, against `old`); empty when it is valid.
pub fn validate(ppm: &PodProbeMarker, old: Option<&PodProbeMarker>) -> Vec<String> {
    let mut errs = Vec::new();
    let sel = &ppm.spec.selector;
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty);
    if empty {
        errs.push(invalid(
            "spec.selector",
            "empty selector is not valid for podProbeMarker.",
        ));
    } else {
        selector_errors(sel, &mut errs);
    }
    if ppm.spec.probes.is_empty() {
        errs.push(invalid(
            "spec.probes",
            "empty probes is not valid for PodProbeMarker.",
        ));
    }
    let mut names = HashSet::new();
    let mut conditions = HashSet::new();
    for (i, probe) in ppm.spec.probes.iter().enumerate() {
        let path = format!("spec.probes[{i}]");
        probe_errors(probe, &path, &mut names, &mut conditions, &mut errs);
    }
    if let Some(old) = old
        && old.spec.selector != ppm.spec.selector
    {
        errs.push(invalid("spec.selector", "selector must be immutable"));
    }
    errs
}

/// `metav1validation.ValidateLabelSelector`: keys are qualified names, values label values, and
/// the operator agrees with the values (so the API server reads the selector as we do).
fn selector_errors(sel: &LabelSelector, errs: &mut Vec<String>) {
    for (k, v) in sel.match_labels.iter().flatten() {
        if let Err(e) = qualified_name(k).and_then(|()| label_value(v)) {
            errs.push(invalid(&format!("spec.selector.matchLabels[{k}]"), &e));
        }
    }
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        if let Err(e) = qualified_name(&req.key) {
            errs.push(invalid(&format!("{path}.key"), &e));
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.push(required(
                &format!("{path}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(format!(
                "{path}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(invalid(
                &format!("{path}.operator"),
                &format!("{other:?}: not a valid selector operator"),
            )),
        }
        for v in values {
            if let Err(e) = label_value(v) {
                errs.push(invalid(&format!("{path}.values"), &e));
            }
        }
    }
}

fn invalid(path: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {detail}")
}

fn required(path: &str, detail: &str) -> String {
    format!("{path}: Required value: {detail}")
}

fn probe_errors<'a>(
    probe: &'a PodContainerProbe,
    path: &str,
    names: &mut HashSet<&'a str>,
    conditions: &mut HashSet<&'a str>,
    errs: &mut Vec<String>,
) {
    let name = probe.name.as_str();
    if name.is_empty() {
        errs.push(required(
            &format!("{path}.name"),
            "probe name can't be empty in PodProbeMarker.",
        ));
    } else if name.contains('#') {
        errs.push(invalid(
            &format!("{path}.name"),
            "probe name can't contains '#'.",
        ));
    } else if RESERVED_NAMES.contains(&name) {
        errs.push(invalid(
            &format!("{path}.name"),
            &format!("probe name can't be {name}"),
        ));
    } else if !names.insert(name) {
        errs.push(invalid(
            &format!("{path}.name"),
            "probe name must be unique in PodProbeMarker.",
        ));
    }
    if probe.container_name.is_empty() {
        errs.push(required(
            &format!("{path}.containerName"),
            "probe containerName can't be empty in PodProbeMarker.",
        ));
    }
    handler_errors(&probe.probe, &format!("{path}.probe"), errs);
    let ctype = probe.pod_condition_type.as_str();
    if ctype.is_empty() && probe.marker_policy.is_empty() {
        errs.push(invalid(
            path,
            "podConditionType and markerPolicy cannot be empty at the same time",
        ));
    }
    if !ctype.is_empty() {
        let cpath = format!("{path}.podConditionType");
        if !conditions.insert(ctype) {
            errs.push(invalid(
                &cpath,
                &format!("podConditionType {ctype} must be unique in podProbeMarker"),
            ));
        } else if RESERVED_CONDITIONS.contains(&ctype) {
            errs.push(invalid(
                &cpath,
                &format!("{ctype} is the kubelet's or OpenKruise's own condition"),
            ));
        } else if let Err(e) = qualified_name(ctype) {
            errs.push(invalid(&cpath, &e));
        }
    }
    let mut states = HashSet::new();
    for (j, policy) in probe.marker_policy.iter().enumerate() {
        let ppath = format!("{path}.markerPolicy[{j}]");
        if !matches!(policy.state, ProbeState::Succeeded | ProbeState::Failed) {
            errs.push(required(
                &format!("{ppath}.state"),
                "marker policy state must be 'Succeeded' or 'Failed'",
            ));
        } else if !states.insert(policy.state) {
            errs.push(invalid(
                &format!("{ppath}.state"),
                "marker policy state must be unique.",
            ));
        }
        if policy.labels.is_empty() && policy.annotations.is_empty() {
            errs.push(required(
                &ppath,
                "marker policy annotations or labels can't be both empty",
            ));
        }
        for (k, v) in &policy.labels {
            if let Err(e) = qualified_name(k).and_then(|()| label_value(v)) {
                errs.push(invalid(&format!("{ppath}.labels[{k}]"), &e));
            }
        }
        for k in policy.annotations.keys() {
            // Annotation keys are checked lower-cased, as the API server does.
            if let Err(e) = qualified_name(&k.to_lowercase()) {
                errs.push(invalid(&format!("{ppath}.annotations[{k}]"), &e));
            }
        }
    }
}

fn handler_errors(probe: &Probe, path: &str, errs: &mut Vec<String>) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
    ];
    match handlers.iter().filter(|h| **h).count() {
        0 if probe.grpc.is_some() => errs.push(invalid(path, "grpc probes are not supported")),
        0 => errs.push(required(path, "must specify a handler type")),
        1 => {}
        _ => errs.push(format!(
            "{path}: Forbidden: may not specify more than 1 handler type"
        )),
    }
    if let Some(exec) = &probe.exec
        && exec.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.push(required(&format!("{path}.exec.command"), ""));
    }
    if let Some(tcp) = &probe.tcp_socket {
        if tcp.host.as_deref().is_some_and(|h| !h.is_empty()) {
            errs.push(invalid(
                &format!("{path}.tcpSocket.host"),
                "host field in probes is not allowed",
            ));
        }
        if let Err(e) = port(&tcp.port) {
            errs.push(invalid(&format!("{path}.tcpSocket.port"), &e));
        }
    }
    if let Some(http) = &probe.http_get {
        let hpath = format!("{path}.httpGet");
        match http.path.as_deref() {
            None | Some("") => errs.push(required(&format!("{hpath}.path"), "")),
            Some(p) if !p.starts_with('/') || p.chars().any(char::is_whitespace) => {
                errs.push(invalid(
                    &format!("{hpath}.path"),
                    "must be a valid URL path",
                ));
            }
            Some(_) => {}
        }
        if http.host.as_deref().is_some_and(|h| !h.is_empty()) {
            errs.push(invalid(
                &format!("{hpath}.host"),
                "host field in probes is not allowed",
            ));
        }
        if let Err(e) = port(&http.port) {
            errs.push(invalid(&format!("{hpath}.port"), &e));
        }
        let scheme = http.scheme.as_deref().unwrap_or_default();
        if !matches!(scheme, "HTTP" | "HTTPS") {
            errs.push(format!(
                "{hpath}.scheme: Unsupported value: {scheme:?}: supported values: \"HTTP\", \"HTTPS\""
            ));
        }
        for h in http.http_headers.iter().flatten() {
            if h.name.is_empty() || !h.name.bytes().all(is_token_byte) {
                errs.push(invalid(
                    &format!("{hpath}.httpHeaders[{}]", h.name),
                    "a valid HTTP header must consist of alphanumeric characters or '-'",
                ));
            }
        }
    }
    let durations = [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
    ];
    for (field, v) in durations {
        match v {
            Some(v) if v < 0 => errs.push(invalid(
                &format!("{path}.{field}"),
                "must be greater than or equal to 0",
            )),
            Some(v) if i64::from(v) > MAX_SECONDS => errs.push(invalid(
                &format!("{path}.{field}"),
                &format!("must be less than or equal to {MAX_SECONDS} (a year)"),
            )),
            _ => {}
        }
    }
    for (field, v) in [
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if v.is_some_and(|v| v < 0) {
            errs.push(invalid(
                &format!("{path}.{field}"),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// RFC 7230 token characters (`IsHTTPHeaderName`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A port number (1–65535) or an IANA service name (`IsValidPortName`).
fn port(p: &IntOrString) -> Result<(), String> {
    match p {
        IntOrString::Int(n) if (1..=65535).contains(n) => Ok(()),
        IntOrString::Int(_) => Err("must be between 1 and 65535, inclusive".into()),
        IntOrString::String(s) => {
            let ok = !s.is_empty()
                && s.len() <= 15
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && s.bytes().any(|b| b.is_ascii_lowercase())
                && !s.starts_with('-')
                && !s.ends_with('-')
                && !s.contains("--");
            ok.then_some(()).ok_or_else(|| {
                format!("{s:?}: must be a port number or an IANA service name (at most 15 lowercase letters, digits and '-', with a letter)")
            })
        }
    }
}

/// A Kubernetes qualified name (`[prefix/]name`, label and annotation keys, condition types).
fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && !dns_subdomain(p)
    {
        return Err(format!(
            "{s:?}: the prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253)"
        ));
    }
    if name.is_empty() || name.len() > 63 || !name_part(name) {
        return Err(format!(
            "{s:?}: the name part must be at most 63 characters: letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || (v.len() <= 63 && name_part(v)) {
        Ok(())
    } else {
        Err(format!(
            "{v:?}: a label value must be at most 63 characters: letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn name_part(s: &str) -> bool {
    crate::api::names::is_name_part(s)
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| label.len() <= 63)
        && crate::api::names::is_dns_subdomain_shape(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ppm(probes: Value) -> PodProbeMarker {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1alpha1", "kind": "PodProbeMarker",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "probes": probes}
        }))
        .unwrap()
    }

    fn probe(extra: Value) -> Value {
        let mut p = json!({"name": "healthy", "containerName": "main",
            "probe": {"exec": {"command": ["true"]}}, "podConditionType": "game.kruise.io/healthy"});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    #[test]
    fn upstreams_e2e_markers_are_valid() {
        let m = ppm(json!([
            probe(
                json!({"markerPolicy": [{"state": "Succeeded", "labels": {"nginx": "healthy"}}]})
            ),
            probe(
                json!({"name": "check", "podConditionType": "game.kruise.io/check",
                "markerPolicy": [
                    {"state": "Succeeded", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
                    {"state": "Failed", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}}]})
            ),
            probe(json!({"name": "tcp", "podConditionType": "tcp",
                "probe": {"tcpSocket": {"port": 80}}})),
            probe(json!({"name": "http", "podConditionType": "http",
                "probe": {"httpGet": {"path": "/", "port": "http", "scheme": "HTTP"}}})),
        ]));
        assert_eq!(validate(&m, None), Vec::<String>::new());
    }

    #[test]
    fn each_rule_says_what_is_wrong() {
        let table: Vec<(Value, &str)> = vec![
            (
                json!({"name": "a#b"}),
                "spec.probes[0].name: Invalid value: probe name can't contains '#'.",
            ),
            (
                json!({"name": ""}),
                "spec.probes[0].name: Required value: probe name can't be empty",
            ),
            (json!({"name": "Ready"}), "probe name can't be Ready"),
            (
                json!({"containerName": ""}),
                "spec.probes[0].containerName: Required value",
            ),
            (
                json!({"probe": {}}),
                "spec.probes[0].probe: Required value: must specify a handler type",
            ),
            (
                json!({"probe": {"grpc": {"port": 9090}}}),
                "grpc probes are not supported",
            ),
            (
                json!({"probe": {"exec": {"command": ["x"]}, "tcpSocket": {"port": 80}}}),
                "Forbidden: may not specify more than 1 handler type",
            ),
            (
                json!({"probe": {"exec": {}}}),
                "spec.probes[0].probe.exec.command: Required value",
            ),
            (
                json!({"probe": {"tcpSocket": {"port": 80, "host": "10.0.0.1"}}}),
                "tcpSocket.host: Invalid value: host field in probes is not allowed",
            ),
            (
                json!({"probe": {"tcpSocket": {"port": 0}}}),
                "must be between 1 and 65535",
            ),
            (
                json!({"probe": {"tcpSocket": {"port": "HTTP"}}}),
                "IANA service name",
            ),
            (
                json!({"probe": {"httpGet": {"port": 80, "path": "/"}}}),
                "scheme: Unsupported value: \"\": supported values: \"HTTP\", \"HTTPS\"",
            ),
            (
                json!({"probe": {"httpGet": {"port": 80, "scheme": "HTTP"}}}),
                "httpGet.path: Required value",
            ),
            (
                json!({"probe": {"httpGet": {"port": 80, "path": "x y", "scheme": "HTTP"}}}),
                "must be a valid URL path",
            ),
            (
                json!({"probe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP",
                    "httpHeaders": [{"name": "Bad Header", "value": "x"}]}}}),
                "a valid HTTP header",
            ),
            (
                json!({"probe": {"exec": {"command": ["x"]}, "periodSeconds": -1}}),
                "periodSeconds: Invalid value: must be greater than or equal to 0",
            ),
            (
                json!({"probe": {"exec": {"command": ["x"]}, "timeoutSeconds": 40000000}}),
                "timeoutSeconds: Invalid value: must be less than or equal to 31536000",
            ),
            (
                json!({"probe": {"exec": {"command": ["x"]}, "failureThreshold": -3}}),
                "failureThreshold: Invalid value",
            ),
            (
                json!({"podConditionType": ""}),
                "podConditionType and markerPolicy cannot be empty at the same time",
            ),
            (
                json!({"podConditionType": "Ready"}),
                "Ready is the kubelet's or OpenKruise's own condition",
            ),
            (
                json!({"podConditionType": "bad/type/x"}),
                "the name part must be",
            ),
            (
                json!({"markerPolicy": [{"state": "Unknown", "labels": {"a": "b"}}]}),
                "markerPolicy[0].state: Required value: marker policy state must be 'Succeeded' or 'Failed'",
            ),
            (
                json!({"markerPolicy": [{"state": "Succeeded", "labels": {"a": "b"}},
                                        {"state": "Succeeded", "labels": {"a": "c"}}]}),
                "markerPolicy[1].state: Invalid value: marker policy state must be unique.",
            ),
            (
                json!({"markerPolicy": [{"state": "Succeeded"}]}),
                "marker policy annotations or labels can't be both empty",
            ),
            (
                json!({"markerPolicy": [{"state": "Succeeded", "labels": {"a": "not valid"}}]}),
                "a label value must be",
            ),
            (
                json!({"markerPolicy": [{"state": "Succeeded", "annotations": {"bad_prefix.io/x": "1"}}]}),
                "the prefix must be a DNS subdomain",
            ),
        ];
        for (extra, want) in table {
            let errs = validate(&ppm(json!([probe(extra.clone())])), None);
            assert!(errs.iter().any(|e| e.contains(want)), "{extra}: {errs:?}");
        }
    }

    #[test]
    fn marker_level_rules() {
        let dup = ppm(json!([
            probe(json!({})),
            probe(json!({"podConditionType": "other"}))
        ]));
        assert_eq!(
            validate(&dup, None),
            ["spec.probes[1].name: Invalid value: probe name must be unique in PodProbeMarker."]
        );
        let same_condition = ppm(json!([probe(json!({})), probe(json!({"name": "b"}))]));
        assert_eq!(
            validate(&same_condition, None),
            [
                "spec.probes[1].podConditionType: Invalid value: podConditionType game.kruise.io/healthy must be unique in podProbeMarker"
            ]
        );
        let none = ppm(json!([]));
        assert_eq!(
            validate(&none, None),
            ["spec.probes: Invalid value: empty probes is not valid for PodProbeMarker."]
        );
        let mut empty = ppm(json!([probe(json!({}))]));
        empty.spec.selector = Default::default();
        assert_eq!(
            validate(&empty, None),
            ["spec.selector: Invalid value: empty selector is not valid for podProbeMarker."]
        );
        let mut odd = ppm(json!([probe(json!({}))]));
        odd.spec.selector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": []},
            {"key": "zone", "operator": "Exists", "values": ["a"]},
            {"key": "bad key", "operator": "Maybe"}]}))
        .unwrap();
        assert_eq!(
            validate(&odd, None),
            [
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "spec.selector.matchExpressions[2].key: Invalid value: \"bad key\": the name part must be at most 63 characters: letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                "spec.selector.matchExpressions[2].operator: Invalid value: \"Maybe\": not a valid selector operator",
            ]
        );
        let old = ppm(json!([probe(json!({}))]));
        let mut moved = old.clone();
        moved.spec.selector.match_labels = Some([("app".into(), "db".into())].into());
        assert_eq!(
            validate(&moved, Some(&old)),
            ["spec.selector: Invalid value: selector must be immutable"]
        );
        assert!(validate(&old, Some(&old)).is_empty());
    }
}
