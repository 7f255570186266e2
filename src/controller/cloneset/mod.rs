//! CloneSet (`apps.kruise.io/v1alpha1`), the controller side (upstream
//! `pkg/controller/cloneset`; behaviour in `docs/upstream/cloneset.md`). Behind the
//! `CloneSetController` gate, off by default: kruise-manager's own CloneSet controller must not
//! run beside it.
//!
//! One pass of a CloneSet ([`reconcile`]), as upstream's: wait for what the last pass wrote to
//! show in the cache ([`decide::expect`]); list its pods and PVCs from the cache; clean up PVCs
//! (`disablePVCReuse`); release pods the selector no longer picks and adopt those that only name
//! it as an owner; find or make the update revision; then one scale step ([`decide::scale`])
//! or, when scaling has nothing to do, the update half (each pod's lifecycle refresh, then
//! [`decide::update::choose_updates`]); the status; `podsToDelete` and old revisions trimmed.
//!
//! Only pods and PVCs carrying `apps.kruise.io/cloneset-instance-id` are watched and cached
//! (what a CloneSet makes carries it): the controller keeps no copy of the cluster's other pods.
//! A pod update that cannot change a decision does not start a pass ([`PodRouter`],
//! [`decide::facts::decision_hash`]; the `CloneSetEventHandlerOptimization` gate turns that off,
//! for comparison).

pub mod act;
pub mod admission;
pub mod decide;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use crate::api::kruise::{
    CLONESET_INSTANCE_ID_LABEL, CloneSet, CloneSetStatus, LifecycleState, UPDATE_RECREATE,
};
use crate::controller::metrics::{ControllerMetrics, Reason};
use crate::controller::retries::Retries;
use decide::expect::{Cached, Expected, TIMEOUT};
use decide::facts::{self, Seen};
use decide::inplace::{self, GraceStep};
use decide::update::{self, HooksOn, Refreshed, UpdateHow};
use decide::{Limits, ScaleStep};

/// Errors of the CloneSet reconciler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// What upstream refuses to do, in its words.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

impl Reason for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => source.reason(),
            Error::Refused(_) => "refused",
        }
    }
}

/// Longest wait between two passes over a CloneSet.
const RESYNC: Duration = Duration::from_secs(300);

/// What a CloneSet's last writes wait for, and since when.
struct Pending {
    expected: Expected,
    since: Instant,
}

struct Ctx {
    client: kube::Client,
    metrics: ControllerMetrics,
    /// The CloneSets, to forget what a deleted one waited for.
    sets: Store<CloneSet>,
    pods: Store<Pod>,
    pvcs: Store<PersistentVolumeClaim>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// The CloneSet controlling a pod or claim, as a reconcile request.
fn owner_of(obj: &impl ResourceExt) -> Option<ObjectRef<CloneSet>> {
    let owner = facts::cloneset_owner(obj.owner_references())?;
    Some(ObjectRef::new(&owner.name).within(&obj.namespace()?))
}

/// Which CloneSets a pod watch event concerns: its controlling CloneSet (and the one before, if
/// it changed) when the pod came, went, or changed what a decision reads (with `optimize`;
/// without it, on every change). After a relist, the pods that did not come back count as gone.
#[derive(Default)]
pub struct PodRouter {
    optimize: bool,
    /// By pod uid: the decision hash and the owner last seen.
    seen: HashMap<String, (u64, Option<ObjectRef<CloneSet>>)>,
    /// Pods seen again during a relist.
    relisted: Option<HashSet<String>>,
}

impl PodRouter {
    pub fn new(optimize: bool) -> Self {
        PodRouter {
            optimize,
            ..Default::default()
        }
    }

    pub fn route(&mut self, event: watcher::Event<Pod>) -> Vec<ObjectRef<CloneSet>> {
        match event {
            watcher::Event::Init => {
                self.relisted = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                if let Some(r) = self.relisted.as_mut() {
                    r.insert(pod.uid().unwrap_or_default());
                }
                self.applied(&pod)
            }
            watcher::Event::Apply(pod) => self.applied(&pod),
            watcher::Event::InitDone => {
                let back = self.relisted.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .seen
                    .keys()
                    .filter(|uid| !back.contains(*uid))
                    .cloned()
                    .collect();
                gone.iter()
                    .filter_map(|uid| self.seen.remove(uid)?.1)
                    .collect()
            }
            watcher::Event::Delete(pod) => {
                self.seen.remove(&pod.uid().unwrap_or_default());
                owner_of(&pod).into_iter().collect()
            }
        }
    }

