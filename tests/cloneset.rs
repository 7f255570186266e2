//! The CloneSet controller on the real single-node cluster (`scripts/cluster.sh`), deployed from
//! `packaging/kubernetes` with its `components/cloneset` (the gate and the RBAC): CloneSets
//! written as for kruise-manager, scaled with claims, through `podsToDelete` and the scale
//! subresource, updated by ReCreate (under a partition and maxUnavailable, and with maxSurge)
//! and in place, and held by lifecycle hooks (new, leaving and updated pods). Claims bind to
//! hostPath PersistentVolumes each test makes (the cluster has no provisioner). Each test works
//! in a namespace of its own.

use nodeward_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use nodeward::api::kruise::{
    CLONESET_INSTANCE_ID_LABEL, CONTROLLER_REVISION_HASH_LABEL, CloneSet, LIFECYCLE_STATE_LABEL,
    POD_CONDITION_INPLACE_UPDATE_READY, POD_TEMPLATE_HASH_LABEL,
};
use nodeward::controller::cloneset::decide::facts::ANNOTATION_INPLACE_UPDATE_GRACE;
use serde_json::{Value, json};
use support::cluster::events_for;
use support::k8s::{RealCluster, teardown, with_namespace};
use support::wait;
use tokio::task::JoinHandle;

/// A CloneSet of busybox pods labelled `app=<name>`, as a user writes one for kruise-manager.
fn cloneset(cluster: &RealCluster, name: &str, replicas: i32, extra: Value) -> CloneSet {
    let mut object = json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "CloneSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [main_container(&cluster.image("busybox:1"), "1")],
                },
            },
        },
    });
    merge(&mut object["spec"], extra);
    serde_json::from_value(object).unwrap()
}

/// The pods' one container, `main`: `image` with `VERSION=<version>` in its env.
fn main_container(image: &str, version: &str) -> Value {
    json!({
        "name": "main",
        "image": image,
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"],
        "env": [{"name": "VERSION", "value": version}],
    })
}

/// JSON merge of `extra` into `base`.
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A claim template `data` and a `/data` mount for the template.
fn with_claims(ns: &str) -> Value {
    json!({
        "volumeClaimTemplates": [{
            "metadata": {"name": "data"},
            "spec": {
                "storageClassName": ns,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        }],
    })
}

/// `n` hostPath PersistentVolumes of storage class `ns` (a static class, no provisioner).
async fn volumes(cluster: &RealCluster, client: &Client, ns: &str, n: usize) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for i in 0..n {
        let name = format!("{ns}-{i}");
        pvs.delete(&name, &DeleteParams::default()).await.ok();
        wait::until(&format!("old PV {name} gone"), 60, || {
            let pvs = pvs.clone();
            let name = name.clone();
            async move { pvs.get_opt(&name).await.unwrap().is_none().then_some(()) }
        })
        .await;
        let path = cluster.dir.join("volumes").join(&name);
        let pv = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "storageClassName": ns,
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": path, "type": "DirectoryOrCreate"},
            },
        }))
        .unwrap();
        pvs.create(&PostParams::default(), &pv).await.unwrap();
    }
}

async fn remove_volumes(client: &Client, ns: &str, n: usize) {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for i in 0..n {
        pvs.delete(&format!("{ns}-{i}"), &DeleteParams::default())
            .await
            .ok();
    }
}

/// Merge-patch the pod `name` with `patch`.
async fn patch_pod(pods: &Api<Pod>, name: &str, patch: Value) {
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The CloneSet's pods that are not being deleted, by name.
async fn live_pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut live: Vec<Pod> = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by_key(|p| p.name_any());
    live
}

/// Watch the CloneSet `app`'s pods: `seen` gets the live ones (not being deleted) as the listing
/// has them, then after each change to them, until the returned task is aborted. Returns once
/// the listing is in, so that no later change is missed.
async fn watch_pods(
    client: &Client,
    ns: &str,
    app: &str,
    mut seen: impl FnMut(&[Pod]) + Send + 'static,
) -> JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().labels(&format!("app={app}"));
    let (store, writer) = reflector::store();
    let mut events = reflector(writer, watcher(pods, config))
        .default_backoff()
        .boxed();
    let reader = store.clone();
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            // The reflector applies each event to the store before passing it on; a (re)listing
            // replaces the store's contents only at its end (InitDone).
            if let Ok(
                watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
            ) = event
            {
                let live: Vec<Pod> = reader
                    .state()
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| Pod::clone(p))
                    .collect();
                seen(&live);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), store.wait_until_ready())
        .await
        .expect("timed out listing the pods to watch")
        .unwrap();
    task
}

