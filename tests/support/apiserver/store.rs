//! The object store: resources, objects, the write strategies (create, update, patch, apply,
//! delete with finalizers and grace periods), the global resourceVersion, the per-resource
//! watch history and the dispatch of changes to watchers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use axum::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::kinds::{self, Builtin, ResourceMeta};
use super::merge::{self, ManagedEntry};
use super::selector::Filter;
use super::util::{
    ApiError, Query, Rng, deletion_grace, dotted, event_line, finalizers, hex_decode, hex_encode,
    is_deleting, meta_str, metadata, metadata_mut, owner_uids, set_finalizers, set_meta, to_bytes,
};
use super::{ApiServerOptions, RequestMatcher, RequestRecord};

/// `(namespace or "", name)`: objects sort the way etcd keys do.
pub(crate) type ObjName = (String, String);

/// One version of an object, serialized once.
#[derive(Debug)]
pub(crate) struct Stored {
    pub value: Value,
    pub bytes: Bytes,
    pub rv: u64,
    pub managed: Vec<ManagedEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A committed change; its watch-event line is built once and shared by all watchers.
pub(crate) struct Change {
    pub rv: u64,
    pub kind: EventType,
    pub obj: Arc<Stored>,
    pub prev: Option<Arc<Stored>>,
    line: Bytes,
    as_added: OnceLock<Bytes>,
    as_deleted: OnceLock<Bytes>,
    /// `PartialObjectMetadata` renderings, by event type.
    meta_only: [OnceLock<Bytes>; 3],
}

impl Change {
    fn new(rv: u64, kind: EventType, obj: Arc<Stored>, prev: Option<Arc<Stored>>) -> Change {
        Change {
            rv,
            kind,
            line: event_line(kind.name(), &obj.bytes),
            obj,
            prev,
            as_added: OnceLock::new(),
            as_deleted: OnceLock::new(),
            meta_only: Default::default(),
        }
    }

    /// The line for a watcher that asked for `PartialObjectMetadata`.
    pub fn meta_line(&self, t: EventType) -> Bytes {
        let slot = match t {
            EventType::Added => 0,
            EventType::Modified => 1,
            EventType::Deleted => 2,
        };
        self.meta_only[slot]
            .get_or_init(|| {
                let mut obj = if t == EventType::Deleted && self.kind == EventType::Modified {
                    self.prev
                        .as_ref()
                        .map_or_else(|| self.obj.value.clone(), |p| p.value.clone())
                } else {
                    self.obj.value.clone()
                };
                set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
                event_line(t.name(), &to_bytes(&partial_metadata(&obj)))
            })
            .clone()
    }

    /// The line for a watcher that sees this change as `t`: a modification is `ADDED` for a
    /// watcher whose selector the object starts matching, and `DELETED` (of the previous state,
    /// at this resourceVersion) for one it stops matching.
    pub fn line(&self, t: EventType) -> Bytes {
        if t == self.kind {
            return self.line.clone();
        }
        match t {
            EventType::Added => self
                .as_added
                .get_or_init(|| event_line("ADDED", &self.obj.bytes))
                .clone(),
            EventType::Deleted => self
                .as_deleted
                .get_or_init(|| {
                    let mut prev = self
                        .prev
                        .as_ref()
                        .map_or_else(|| self.obj.value.clone(), |p| p.value.clone());
                    set_meta(&mut prev, "resourceVersion", json!(self.rv.to_string()));
                    event_line("DELETED", &to_bytes(&prev))
                })
                .clone(),
            EventType::Modified => self.line.clone(),
        }
    }
}

pub(crate) type Delivery = (Arc<Change>, EventType);

/// An object as `meta.k8s.io/v1 PartialObjectMetadata` (what kube's metadata API asks for).
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

struct WatcherEntry {
    tx: mpsc::Sender<Delivery>,
    filter: Arc<Filter>,
    key: Option<(String, String)>,
}

/// The open watches of a resource, indexed by the field they select on.
#[derive(Default)]
pub(crate) struct Watchers {
    next_id: u64,
    entries: HashMap<u64, WatcherEntry>,
    index: HashMap<String, HashMap<String, HashSet<u64>>>,
    unindexed: HashSet<u64>,
}

impl Watchers {
    pub fn add(&mut self, filter: Arc<Filter>, tx: mpsc::Sender<Delivery>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let key = filter.index_key();
        match &key {
            Some((field, value)) => {
                self.index
                    .entry(field.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default()
                    .insert(id);
            }
            None => {
                self.unindexed.insert(id);
            }
        }
        self.entries.insert(id, WatcherEntry { tx, filter, key });
        id
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        match entry.key {
            Some((field, value)) => {
                if let Some(buckets) = self.index.get_mut(&field) {
                    if let Some(ids) = buckets.get_mut(&value) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            buckets.remove(&value);
                        }
                    }
                    if buckets.is_empty() {
                        self.index.remove(&field);
                    }
                }
            }
            None => {
                self.unindexed.remove(&id);
            }
        }
        true
    }

    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        *self = Watchers {
            next_id: self.next_id,
            ..Watchers::default()
        };
        n
    }

    fn dispatch(&mut self, meta: &ResourceMeta, change: &Arc<Change>) {
        if self.entries.is_empty() {
            return;
        }
        let mut targets: Vec<u64> = self.unindexed.iter().copied().collect();
        for (field, buckets) in &self.index {
            let new = kinds::field_value(meta, &change.obj.value, field);
            if let Some(ids) = buckets.get(&new) {
                targets.extend(ids);
            }
            if let Some(prev) = &change.prev {
                let old = kinds::field_value(meta, &prev.value, field);
                if old != new
                    && let Some(ids) = buckets.get(&old)
                {
                    targets.extend(ids);
                }
            }
        }
        let mut dead = Vec::new();
        for id in targets {
            let Some(w) = self.entries.get(&id) else {
                continue;
            };
            let Some(t) = event_for(meta, &w.filter, change) else {
                continue;
            };
            // A watcher too slow to keep a bounded backlog is closed, as apiserver does; the
            // client re-watches from its last resourceVersion.
            if w.tx.try_send((change.clone(), t)).is_err() {
                dead.push(id);
            }
        }
        for id in dead {
            self.remove(id);
        }
    }
}