    fn applied(&mut self, pod: &Pod) -> Vec<ObjectRef<CloneSet>> {
        let (hash, owner) = (facts::decision_hash(pod), owner_of(pod));
        let before = self
            .seen
            .insert(pod.uid().unwrap_or_default(), (hash, owner.clone()));
        match before {
            Some((h, _)) if self.optimize && h == hash => Vec::new(),
            Some((_, Some(previous))) if Some(&previous) != owner.as_ref() => {
                owner.into_iter().chain([previous]).collect()
            }
            _ => owner.into_iter().collect(),
        }
    }
}

/// The CloneSets to reconcile from the watch of their pods, reflected into `writer` first.
fn pod_triggers(
    client: &kube::Client,
    writer: reflector::store::Writer<Pod>,
    optimize: bool,
) -> impl Stream<Item = ObjectRef<CloneSet>> + Send + 'static {
    let cfg = watcher::Config::default().labels(CLONESET_INSTANCE_ID_LABEL);
    let mut router = PodRouter::new(optimize);
    watcher(Api::<Pod>::all(client.clone()), cfg)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .flat_map(move |event| {
            let refs = event.map(|e| router.route(e)).unwrap_or_default();
            futures::stream::iter(refs)
        })
}

/// What no decision reads, dropped before a pod enters the cache (the bulk of a pod object):
/// its field managers and kubectl's last-applied copy.
fn trim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(notes) = pod.metadata.annotations.as_mut() {
        notes.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// kubectl's copy of the object it last applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Run the CloneSet controller until the task is dropped. `optimize`: the event-handler
/// optimization.
pub async fn run(client: kube::Client, metrics: ControllerMetrics, optimize: bool) {
    let (pods, pod_writer) = reflector::store();
    let (pvcs, pvc_writer) = reflector::store();
    let pvc_events = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default().labels(CLONESET_INSTANCE_ID_LABEL),
    )
    .default_backoff()
    .reflect(pvc_writer)
    .touched_objects();
    let ctrl = Controller::new(
        Api::<CloneSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_on(pod_triggers(&client, pod_writer, optimize))
    .watches_stream(pvc_events, |p| owner_of(&p));
    let ctx = Arc::new(Ctx {
        client,
        metrics: metrics.clone(),
        sets: ctrl.store(),
        pods,
        pvcs,
        pending: Mutex::new(HashMap::new()),
    });
    let retries = Retries::new("cloneset");
    info!(
        event_handler_optimization = optimize,
        "CloneSet controller started"
    );
    ctrl.run(
        retries.wrap(metrics.counted("cloneset", reconcile)),
        retries.error_policy(),
        ctx,
    )
    .for_each(|_| futures::future::ready(()))
    .await;
}

/// Whether the writes of this CloneSet's last pass are all in the cache; `Some(wait)` when not.
fn still_pending(ctx: &Ctx, key: &str, ns: &str) -> Option<Duration> {
    let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
    let entry = pending.get_mut(key)?;
    entry.expected.observe(|k| {
        let (kind, name) = k.split_once('/')?;
        let meta = match kind {
            "pod" => ctx
                .pods
                .get(&ObjectRef::new(name).within(ns))
                .map(|p| p.metadata.clone()),
            _ => ctx
                .pvcs
                .get(&ObjectRef::new(name).within(ns))
                .map(|p| p.metadata.clone()),
        }?;
        Some(Cached {
            uid: meta.uid.unwrap_or_default(),
            resource_version: meta.resource_version.unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        })
    });
    if entry.expected.is_empty() {
        pending.remove(key);
        return None;
    }
    let waited = entry.since.elapsed();
    if waited >= TIMEOUT {
        warn!(cloneset = %key, expected = ?entry.expected, "the cache never showed these writes; going on without them");
        pending.remove(key);
        ctx.metrics.expectations_timed_out();
        return None;
    }
    Some(TIMEOUT.saturating_sub(waited))
}

fn record(ctx: &Ctx, key: String, expected: Expected) {
    if expected.is_empty() {
        return;
    }
    let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
    // A CloneSet deleted while its writes were pending is never reconciled again.
    pending.retain(|k, _| {
        let (ns, name) = k.split_once('/').unwrap_or_default();
        ctx.sets.get(&ObjectRef::new(name).within(ns)).is_some()
    });
    pending.insert(
        key,
        Pending {
            expected,
            since: Instant::now(),
        },
    );
}

/// The spec's numbers for the decisions (upstream `calculateDiffsWithExpectation`'s inputs).
fn limits(cs: &CloneSet) -> Limits {
    let spec = &cs.spec;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let u = &spec.update_strategy;
    let max_surge = if u.paused {
        0
    } else {
        u.max_surge
            .as_ref()
            .and_then(|v| decide::scaled(v, replicas, true))
            .unwrap_or(0)
    };
    let max_unavailable = u
        .max_unavailable
        .as_ref()
        .and_then(|v| decide::scaled(v, replicas, max_surge == 0))
        .unwrap_or(0);
    Limits {
        replicas,
        partition: decide::partition_replicas(u.partition.as_ref(), replicas),
        max_surge,
        max_unavailable,
        scale_max_unavailable: spec
            .scale_strategy
            .max_unavailable
            .as_ref()
            .and_then(|v| decide::scaled(v, replicas, true))
            .unwrap_or(i32::MAX),
    }
}

/// The hooks as `pod` meets them.
fn hooks_on(cs: &CloneSet, pod: &Pod) -> HooksOn {
    let lifecycle = cs.spec.lifecycle.as_ref();
    let labels = pod.labels();
    let finalizers = pod.finalizers();
    let in_place = lifecycle.and_then(|l| l.in_place_update.as_ref());
    HooksOn {
        lifecycle: lifecycle.is_some(),
        pre_normal_all: lifecycle
            .and_then(|l| l.pre_normal.as_ref())
            .map(|h| h.all_on(labels, finalizers)),
        in_place_all: in_place.map(|h| h.all_on(labels, finalizers)),
        in_place_any: in_place.is_some_and(|h| h.any_on(labels, finalizers)),
    }
}

/// One pass over a CloneSet (module docs).
async fn reconcile(cs: Arc<CloneSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = (cs.namespace().unwrap_or_default(), cs.name_any());
    let key = format!("{ns}/{name}");
    if cs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut defaulted = (*cs).clone();
    decide::validate::apply_defaults(&mut defaulted.spec);
    let cs = defaulted;
    let Ok(selector) = Selector::try_from(cs.spec.selector.clone()) else {
        warn!(cloneset = %key, "selector does not parse; nothing done");
        return Ok(Action::await_change());
    };
    crate::cluster::store_ready(&ctx.pods).await;
    crate::cluster::store_ready(&ctx.pvcs).await;
    if let Some(wait) = still_pending(&ctx, &key, &ns) {
        return Ok(Action::requeue(wait));
    }
    let uid = cs.uid().unwrap_or_default();
    let owned = |o: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
        o.iter().any(|o| o.uid == uid)
    };
    let (mut active, inactive): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(&ns) && owned(p.owner_references()))
        .partition(|p| facts::is_active(p));
    let mut pvcs: Vec<Arc<PersistentVolumeClaim>> = ctx
        .pvcs
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(&ns) && owned(p.owner_references()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut expected = Expected::default();
    let id_of = |p: &Pod| p.labels().get(CLONESET_INSTANCE_ID_LABEL).cloned();

    if cs.spec.scale_strategy.disable_pvc_reuse {
        let active_ids: BTreeSet<String> = active.iter().filter_map(|p| id_of(p)).collect();
        let inactive_by_id: BTreeMap<String, String> = inactive
            .iter()
            .filter_map(|p| Some((id_of(p)?, p.name_any())))
            .collect();
        let listed: Vec<(String, String)> = pvcs
            .iter()
            .filter_map(|p| {
                Some((
                    p.name_any(),
                    p.labels().get(CLONESET_INSTANCE_ID_LABEL)?.clone(),
                ))
            })
            .collect();
        let plan = decide::pvc_cleanup(&listed, &active_ids, &inactive_by_id);
        for (pvc, pod) in &plan.hand_over {
            let (Some(claim), Some(pod)) = (
                pvcs.iter().find(|c| &c.name_any() == pvc),
                inactive.iter().find(|p| &p.name_any() == pod),
            ) else {
                continue;
            };
            act::hand_over_pvc(&ctx.client, &cs, claim, pod).await?;
        }
        for pvc in &plan.delete {
            if let Some(claim) = pvcs.iter().find(|c| &c.name_any() == pvc) {
                act::delete_pvc(
                    &ctx.client,
                    &cs,
                    claim,
                    &mut expected,
                    "failed to clean up PVC",
                )
                .await?;
            }
        }
        pvcs.retain(|p| {
            p.labels()
                .get(CLONESET_INSTANCE_ID_LABEL)
                .is_some_and(|id| active_ids.contains(id))
        });
    }

    claim(&ctx, &cs, &mut active, &mut expected).await?;

    let revisions = act::list_revisions(&ctx.client, &cs, &selector).await?;
    let (update_rev, collision) = act::update_revision(&ctx.client, &cs, &revisions).await?;
    let update_name = update_rev.name_any();
    let recorded_current = cs
        .status
        .as_ref()
        .map(|s| s.current_revision.clone())
        .unwrap_or_default();
    let current_rev = revisions
        .iter()
        .find(|r| r.name_any() == recorded_current)
        .cloned()
        .unwrap_or_else(|| update_rev.clone());
    let current_name = current_rev.name_any();

    let pods_to_delete: BTreeSet<String> = cs
        .spec
        .scale_strategy
        .pods_to_delete
        .iter()
        .cloned()
        .collect();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let seen = Seen {
        update_revision: &update_name,
        pods_to_delete: &pods_to_delete,
        min_ready_seconds: cs.spec.min_ready_seconds,
        now,
    };
    let pod_facts: Vec<decide::PodFacts> =
        active.iter().map(|p| facts::pod_facts(p, &seen)).collect();
    let limits = limits(&cs);

    let pass = Pass {
        ctx: &ctx,
        cs: &cs,
        active: &active,
        pvcs: &pvcs,
        facts: &pod_facts,
        limits,
        current: &current_rev,
        update: &update_rev,
        revisions: &revisions,
    };
    let synced = sync(pass, &mut expected).await;

    let mut status = decide::status_counts(
        &pod_facts,
        limits.replicas,
        limits.partition,
        &update_name,
        &current_name,
    );
    status.observed_generation = cs.metadata.generation.unwrap_or_default();
    status.label_selector = decide::selector_string(&cs.spec.selector);
    status.collision_count = (collision > 0).then_some(collision);
    status.conditions = cs
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Err((kind, e)) = &synced {
        decide::status::set_failure(
            &mut status.conditions,
            kind,
            &e.to_string(),
            &act::now_rfc3339(),
        );
    }
    let deadline = decide::status::set_progressing(
        &mut status,
        decide::status::ProgressSpec {
            deadline_seconds: cs.spec.progress_deadline_seconds,
            paused: cs.spec.update_strategy.paused,
            replicas: limits.replicas,
        },
        now,
    );
    if decide::status::differs(cs.status.as_ref(), &status) {
        act::write_status(&ctx.client, &cs, &status).await?;
    }
    let active_names: BTreeSet<String> = active.iter().map(|p| p.name_any()).collect();
    act::truncate_pods_to_delete(&ctx.client, &cs, &active_names).await;
    let live: BTreeSet<String> = active
        .iter()
        .filter_map(|p| {
            p.labels()
                .get(crate::api::kruise::CONTROLLER_REVISION_HASH_LABEL)
                .cloned()
        })
        .chain([update_name.clone(), status.current_revision.clone()])
        .collect();
    let history: Vec<(String, i64)> = revisions
        .iter()
        .map(|r| (r.name_any(), r.revision.unwrap_or(0)))
        .collect();
    let limit = cs.spec.revision_history_limit.unwrap_or(10);
    act::delete_revisions(
        &ctx.client,
        &cs,
        &decide::status::old_revisions(&history, &live, limit),
    )
    .await;
    record(&ctx, key, expected);
    let grace = synced.map_err(|(_, e)| e)?;
    Ok(requeue(&cs, &status, [deadline, grace]))
}