/// Available as upstream counts a pod with `minReadySeconds: 0`: lifecycle state none or
/// Normal, and Ready (which the `InPlaceUpdateReady` readiness gate holds back).
fn available(pod: &Pod) -> bool {
    matches!(label(pod, LIFECYCLE_STATE_LABEL), "" | "Normal") && condition_true(pod, "Ready")
}

/// The image of the pod's container `main` in its spec.
fn image_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers[0].image.as_deref())
        .unwrap_or_default()
}

fn label<'a>(obj: &'a impl ResourceExt, key: &str) -> &'a str {
    obj.labels()
        .get(key)
        .map(String::as_str)
        .unwrap_or_default()
}

fn condition_true(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Wait until the CloneSet's status has observed its generation and `done` holds for it.
async fn until_status(
    api: &Api<CloneSet>,
    name: &str,
    what: &str,
    done: impl Fn(&CloneSet) -> bool,
) -> CloneSet {
    wait::until(what, 180, || async {
        let cs = api.get(name).await.ok()?;
        let status = cs.status.as_ref()?;
        let observed = Some(status.observed_generation) == cs.metadata.generation;
        (observed && done(&cs)).then_some(cs)
    })
    .await
}

/// The `Progressing` condition's status and reason.
fn progressing(cs: &CloneSet) -> Option<(&str, &str)> {
    let status = cs.status.as_ref()?;
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")?;
    Some((c.status.as_str(), c.reason.as_str()))
}

/// Wait until the CloneSet's status has observed its generation and counts `want` pods as
/// `(replicas, ready, available, updated)`.
async fn until_counts(api: &Api<CloneSet>, name: &str, want: (i32, i32, i32, i32)) -> CloneSet {
    let what = format!("CloneSet {name}'s (replicas, ready, available, updated) to be {want:?}");
    until_status(api, name, &what, |cs| counts(cs) == want).await
}

/// The status's `(replicas, ready, available, updated)`.
fn counts(cs: &CloneSet) -> (i32, i32, i32, i32) {
    let s = cs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas,
        s.available_replicas,
        s.updated_replicas,
    )
}

async fn claims(client: &Client, ns: &str) -> Vec<PersistentVolumeClaim> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .map(|p| label(p, CLONESET_INSTANCE_ID_LABEL).to_string())
        .collect()
}

