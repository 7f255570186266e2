//! What the agent knows about the node's pods and containers, built from CRI lists and statuses,
//! exit events and (cluster mode) the Pod objects. Plain data and plain functions: no I/O here.
//! Capabilities read it; `node::tracker` keeps it current.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use k8s_cri::v1::{Container, ContainerStatus, PodSandbox};

use super::ExitSource;
use crate::api::role::Role;
use crate::cri::client::VerboseInfo;
use crate::cri::kubelet::{ContainerMeta, PodRef, RestartPolicy};

/// A container's lifecycle state. `Exited { code: None }` means the kernel reported the exit and the
/// runtime has not yet told the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited { code: Option<i32> },
    Unknown,
}

impl State {
    pub fn from_cri(state: i32, exit_code: i32) -> Self {
        use k8s_cri::v1::ContainerState as S;
        match S::try_from(state) {
            Ok(S::ContainerCreated) => Self::Created,
            Ok(S::ContainerRunning) => Self::Running,
            Ok(S::ContainerExited) => Self::Exited {
                code: Some(exit_code),
            },
            _ => Self::Unknown,
        }
    }

    pub fn is_exited(self) -> bool {
        matches!(self, Self::Exited { .. })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited { .. } => "exited",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub pod_uid: String,
    pub meta: ContainerMeta,
    pub created_at: i64,
    pub state: State,
    /// Runtime-reported start time (Unix nanos), 0 until a status read tells it.
    pub started_at: i64,
    /// Runtime-reported exit time (Unix nanos), when known.
    pub finished_at: i64,
    /// `None` until the verbose status (with env) has been read.
    pub role: Option<Role>,
    pub pid: Option<u32>,
    /// When and how the agent first learned of the exit.
    pub exit_observed: Option<(ExitSource, SystemTime)>,
}

#[derive(Clone, Debug)]
pub struct PodRecord {
    pub pod: PodRef,
    pub sandbox_ids: BTreeSet<String>,
    pub restart_policy: Option<RestartPolicy>,
    latest_sandbox_created: i64,
}

/// What a status read is needed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// New container, or one that just started: need env and init pid.
    Verbose,
    /// Exit code and finish time.
    Plain,
}

#[derive(Debug, Default)]
pub struct SnapshotDiff {
    pub fetch: Vec<(String, Fetch)>,
    pub removed: Vec<String>,
    /// Containers the list shows exited while the model had them running.
    pub exited: Vec<String>,
    pub changed_pods: BTreeSet<String>,
}

/// What the Pod object says (cluster mode). It is the source of truth for the restart policy and
/// the roles, and tells which main containers the runtime has not created yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpecFacts {
    pub restart_policy: RestartPolicy,
    /// Regular containers (`spec.containers`) in order, with their roles.
    pub containers: Vec<(String, Role)>,
    /// `spec.initContainers`, native sidecars included: never main, never stopped.
    pub init_containers: Vec<String>,
}

#[derive(Debug, Default)]
pub struct NodeModel {
    pods: HashMap<String, PodRecord>,
    containers: HashMap<String, ContainerRecord>,
    /// The ids of each pod's containers (every attempt): a pod's decision reads its own
    /// containers without a scan of the node's.
    by_pod: HashMap<String, BTreeSet<String>>,
    sandbox_pod: HashMap<String, String>,
    specs: HashMap<String, PodSpecFacts>,
    /// Pods whose containers changed since [`NodeModel::take_changed`].
    changed: BTreeSet<String>,
}

impl NodeModel {
    pub fn pods(&self) -> impl Iterator<Item = &PodRecord> {
        self.pods.values()
    }

    pub fn pod(&self, uid: &str) -> Option<&PodRecord> {
        self.pods.get(uid)
    }

    pub fn containers(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.containers.values()
    }

    pub fn container(&self, id: &str) -> Option<&ContainerRecord> {
        self.containers.get(id)
    }

