//! The controllers a real control plane runs next to the apiserver, reduced to what the store
//! semantics need: the garbage collector (ownerReferences; background, orphan and foreground
//! propagation), the namespace controller (content deletion) and CRD removal.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::store::{DeleteOpts, GcTask, ObjKey, Server, WriteCtx, WriteKind};
use super::util::{finalizers, is_deleting, meta_str, metadata, set_finalizers};

const GC: &str = "generic-garbage-collector";
const POLL: Duration = Duration::from_millis(20);

pub(crate) async fn run(server: Arc<Server>, mut rx: mpsc::UnboundedReceiver<GcTask>) {
    while let Some(task) = rx.recv().await {
        match task {
            GcTask::Removed { uid } => release_dependents(&server, &uid, false),
            GcTask::CheckOwners { key } => check_owners(&server, &key),
            GcTask::Finalize { key, uid } => {
                tokio::spawn(finalize(server.clone(), key, uid));
            }
            GcTask::Namespace { name } => {
                tokio::spawn(clean_namespace(server.clone(), name));
            }
            GcTask::DropResource { res } => drop_resource(&server, res),
        }
    }
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    metadata(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn ref_uid(r: &Value) -> &str {
    r.get("uid").and_then(Value::as_str).unwrap_or("")
}

/// An owner is "alive" when it exists, or when its kind is not served here (the real GC cannot
/// resolve it either and leaves the dependent alone).
fn owner_alive(server: &Server, r: &Value) -> bool {
    let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
    !server.kind_served(api_version, kind) || server.uid_exists(ref_uid(r))
}

/// The owner `uid` is gone (or orphans its dependents): delete each dependent that has no other
/// live owner, otherwise drop the reference.
fn release_dependents(server: &Server, uid: &str, orphan: bool) {
    for dep in server.dependents(uid) {
        let Some(res) = server.resource_by_id(dep.res) else {
            continue;
        };
        let meta = res.meta();
        let mut st = res.lock();
        let key = (dep.ns, dep.name);
        let Some(obj) = st.objects.get(&key).cloned() else {
            continue;
        };
        let refs = owner_refs(&obj.value);
        if !refs.iter().any(|r| ref_uid(r) == uid) {
            continue;
        }
        let others_alive = refs
            .iter()
            .any(|r| ref_uid(r) != uid && owner_alive(server, r));
        let ctx = WriteCtx::internal(GC);
        if orphan || others_alive {
            let mut next = obj.value.clone();
            let kept: Vec<Value> = refs.into_iter().filter(|r| ref_uid(r) != uid).collect();
            if let Some(Value::Object(md)) = next.get_mut("metadata") {
                if kept.is_empty() {
                    md.remove("ownerReferences");
                } else {
                    md.insert("ownerReferences".into(), Value::Array(kept));
                }
            }
            let _ = server.update_locked(
                &res,
                &meta,
                &mut st,
                &obj,
                next,
                false,
                WriteKind::Internal,
                &ctx,
                None,
            );
        } else if !is_deleting(&obj.value) {
            let opts = DeleteOpts {
                propagation: Some("Background".into()),
                ..DeleteOpts::default()
            };
            let _ = server.delete_locked(&res, &meta, &mut st, &key, &opts, &ctx);
        }
    }
}

fn check_owners(server: &Server, key: &ObjKey) {
    let Some(res) = server.resource_by_id(key.res) else {
        return;
    };
    let meta = res.meta();
    let mut st = res.lock();
    let k = (key.ns.clone(), key.name.clone());
    let Some(obj) = st.objects.get(&k).cloned() else {
        return;
    };
    let refs = owner_refs(&obj.value);
    if refs.is_empty() || refs.iter().any(|r| owner_alive(server, r)) || is_deleting(&obj.value) {
        return;
    }
    let opts = DeleteOpts {
        propagation: Some("Background".into()),
        ..DeleteOpts::default()
    };
    let _ = server.delete_locked(&res, &meta, &mut st, &k, &opts, &WriteCtx::internal(GC));
}

/// Removes `finalizer` from the object if it is still the one with `uid`.
fn remove_finalizer(server: &Server, key: &ObjKey, uid: &str, finalizer: &str) {
    let Some(res) = server.resource_by_id(key.res) else {
        return;
    };
    let meta = res.meta();
    let mut st = res.lock();
    let k = (key.ns.clone(), key.name.clone());
    let Some(obj) = st.objects.get(&k).cloned() else {
        return;
    };
    if meta_str(&obj.value, "uid") != uid {
        return;
    }
    let mut next = obj.value.clone();
    let fins: Vec<String> = finalizers(&next)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    set_finalizers(&mut next, &fins);
    let _ = server.update_locked(
        &res,
        &meta,
        &mut st,
        &obj,
        next,
        false,
        WriteKind::Internal,
        &WriteCtx::internal(GC),
        None,
    );
}

fn current_finalizers(server: &Server, key: &ObjKey, uid: &str) -> Option<Vec<String>> {
    let res = server.resource_by_id(key.res)?;
    let st = res.lock();
    let obj = st.objects.get(&(key.ns.clone(), key.name.clone()))?;
    (meta_str(&obj.value, "uid") == uid).then(|| finalizers(&obj.value))
}

/// `orphan`: release the dependents, then drop the finalizer. `foregroundDeletion`: delete the
/// dependents, wait until they are gone, then drop the finalizer.
async fn finalize(server: Arc<Server>, key: ObjKey, uid: String) {
    loop {
        let Some(fins) = current_finalizers(&server, &key, &uid) else {
            return;
        };
        if fins.iter().any(|f| f == "orphan") {
            release_dependents(&server, &uid, true);
            remove_finalizer(&server, &key, &uid, "orphan");
            continue;
        }
        if !fins.iter().any(|f| f == "foregroundDeletion") {
            return;
        }
        if server.dependents(&uid).is_empty() {
            remove_finalizer(&server, &key, &uid, "foregroundDeletion");
            return;
        }
        release_dependents(&server, &uid, false);
        tokio::time::sleep(POLL).await;
    }
}

/// Deletes everything in a terminating namespace, then the namespace itself.
async fn clean_namespace(server: Arc<Server>, name: String) {
    let ctx = WriteCtx::internal("namespace-controller");
    loop {
        let mut remaining = 0;
        for res in server.resources() {
            let meta = res.meta();
            if !meta.namespaced {
                continue;
            }
            let mut st = res.lock();
            let keys: Vec<_> = st
                .range(Some(&name), None)
                .filter(|(_, o)| !is_deleting(&o.value))
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                let _ =
                    server.delete_locked(&res, &meta, &mut st, &key, &DeleteOpts::default(), &ctx);
            }
            remaining += st.range(Some(&name), None).count();
        }
        if remaining == 0 {
            let Some(res) = server.resource("", "v1", "namespaces") else {
                return;
            };
            let meta = res.meta();
            let mut st = res.lock();
            let key = (String::new(), name.clone());
            let Some(obj) = st.objects.get(&key).cloned() else {
                return;
            };
            let mut next = obj.value.clone();
            if let Some(Value::Object(spec)) = next.get_mut("spec") {
                spec.insert("finalizers".into(), Value::Array(Vec::new()));
            }
            let _ = server.update_locked(
                &res,
                &meta,
                &mut st,
                &obj,
                next,
                false,
                WriteKind::Internal,
                &ctx,
                None,
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn drop_resource(server: &Server, id: usize) {
    let Some(res) = server.resource_by_id(id) else {
        return;
    };
    let meta = res.meta();
    let mut st = res.lock();
    let keys: Vec<_> = st.objects.keys().cloned().collect();
    for key in keys {
        server.force_remove_locked(&res, &meta, &mut st, &key);
    }
    st.watchers.clear();
}