/// How a watcher with `filter` sees `change`, if at all.
pub(crate) fn event_for(
    meta: &ResourceMeta,
    filter: &Filter,
    change: &Change,
) -> Option<EventType> {
    let now = filter.matches(meta, &change.obj.value);
    match change.kind {
        EventType::Added | EventType::Deleted => now.then_some(change.kind),
        EventType::Modified => {
            let before = change
                .prev
                .as_ref()
                .is_some_and(|p| filter.matches(meta, &p.value));
            match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        }
    }
}

pub(crate) struct ResourceState {
    pub objects: BTreeMap<ObjName, Arc<Stored>>,
    /// Changes after `floor`, oldest first.
    pub history: VecDeque<Arc<Change>>,
    /// A watch can resume from any resourceVersion >= floor.
    pub floor: u64,
    pub watchers: Watchers,
}

impl ResourceState {
    /// Objects in `namespace` (all when `None`), in key order, starting after `after`.
    pub fn range<'a>(
        &'a self,
        namespace: Option<&'a str>,
        after: Option<&ObjName>,
    ) -> Box<dyn Iterator<Item = (&'a ObjName, &'a Arc<Stored>)> + 'a> {
        use std::ops::Bound;
        let start = match (after, namespace) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let iter = self.objects.range((start, Bound::Unbounded));
        match namespace {
            Some(ns) => Box::new(iter.take_while(move |(k, _)| k.0 == ns)),
            None => Box::new(iter),
        }
    }
}

pub(crate) struct Resource {
    pub id: usize,
    meta: RwLock<Arc<ResourceMeta>>,
    pub active: AtomicBool,
    state: Mutex<ResourceState>,
    /// The resourceVersion of the last change dispatched to watchers.
    pub dispatched_rv: AtomicU64,
}

impl Resource {
    pub fn meta(&self) -> Arc<ResourceMeta> {
        self.meta.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn lock(&self) -> MutexGuard<'_, ResourceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Identifies an object across resources (garbage collection).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjKey {
    pub res: usize,
    pub ns: String,
    pub name: String,
}

#[derive(Default)]
struct GcIndex {
    by_uid: HashMap<String, ObjKey>,
    dependents: HashMap<String, HashSet<ObjKey>>,
}

/// Work for the garbage collector and the namespace/CRD controllers.
#[derive(Debug)]
pub(crate) enum GcTask {
    /// An object is gone: delete or release its dependents.
    Removed { uid: String },
    /// An object was created with owners: delete it if none of them exists.
    CheckOwners { key: ObjKey },
    /// An owner got the `orphan` or `foregroundDeletion` finalizer.
    Finalize { key: ObjKey, uid: String },
    /// A namespace is terminating: delete its content, then the namespace.
    Namespace { name: String },
    /// A CRD was deleted: drop the objects of the resource.
    DropResource { res: usize },
}

#[derive(Default)]
struct Registry {
    list: Vec<Arc<Resource>>,
    by_key: HashMap<(String, String, String), usize>,
}

pub(crate) struct Fault {
    pub matcher: RequestMatcher,
    pub code: u16,
    pub remaining: usize,
}

/// Who writes, and whether for real.
#[derive(Debug, Clone)]
pub(crate) struct WriteCtx {
    pub manager: String,
    pub dry_run: bool,
}

impl WriteCtx {
    pub fn internal(manager: &str) -> WriteCtx {
        WriteCtx {
            manager: manager.into(),
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    Put,
    Patch,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub rv: Option<String>,
}

pub(crate) struct Server {
    pub opts: ApiServerOptions,
    rv: AtomicU64,
    registry: RwLock<Registry>,
    gc_index: Mutex<GcIndex>,
    gc_tx: mpsc::UnboundedSender<GcTask>,
    pub faults: Mutex<Vec<Fault>>,
    pub unavailable: AtomicBool,
    /// Bumped to close every open watch.
    pub epoch: tokio::sync::watch::Sender<u64>,
    /// Requests refused to a service account's token (401, 403), as messages.
    pub denials: Mutex<Vec<String>>,
    pub log: Mutex<VecDeque<RequestRecord>>,
    pub open_watches: AtomicUsize,
    pub rng: Rng,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn into_object(v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        )),
    }
}

fn check_type_meta(meta: &ResourceMeta, obj: &mut Map<String, Value>) -> Result<(), ApiError> {
    let expected = [
        ("apiVersion", meta.api_version()),
        ("kind", meta.kind.clone()),
    ];
    for (field, want) in expected {
        match obj.get(field) {
            None | Some(Value::Null) => {
                obj.insert(field.into(), json!(want));
            }
            Some(Value::String(s)) if s.is_empty() => {
                obj.insert(field.into(), json!(want));
            }
            Some(Value::String(s)) if *s == want => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({}) does not match the expected {field} ({want})",
                    other.as_str().unwrap_or("non-string")
                )));
            }
        }
    }
    Ok(())
}

