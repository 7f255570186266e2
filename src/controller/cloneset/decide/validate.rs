//! What CloneSet's admission webhook says of a spec (upstream `pkg/webhook/cloneset`: defaults in
//! `apis/apps/defaults`, validation in `validating/validation.go`; `docs/upstream/cloneset.md`
//! §1.3–1.4), without what needs the API (podsToDelete naming existing pods of the CloneSet) or
//! core's pod template validation, which the API server does for the pods anyway.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selector_matches;
use crate::api::kruise::{
    CloneSetSpec, DEFAULT_CLONESET_MAX_UNAVAILABLE, DEFAULT_REVISION_HISTORY_LIMIT,
    InPlaceUpdateStrategy, UPDATE_IN_PLACE_IF_POSSIBLE, UPDATE_IN_PLACE_ONLY, UPDATE_RECREATE,
    UpdatePriorityStrategy, UpdateScatterTerm,
};
use crate::api::names::{is_dns_subdomain_shape, is_name_part};

/// The mutating webhook's defaults (the pod template's own defaults aside).
pub fn apply_defaults(spec: &mut CloneSetSpec) {
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit
        .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
    let update = &mut spec.update_strategy;
    if update.type_.is_empty() {
        update.type_ = UPDATE_RECREATE.into();
    }
    update.partition.get_or_insert(IntOrString::Int(0));
    update
        .max_unavailable
        .get_or_insert_with(|| IntOrString::String(DEFAULT_CLONESET_MAX_UNAVAILABLE.into()));
    update.max_surge.get_or_insert(IntOrString::Int(0));
    if update.type_ != UPDATE_RECREATE && update.in_place_update_strategy.is_none() {
        update.in_place_update_strategy = Some(InPlaceUpdateStrategy::default());
    }
}

/// `value` as the webhook reads it (stricter than the controller): an int, or a number followed
/// by `%`, of `total`, rounded up.
pub fn strict_scaled(value: &IntOrString, total: i32) -> Result<i64, String> {
    match value {
        IntOrString::Int(n) => Ok(i64::from(*n)),
        IntOrString::String(s) => {
            let number = s
                .strip_suffix('%')
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| n.is_finite())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = (number * f64::from(total) / 100.0).ceil();
            Ok(scaled.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
        }
    }
}