/// Scale up with a claim per instance; down through the scale subresource (`kubectl scale`, as
/// HPA does); `podsToDelete`; a pod deleted by hand comes back with its claim (reuse), or, with
/// `disablePVCReuse`, with a new one while the old claim goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_with_claims_pods_to_delete_and_the_scale_subresource() {
    let ns = "cs-scale";
    let (cluster, client) = with_namespace(ns).await;
    volumes(cluster, &client, ns, 6).await;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), ns);
    let mut cs = cloneset(cluster, "web", 2, with_claims(ns));
    let template = &mut cs.spec.template.spec.as_mut().unwrap().containers[0];
    template.volume_mounts = Some(vec![
        serde_json::from_value(json!({"name": "data", "mountPath": "/data"})).unwrap(),
    ]);
    let cs = api.create(&PostParams::default(), &cs).await.unwrap();
    // The mutating webhook's defaults, as upstream's.
    let strategy = &cs.spec.update_strategy;
    assert_eq!(strategy.type_, "ReCreate");
    assert_eq!(
        strategy.max_unavailable,
        Some(IntOrString::String("20%".into()))
    );
    assert_eq!(cs.spec.revision_history_limit, Some(10));
    // The validating webhook's refusal, in upstream's words.
    let mut wrong = cloneset(cluster, "wrong", 1, json!({}));
    wrong.spec.selector = serde_json::from_value(json!({"matchLabels": {"app": "other"}})).unwrap();
    let refused = api
        .create(&PostParams::default(), &wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("`selector` does not match template `labels`"),
        "{refused}"
    );
    let ready = until_counts(&api, "web", (2, 2, 2, 2)).await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.label_selector, "app=web");
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.expected_updated_replicas, 2);
    let pods = live_pods(&client, ns, "web").await;
    assert_eq!(pods.len(), 2);
    let hash = status
        .update_revision
        .rsplit('-')
        .next()
        .unwrap()
        .to_string();
    for pod in &pods {
        let id = label(pod, CLONESET_INSTANCE_ID_LABEL);
        assert_eq!(pod.name_any(), format!("web-{id}"));
        assert_eq!(
            label(pod, CONTROLLER_REVISION_HASH_LABEL),
            status.update_revision
        );
        assert_eq!(label(pod, POD_TEMPLATE_HASH_LABEL), hash);
        assert_eq!(label(pod, LIFECYCLE_STATE_LABEL), "Normal");
        assert!(condition_true(pod, POD_CONDITION_INPLACE_UPDATE_READY));
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("CloneSet", Some(true))
        );
        let claim = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, format!("data-web-{id}"));
    }
    let pvcs = claims(&client, ns).await;
    assert_eq!(pvcs.len(), 2);
    for pvc in &pvcs {
        assert_eq!(label(pvc, "app"), "web");
        assert!(!label(pvc, CLONESET_INSTANCE_ID_LABEL).is_empty());
        assert_eq!(
            pvc.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Bound")
        );
    }
    let created = events_for(&client, ns, &cs.uid().unwrap(), "SuccessfulCreate").await;
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(created.iter().all(|e| {
        e.message
            .as_deref()
            .unwrap()
            .starts_with("succeed to create pod web-")
    }));
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let revs = revisions.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0].name_any(), status.update_revision);

    // The scale subresource, as `kubectl scale` and HPA use it.
    let scale = cluster
        .kubectl(&[
            "-n",
            ns,
            "get",
            "clonesets.apps.kruise.io/web",
            "--subresource=scale",
            "-o",
            "json",
        ])
        .unwrap();
    let scale: Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(scale["status"]["replicas"], 2);
    cluster
        .kubectl(&[
            "-n",
            ns,
            "scale",
            "clonesets.apps.kruise.io/web",
            "--replicas=1",
        ])
        .unwrap();
    until_counts(&api, "web", (1, 1, 1, 1)).await;
    wait::until("the deleted pod's claim deleted with it", 60, || async {
        (claims(&client, ns).await.len() == 1).then_some(())
    })
    .await;
    let deleted = events_for(&client, ns, &cs.uid().unwrap(), "SuccessfulDelete").await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");

    // podsToDelete: a name that is no pod of this CloneSet is refused at admission.
    let patch = json!({"spec": {"scaleStrategy": {"podsToDelete": ["no-such-pod"]}}});
    let refused = api
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("a missing pod in podsToDelete is refused");
    assert!(
        refused.to_string().contains("find pod no-such-pod failed"),
        "{refused}"
    );
    // podsToDelete: the named pod goes, another takes its place, the list is emptied.
    let kept = live_pods(&client, ns, "web").await;
    let victim = kept[0].name_any();
    let patch = json!({"spec": {"scaleStrategy": {"podsToDelete": [victim]}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let replaced = wait::until("the named pod replaced", 120, || async {
        let pods = live_pods(&client, ns, "web").await;
        let ready =
            pods.len() == 1 && pods[0].name_any() != victim && condition_true(&pods[0], "Ready");
        ready.then_some(pods)
    })
    .await;
    wait::until("podsToDelete emptied", 60, || async {
        let cs = api.get("web").await.ok()?;
        cs.spec
            .scale_strategy
            .pods_to_delete
            .is_empty()
            .then_some(())
    })
    .await;

    // A pod deleted by hand: its claim stays and the new pod reuses its instance id.
    let before = ids(&replaced);
    let reused = delete_by_hand(
        &client,
        ns,
        &replaced[0],
        "the instance back with its claim",
    )
    .await;
    assert_eq!(ids(&reused), before, "PVC reuse keeps the instance id");

    // disablePVCReuse: the next pod deleted by hand loses its claim and gets a new id.
    let patch = json!({"spec": {"scaleStrategy": {"disablePVCReuse": true}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let fresh = delete_by_hand(&client, ns, &reused[0], "a new instance with a new claim").await;
    assert_ne!(ids(&fresh), before, "no reuse with disablePVCReuse");
    wait::until("only the new instance's claim left", 60, || async {
        let names: Vec<String> = claims(&client, ns)
            .await
            .iter()
            .map(|c| c.name_any())
            .collect();
        let id = ids(&fresh).into_iter().next()?;
        (names == [format!("data-web-{id}")]).then_some(())
    })
    .await;
    teardown(&client, ns).await;
    remove_volumes(&client, ns, 6).await;
}

/// Delete the single pod of `web` by hand; the live pods once another one is Ready in its place.
async fn delete_by_hand(client: &Client, ns: &str, pod: &Pod, what: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.delete(&pod.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait::until(what, 120, || async {
        let now = live_pods(client, ns, "web").await;
        let back = now.len() == 1 && now[0].uid() != pod.uid() && condition_true(&now[0], "Ready");
        back.then_some(now)
    })
    .await
}

/// A ReCreate update under `partition: 1` and `maxUnavailable: 1`: two of three pods replaced
/// at the new revision, never more than one unavailable; partition 0 finishes the rollout and
/// the new revision becomes current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_update_with_partition_and_max_unavailable() {
    let ns = "cs-recreate";
    let (cluster, client) = with_namespace(ns).await;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), ns);
    let strategy = json!({
        "updateStrategy": {"type": "ReCreate", "partition": 1, "maxUnavailable": 1},
        "progressDeadlineSeconds": 600,
    });
    let cs = api
        .create(
            &PostParams::default(),
            &cloneset(cluster, "app", 3, strategy),
        )
        .await
        .unwrap();
    let first = until_counts(&api, "app", (3, 3, 3, 3)).await;
    let old_revision = first.status.unwrap().update_revision;
    let old_pods: BTreeSet<String> = live_pods(&client, ns, "app")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    // An env change cannot be made in place: each pod is recreated.
    let container = main_container(&cluster.image("busybox:1"), "2");
    let patch = json!({"spec": {"template": {"spec": {"containers": [container]}}}});
    api.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let least_available = AtomicI32::new(i32::MAX);
    wait::until("two pods at the new revision", 240, || {
        let (api, least) = (api.clone(), &least_available);
        async move {
            let cs = api.get("app").await.ok()?;
            let status = cs.status.clone()?;
            least.fetch_min(status.available_replicas, Ordering::Relaxed);
            let done = Some(status.observed_generation) == cs.metadata.generation
                && status.updated_replicas == 2
                && status.updated_ready_replicas == 2
                && status.available_replicas == 3
                && status.replicas == 3;
            done.then_some(())
        }
    })
    .await;
    let least = least_available.into_inner();
    assert!(least >= 2, "more than one pod unavailable: {least}");
    let partitioned = until_status(&api, "app", "progress paused at the partition", |cs| {
        progressing(cs) == Some(("True", "ProgressPartitionAvailable"))
    })
    .await;
    let status = partitioned.status.unwrap();
    assert_ne!(status.update_revision, old_revision);
    assert_eq!(
        status.current_revision, old_revision,
        "the partition holds one old pod"
    );
    assert_eq!(status.expected_updated_replicas, 2);
    let pods = live_pods(&client, ns, "app").await;
    let at_old: Vec<&Pod> = pods
        .iter()
        .filter(|p| label(*p, CONTROLLER_REVISION_HASH_LABEL) == old_revision)
        .collect();
    assert_eq!(at_old.len(), 1);
    assert!(old_pods.contains(&at_old[0].name_any()));
    let recreated = events_for(
        &client,
        ns,
        &cs.uid().unwrap(),
        "SuccessfulUpdatePodReCreate",
    )
    .await;
    assert!(!recreated.is_empty());

    let patch = json!({"spec": {"updateStrategy": {"partition": 0}}});
    api.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let done = until_status(&api, "app", "all pods at the new revision", |cs| {
        let s = cs.status.clone().unwrap_or_default();
        counts(cs) == (3, 3, 3, 3) && s.current_revision == s.update_revision
    })
    .await;
    until_status(&api, "app", "the CloneSet available", |cs| {
        progressing(cs) == Some(("True", "CloneSetAvailable"))
    })
    .await;
    let pods = live_pods(&client, ns, "app").await;
    assert!(pods.iter().all(|p| !old_pods.contains(&p.name_any())));
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let revs = revisions.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(revs.len(), 2);
    assert!(
        revs.iter()
            .any(|r| r.name_any() == done.status.as_ref().unwrap().update_revision)
    );
    teardown(&client, ns).await;
}

/// ReCreate with `maxSurge: 1` and `maxUnavailable: 0`: a template change rolls the three pods
/// through a fourth one; at no moment are more than four pods live (replicas + maxSurge) or fewer
/// than three available (replicas − maxUnavailable), and the rollout ends with three new pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_surge_rolls_recreate_above_replicas() {
    let ns = "cs-surge";
    let (cluster, client) = with_namespace(ns).await;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), ns);
    let strategy =
        json!({"updateStrategy": {"type": "ReCreate", "maxSurge": 1, "maxUnavailable": 0}});
    api.create(
        &PostParams::default(),
        &cloneset(cluster, "surge", 3, strategy),
    )
    .await
    .unwrap();
    let first = until_counts(&api, "surge", (3, 3, 3, 3)).await;
    let old_revision = first.status.unwrap().update_revision;
    let old_pods: BTreeSet<String> = live_pods(&client, ns, "surge")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    // (live, available) pods after each change to them, repeats left out.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watch = watch_pods(&client, ns, "surge", {
        let seen = Arc::clone(&seen);
        move |pods| {
            let now = (pods.len(), pods.iter().filter(|p| available(p)).count());
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
    })
    .await;
    let container = main_container(&cluster.image("busybox:1"), "2");
    let patch = json!({"spec": {"template": {"spec": {"containers": [container]}}}});
    api.patch("surge", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let done = until_status(&api, "surge", "the rollout done", |cs| {
        let s = cs.status.clone().unwrap_or_default();
        counts(cs) == (3, 3, 3, 3)
            && s.updated_ready_replicas == 3
            && s.current_revision == s.update_revision
    })
    .await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let most_live = seen.iter().map(|&(live, _)| live).max();
    let fewest_available = seen.iter().map(|&(_, available)| available).min();
    assert_eq!(
        (most_live, fewest_available),
        (Some(4), Some(3)),
        "(live, available) pods seen: {seen:?}"
    );
    let revision = done.status.unwrap().update_revision;
    assert_ne!(revision, old_revision);
    let pods = live_pods(&client, ns, "surge").await;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert!(
            !old_pods.contains(&pod.name_any()),
            "{} recreated",
            pod.name_any()
        );
        assert_eq!(label(pod, CONTROLLER_REVISION_HASH_LABEL), revision);
    }
    teardown(&client, ns).await;
}

