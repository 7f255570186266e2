//! What CloneSet's admission webhook says of a spec (upstream `pkg/webhook/cloneset`: defaults in
//! `apis/apps/defaults`, validation in `validating/validation.go`; `docs/upstream/cloneset.md`
//! §1.3–1.4), without what needs the API (podsToDelete naming existing pods of the CloneSet) or
//! core's pod template validation, which the API server does for the pods anyway.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selector_matches;
use crate::api::kruise::{
    CloneSetSpec, DEFAULT_CLONESET_MAX_UNAVAILABLE, DEFAULT_REVISION_HISTORY_LIMIT,
    InPlaceUpdateStrategy, UPDATE_IN_PLACE_IF_POSSIBLE, UPDATE_IN_PLACE_ONLY, UPDATE_RECREATE,
};

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