/// Whether anything but metadata and status differs (what bumps `metadata.generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return true;
    };
    let skip = |k: &String| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind");
    let ok: Vec<_> = o.iter().filter(|(k, _)| skip(k)).collect();
    let nk: Vec<_> = n.iter().filter(|(k, _)| skip(k)).collect();
    ok != nk
}

/// Server-owned metadata always comes from the stored object.
fn copy_system_meta(old: &Value, new: &mut Map<String, Value>) {
    let old_md = metadata(old).cloned().unwrap_or_default();
    let md = metadata_mut(new);
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_md.get(f) {
            Some(v) => md.insert(f.into(), v.clone()),
            None => md.remove(f),
        };
    }
    md.remove("managedFields");
    md.remove("selfLink");
}

fn bump_generation(obj: &mut Value) {
    let g = metadata(obj)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    set_meta(obj, "generation", json!(g + 1));
}

impl Server {
    pub fn new(opts: ApiServerOptions, gc_tx: mpsc::UnboundedSender<GcTask>) -> Server {
        Server {
            opts,
            rv: AtomicU64::new(1),
            registry: RwLock::default(),
            gc_index: Mutex::default(),
            gc_tx,
            faults: Mutex::default(),
            unavailable: AtomicBool::new(false),
            epoch: tokio::sync::watch::Sender::new(0),
            denials: Mutex::default(),
            log: Mutex::default(),
            open_watches: AtomicUsize::new(0),
            rng: Rng::new(),
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv.load(Ordering::SeqCst)
    }

    // ----- registry -----

    pub fn register(&self, meta: ResourceMeta) -> Arc<Resource> {
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        let key = (
            meta.group.clone(),
            meta.version.clone(),
            meta.plural.clone(),
        );
        if let Some(&id) = reg.by_key.get(&key) {
            let res = reg.list[id].clone();
            *res.meta.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(meta);
            res.active.store(true, Ordering::SeqCst);
            return res;
        }
        let id = reg.list.len();
        let res = Arc::new(Resource {
            id,
            meta: RwLock::new(Arc::new(meta)),
            active: AtomicBool::new(true),
            state: Mutex::new(ResourceState {
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                floor: 0,
                watchers: Watchers::default(),
            }),
            dispatched_rv: AtomicU64::new(self.current_rv()),
        });
        reg.list.push(res.clone());
        reg.by_key.insert(key, id);
        res
    }

    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.by_key
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .map(|&id| reg.list[id].clone())
            .filter(|r| r.active.load(Ordering::SeqCst))
    }

    pub fn resource_by_id(&self, id: usize) -> Option<Arc<Resource>> {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.list.get(id).cloned()
    }

    /// Active resources in registration order.
    pub fn resources(&self) -> Vec<Arc<Resource>> {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.list
            .iter()
            .filter(|r| r.active.load(Ordering::SeqCst))
            .cloned()
            .collect()
    }

    /// `pods`, `leases.coordination.k8s.io`, `nodeimages.apps.kruise.io`, optionally with a
    /// version (`nodeimages.v1alpha1.apps.kruise.io`): the first registered version matches.
    pub fn find(&self, qualified: &str) -> Option<Arc<Resource>> {
        let (plural, group) = qualified.split_once('.').unwrap_or((qualified, ""));
        self.resources().into_iter().find(|r| {
            let m = r.meta();
            m.plural == plural
                && (m.group == group || format!("{}.{}", m.version, m.group) == group)
        })
    }

    /// Marks a resource as no longer served (its CRD was deleted) and drops its objects.
    pub fn unregister(&self, group: &str, version: &str, plural: &str) {
        if let Some(res) = self.resource(group, version, plural) {
            res.active.store(false, Ordering::SeqCst);
            let _ = self.gc_tx.send(GcTask::DropResource { res: res.id });
        }
    }