/// `lifecycle.preNormal` (a label and a finalizer, both handlers) holds a new pod in
/// PreparingNormal, counted ready but not available, until both are on it; `lifecycle.preDelete`
/// (a finalizer) holds a pod in PreparingDelete on scale-in until the finalizer is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_hold_new_and_leaving_pods() {
    let ns = "cs-lifecycle";
    let (cluster, client) = with_namespace(ns).await;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), ns);
    let hooks = json!({"lifecycle": {
        "preNormal": {
            "labelsHandler": {"example.com/warm": "true"},
            "finalizersHandler": ["example.com/warmed"],
        },
        "preDelete": {"finalizersHandler": ["example.com/drain"]},
    }});
    api.create(
        &PostParams::default(),
        &cloneset(cluster, "hooked", 1, hooks),
    )
    .await
    .unwrap();
    // PreparingNormal: counted ready, not available.
    until_counts(&api, "hooked", (1, 1, 0, 1)).await;
    let pod = live_pods(&client, ns, "hooked").await.remove(0);
    assert_eq!(label(&pod, LIFECYCLE_STATE_LABEL), "PreparingNormal");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // One handler of two is not enough.
    let patch = json!({"metadata": {"labels": {"example.com/warm": "true"}}});
    patch_pod(&pods, &pod.name_any(), patch).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let half = pods.get(&pod.name_any()).await.unwrap();
    assert_eq!(label(&half, LIFECYCLE_STATE_LABEL), "PreparingNormal");
    let patch = json!({"metadata": {
        "finalizers": ["example.com/warmed", "example.com/drain"],
    }});
    patch_pod(&pods, &pod.name_any(), patch).await;
    until_counts(&api, "hooked", (1, 1, 1, 1)).await;
    let pod = pods.get(&pod.name_any()).await.unwrap();
    assert_eq!(label(&pod, LIFECYCLE_STATE_LABEL), "Normal");

    let patch = json!({"spec": {"replicas": 0}});
    api.patch("hooked", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait::until("the pod in PreparingDelete", 60, || async {
        let p = pods.get(&pod.name_any()).await.ok()?;
        (label(&p, LIFECYCLE_STATE_LABEL) == "PreparingDelete").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = pods.get(&pod.name_any()).await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_none(),
        "the hook holds it"
    );
    let patch = json!({"metadata": {"finalizers": null}});
    patch_pod(&pods, &pod.name_any(), patch).await;
    until_counts(&api, "hooked", (0, 0, 0, 0)).await;
    wait::until("the pod deleted", 60, || async {
        let p = pods.get_opt(&pod.name_any()).await.ok()?;
        p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    teardown(&client, ns).await;
}

/// `busybox:1` pushed again as `name` (the same content under another name).
fn pushed_as(cluster: &RealCluster, name: &str) -> String {
    let image = cluster.image(name);
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}", cluster.image("busybox:1")))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

fn container_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap_or_default()
}

/// InPlaceIfPossible: an image change restarts the container in its pod (same uid and IP, the
/// readiness gate False meanwhile, the new image held back by the grace period
/// (`gracePeriodSeconds`) until its annotation goes, the state annotation as upstream), then a label read by the
/// env (`InPlaceUpdateEnvFromMetadata`) is changed in place through the agent, which restarts
/// the container with the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_update_of_images_and_env_from_metadata() {
    let ns = "cs-inplace";
    let (cluster, client) = with_namespace(ns).await;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), ns);
    let extra = json!({"updateStrategy": {"type": "InPlaceIfPossible", "maxUnavailable": 1,
        "inPlaceUpdateStrategy": {"gracePeriodSeconds": 3}}});
    let mut cs = cloneset(cluster, "inp", 2, extra);
    let template = &mut cs.spec.template;
    template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "one".into());
    template.spec.as_mut().unwrap().containers[0].env = Some(vec![
        serde_json::from_value(json!({"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}})).unwrap(),
    ]);
    let cs = api.create(&PostParams::default(), &cs).await.unwrap();
    until_counts(&api, "inp", (2, 2, 2, 2)).await;
    let before = live_pods(&client, ns, "inp").await;

    let image = pushed_as(cluster, "cs-inplace:2");
    // Each pod's (grace annotation on, at the new image) after each change, repeats left out.
    let steps = Arc::new(Mutex::new(BTreeMap::<String, Vec<(bool, bool)>>::new()));
    let watch = watch_pods(&client, ns, "inp", {
        let (steps, image) = (Arc::clone(&steps), image.clone());
        move |pods| {
            let mut steps = steps.lock().unwrap();
            for pod in pods {
                let now = (
                    pod.annotations()
                        .contains_key(ANNOTATION_INPLACE_UPDATE_GRACE),
                    image_of(pod) == image,
                );
                let seen = steps.entry(pod.name_any()).or_default();
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
        }
    })
    .await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "main",
        "image": image,
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"],
        "env": [{"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}}],
    }]}}}});
    api.patch("inp", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let done = until_status(&api, "inp", "both pods updated in place", |cs| {
        let s = cs.status.clone().unwrap_or_default();
        counts(cs) == (2, 2, 2, 2) && s.current_revision == s.update_revision
    })
    .await;
    watch.abort();
    for (pod, seen) in steps.lock().unwrap().iter() {
        assert_eq!(
            seen,
            &[(false, false), (true, false), (false, true)],
            "{pod}: held by the grace period, then the new image"
        );
    }
    let revision = done.status.unwrap().update_revision;
    let after = live_pods(&client, ns, "inp").await;
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.uid(), new.uid(), "the same pod");
        assert_eq!(
            old.status.as_ref().unwrap().pod_ip,
            new.status.as_ref().unwrap().pod_ip
        );
        assert_ne!(
            container_id(old),
            container_id(new),
            "the container restarted"
        );
        assert_eq!(
            new.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some(image.as_str())
        );
        assert_eq!(label(new, CONTROLLER_REVISION_HASH_LABEL), revision);
        assert_eq!(label(new, LIFECYCLE_STATE_LABEL), "Normal");
        assert!(condition_true(new, POD_CONDITION_INPLACE_UPDATE_READY));
        let state: Value = serde_json::from_str(
            &new.annotations()[nodeward::api::kruise::ANNOTATION_INPLACE_UPDATE_STATE],
        )
        .unwrap();
        assert_eq!(state["revision"], revision.as_str());
        assert_eq!(state["updateImages"], true);
        assert!(state["lastContainerStatuses"]["main"]["imageID"].is_string());
    }
    let events = events_for(
        &client,
        ns,
        &cs.uid().unwrap(),
        "SuccessfulUpdatePodInPlace",
    )
    .await;
    assert_eq!(events.len(), 2, "{events:?}");

    // A label the env reads: in place through the agent's container meta.
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"tier": "two"}}}}});
    api.patch("inp", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let relabelled = until_status(&api, "inp", "both pods relabelled in place", |cs| {
        let s = cs.status.clone().unwrap_or_default();
        counts(cs) == (2, 2, 2, 2)
            && s.current_revision == s.update_revision
            && s.update_revision != revision
    })
    .await;
    let last = live_pods(&client, ns, "inp").await;
    for (old, new) in after.iter().zip(&last) {
        assert_eq!(old.uid(), new.uid(), "the same pod");
        assert_eq!(label(new, "tier"), "two");
        assert_ne!(
            container_id(old),
            container_id(new),
            "restarted for its env"
        );
        let state: Value = serde_json::from_str(
            &new.annotations()[nodeward::api::kruise::ANNOTATION_INPLACE_UPDATE_STATE],
        )
        .unwrap();
        assert_eq!(state["updateEnvFromMetadata"], true);
        assert_eq!(
            state["revision"],
            relabelled.status.as_ref().unwrap().update_revision.as_str()
        );
    }
    teardown(&client, ns).await;
}

