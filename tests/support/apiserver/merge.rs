//! Strategic merge patch, server-side apply merging and field ownership (the part of
//! structured-merge-diff that decides apply conflicts).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::kinds::{ListKind, ResourceMeta, list_kind};

/// Field paths joined by [`SEP`]; elements are `f:<field>`, `k:<json key>` (an element of a
/// keyed list) and `v:<json value>` (an element of a set), as in `managedFields`.
pub(crate) type FieldSet = BTreeSet<String>;
const SEP: char = '\u{1}';

/// One manager's fields (hidden: not rendered into `metadata.managedFields`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManagedEntry {
    pub manager: String,
    pub apply: bool,
    pub status: bool,
    pub fields: FieldSet,
}

/// Metadata fields the server owns; never merged from patches/apply, never owned by managers.
pub(crate) const SYSTEM_META: [&str; 11] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Main,
    Status,
}

fn scope(meta: &ResourceMeta, status: bool) -> Scope {
    match (meta.status, status) {
        (false, _) => Scope::All,
        (true, false) => Scope::Main,
        (true, true) => Scope::Status,
    }
}

fn schema_kind(meta: &ResourceMeta, schema: &[String]) -> ListKind {
    let path: Vec<&str> = schema.iter().map(String::as_str).collect();
    list_kind(meta, &path)
}

fn key_segment(key: &str, value: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_owned(), value.clone());
    format!("k:{}", Value::Object(m))
}

/// The leaf fields of an object, as owned by whoever wrote them.
pub(crate) fn leaves(meta: &ResourceMeta, obj: &Value, status: bool) -> FieldSet {
    let scope = scope(meta, status);
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        match scope {
            Scope::Main if k == "status" => continue,
            Scope::Status if k != "status" => continue,
            _ => {}
        }
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if SYSTEM_META.contains(&mk.as_str()) {
                    continue;
                }
                let mut path = vec!["f:metadata".to_owned(), format!("f:{mk}")];
                let mut schema = vec!["metadata".to_owned(), mk.clone()];
                walk(meta, mv, &mut path, &mut schema, &mut out);
            }
            continue;
        }
        let mut path = vec![format!("f:{k}")];
        let mut schema = vec![k.clone()];
        walk(meta, v, &mut path, &mut schema, &mut out);
    }
    out
}

fn walk(
    meta: &ResourceMeta,
    v: &Value,
    path: &mut Vec<String>,
    schema: &mut Vec<String>,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                schema.push(k.clone());
                walk(meta, c, path, schema, out);
                schema.pop();
                path.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => match schema_kind(meta, schema) {
            ListKind::Map(key) if a.iter().all(|e| e.get(key).is_some()) => {
                for e in a {
                    path.push(key_segment(key, &e[key]));
                    walk(meta, e, path, schema, out);
                    path.pop();
                }
            }
            ListKind::Set => {
                for e in a {
                    path.push(format!("v:{e}"));
                    out.insert(path.join(&SEP.to_string()));
                    path.pop();
                }
            }
            _ => {
                out.insert(path.join(&SEP.to_string()));
            }
        },
        _ => {
            out.insert(path.join(&SEP.to_string()));
        }
    }
}

fn find_elem<'a>(list: &'a [Value], seg: &str) -> Option<(usize, &'a Value)> {
    if let Some(k) = seg.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        let (name, want) = key.iter().next()?;
        list.iter()
            .enumerate()
            .find(|(_, e)| e.get(name) == Some(want))
    } else if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        list.iter().enumerate().find(|(_, e)| **e == want)
    } else {
        None
    }
}

pub(crate) fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split(SEP)
        .try_fold(obj, |cur, seg| match seg.strip_prefix("f:") {
            Some(f) => cur.get(f),
            None => find_elem(cur.as_array()?, seg).map(|(_, e)| e),
        })
}