/// The errors of a new or changed spec (`old`: the stored one on update), upstream's words.
pub fn validate(spec: &CloneSetSpec, old: Option<&CloneSetSpec>) -> Vec<String> {
    let mut errors = Vec::new();
    let replicas = spec.replicas.unwrap_or(1);
    if replicas < 0 {
        errors.push("spec.replicas: Invalid value: must be non-negative".to_string());
    }
    let selector = &spec.selector;
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if empty {
        errors.push("spec.selector: Invalid value: empty selector is invalid for cloneset".into());
    } else if !selector_matches(selector, &labels) {
        errors.push(
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"
                .into(),
        );
    }
    if let Some(pod) = &spec.template.spec {
        if pod
            .restart_policy
            .as_deref()
            .is_some_and(|p| !p.is_empty() && p != "Always")
        {
            errors.push(
                "spec.template.spec.restartPolicy: Unsupported value: only \"Always\" is supported"
                    .into(),
            );
        }
        if pod.active_deadline_seconds.is_some() {
            errors.push(
                "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in cloneset is not Supported"
                    .into(),
            );
        }
    }
    let to_delete = &spec.scale_strategy.pods_to_delete;
    for (i, name) in to_delete.iter().enumerate() {
        if to_delete[..i].contains(name) {
            errors.push(format!(
                "spec.scaleStrategy.podsToDelete: Invalid value: duplicated name {name:?}"
            ));
        }
    }
    let update = &spec.update_strategy;
    let type_ = if update.type_.is_empty() {
        UPDATE_RECREATE
    } else {
        update.type_.as_str()
    };
    if ![
        UPDATE_RECREATE,
        UPDATE_IN_PLACE_IF_POSSIBLE,
        UPDATE_IN_PLACE_ONLY,
    ]
    .contains(&type_)
    {
        errors.push(format!(
            "spec.updateStrategy.type: Unsupported value: {type_:?}: supported values: \"ReCreate\", \"InPlaceIfPossible\", \"InPlaceOnly\""
        ));
    }
    let read =
        |field: &str, value: Option<&IntOrString>, errors: &mut Vec<String>| match strict_scaled(
            value?, replicas,
        ) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(format!("spec.updateStrategy.{field}: Invalid value: {e}"));
                None
            }
        };
    if read("partition", update.partition.as_ref(), &mut errors).is_some_and(|p| p < 0) {
        errors.push(
            "spec.updateStrategy.partition: Invalid value: partition can not be negative".into(),
        );
    }
    if let Some(e) = update.priority_strategy.as_ref().and_then(priority_error) {
        errors.push(format!(
            "spec.updateStrategy.priorityStrategy: Required value: {e}"
        ));
    }
    if let Some(e) = scatter_error(&update.scatter_strategy) {
        errors.push(format!(
            "spec.updateStrategy.scatterStrategy: Required value: {e}"
        ));
    }
    let unavailable = read(
        "maxUnavailable",
        update.max_unavailable.as_ref(),
        &mut errors,
    );
    let surge = read("maxSurge", update.max_surge.as_ref(), &mut errors);
    if type_ == UPDATE_IN_PLACE_ONLY && surge.is_some_and(|s| s > 0) {
        errors.push(
            "spec.updateStrategy.maxSurge: Invalid value: can not use maxSurge with strategy type InPlaceOnly"
                .into(),
        );
    }
    if replicas > 0 && unavailable.unwrap_or(1) < 1 && surge.unwrap_or(0) < 1 {
        errors.push(
            "spec.updateStrategy.maxUnavailable: Invalid value: maxUnavailable and maxSurge should not both be less than 1"
                .into(),
        );
    }
    if let Some(deadline) = spec.progress_deadline_seconds {
        if deadline < 0 {
            errors.push(
                "spec.progressDeadlineSeconds: Invalid value: must be non-negative".to_string(),
            );
        } else if deadline != i32::MAX && deadline <= spec.min_ready_seconds {
            errors.push(
                "spec.progressDeadlineSeconds: Invalid value: must be greater than minReadySeconds"
                    .to_string(),
            );
        }
    }
    if let Some(old) = old
        && old.selector != spec.selector
    {
        errors.push("spec.selector: Forbidden: field is immutable".into());
    }
    errors
}

/// What upstream's `UpdatePriorityStrategy.FieldsValidation` refuses first.
fn priority_error(strategy: &UpdatePriorityStrategy) -> Option<String> {
    if !strategy.weight_priority.is_empty() && !strategy.order_priority.is_empty() {
        return Some("only one of weightPriority and orderPriority can be used".into());
    }
    for term in &strategy.weight_priority {
        let selector = &term.match_selector;
        if !(0..=100).contains(&term.weight) {
            return Some("weight must be valid number in the range 1-100".into());
        }
        if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty())
        {
            return Some("selector can not be empty".into());
        }
        if let Some(e) = selector_error(selector) {
            return Some(format!("invalid selector {e}"));
        }
    }
    strategy
        .order_priority
        .iter()
        .any(|o| o.ordered_key.is_empty())
        .then(|| "order key can not be empty".into())
}

/// What upstream's `UpdateScatterStrategy.FieldsValidation` refuses first (terms are told apart
/// by `key:value`, as upstream does).
fn scatter_error(terms: &[UpdateScatterTerm]) -> Option<String> {
    let id = |t: &UpdateScatterTerm| format!("{}:{}", t.key, t.value);
    terms.iter().enumerate().find_map(|(i, t)| {
        if t.key.is_empty() {
            Some("key should not be empty".into())
        } else if terms.iter().take(i).any(|seen| id(seen) == id(t)) {
            Some(format!("duplicated key={} value={}", t.key, t.value))
        } else {
            None
        }
    })
}