/// `lifecycle.inPlaceUpdate` (a labels handler whose label the template puts on each pod, with
/// `markPodNotReady`) holds an in-place image update: both pods wait in PreparingUpdate at their
/// old image, not ready (`KruisePodReady` False with the `preUpdateHook` key), while the label is
/// on; the one it is taken off is updated in place (the same pod, Updating, then Updated and ready
/// again while the label stays off) and goes Normal when it is put back; the other keeps waiting
/// (upstream's cycle, `docs/upstream/cloneset.md` §4.3 and §4.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_update_hook_holds_the_update() {
    const HOLD: &str = "example.com/hold";
    let ns = "cs-inplace-hook";
    let (cluster, client) = with_namespace(ns).await;
    let api: Api<CloneSet> = Api::namespaced(client.clone(), ns);
    let hold = json!({HOLD: "true"});
    // maxUnavailable 2: both pods may wait for the hook at once.
    let extra = json!({
        "updateStrategy": {"type": "InPlaceIfPossible", "maxUnavailable": 2},
        "lifecycle": {"inPlaceUpdate": {"labelsHandler": hold, "markPodNotReady": true}},
        "template": {"metadata": {"labels": hold}},
    });
    api.create(&PostParams::default(), &cloneset(cluster, "held", 2, extra))
        .await
        .unwrap();
    let old_revision = until_counts(&api, "held", (2, 2, 2, 2))
        .await
        .status
        .unwrap()
        .update_revision;
    // The hook's gate, passed from the start.
    for pod in live_pods(&client, ns, "held").await {
        let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.clone());
        assert!(
            gates
                .unwrap_or_default()
                .iter()
                .any(|g| g.condition_type == "KruisePodReady"),
            "{}",
            pod.name_any()
        );
        assert!(condition_true(&pod, "KruisePodReady"));
    }
    let image = pushed_as(cluster, "cs-inplace:2");
    // Each pod's (lifecycle state, at the new image, held) after each change, repeats left out.
    let steps = Arc::new(Mutex::new(BTreeMap::new()));
    let watch = watch_pods(&client, ns, "held", {
        let (steps, image) = (Arc::clone(&steps), image.clone());
        move |pods| {
            let mut steps = steps.lock().unwrap();
            for pod in pods {
                let now = (
                    label(pod, LIFECYCLE_STATE_LABEL).to_string(),
                    image_of(pod) == image,
                    label(pod, HOLD) == "true",
                );
                let seen = steps.entry(pod.name_any()).or_insert_with(Vec::new);
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
        }
    })
    .await;
    let container = main_container(&image, "1");
    let patch = json!({"spec": {"template": {"spec": {"containers": [container]}}}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait::until("both pods in PreparingUpdate", 60, || async {
        let live = live_pods(&client, ns, "held").await;
        let waiting = live
            .iter()
            .filter(|p| label(*p, LIFECYCLE_STATE_LABEL) == "PreparingUpdate")
            .count();
        (waiting == 2).then_some(())
    })
    .await;
    // The hook holds them at their old image.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = live_pods(&client, ns, "held").await;
    assert_eq!(held.len(), 2);
    for pod in &held {
        assert_eq!(label(pod, LIFECYCLE_STATE_LABEL), "PreparingUpdate");
        assert_eq!(image_of(pod), cluster.image("busybox:1"));
        let kruise_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "KruisePodReady"))
            .cloned()
            .unwrap();
        assert_eq!(kruise_ready.status, "False");
        assert!(
            kruise_ready
                .message
                .unwrap_or_default()
                .contains("preUpdateHook"),
            "{}",
            pod.name_any()
        );
    }
    // Held pods are not ready.
    until_counts(&api, "held", (2, 0, 0, 0)).await;
    let (freed, kept) = (held[0].name_any(), held[1].name_any());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    patch_pod(&pods, &freed, json!({"metadata": {"labels": {HOLD: null}}})).await;
    let updated = wait::until("the freed pod Updated", 120, || async {
        let pod = pods.get(&freed).await.ok()?;
        (label(&pod, LIFECYCLE_STATE_LABEL) == "Updated").then_some(pod)
    })
    .await;
    assert_eq!(updated.uid(), held[0].uid(), "updated in place");
    assert_eq!(image_of(&updated), image);
    // Updated: ready again (its key released), not available while the hook is off; the other
    // pod still held.
    let status = until_counts(&api, "held", (2, 1, 0, 1))
        .await
        .status
        .unwrap();
    assert_eq!(
        label(&updated, CONTROLLER_REVISION_HASH_LABEL),
        status.update_revision
    );
    patch_pod(
        &pods,
        &freed,
        json!({"metadata": {"labels": {HOLD: "true"}}}),
    )
    .await;
    until_counts(&api, "held", (2, 1, 1, 1)).await;
    watch.abort();
    let last = pods.get(&freed).await.unwrap();
    assert_eq!(label(&last, LIFECYCLE_STATE_LABEL), "Normal");
    let waiting = pods.get(&kept).await.unwrap();
    assert_eq!(label(&waiting, LIFECYCLE_STATE_LABEL), "PreparingUpdate");
    assert_eq!(
        label(&waiting, CONTROLLER_REVISION_HASH_LABEL),
        old_revision
    );
    let steps = steps.lock().unwrap().clone();
    let of = |name: &str| -> Vec<(&str, bool, bool)> {
        steps[name]
            .iter()
            .map(|(state, new, hold)| (state.as_str(), *new, *hold))
            .collect()
    };
    assert_eq!(
        of(&freed),
        [
            ("Normal", false, true),
            ("PreparingUpdate", false, true),
            ("PreparingUpdate", false, false),
            ("Updating", true, false),
            ("Updated", true, false),
            ("Updated", true, true),
            ("Normal", true, true),
        ]
    );
    assert_eq!(
        of(&kept),
        [("Normal", false, true), ("PreparingUpdate", false, true)]
    );
    teardown(&client, ns).await;
}