    // ----- reads -----

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Arc<Stored>, ApiError> {
        let meta = res.meta();
        res.lock()
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&meta.group, &meta.plural, name))
    }

    /// A list response: objects concatenated from their serialized bytes.
    pub fn list(
        &self,
        res: &Resource,
        filter: &Filter,
        q: &Query,
        meta_only: bool,
    ) -> Result<Bytes, ApiError> {
        let meta = res.meta();
        let limit = q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
        let after = match q.non_empty("continue") {
            None => None,
            Some(token) => Some(decode_continue(token).ok_or_else(|| {
                ApiError::bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion",
                )
            })?),
        };
        let st = res.lock();
        let current = self.current_rv();
        if q.get("resourceVersionMatch") == Some("Exact")
            && let Some(rv) = q.non_empty("resourceVersion")
            && rv.parse::<u64>().ok() != Some(current)
        {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({current})"
            )));
        }
        let mut items: Vec<Bytes> = Vec::new();
        let mut last: Option<&ObjName> = None;
        let mut more = false;
        for (k, obj) in st.range(filter.namespace.as_deref(), after.as_ref()) {
            if !filter.matches(&meta, &obj.value) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                break;
            }
            items.push(if meta_only {
                to_bytes(&partial_metadata(&obj.value))
            } else {
                obj.bytes.clone()
            });
            last = Some(k);
        }
        let mut list_meta = json!({"resourceVersion": current.to_string()});
        if more && let Some(last) = last {
            list_meta["continue"] = json!(encode_continue(current, last));
            if filter.is_trivial() {
                let remaining = st.range(filter.namespace.as_deref(), Some(last)).count();
                list_meta["remainingItemCount"] = json!(remaining);
            }
        }
        let (list_kind, api_version) = if meta_only {
            (
                "PartialObjectMetadataList".to_owned(),
                "meta.k8s.io/v1".to_owned(),
            )
        } else {
            (meta.list_kind(), meta.api_version())
        };
        let head = format!(
            "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":{list_meta},\"items\":["
        );
        let mut body =
            Vec::with_capacity(head.len() + items.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
        body.extend_from_slice(head.as_bytes());
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(b"]}");
        Ok(Bytes::from(body))
    }

    // ----- writes -----

    fn check_namespace(&self, ns: &str, meta: &ResourceMeta, name: &str) -> Result<(), ApiError> {
        if !self.opts.strict_namespaces {
            return Ok(());
        }
        let Some(namespaces) = self.resource("", "v1", "namespaces") else {
            return Ok(());
        };
        let st = namespaces.lock();
        match st.objects.get(&(String::new(), ns.to_owned())) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(o) if is_deleting(&o.value) => Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                super::util::qualified(&meta.group, &meta.plural)
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Create (POST). `managed` is the ownership computed by server-side apply.
    pub fn create(
        &self,
        res: &Resource,
        url_ns: Option<&str>,
        body: Value,
        ctx: &WriteCtx,
        managed: Option<Vec<ManagedEntry>>,
    ) -> Result<Arc<Stored>, ApiError> {
        let meta = res.meta();
        let mut obj = into_object(body)?;
        check_type_meta(&meta, &mut obj)?;
        let body_ns = obj
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let ns = if meta.namespaced {
            let ns = match (url_ns, body_ns.as_deref()) {
                (Some(u), Some(b)) if u != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(u), _) => u.to_owned(),
                (None, _) => return Err(ApiError::method_not_allowed()),
            };
            Some(ns)
        } else {
            None
        };
        let md = metadata_mut(&mut obj);
        if md
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "resourceVersion",
        ] {
            md.remove(f);
        }
        match &ns {
            Some(ns) => md.insert("namespace".into(), json!(ns)),
            None => md.remove("namespace"),
        };
        let name = md
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let generate = md
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() && generate.is_empty() {
            return Err(ApiError::invalid(
                &meta.kind,
                &meta.group,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        md.insert("uid".into(), json!(self.rng.uuid()));
        md.insert("creationTimestamp".into(), json!(super::util::now()));
        md.insert("generation".into(), json!(1));
        if let Some(ns) = &ns {
            self.check_namespace(ns, &meta, if name.is_empty() { &generate } else { &name })?;
        }
        kinds::apply_defaults(&meta, &mut obj);
        let mut st = res.lock();
        let ns_key = ns.clone().unwrap_or_default();
        let name = if name.is_empty() {
            let prefix: String = generate.chars().take(58).collect();
            let mut candidate = String::new();
            for _ in 0..16 {
                candidate = format!("{prefix}{}", self.rng.name_suffix());
                if !st
                    .objects
                    .contains_key(&(ns_key.clone(), candidate.clone()))
                {
                    break;
                }
            }
            candidate
        } else {
            name
        };
        metadata_mut(&mut obj).insert("name".into(), json!(name));
        kinds::prepare_create(&meta, &mut obj, &name);
        let value = Value::Object(obj);
        kinds::validate(&meta, &value, None)?;
        let key = (ns_key, name.clone());
        if st.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&meta.group, &meta.plural, &name));
        }
        let managed = managed
            .unwrap_or_else(|| merge::track_update(&meta, &[], None, &value, &ctx.manager, false));
        if ctx.dry_run {
            return Ok(Arc::new(Stored {
                bytes: to_bytes(&value),
                value,
                rv: 0,
                managed,
            }));
        }
        let has_owners = !owner_uids(&value).is_empty();
        let stored = self.commit(
            res,
            &meta,
            &mut st,
            key.clone(),
            EventType::Added,
            value,
            managed,
            None,
        );
        drop(st);
        if has_owners && self.opts.gc_dangling_owner_references {
            let _ = self.gc_tx.send(GcTask::CheckOwners {
                key: ObjKey {
                    res: res.id,
                    ns: key.0,
                    name: key.1,
                },
            });
        }
        Ok(stored)
    }

    /// Update (PUT) of the object or of its status.
    pub fn replace(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Arc<Stored>, ApiError> {
        let meta = res.meta();
        let mut st = res.lock();
        let old = st
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&meta.group, &meta.plural, name))?;
        self.update_locked(
            res,
            &meta,
            &mut st,
            &old,
            body,
            status,
            WriteKind::Put,
            ctx,
            None,
        )
    }

    /// PATCH of every type. Returns the object and whether apply created it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &[u8],
        status: bool,
        force: bool,
        ctx: &WriteCtx,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        let meta = res.meta();
        let bad =
            |e: &dyn std::fmt::Display| ApiError::bad_request(format!("error decoding patch: {e}"));
        let patch: Value = match ptype {
            PatchType::Apply => match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    let text = std::str::from_utf8(body).map_err(|e| bad(&e))?;
                    serde_saphyr::from_str::<Value>(text).map_err(|e| bad(&e))?
                }
            },
            _ => serde_json::from_slice(body).map_err(|e| bad(&e))?,
        };
        if ptype == PatchType::Strategic && meta.custom {
            return Err(ApiError::unsupported_media(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        if ptype == PatchType::Apply {
            return self.apply(res, &meta, ns, name, patch, status, force, ctx);
        }
        let mut st = res.lock();
        let old = st
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&meta.group, &meta.plural, name))?;
        let candidate = match ptype {
            PatchType::Merge => {
                let mut v = old.value.clone();
                json_patch::merge(&mut v, &patch);
                v
            }
            PatchType::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| bad(&e))?;
                let mut v = old.value.clone();
                json_patch::patch(&mut v, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
                v
            }
            PatchType::Strategic => {
                merge::strategic_merge(&meta, &old.value, &patch).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?
            }
            PatchType::Apply => unreachable!("handled above"),
        };
        let stored = self.update_locked(
            res,
            &meta,
            &mut st,
            &old,
            candidate,
            status,
            WriteKind::Patch,
            ctx,
            None,
        )?;
        Ok((stored, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        res: &Resource,
        meta: &ResourceMeta,
        ns: &str,
        name: &str,
        config: Value,
        status: bool,
        force: bool,
        ctx: &WriteCtx,
    ) -> Result<(Arc<Stored>, bool), ApiError> {
        if ctx.manager.is_empty() {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        }
        let mut config = into_object(config)?;
        for (field, want) in [
            ("apiVersion", meta.api_version()),
            ("kind", meta.kind.clone()),
        ] {
            match config.get(field).and_then(Value::as_str) {
                Some(v) if v == want => {}
                Some(v) => {
                    return Err(ApiError::bad_request(format!(
                        "the {field} in the data ({v}) does not match the expected {field} ({want})"
                    )));
                }
                None => {
                    return Err(ApiError::bad_request(format!(
                        "{field} must be set in an apply configuration"
                    )));
                }
            }
        }
        {
            let md = metadata_mut(&mut config);
            match md.get("name").and_then(Value::as_str) {
                Some(n) if n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                _ => {}
            }
        }
        let config = Value::Object(config);
        let mut st = res.lock();
        let old = st.objects.get(&(ns.to_owned(), name.to_owned())).cloned();
        let current = old.as_ref().map(|o| (&o.value, o.managed.as_slice()));
        let (merged, managed) =
            merge::server_side_apply(meta, current, &config, &ctx.manager, force, status).map_err(
                |conflicts| {
                    let n = conflicts.len();
                    let causes: Vec<Value> = conflicts
                        .iter()
                        .map(|c| {
                            json!({
                                "reason": "FieldManagerConflict",
                                "message": format!("conflict with \"{}\"", c.manager),
                                "field": merge::render_path(&c.path),
                            })
                        })
                        .collect();
                    let list: Vec<String> = conflicts
                        .iter()
                        .map(|c| {
                            format!(
                                "conflict with \"{}\": {}",
                                c.manager,
                                merge::render_path(&c.path)
                            )
                        })
                        .collect();
                    ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    list.join("\n")
                ),
            )
            .with_details(
                json!({"name": name, "group": meta.group, "kind": meta.plural, "causes": causes}),
            )
                },
            )?;
        match old {
            Some(old) => {
                let stored = self.update_locked(
                    res,
                    meta,
                    &mut st,
                    &old,
                    merged,
                    status,
                    WriteKind::Patch,
                    ctx,
                    Some(managed),
                )?;
                Ok((stored, false))
            }
            None => {
                if status {
                    return Err(ApiError::not_found(&meta.group, &meta.plural, name));
                }
                drop(st);
                let mut merged = merged;
                set_meta(&mut merged, "name", json!(name));
                let url_ns = meta.namespaced.then_some(ns);
                let stored = self.create(res, url_ns, merged, ctx, Some(managed))?;
                Ok((stored, true))
            }
        }
    }

    /// The update strategy shared by PUT, every PATCH, apply and internal edits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_locked(
        &self,
        res: &Resource,
        meta: &ResourceMeta,
        st: &mut ResourceState,
        old: &Arc<Stored>,
        candidate: Value,
        status: bool,
        kind: WriteKind,
        ctx: &WriteCtx,
        managed: Option<Vec<ManagedEntry>>,
    ) -> Result<Arc<Stored>, ApiError> {
        let name = meta_str(&old.value, "name").to_owned();
        let ns = meta_str(&old.value, "namespace").to_owned();
        let mut new = into_object(candidate)?;
        check_type_meta(meta, &mut new)?;
        {
            let md = metadata_mut(&mut new);
            let body_name = md.get("name").and_then(Value::as_str).unwrap_or("");
            if body_name != name {
                return Err(if kind == WriteKind::Put {
                    ApiError::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the URL ({name})"
                    ))
                } else {
                    ApiError::invalid(
                        &meta.kind,
                        &meta.group,
                        &name,
                        "metadata.name",
                        "Invalid value: field is immutable",
                    )
                });
            }
            if let Some(body_ns) = md.get("namespace").and_then(Value::as_str)
                && !body_ns.is_empty()
                && body_ns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            match md
                .get("resourceVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(rv) => {
                    let rv: u64 = rv.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?;
                    if rv != old.rv {
                        return Err(ApiError::stale(&meta.group, &meta.plural, &name));
                    }
                }
                None if kind == WriteKind::Put && meta.custom => {
                    return Err(ApiError::invalid(
                        &meta.kind,
                        &meta.group,
                        &name,
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    ));
                }
                None => {}
            }
            let old_uid = meta_str(&old.value, "uid");
            if let Some(uid) = md.get("uid").and_then(Value::as_str)
                && !uid.is_empty()
                && uid != old_uid
            {
                return Err(ApiError::conflict(
                    &meta.group,
                    &meta.plural,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                    ),
                ));
            }
        }
        let old_map = old.value.as_object().cloned().unwrap_or_default();
        let mut next = if status && kinds::status_writes_metadata(meta) {
            // Core kinds' status strategies reset everything but status and metadata (pods
            // also keep their ownerReferences and qosClass).
            new.retain(|k, _| k == "metadata" || k == "status" || k == "apiVersion" || k == "kind");
            for (k, v) in &old_map {
                if k != "metadata" && k != "status" {
                    new.insert(k.clone(), v.clone());
                }
            }
            copy_system_meta(&old.value, &mut new);
            if meta.builtin() == Builtin::Pod {
                let owners = metadata(&old.value)
                    .and_then(|m| m.get("ownerReferences"))
                    .cloned();
                let md = metadata_mut(&mut new);
                match owners {
                    Some(o) => md.insert("ownerReferences".into(), o),
                    None => md.remove("ownerReferences"),
                };
                let old_qos = dotted(&old.value, "status.qosClass").cloned();
                if let (Some(qos), Some(Value::Object(st))) = (old_qos, new.get_mut("status")) {
                    st.entry("qosClass").or_insert(qos);
                }
            }
            new
        } else if status {
            // Custom resources: only `.status` changes.
            let mut base = old_map;
            match new.remove("status") {
                Some(s) => base.insert("status".into(), s),
                None => base.remove("status"),
            };
            base
        } else {
            copy_system_meta(&old.value, &mut new);
            if meta.status {
                match old.value.get("status") {
                    Some(s) => new.insert("status".into(), s.clone()),
                    None => new.remove("status"),
                };
            }
            kinds::apply_defaults(meta, &mut new);
            if meta.builtin() == Builtin::Crd {
                let s = kinds::crd_status(&new);
                new.insert("status".into(), s);
            }
            new
        };
        metadata_mut(&mut next).insert("resourceVersion".into(), json!(old.rv.to_string()));
        let mut next = Value::Object(next);
        if is_deleting(&old.value) {
            let before = finalizers(&old.value);
            let added: Vec<String> = finalizers(&next)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &meta.kind,
                    &meta.group,
                    &name,
                    "metadata.finalizers",
                    &format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                ));
            }
        }
        kinds::validate(meta, &next, Some(&old.value))?;
        if !status && spec_changed(&old.value, &next) {
            bump_generation(&mut next);
        }
        if meta.builtin() == Builtin::Crd {
            // Keep the CRD's conditions' timestamps when nothing changed.
            if let (Some(o), Some(Value::Object(n))) =
                (old.value.get("status"), next.get_mut("status"))
                && o.get("acceptedNames") == n.get("acceptedNames")
            {
                n.insert(
                    "conditions".into(),
                    o.get("conditions").cloned().unwrap_or(Value::Null),
                );
            }
        }
        let managed = managed.unwrap_or_else(|| {
            merge::track_update(
                meta,
                &old.managed,
                Some(&old.value),
                &next,
                &ctx.manager,
                status,
            )
        });
        let key = (ns, name);
        if next == old.value {
            if managed != old.managed && !ctx.dry_run {
                let same = Arc::new(Stored {
                    value: old.value.clone(),
                    bytes: old.bytes.clone(),
                    rv: old.rv,
                    managed,
                });
                st.objects.insert(key, same.clone());
                return Ok(same);
            }
            return Ok(old.clone());
        }
        if ctx.dry_run {
            return Ok(Arc::new(Stored {
                bytes: to_bytes(&next),
                value: next,
                rv: old.rv,
                managed,
            }));
        }
        let namespace_pending = meta.builtin() == Builtin::Namespace
            && dotted(&next, "spec.finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        let remove = is_deleting(&next)
            && finalizers(&next).is_empty()
            && deletion_grace(&next) == 0
            && !namespace_pending;
        let kind = if remove {
            EventType::Deleted
        } else {
            EventType::Modified
        };
        Ok(self.commit(res, meta, st, key, kind, next, managed, Some(old.clone())))
    }

    /// DELETE: graceful for pods bound to a node, deferred by finalizers, otherwise immediate.
    pub fn delete(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> Result<Arc<Stored>, ApiError> {
        let meta = res.meta();
        let mut st = res.lock();
        self.delete_locked(
            res,
            &meta,
            &mut st,
            &(ns.to_owned(), name.to_owned()),
            opts,
            ctx,
        )
    }

    pub(crate) fn delete_locked(
        &self,
        res: &Resource,
        meta: &ResourceMeta,
        st: &mut ResourceState,
        key: &ObjName,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> Result<Arc<Stored>, ApiError> {
        let name = &key.1;
        let old = st
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&meta.group, &meta.plural, name))?;
        let uid = meta_str(&old.value, "uid").to_owned();
        if let Some(want) = opts.uid.as_deref().filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                &meta.group,
                &meta.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
        if let Some(want) = opts.rv.as_deref().filter(|u| !u.is_empty())
            && want != old.rv.to_string()
        {
            return Err(ApiError::conflict(
                &meta.group,
                &meta.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                    old.rv
                ),
            ));
        }
        let gc_finalizer = match opts.propagation.as_deref() {
            None | Some("") | Some("Background") => None,
            Some("Orphan") => Some("orphan"),
            Some("Foreground") => Some("foregroundDeletion"),
            Some(other) => {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "meta.k8s.io",
                    "",
                    "propagationPolicy",
                    &format!(
                        "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                ));
            }
        };
        if meta.builtin() == Builtin::Namespace {
            if is_deleting(&old.value) || ctx.dry_run {
                return Ok(old);
            }
            let mut next = old.value.clone();
            set_meta(&mut next, "deletionTimestamp", json!(super::util::now()));
            set_meta(&mut next, "deletionGracePeriodSeconds", json!(0));
            if let Value::Object(m) = &mut next {
                m.insert("status".into(), json!({"phase": "Terminating"}));
            }
            let stored = self.commit(
                res,
                meta,
                st,
                key.clone(),
                EventType::Modified,
                next,
                old.managed.clone(),
                Some(old.clone()),
            );
            let _ = self.gc_tx.send(GcTask::Namespace { name: name.clone() });
            return Ok(stored);
        }
        let mut grace = 0;
        if meta.builtin() == Builtin::Pod && self.opts.pod_graceful_deletion {
            let default = dotted(&old.value, "spec.terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            grace = opts.grace.unwrap_or(default).max(0);
            let bound = dotted(&old.value, "spec.nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let phase = dotted(&old.value, "status.phase").and_then(Value::as_str);
            if !bound || matches!(phase, Some("Succeeded" | "Failed")) {
                grace = 0;
            }
        }
        let mut fins = finalizers(&old.value);
        let mut next = old.value.clone();
        if is_deleting(&old.value) {
            // Being deleted already: only a shorter grace period changes anything.
            if meta.builtin() != Builtin::Pod || grace >= deletion_grace(&old.value) || ctx.dry_run
            {
                return Ok(old);
            }
            set_meta(&mut next, "deletionGracePeriodSeconds", json!(grace));
            set_meta(
                &mut next,
                "deletionTimestamp",
                json!(super::util::timestamp_after(grace)),
            );
            let kind = if grace == 0 && fins.is_empty() {
                EventType::Deleted
            } else {
                EventType::Modified
            };
            return Ok(self.commit(
                res,
                meta,
                st,
                key.clone(),
                kind,
                next,
                old.managed.clone(),
                Some(old.clone()),
            ));
        }
        if let Some(f) = gc_finalizer
            && !fins.iter().any(|x| x == f)
        {
            fins.push(f.to_owned());
            set_finalizers(&mut next, &fins);
        }
        if grace == 0 && fins.is_empty() {
            if ctx.dry_run {
                return Ok(old);
            }
            return Ok(self.commit(
                res,
                meta,
                st,
                key.clone(),
                EventType::Deleted,
                next,
                old.managed.clone(),
                Some(old.clone()),
            ));
        }
        set_meta(
            &mut next,
            "deletionTimestamp",
            json!(super::util::timestamp_after(grace)),
        );
        set_meta(&mut next, "deletionGracePeriodSeconds", json!(grace));
        bump_generation(&mut next);
        if ctx.dry_run {
            return Ok(Arc::new(Stored {
                bytes: to_bytes(&next),
                value: next,
                rv: old.rv,
                managed: old.managed.clone(),
            }));
        }
        let stored = self.commit(
            res,
            meta,
            st,
            key.clone(),
            EventType::Modified,
            next,
            old.managed.clone(),
            Some(old.clone()),
        );
        if gc_finalizer.is_some() {
            let _ = self.gc_tx.send(GcTask::Finalize {
                key: ObjKey {
                    res: res.id,
                    ns: key.0.clone(),
                    name: key.1.clone(),
                },
                uid,
            });
        }
        Ok(stored)
    }

    /// Writes one change: new resourceVersion, store, history, watchers, GC index.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        res: &Resource,
        meta: &ResourceMeta,
        st: &mut ResourceState,
        key: ObjName,
        kind: EventType,
        mut value: Value,
        managed: Vec<ManagedEntry>,
        prev: Option<Arc<Stored>>,
    ) -> Arc<Stored> {
        let rv = self.rv.fetch_add(1, Ordering::SeqCst) + 1;
        set_meta(&mut value, "resourceVersion", json!(rv.to_string()));
        let stored = Arc::new(Stored {
            bytes: to_bytes(&value),
            value,
            rv,
            managed,
        });
        match kind {
            EventType::Deleted => {
                st.objects.remove(&key);
            }
            _ => {
                st.objects.insert(key.clone(), stored.clone());
            }
        }
        self.index_owners(res.id, &key, prev.as_deref(), kind, &stored);
        let change = Arc::new(Change::new(rv, kind, stored.clone(), prev));
        st.watchers.dispatch(meta, &change);
        st.history.push_back(change);
        while st.history.len() > self.opts.history_limit {
            if let Some(old) = st.history.pop_front() {
                st.floor = old.rv;
            }
        }
        if self.opts.history_limit == 0 {
            st.floor = rv;
        }
        res.dispatched_rv.store(rv, Ordering::SeqCst);
        if meta.builtin() == Builtin::Crd {
            self.crd_changed(&stored.value, kind == EventType::Deleted);
        }
        if kind == EventType::Deleted {
            let uid = meta_str(&stored.value, "uid").to_owned();
            let _ = self.gc_tx.send(GcTask::Removed { uid });
        }
        stored
    }

    /// The binding subresource: sets `spec.nodeName` once and marks the pod scheduled.
    pub fn bind_pod(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        node: &str,
    ) -> Result<(), ApiError> {
        let meta = res.meta();
        let mut st = res.lock();
        let key = (ns.to_owned(), name.to_owned());
        let old = st
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&meta.group, &meta.plural, name))?;
        if is_deleting(&old.value) {
            return Err(ApiError::conflict(
                &meta.group,
                &meta.plural,
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(current) = dotted(&old.value, "spec.nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                &meta.group,
                &meta.plural,
                name,
                &format!("pod {name} is already assigned to node {current:?}"),
            ));
        }
        let mut next = old.value.clone();
        let Value::Object(obj) = &mut next else {
            return Err(ApiError::internal("stored pod is not an object"));
        };
        if let Some(Value::Object(spec)) = obj.get_mut("spec") {
            spec.insert("nodeName".into(), json!(node));
        }
        let status = obj.entry("status").or_insert_with(|| json!({}));
        if let Value::Object(status) = status {
            let conditions = status.entry("conditions").or_insert_with(|| json!([]));
            if let Value::Array(conditions) = conditions {
                conditions
                    .retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                conditions.push(json!({
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": null,
                    "lastTransitionTime": super::util::now(),
                }));
            }
        }
        self.commit(
            res,
            &meta,
            &mut st,
            key,
            EventType::Modified,
            next,
            old.managed.clone(),
            Some(old),
        );
        Ok(())
    }

    /// Removes an object regardless of finalizers (its resource stops being served).
    pub(crate) fn force_remove_locked(
        &self,
        res: &Resource,
        meta: &ResourceMeta,
        st: &mut ResourceState,
        key: &ObjName,
    ) {
        if let Some(old) = st.objects.get(key).cloned() {
            let value = old.value.clone();
            self.commit(
                res,
                meta,
                st,
                key.clone(),
                EventType::Deleted,
                value,
                Vec::new(),
                Some(old),
            );
        }
    }

    /// Whether this server serves `kind` of `apiVersion` (the GC only judges owners it knows).
    pub fn kind_served(&self, api_version: &str, kind: &str) -> bool {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.resources().iter().any(|r| {
            let m = r.meta();
            m.group == group && m.version == version && m.kind == kind
        })
    }

    fn index_owners(
        &self,
        res: usize,
        key: &ObjName,
        prev: Option<&Stored>,
        kind: EventType,
        now: &Stored,
    ) {
        let ok = ObjKey {
            res,
            ns: key.0.clone(),
            name: key.1.clone(),
        };
        let mut gc = lock(&self.gc_index);
        if let Some(p) = prev {
            for o in owner_uids(&p.value) {
                if let Some(set) = gc.dependents.get_mut(&o) {
                    set.remove(&ok);
                    if set.is_empty() {
                        gc.dependents.remove(&o);
                    }
                }
            }
        }
        let uid = meta_str(&now.value, "uid").to_owned();
        if kind == EventType::Deleted {
            gc.by_uid.remove(&uid);
        } else {
            gc.by_uid.insert(uid, ok.clone());
            for o in owner_uids(&now.value) {
                gc.dependents.entry(o).or_default().insert(ok.clone());
            }
        }
    }

    fn crd_changed(&self, crd: &Value, deleted: bool) {
        let Ok(resources) = kinds::crd_resources(crd) else {
            return;
        };
        for meta in resources {
            if deleted {
                self.unregister(&meta.group, &meta.version, &meta.plural);
            } else {
                self.register(meta);
            }
        }
    }

    /// Drops the history of every resource: watches from an older resourceVersion get 410.
    pub fn compact(&self) {
        let current = self.current_rv();
        for res in self.resources() {
            let mut st = res.lock();
            st.history.clear();
            st.floor = current;
        }
    }

    pub fn uid_exists(&self, uid: &str) -> bool {
        lock(&self.gc_index).by_uid.contains_key(uid)
    }

    pub fn dependents(&self, uid: &str) -> Vec<ObjKey> {
        lock(&self.gc_index)
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn take_fault(&self, record: &RequestRecord) -> Option<u16> {
        let mut faults = lock(&self.faults);
        let i = faults
            .iter()
            .position(|f| f.remaining > 0 && f.matcher.matches(record))?;
        faults[i].remaining -= 1;
        let code = faults[i].code;
        if faults[i].remaining == 0 {
            faults.remove(i);
        }
        Some(code)
    }

    pub fn log_request(&self, record: RequestRecord) {
        if self.opts.request_log_limit == 0 {
            return;
        }
        let mut log = lock(&self.log);
        while log.len() >= self.opts.request_log_limit {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).iter().cloned().collect()
    }

    pub fn count_requests(&self, matcher: &RequestMatcher) -> usize {
        lock(&self.log)
            .iter()
            .filter(|r| matcher.matches(r))
            .count()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    pub fn add_fault(&self, fault: Fault) {
        if fault.remaining == 0 {
            return;
        }
        lock(&self.faults).push(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }
}

fn encode_continue(rv: u64, last: &ObjName) -> String {
    format!("{rv}-{}", hex_encode(&format!("{}\u{0}{}", last.0, last.1)))
}

fn decode_continue(token: &str) -> Option<ObjName> {
    let (_, hex) = token.split_once('-')?;
    let key = hex_decode(hex)?;
    let (ns, name) = key.split_once('\u{0}')?;
    Some((ns.to_owned(), name.to_owned()))
}