/// Why `metav1.LabelSelectorAsSelector` refuses `selector`, in its words: its first refused
/// requirement (match labels in key order, then expressions).
fn selector_error(selector: &LabelSelector) -> Option<String> {
    let labels = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| requirement_error(k, "", std::slice::from_ref(v)));
    let expressions = selector.match_expressions.iter().flatten().map(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {
                requirement_error(&e.key, &e.operator, values)
            }
            other => Some(format!("{other:?} is not a valid label selector operator")),
        }
    });
    labels.chain(expressions).flatten().next()
}

/// `labels.NewRequirement`'s errors (`operator` "" for a match label), aggregated as Go does.
fn requirement_error(key: &str, operator: &str, values: &[String]) -> Option<String> {
    let mut errors = Vec::new();
    let key_errors = qualified_name_errors(key);
    if !key_errors.is_empty() {
        errors.push(format!(
            "key: Invalid value: {key:?}: {}",
            key_errors.join("; ")
        ));
    }
    let count = match operator {
        "In" | "NotIn" if values.is_empty() => {
            Some("for 'in', 'notin' operators, values set can't be empty")
        }
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            Some("values set must be empty for exists and does not exist")
        }
        _ => None,
    };
    if let Some(detail) = count {
        let shown = if values.is_empty() {
            "[]string(nil)".to_string()
        } else {
            let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            format!("[]string{{{}}}", quoted.join(", "))
        };
        errors.push(format!("values: Invalid value: {shown}: {detail}"));
    }
    for (i, value) in values.iter().enumerate() {
        let mut value_errors = Vec::new();
        if value.len() > 63 {
            value_errors.push("must be no more than 63 characters");
        }
        if !value.is_empty() && !is_name_part(value) {
            value_errors.push(LABEL_VALUE_MESSAGE);
        }
        if !value_errors.is_empty() {
            errors.push(format!(
                "values[{i}][{key}]: Invalid value: {value:?}: {}",
                value_errors.join("; ")
            ));
        }
    }
    match errors.len() {
        0 | 1 => errors.pop(),
        _ => Some(format!("[{}]", errors.join(", "))),
    }
}

const QUALIFIED_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS_SUBDOMAIN_MESSAGE: &str = r"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `validation.IsQualifiedName`'s errors.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let name = match value.split('/').collect::<Vec<_>>()[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            }
            if prefix.len() > 253 {
                errors.push("prefix part must be no more than 253 characters".into());
            }
            if !prefix.is_empty() && !is_dns_subdomain_shape(prefix) {
                errors.push(format!("prefix part {DNS_SUBDOMAIN_MESSAGE}"));
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_MESSAGE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".into());
    }
    if !is_name_part(name) {
        errors.push(format!("name part {QUALIFIED_NAME_MESSAGE}"));
    }
    errors
}

/// The `podsToDelete` names an update adds (upstream looks up only those), none when the list
/// has duplicates (refused already).
pub fn newly_named_pods(spec: &CloneSetSpec, old: Option<&CloneSetSpec>) -> Vec<String> {
    let names = &spec.scale_strategy.pods_to_delete;
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        return Vec::new();
    }
    let before = old
        .map(|o| o.scale_strategy.pods_to_delete.as_slice())
        .unwrap_or_default();
    unique
        .into_iter()
        .filter(|n| !before.contains(n))
        .cloned()
        .collect()
}

/// Why the pod named `name` in `podsToDelete` is refused (upstream `validateScaleStrategy`), as
/// the lookup found it: `Err` a failed lookup, `Ok(None)` no such pod; the CloneSet's uid.
pub fn pod_to_delete_refusal(
    name: &str,
    found: Result<Option<&k8s_openapi::api::core::v1::Pod>, String>,
    cloneset_uid: &str,
) -> Option<String> {
    let field = format!("spec.scaleStrategy.podsToDelete: Invalid value: {name:?}");
    let pod = match found {
        Err(e) => return Some(format!("{field}: find pod {name} failed: {e}")),
        Ok(None) => {
            return Some(format!(
                "{field}: find pod {name} failed: pods {name:?} not found"
            ));
        }
        Ok(Some(pod)) => pod,
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(format!("{field}: find pod {name} already terminating"));
    }
    let controller = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if controller.is_none_or(|o| o.uid != cloneset_uid) {
        return Some(format!(
            "{field}: find pod {name} owner is not this CloneSet"
        ));
    }
    None
}