/// A CloneSet made and rolled out by OpenKruise's kruise-manager (built apart, given by
/// NODEWARD_PEER_KRUISE_MANAGER, NODEWARD_PEER_KRUISE_DAEMON and NODEWARD_PEER_KRUISE_SOURCE),
/// then handed to nodeward's controller: nodeward reads kruise's revision as its own (by the
/// template), recreates none of kruise's pods, scales up beside them and updates them all in
/// place. Run by hand, alone: `cargo test --test cloneset -- --ignored taken_over_from_kruise`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OpenKruise built apart (NODEWARD_PEER_KRUISE_*)"]
async fn taken_over_from_kruise_manager() {
    let kruise = support::kruise::Kruise::from_env().unwrap();
    let ns = "cs-migrate";
    let (cluster, client) = with_namespace(ns).await;
    tokio::task::spawn_blocking(|| RealCluster::shared().undeploy_nodeward())
        .await
        .unwrap()
        .unwrap();
    kruise.install(cluster).unwrap();
    let api: Api<CloneSet> = Api::namespaced(client.clone(), ns);
    let extra = json!({"updateStrategy": {"type": "InPlaceIfPossible"}});
    api.create(
        &PostParams::default(),
        &cloneset(cluster, "moved", 2, extra),
    )
    .await
    .unwrap();
    let under_kruise = until_counts(&api, "moved", (2, 2, 2, 2)).await;
    let kruise_revision = under_kruise.status.unwrap().update_revision;
    let before = live_pods(&client, ns, "moved").await;

    kruise.uninstall(cluster).unwrap();
    tokio::task::spawn_blocking(|| RealCluster::shared().redeploy_nodeward())
        .await
        .unwrap();
    // Scaled by nodeward: one pod more, kruise's two untouched and counted as updated.
    api.patch(
        "moved",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let scaled = until_counts(&api, "moved", (3, 3, 3, 3)).await;
    assert_eq!(
        scaled.status.unwrap().update_revision,
        kruise_revision,
        "kruise's revision read as nodeward's"
    );
    let after = live_pods(&client, ns, "moved").await;
    for old in &before {
        let same = after.iter().find(|p| p.uid() == old.uid());
        let same = same.unwrap_or_else(|| panic!("{} recreated", old.name_any()));
        assert_eq!(container_id(old), container_id(same), "not restarted");
    }

    // Updated in place by nodeward, kruise's pods too.
    let image = pushed_as(cluster, "cs-migrate:2");
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [main_container(&image, "1")]}}}});
    api.patch("moved", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    until_status(&api, "moved", "all three updated in place", |cs| {
        let s = cs.status.clone().unwrap_or_default();
        counts(cs) == (3, 3, 3, 3) && s.current_revision == s.update_revision
    })
    .await;
    let updated = live_pods(&client, ns, "moved").await;
    for old in &after {
        let new = updated.iter().find(|p| p.uid() == old.uid());
        let new = new.unwrap_or_else(|| panic!("{} recreated", old.name_any()));
        assert_eq!(image_of(new), image);
        assert_ne!(container_id(old), container_id(new), "restarted in place");
    }
    teardown(&client, ns).await;
}