/// When to look again without a change: when a ready pod becomes available (minReadySeconds),
/// at `also` (the progress deadline, an in-place grace period's end), else at the resync.
fn requeue(cs: &CloneSet, status: &CloneSetStatus, also: [Option<Duration>; 2]) -> Action {
    let min_ready = cs.spec.min_ready_seconds;
    let available = (min_ready > 0 && status.available_replicas != status.ready_replicas)
        .then(|| crate::api::clamp::seconds(i64::from(min_ready)));
    let soonest = also
        .into_iter()
        .chain([available])
        .flatten()
        .fold(RESYNC, Duration::min);
    Action::requeue(soonest)
}

/// Release the pods the selector no longer picks; adopt those only naming the CloneSet as an
/// owner (upstream `ClaimOwnedObjects`). `active` keeps the claimed ones.
async fn claim(
    ctx: &Ctx,
    cs: &CloneSet,
    active: &mut Vec<Arc<Pod>>,
    expected: &mut Expected,
) -> Result<(), Error> {
    let uid = cs.uid().unwrap_or_default();
    let mut kept = Vec::with_capacity(active.len());
    for pod in active.drain(..) {
        let controller = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true));
        let matches = decide::selector_matches(&cs.spec.selector, pod.labels());
        match controller {
            Some(c) if c.uid != uid => {}
            Some(_) if matches => kept.push(pod),
            Some(_) => {
                let owners = pod
                    .owner_references()
                    .iter()
                    .filter(|o| o.uid != uid)
                    .cloned()
                    .collect();
                act::set_owners(&ctx.client, &pod, owners, expected).await?;
                info!(cloneset = %cs.name_any(), namespace = %cs.namespace().unwrap_or_default(), pod_name = %pod.name_any(), "pod released: the selector no longer picks it");
            }
            None if matches => {
                let owners = pod
                    .owner_references()
                    .iter()
                    .map(|o| {
                        let mut o = o.clone();
                        if o.uid == uid {
                            o.controller = Some(true);
                            o.block_owner_deletion = Some(true);
                        }
                        o
                    })
                    .collect();
                act::set_owners(&ctx.client, &pod, owners, expected).await?;
                info!(cloneset = %cs.name_any(), namespace = %cs.namespace().unwrap_or_default(), pod_name = %pod.name_any(), "pod adopted");
                kept.push(pod);
            }
            None => {}
        }
    }
    *active = kept;
    Ok(())
}