/// Removes the field at `path`; removing the key field of a keyed-list element removes the
/// element.
pub(crate) fn remove_path(obj: &mut Value, path: &str) {
    let segs: Vec<&str> = path.split(SEP).collect();
    let (mut parent_segs, mut last) = match segs.split_last() {
        Some((last, rest)) => (rest.to_vec(), *last),
        None => return,
    };
    // `…/k:{"name":"x"}/f:name` means the element itself.
    if let (Some(elem), Some(field)) = (parent_segs.last(), last.strip_prefix("f:"))
        && let Some(k) = elem.strip_prefix("k:")
        && serde_json::from_str::<Map<String, Value>>(k).is_ok_and(|m| m.contains_key(field))
    {
        last = elem;
        parent_segs.pop();
    }
    let mut cur = obj;
    for seg in parent_segs {
        let next = match seg.strip_prefix("f:") {
            Some(f) => cur.get_mut(f),
            None => match cur.as_array() {
                Some(list) => match find_elem(list, seg) {
                    Some((i, _)) => cur.get_mut(i),
                    None => None,
                },
                None => None,
            },
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last.strip_prefix("f:") {
        Some(f) => {
            if let Value::Object(m) = cur {
                m.remove(f);
            }
        }
        None => {
            let idx = cur
                .as_array()
                .and_then(|l| find_elem(l, last))
                .map(|(i, _)| i);
            if let (Some(i), Value::Array(list)) = (idx, cur) {
                list.remove(i);
            }
        }
    }
}

/// Ownership after a non-apply write by `manager`: it takes the fields it changed.
pub(crate) fn track_update(
    meta: &ResourceMeta,
    managed: &[ManagedEntry],
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    status: bool,
) -> Vec<ManagedEntry> {
    let new_leaves = leaves(meta, new, status);
    let old_leaves = old.map(|o| leaves(meta, o, status)).unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old_leaves.difference(&new_leaves).cloned().collect();
    let mut out = managed.to_vec();
    for e in &mut out {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        match out
            .iter_mut()
            .find(|e| e.manager == manager && !e.apply && e.status == status)
        {
            Some(e) => e.fields.extend(changed),
            None => out.push(ManagedEntry {
                manager: manager.to_owned(),
                apply: false,
                status,
                fields: changed,
            }),
        }
    }
    out.retain(|e| !e.fields.is_empty());
    out
}

/// `.spec.holderIdentity`, `.status.conditions[type="Ready"]`: a path as apiserver prints it.
pub(crate) fn render_path(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split(SEP) {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let inner = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|_| k.to_owned());
            out.push_str(&format!("[{inner}]"));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// A field another manager owns with a different value.
pub(crate) struct ApplyConflict {
    pub manager: String,
    pub path: String,
}

/// Server-side apply of `config` by `manager` onto `current` (`None`: the object is created).
/// Returns the merged object and the new ownership, or the conflicts.
pub(crate) fn server_side_apply(
    meta: &ResourceMeta,
    current: Option<(&Value, &[ManagedEntry])>,
    config: &Value,
    manager: &str,
    force: bool,
    status: bool,
) -> Result<(Value, Vec<ManagedEntry>), Vec<ApplyConflict>> {
    let cfg = leaves(meta, config, status);
    let same = |e: &ManagedEntry| e.manager == manager && e.apply && e.status == status;
    let (old, mut managed) = match current {
        Some((v, m)) => (v.clone(), m.to_vec()),
        None => (Value::Object(Map::new()), Vec::new()),
    };
    let mut conflicts = Vec::new();
    for e in managed.iter().filter(|e| !same(e)) {
        for p in cfg.intersection(&e.fields) {
            if value_at(&old, p) != value_at(config, p) {
                conflicts.push(ApplyConflict {
                    manager: e.manager.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut value = old.clone();
    let mut schema = Vec::new();
    apply_into(meta, &mut value, config, &mut schema);
    if let Some(prev) = managed.iter().find(|e| same(e)) {
        let dropped: Vec<String> = prev
            .fields
            .difference(&cfg)
            .filter(|p| !managed.iter().any(|e| !same(e) && e.fields.contains(*p)))
            .cloned()
            .collect();
        for p in dropped {
            remove_path(&mut value, &p);
        }
    }
    let changed: FieldSet = cfg
        .iter()
        .filter(|p| value_at(&old, p) != value_at(&value, p))
        .cloned()
        .collect();
    for e in managed.iter_mut().filter(|e| !same(e)) {
        e.fields.retain(|p| !changed.contains(p));
    }
    match managed.iter_mut().find(|e| same(e)) {
        Some(e) => e.fields = cfg,
        None => managed.push(ManagedEntry {
            manager: manager.to_owned(),
            apply: true,
            status,
            fields: cfg,
        }),
    }
    managed.retain(|e| !e.fields.is_empty());
    Ok((value, managed))
}

fn apply_into(meta: &ResourceMeta, target: &mut Value, config: &Value, schema: &mut Vec<String>) {
    let Value::Object(cfg) = config else {
        *target = config.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else { return };
    for (k, cv) in cfg {
        if schema.len() == 1 && schema[0] == "metadata" && SYSTEM_META.contains(&k.as_str()) {
            continue;
        }
        if cv.is_null() {
            tm.remove(k);
            continue;
        }
        schema.push(k.clone());
        match (tm.get_mut(k), cv) {
            (Some(tv), Value::Object(_)) if tv.is_object() => apply_into(meta, tv, cv, schema),
            (Some(tv @ Value::Array(_)), Value::Array(cl)) => match schema_kind(meta, schema) {
                ListKind::Map(key) => {
                    for ce in cl {
                        let Value::Array(tl) = &mut *tv else { break };
                        match ce
                            .get(key)
                            .and_then(|kv| tl.iter_mut().find(|te| te.get(key) == Some(kv)))
                        {
                            Some(te) => apply_into(meta, te, ce, schema),
                            None => tl.push(ce.clone()),
                        }
                    }
                }
                ListKind::Set => {
                    if let Value::Array(tl) = tv {
                        for ce in cl {
                            if !tl.contains(ce) {
                                tl.push(ce.clone());
                            }
                        }
                    }
                }
                ListKind::Atomic => *tv = cv.clone(),
            },
            (Some(tv), _) => *tv = cv.clone(),
            (None, _) => {
                let mut fresh = Value::Null;
                if cv.is_object() {
                    apply_into(meta, &mut fresh, cv, schema);
                } else {
                    fresh = cv.clone();
                }
                tm.insert(k.clone(), fresh);
            }
        }
        schema.pop();
    }
}

/// Strategic merge patch (`application/strategic-merge-patch+json`) for built-in kinds: lists
/// with a merge key are merged by it (`$patch: delete|replace`, `$deleteFromPrimitiveList`,
/// `$retainKeys` honoured, `$setElementOrder` ignored), other lists are replaced, `null` deletes.
pub(crate) fn strategic_merge(
    meta: &ResourceMeta,
    original: &Value,
    patch: &Value,
) -> Result<Value, String> {
    if !patch.is_object() {
        return Err("a strategic merge patch must be a JSON object".into());
    }
    let mut out = original.clone();
    let mut schema = Vec::new();
    smp_value(meta, &mut out, patch, &mut schema)?;
    Ok(out)
}

/// Merges `patch` into `target`. Returns `Ok(false)` when the patch asks to delete `target`.
fn smp_value(
    meta: &ResourceMeta,
    target: &mut Value,
    patch: &Value,
    schema: &mut Vec<String>,
) -> Result<bool, String> {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return Ok(true);
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(false),
        Some("replace") => {
            let mut fresh = Value::Object(Map::new());
            let mut stripped = pm.clone();
            stripped.remove("$patch");
            smp_value(meta, &mut fresh, &Value::Object(stripped), schema)?;
            *target = fresh;
            return Ok(true);
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else {
        return Ok(true);
    };
    for (k, pv) in pm {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = tm.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown directive {k}"));
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        schema.push(k.clone());
        let keep = match (tm.get_mut(k), pv) {
            (Some(tv), Value::Array(pl)) => {
                smp_list(meta, tv, pl, schema)?;
                true
            }
            (Some(tv), Value::Object(_)) => smp_value(meta, tv, pv, schema)?,
            (Some(tv), _) => {
                *tv = pv.clone();
                true
            }
            (None, _) => {
                let mut fresh = if pv.is_array() {
                    Value::Array(Vec::new())
                } else {
                    Value::Null
                };
                let keep = match pv {
                    Value::Array(pl) => {
                        smp_list(meta, &mut fresh, pl, schema)?;
                        true
                    }
                    Value::Object(_) => smp_value(meta, &mut fresh, pv, schema)?,
                    _ => {
                        fresh = pv.clone();
                        true
                    }
                };
                if keep {
                    tm.insert(k.clone(), fresh);
                }
                true
            }
        };
        if !keep {
            tm.remove(k);
        }
        schema.pop();
    }
    if let Some(retain) = pm.get("$retainKeys").and_then(Value::as_array) {
        tm.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(true)
}

fn smp_list(
    meta: &ResourceMeta,
    target: &mut Value,
    patch: &[Value],
    schema: &mut Vec<String>,
) -> Result<(), String> {
    let kind = schema_kind(meta, schema);
    let replace_all = patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
    if !target.is_array() || kind == ListKind::Atomic || replace_all {
        let mut out = Vec::new();
        for e in patch {
            if e.get("$patch").is_some() && e.as_object().is_some_and(|m| m.len() == 1) {
                continue;
            }
            let mut fresh = Value::Null;
            if smp_value(meta, &mut fresh, e, schema)? {
                out.push(fresh);
            }
        }
        *target = Value::Array(out);
        return Ok(());
    }
    let Value::Array(tl) = target else {
        return Ok(());
    };
    match kind {
        ListKind::Set => {
            for e in patch {
                if !tl.contains(e) {
                    tl.push(e.clone());
                }
            }
        }
        ListKind::Map(key) => {
            for pe in patch {
                let Some(kv) = pe.get(key) else {
                    return Err(format!(
                        "map: {pe} does not contain declared merge key: {key}"
                    ));
                };
                let pos = tl.iter().position(|te| te.get(key) == Some(kv));
                if pe.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = pos {
                        tl.remove(i);
                    }
                    continue;
                }
                match pos {
                    Some(i) => {
                        if !smp_value(meta, &mut tl[i], pe, schema)? {
                            tl.remove(i);
                        }
                    }
                    None => {
                        let mut fresh = Value::Null;
                        if smp_value(meta, &mut fresh, pe, schema)? {
                            tl.push(fresh);
                        }
                    }
                }
            }
        }
        ListKind::Atomic => {}
    }
    Ok(())
}