    /// Reconcile the model with a full CRI list. Objects without kubelet labels are ignored.
    pub fn apply_snapshot(
        &mut self,
        sandboxes: &[PodSandbox],
        containers: &[Container],
        now: SystemTime,
    ) -> SnapshotDiff {
        let mut diff = SnapshotDiff::default();
        let mut pods: HashMap<String, PodRecord> = HashMap::new();
        let mut sandbox_pod = HashMap::new();
        for sb in sandboxes {
            let Some(pod) = PodRef::from_labels(&sb.labels) else {
                continue;
            };
            sandbox_pod.insert(sb.id.clone(), pod.uid.clone());
            let rec = pods.entry(pod.uid.clone()).or_insert_with(|| PodRecord {
                pod: pod.clone(),
                sandbox_ids: BTreeSet::new(),
                restart_policy: None,
                latest_sandbox_created: i64::MIN,
            });
            rec.sandbox_ids.insert(sb.id.clone());
            if sb.created_at >= rec.latest_sandbox_created {
                rec.latest_sandbox_created = sb.created_at;
                rec.restart_policy = RestartPolicy::from_annotations(&sb.annotations);
            }
        }
        for (uid, rec) in &pods {
            let old = self.pods.get(uid);
            if old.is_none_or(|o| o.restart_policy != rec.restart_policy) {
                diff.changed_pods.insert(uid.clone());
            }
        }
        for uid in self.pods.keys() {
            if !pods.contains_key(uid) {
                diff.changed_pods.insert(uid.clone());
            }
        }
        self.pods = pods;
        self.sandbox_pod = sandbox_pod;

        let mut seen = BTreeSet::new();
        for c in containers {
            let Some(uid) = self.sandbox_pod.get(&c.pod_sandbox_id).cloned() else {
                continue;
            };
            seen.insert(c.id.clone());
            let listed = State::from_cri(c.state, 0);
            match self.containers.get_mut(&c.id) {
                None => {
                    let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
                    self.containers.insert(
                        c.id.clone(),
                        ContainerRecord {
                            id: c.id.clone(),
                            sandbox_id: c.pod_sandbox_id.clone(),
                            pod_uid: uid.clone(),
                            meta: ContainerMeta::from_cri(&c.labels, &c.annotations, name),
                            created_at: c.created_at,
                            state: match listed {
                                // The list carries no exit code.
                                State::Exited { .. } => State::Exited { code: None },
                                s => s,
                            },
                            started_at: 0,
                            finished_at: 0,
                            role: None,
                            pid: None,
                            exit_observed: listed.is_exited().then_some((ExitSource::Relist, now)),
                        },
                    );
                    diff.fetch.push((c.id.clone(), Fetch::Verbose));
                    self.by_pod
                        .entry(uid.clone())
                        .or_default()
                        .insert(c.id.clone());
                    diff.changed_pods.insert(uid);
                }
                Some(rec) => {
                    let fetch = match (rec.state, listed) {
                        (State::Running, State::Exited { .. }) => {
                            rec.state = State::Exited { code: None };
                            rec.exit_observed.get_or_insert((ExitSource::Relist, now));
                            diff.exited.push(c.id.clone());
                            diff.changed_pods.insert(uid.clone());
                            Some(Fetch::Plain)
                        }
                        (State::Exited { code: None }, State::Exited { .. }) => Some(Fetch::Plain),
                        // The kernel already reported the exit; the runtime lags behind.
                        (State::Exited { .. }, _) => None,
                        (State::Created | State::Unknown, State::Running) => {
                            rec.state = State::Running;
                            diff.changed_pods.insert(uid.clone());
                            Some(Fetch::Verbose)
                        }
                        (State::Created | State::Unknown, State::Exited { .. }) => {
                            rec.state = State::Exited { code: None };
                            rec.exit_observed.get_or_insert((ExitSource::Relist, now));
                            diff.changed_pods.insert(uid.clone());
                            Some(Fetch::Plain)
                        }
                        _ if rec.role.is_none() => Some(Fetch::Verbose),
                        _ => None,
                    };
                    if let Some(f) = fetch {
                        diff.fetch.push((c.id.clone(), f));
                    }
                }
            }
        }
        let removed: Vec<String> = self
            .containers
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in removed {
            if let Some(rec) = self.containers.remove(&id) {
                if let Some(ids) = self.by_pod.get_mut(&rec.pod_uid) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_pod.remove(&rec.pod_uid);
                    }
                }
                diff.changed_pods.insert(rec.pod_uid);
            }
            diff.removed.push(id);
        }
        self.changed.extend(diff.changed_pods.iter().cloned());
        diff
    }

    /// Apply a `ContainerStatus` answer. Returns the pod uid when something the decision reads changed.
    pub fn apply_status(
        &mut self,
        st: &ContainerStatus,
        info: Option<&VerboseInfo>,
    ) -> Option<String> {
        let rec = self.containers.get_mut(&st.id)?;
        let before = (rec.state, rec.role, rec.started_at);
        let reported = State::from_cri(st.state, st.exit_code);
        rec.state = match (rec.state, reported) {
            // Never move back from exited to running because of a lagging runtime.
            (State::Exited { code }, State::Running | State::Created | State::Unknown) => {
                State::Exited { code }
            }
            (_, s) => s,
        };
        if st.started_at > 0 {
            rec.started_at = st.started_at;
        }
        if st.finished_at > 0 {
            rec.finished_at = st.finished_at;
        }
        if rec.state.is_exited() {
            // Learned from a status read rather than a kernel event.
            rec.exit_observed
                .get_or_insert((ExitSource::Relist, SystemTime::now()));
        }
        if let Some(info) = info {
            if rec.role.is_none() {
                rec.role = Some(Role::from_env(
                    info.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ));
            }
            if info.pid.is_some() {
                rec.pid = info.pid;
            }
        }
        let changed =
            (before != (rec.state, rec.role, rec.started_at)).then(|| rec.pod_uid.clone());
        if let Some(uid) = &changed {
            self.changed.insert(uid.clone());
        }
        changed
    }

    /// The kernel reported that the container's processes are gone. Returns the pod uid if this is news.
    pub fn mark_exited(&mut self, id: &str, source: ExitSource, at: SystemTime) -> Option<String> {
        let rec = self.containers.get_mut(id)?;
        if rec.state.is_exited() {
            return None;
        }
        rec.state = State::Exited { code: None };
        rec.exit_observed = Some((source, at));
        self.changed.insert(rec.pod_uid.clone());
        Some(rec.pod_uid.clone())
    }

    /// The pods whose containers changed (appeared, went away, changed state) since the last
    /// call; a pod that went away is among them.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }

    /// The latest attempt of each container name of a pod, as the runtime lists them (no spec).
    pub fn latest(&self, uid: &str) -> Vec<&ContainerRecord> {
        let mut latest: HashMap<&str, &ContainerRecord> = HashMap::new();
        let ids = self.by_pod.get(uid).into_iter().flatten();
        for c in ids.filter_map(|id| self.containers.get(id)) {
            let e = latest.entry(c.meta.name.as_str()).or_insert(c);
            if (c.meta.restart_count, c.created_at) > (e.meta.restart_count, e.created_at) {
                *e = c;
            }
        }
        latest.into_values().collect()
    }

    /// Record (or replace) what the Pod object says about a pod. Returns whether it changed.
    pub fn set_pod_spec(&mut self, uid: &str, spec: PodSpecFacts) -> bool {
        self.specs.insert(uid.to_string(), spec.clone()) != Some(spec)
    }

    /// The Pod object is gone (deleted, or no longer on this node).
    pub fn remove_pod_spec(&mut self, uid: &str) -> bool {
        self.specs.remove(uid).is_some()
    }

    pub fn pod_spec(&self, uid: &str) -> Option<&PodSpecFacts> {
        self.specs.get(uid)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::well_known as wk;
    use k8s_cri::v1::{ContainerMetadata, ContainerState};

    pub(crate) fn labels(uid: &str, name: Option<&str>) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (wk::LABEL_POD_NAME.to_string(), "job-1".to_string()),
            (wk::LABEL_POD_NAMESPACE.to_string(), "default".to_string()),
            (wk::LABEL_POD_UID.to_string(), uid.to_string()),
        ]);
        if let Some(n) = name {
            l.insert(wk::LABEL_CONTAINER_NAME.to_string(), n.to_string());
        }
        l
    }

    pub(crate) fn sandbox(id: &str, uid: &str, policy: Option<&str>) -> PodSandbox {
        let mut annotations = HashMap::new();
        if let Some(p) = policy {
            annotations.insert(wk::ANNOTATION_RESTART_POLICY.to_string(), p.to_string());
        }
        PodSandbox {
            id: id.into(),
            labels: labels(uid, None),
            annotations,
            created_at: 1,
            ..Default::default()
        }
    }

    pub(crate) fn container(
        id: &str,
        sb: &str,
        uid: &str,
        name: &str,
        state: ContainerState,
        attempt: u32,
    ) -> Container {
        let mut annotations = HashMap::new();
        annotations.insert(
            wk::ANNOTATION_RESTART_COUNT.to_string(),
            attempt.to_string(),
        );
        Container {
            id: id.into(),
            pod_sandbox_id: sb.into(),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            state: state as i32,
            created_at: attempt as i64 + 10,
            labels: labels(uid, Some(name)),
            annotations,
            ..Default::default()
        }
    }

    pub(crate) fn status(id: &str, state: ContainerState, code: i32) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            state: state as i32,
            exit_code: code,
            finished_at: if state == ContainerState::ContainerExited {
                99
            } else {
                0
            },
            ..Default::default()
        }
    }

    pub(crate) fn env(pairs: &[(&str, &str)], pid: u32) -> VerboseInfo {
        VerboseInfo {
            pid: Some(pid),
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn snapshot_then_status_then_exit() {
        let mut m = NodeModel::default();
        let sbs = [
            sandbox("sb1", "u1", Some("Never")),
            sandbox("foreign", "", None),
        ];
        let mut foreign = container("x", "nope", "u9", "x", ContainerState::ContainerRunning, 0);
        foreign.labels.clear();
        let cs = [
            container(
                "main",
                "sb1",
                "u1",
                "main",
                ContainerState::ContainerRunning,
                0,
            ),
            container(
                "side",
                "sb1",
                "u1",
                "side",
                ContainerState::ContainerRunning,
                0,
            ),
            foreign,
        ];
        let d = m.apply_snapshot(&sbs, &cs, SystemTime::now());
        assert_eq!(d.fetch.len(), 2);
        assert!(d.fetch.iter().all(|(_, f)| *f == Fetch::Verbose));
        assert_eq!(
            m.pod("u1").unwrap().restart_policy,
            Some(RestartPolicy::Never)
        );

        m.apply_status(
            &status("main", ContainerState::ContainerRunning, 0),
            Some(&env(&[], 10)),
        );
        m.apply_status(
            &status("side", ContainerState::ContainerRunning, 0),
            Some(&env(
                &[(wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT, "true")],
                11,
            )),
        );
        assert_eq!(m.container("main").unwrap().role, Some(Role::Main));
        assert_eq!(
            m.container("side").unwrap().role,
            Some(Role::Sidecar {
                ignore_exit_code: false
            })
        );
        assert_eq!(m.container("main").unwrap().pid, Some(10));

        assert_eq!(
            m.mark_exited("main", ExitSource::Pidfd, SystemTime::now()),
            Some("u1".into())
        );
        assert_eq!(
            m.mark_exited("main", ExitSource::Cgroup, SystemTime::now()),
            None
        );
        // A lagging runtime still says running: the model stays exited.
        m.apply_status(&status("main", ContainerState::ContainerRunning, 0), None);
        assert_eq!(
            m.container("main").unwrap().state,
            State::Exited { code: None }
        );
        m.apply_status(&status("main", ContainerState::ContainerExited, 3), None);
        assert_eq!(
            m.container("main").unwrap().state,
            State::Exited { code: Some(3) }
        );
        assert_eq!(m.container("main").unwrap().finished_at, 99);

        // Relist that no longer shows the pod removes its containers.
        let d = m.apply_snapshot(&[], &[], SystemTime::now());
        assert_eq!(d.removed.len(), 2);
        assert!(m.pod("u1").is_none() && m.latest("u1").is_empty());
        assert!(
            m.by_pod.is_empty(),
            "the pod index forgets removed containers"
        );
    }

    #[test]
    fn relist_catches_missed_exit_and_latest_attempt_wins() {
        let mut m = NodeModel::default();
        let sbs = [sandbox("sb1", "u1", None)];
        let cs = [container(
            "m0",
            "sb1",
            "u1",
            "main",
            ContainerState::ContainerRunning,
            0,
        )];
        m.apply_snapshot(&sbs, &cs, SystemTime::now());
        let cs = [
            container(
                "m0",
                "sb1",
                "u1",
                "main",
                ContainerState::ContainerExited,
                0,
            ),
            container(
                "m1",
                "sb1",
                "u1",
                "main",
                ContainerState::ContainerRunning,
                1,
            ),
        ];
        let d = m.apply_snapshot(&sbs, &cs, SystemTime::now());
        assert_eq!(d.exited, vec!["m0".to_string()]);
        assert!(d.fetch.contains(&("m0".into(), Fetch::Plain)));
        assert!(d.fetch.contains(&("m1".into(), Fetch::Verbose)));
        let latest = m.latest("u1");
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].id, "m1");
        assert_eq!(
            m.container("m0").unwrap().exit_observed.map(|(s, _)| s),
            Some(ExitSource::Relist)
        );
    }

    #[test]
    fn view_follows_the_pods_that_changed() {
        use crate::node::view::NodeView;
        let (mut m, view) = (NodeModel::default(), NodeView::default());
        let t = SystemTime::now();
        let sbs = [sandbox("sb1", "u1", None), sandbox("sb2", "u2", None)];
        let cs = [
            container("a0", "sb1", "u1", "app", ContainerState::ContainerExited, 0),
            container(
                "a1",
                "sb1",
                "u1",
                "app",
                ContainerState::ContainerCreated,
                1,
            ),
            container(
                "b0",
                "sb2",
                "u2",
                "web",
                ContainerState::ContainerRunning,
                0,
            ),
        ];
        m.apply_snapshot(&sbs, &cs, t);
        view.publish(&mut m);
        let u1 = view.pod("u1").expect("u1 published");
        assert_eq!(u1.len(), 1, "latest attempt per name only");
        assert_eq!(
            (u1[0].id.as_str(), u1[0].state, u1[0].restart_count),
            ("a1", State::Created, 1)
        );
        assert_eq!(u1[0].sandbox_id, "sb1");
        assert!(view.pod("u2").is_some());
        assert!(
            m.take_changed().is_empty(),
            "publishing consumed the changes"
        );

        // A status read that starts it, then the kernel's exit: republished each time.
        m.apply_status(&status("a1", ContainerState::ContainerRunning, 0), None);
        view.publish(&mut m);
        assert_eq!(view.pod("u1").unwrap()[0].state, State::Running);
        m.mark_exited("a1", ExitSource::Cgroup, t);
        view.publish(&mut m);
        assert!(view.pod("u1").unwrap()[0].state.is_exited());
        let before = view.pod("u2").unwrap();

        // Pod u1 goes away; u2 is untouched (not copied again).
        m.apply_snapshot(&sbs[1..], &cs[2..], t);
        view.publish(&mut m);
        assert!(view.pod("u1").is_none());
        assert!(std::sync::Arc::ptr_eq(&before, &view.pod("u2").unwrap()));
    }
}