/// What one pass read: the CloneSet (defaulted), its active pods and claims, their facts, the
/// spec's numbers and the revisions.
#[derive(Clone, Copy)]
struct Pass<'a> {
    ctx: &'a Ctx,
    cs: &'a CloneSet,
    active: &'a [Arc<Pod>],
    pvcs: &'a [Arc<PersistentVolumeClaim>],
    facts: &'a [decide::PodFacts],
    limits: Limits,
    current: &'a ControllerRevision,
    update: &'a ControllerRevision,
    revisions: &'a [ControllerRevision],
}

/// Scale, or when scaling has nothing to do, update (upstream `syncCloneSet`); when to look
/// again for an in-place grace period. An error names the condition it sets: `FailedScale` or
/// `FailedUpdate`.
async fn sync(
    pass: Pass<'_>,
    expected: &mut Expected,
) -> Result<Option<Duration>, (&'static str, Error)> {
    let scaled = scale(pass, expected)
        .await
        .map_err(|e| ("FailedScale", e))?;
    if scaled {
        return Ok(None);
    }
    update_pods(pass, expected)
        .await
        .map_err(|e| ("FailedUpdate", e))
}

/// One scale step; whether it acted.
async fn scale(pass: Pass<'_>, expected: &mut Expected) -> Result<bool, Error> {
    let Pass {
        ctx,
        cs,
        active,
        pvcs,
        facts: pod_facts,
        limits,
        current: current_rev,
        update: update_rev,
        ..
    } = pass;
    let lifecycle = cs.spec.lifecycle.as_ref();
    let marks_not_ready = lifecycle.is_some_and(|l| l.marks_pod_not_ready());
    let by_name = |n: &str| active.iter().find(|p| p.name_any() == n);
    match decide::scale(pod_facts, limits, marks_not_ready) {
        ScaleStep::Nothing => Ok(false),
        ScaleStep::CancelDelete(names) => {
            for pod in names.iter().filter_map(|n| by_name(n)) {
                act::set_state(
                    &ctx.client,
                    cs,
                    pod,
                    LifecycleState::PreparingNormal,
                    expected,
                )
                .await?;
            }
            Ok(true)
        }
        ScaleStep::Create {
            current,
            updated,
            limited,
        } => {
            if let Some(limit) = limited {
                act::scale_up_limited(&ctx.client, cs, limit).await;
            }
            let n = usize::try_from(current.saturating_add(updated).max(0)).unwrap_or(0);
            if n == 0 {
                return Ok(false);
            }
            let pvc_ids: BTreeSet<String> = act::claims_by_id(pvcs).into_keys().collect();
            let pod_ids: BTreeSet<String> =
                pod_facts.iter().map(|p| p.instance_id.clone()).collect();
            let ids = decide::instance_ids(n, &pvc_ids, &pod_ids, random_id);
            let templates = [
                (current_rev, act::revision_template(current_rev)),
                (update_rev, act::revision_template(update_rev)),
            ];
            let now = act::now_rfc3339();
            let from_current = usize::try_from(current.max(0)).unwrap_or(0);
            let new_pods: Vec<act::NewPod> = ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| {
                    let (rev, template) = &templates[usize::from(i >= from_current)];
                    let template = template.as_ref()?;
                    Some(act::NewPod {
                        pod: decide::new_pod(cs, &rev.name_any(), template, id, &now),
                        pvcs: decide::new_pvcs(cs, id),
                    })
                })
                .collect();
            let existing: BTreeSet<String> = pvcs.iter().map(|p| p.name_any()).collect();
            let (created, failed) =
                act::create_pods(&ctx.client, cs, new_pods, &existing, expected).await;
            match failed {
                Some(e) => Err(e),
                None => Ok(created > 0),
            }
        }
        ScaleStep::Delete(names) => {
            let claims = act::claims_by_id(pvcs);
            let pre_delete = lifecycle.and_then(|l| l.pre_delete.as_ref());
            let mut acted = false;
            for pod in names.iter().filter_map(|n| by_name(n)) {
                if pre_delete.is_some_and(|h| h.any_on(pod.labels(), pod.finalizers())) {
                    act::set_state(
                        &ctx.client,
                        cs,
                        pod,
                        LifecycleState::PreparingDelete,
                        expected,
                    )
                    .await?;
                    continue;
                }
                let id = pod.labels().get(CLONESET_INSTANCE_ID_LABEL);
                let mine: Vec<&PersistentVolumeClaim> = id
                    .and_then(|id| claims.get(id))
                    .cloned()
                    .unwrap_or_default();
                act::delete_pod(&ctx.client, cs, pod, &mine, expected).await?;
                acted = true;
            }
            Ok(acted)
        }
    }
}

