//! Serde helpers reproducing Go `encoding/json` conventions: `omitempty` on value fields, and
//! `""` (the zero value of a Go string type) meaning "unset" for enum-like strings.

use serde::de::{Deserialize, Deserializer, IntoDeserializer};

/// `omitempty` for `bool`.
pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// `omitempty` for `int32`.
pub(crate) fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// `omitempty` for `int64`.
pub(crate) fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Field schema: any object, kept as it is (upstream's schemaless fields, e.g. a CloneSet's pod
/// template: `x-kubernetes-preserve-unknown-fields`).
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Field schema: a list of any objects, kept as they are.
pub(crate) fn preserve_unknown_array(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

/// Reads an optional string enum where absent, `null` and `""` all mean `None`.
///
/// Use together with `#[serde(default)]` (a `deserialize_with` field is otherwise required).
pub(crate) fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => {
            let de: serde::de::value::StringDeserializer<D::Error> = s.into_deserializer();
            T::deserialize(de).map(Some)
        }
    }
}

/// Field schema transform: drop the `default` schemars derives from `#[serde(default)]`.
///
/// Upstream's CRDs carry no OpenAPI defaults (all defaults are webhook-applied) and a schema
/// default would make the apiserver write values upstream never stores.
pub(crate) fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// Type schema transform: drop the type's own description, so that the description of the field
/// using it is kept (kube's `OptionalEnum` rewrite of `Option<Enum>` would otherwise replace the
/// field's description with the enum's).
pub(crate) fn no_description(schema: &mut schemars::Schema) {
    schema.remove("description");
}