/// A fresh instance id.
fn random_id() -> String {
    let alphabet = decide::INSTANCE_ID_ALPHABET;
    (0..decide::INSTANCE_ID_LEN)
        .map(|_| {
            let i = rand::random::<u32>() as usize % alphabet.len();
            char::from(alphabet[i])
        })
        .collect()
}

/// The update half (upstream `Update`): refresh every pod (an in-place grace period ended, its
/// lifecycle state, its readiness-gate conditions); if none changed and not paused, update the
/// chosen pods. When to look again for a grace period.
async fn update_pods(pass: Pass<'_>, expected: &mut Expected) -> Result<Option<Duration>, Error> {
    let Pass {
        ctx,
        cs,
        active,
        facts: pod_facts,
        limits,
        update: update_rev,
        revisions,
        ..
    } = pass;
    let mut refreshed = false;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    // The same second as text: an updateTimestamp a second ahead of `now` would cost a pass.
    let now_text = k8s_openapi::jiff::Timestamp::from_second(now)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let grace = cs
        .spec
        .update_strategy
        .in_place_update_strategy
        .as_ref()
        .map_or(0, |s| s.grace_period_seconds.max(0));
    let mut wait: Option<Duration> = None;
    let mut wait_for = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
    for (pod, f) in active.iter().zip(pod_facts) {
        match inplace::grace_step(pod, now, &now_text) {
            Some(GraceStep::Wait(left)) => wait_for(left),
            Some(GraceStep::Drop(patch)) => {
                act::finish_grace(&ctx.client, cs, pod, patch, false, expected).await?;
                refreshed = true;
                continue;
            }
            Some(GraceStep::Apply(patch)) => {
                act::finish_grace(&ctx.client, cs, pod, patch, true, expected).await?;
                refreshed = true;
                continue;
            }
            Some(GraceStep::Unreadable(why)) => return Err(Error::Refused(why)),
            None => {}
        }
        let done = inplace::in_place_done(pod);
        let view = Refreshed {
            state: f.state,
            scheduled: f.rank.scheduled,
            updated: f.updated,
            in_place_done: done,
        };
        if let Some(state) = update::next_state(view, hooks_on(cs, pod)) {
            act::set_state(&ctx.client, cs, pod, state, expected).await?;
            refreshed = true;
        }
        if done && !facts::update_ready_true(pod) && facts::has_update_ready_gate(pod) {
            act::mark_update_ready(&ctx.client, pod).await?;
        }
        act::start_pod_readiness(&ctx.client, pod).await?;
    }
    if refreshed || cs.spec.update_strategy.paused {
        return Ok(wait);
    }
    let d = decide::diffs(pod_facts, limits);
    let target = update_rev.name_any();
    let strategy = cs.spec.update_strategy.type_.as_str();
    let has_hook = cs
        .spec
        .lifecycle
        .as_ref()
        .is_some_and(|l| l.in_place_update.is_some());
    let target_template = act::revision_template(update_rev);
    let hook = cs
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l.in_place_update.as_ref());
    for name in update::choose_updates(pod_facts, &d, &cs.spec.update_strategy) {
        let Some(pod) = active.iter().find(|p| p.name_any() == name) else {
            continue;
        };
        let templates = revisions
            .iter()
            .find(|r| facts::at_revision(pod, &r.name_any()))
            .and_then(act::revision_template)
            .zip(target_template.as_ref());
        let change = templates
            .as_ref()
            .and_then(|(old, new)| decide::in_place_change(old, new))
            .filter(|_| strategy != UPDATE_RECREATE);
        let how = update::update_how(
            strategy,
            &name,
            facts::state(pod),
            change,
            hooks_on(cs, pod),
            has_hook,
        );
        match how {
            UpdateHow::Recreate => {
                act::mark_recreate(&ctx.client, cs, pod, &target, expected).await?;
            }
            UpdateHow::Wait => {}
            UpdateHow::Refuse(msg) => return Err(Error::Refused(msg)),
            UpdateHow::PrepareUpdate => {
                act::set_state(
                    &ctx.client,
                    cs,
                    pod,
                    LifecycleState::PreparingUpdate,
                    expected,
                )
                .await?;
            }
            UpdateHow::RehookUpdate => {
                if let Some(hook) = hook {
                    act::rehook(&ctx.client, cs, pod, hook, expected).await?;
                }
            }
            UpdateHow::InPlace(change) => {
                let Some((old, new)) = &templates else {
                    continue;
                };
                let metadata = inplace::metadata_patch(old, new);
                let patch =
                    inplace::update_patch(pod, &target, &change, &metadata, &now_text, grace);
                act::update_in_place(&ctx.client, cs, pod, &target, &patch, expected).await?;
                if grace > 0 {
                    wait_for(crate::api::clamp::seconds(i64::from(grace)));
                }
            }
        }
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, owner: &str, rv: &str, ready: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "resourceVersion": rv,
                "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                    "name": owner, "uid": format!("cs-{owner}"), "controller": true}]},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    fn names(refs: Vec<ObjectRef<CloneSet>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn pod_events_reach_their_cloneset_only_when_they_matter() {
        use watcher::Event::*;
        for optimize in [true, false] {
            let mut r = PodRouter::new(optimize);
            assert_eq!(
                names(r.route(Apply(pod("a", "web", "1", "False")))),
                ["web"]
            );
            // A new resourceVersion only (status churn a decision does not read).
            let churn = names(r.route(Apply(pod("a", "web", "2", "False"))));
            assert_eq!(churn.is_empty(), optimize, "optimize={optimize}");
            assert_eq!(names(r.route(Apply(pod("a", "web", "3", "True")))), ["web"]);
            // Another controller: both hear of it.
            let moved = names(r.route(Apply(pod("a", "api", "4", "True"))));
            assert_eq!(moved, ["api", "web"]);
            assert_eq!(
                names(r.route(Delete(pod("a", "api", "4", "True")))),
                ["api"]
            );
            // A relist without a pod seen before: gone.
            r.route(Apply(pod("b", "web", "5", "True")));
            r.route(Init);
            assert!(names(r.route(InitApply(pod("c", "db", "6", "True")))) == ["db"]);
            assert_eq!(names(r.route(InitDone)), ["web"]);
        }
    }
}
