//! Carrying out one stop decision: the decision recorded in the journal (a completed one is not
//! repeated), the Job's verdict written first where ignore-exit-code sidecars need it, then every
//! target killed concurrently through the one kubelet-style kill (`cri::kill`).

use std::time::{Duration, SystemTime};

use k8s_cri::v1::ContainerStatus;

use super::decide::{PodFacts, Target};
use super::report::{Inputs, InputsContainer};
use super::{Config, Done};
use crate::cri::CriClient;
use crate::cri::kill::{Kill, PreStopOutcome};
use crate::cri::kubelet::{NamedPort, PodRef, PreStop};
use crate::journal::{self, Recorded};
use crate::node::model::{NodeModel, State};

/// One sidecar to stop, with what the kubelet says about it (grace, preStop, ports).
#[derive(Clone, Debug)]
pub struct Request {
    pub pod: PodRef,
    pub target: Target,
    /// The sandbox, for the pod IP of an httpGet hook.
    pub sandbox_id: String,
    /// The pod's termination grace period (kubelet annotation).
    pub grace: Duration,
    pub pre_stop: Option<PreStop>,
    /// Named ports an httpGet hook may refer to.
    pub ports: Vec<NamedPort>,
    /// The decision's time: what was spent since comes out of the grace.
    pub decided_at: SystemTime,
    /// Decided before the agent restarted, with a preStop hook that is therefore not run again.
    pub resumed: bool,
}

impl Request {
    /// `None` when the container is no longer in the model.
    /// The stop of `target`; `resumed`: decided before the agent restarted, so its preStop hook
    /// (which may have run then) is not run again.
    pub fn new(
        model: &NodeModel,
        pod: &PodRef,
        target: Target,
        decided_at: SystemTime,
        resumed: bool,
    ) -> Option<Self> {
        let rec = model.container(&target.id)?;
        Some(Self {
            pod: pod.clone(),
            sandbox_id: rec.sandbox_id.clone(),
            grace: rec.meta.grace,
            pre_stop: rec.meta.pre_stop.clone().filter(|_| !resumed),
            resumed: resumed && rec.meta.pre_stop.is_some(),
            ports: rec.meta.ports.clone(),
            decided_at,
            target,
        })
    }

    fn kill(&self) -> Kill<'_> {
        Kill {
            container_id: &self.target.id,
            sandbox_id: &self.sandbox_id,
            pre_stop: self.pre_stop.as_ref(),
            ports: &self.ports,
            grace: self.grace,
            decided_at: self.decided_at,
        }
    }
}

/// How one sidecar's stop went.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub request: Request,
    pub pre_stop: PreStopOutcome,
    /// Grace passed to StopContainer.
    pub stop_grace: Duration,
    /// When StopContainer was sent.
    pub stop_sent_at: SystemTime,
    /// The container's final status after the stop (`None`: removed meanwhile), or why the stop
    /// failed.
    pub result: Result<Option<ContainerStatus>, String>,
}

/// The journal key and action for stopping `targets` of a pod, with the decision's inputs.
pub fn action(pod: &PodRef, facts: &PodFacts, targets: &[Target]) -> (String, journal::Action) {
    let mut ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
    ids.sort_unstable();
    let key = format!(
        "{}/{}/{}",
        journal::KIND_STOP_SIDECAR,
        pod.uid,
        ids.join("+")
    );
    let inputs = Inputs {
        restart_policy: facts.policy,
        containers: facts
            .containers
            .iter()
            .map(|c| InputsContainer {
                name: c.name.clone(),
                id: c.id.clone(),
                role: c.role,
                state: c.state.as_str().into(),
                exit_code: match c.state {
                    State::Exited { code } => code,
                    _ => None,
                },
            })
            .collect(),
    };
    let action = journal::Action {
        kind: journal::KIND_STOP_SIDECAR.into(),
        pod: journal::PodInfo {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        },
        containers: targets
            .iter()
            .map(|t| journal::ContainerRef {
                name: t.name.clone(),
                id: t.id.clone(),
            })
            .collect(),
        decided_at: SystemTime::now(),
        reason: match facts.policy {
            Some(p) => format!("main containers done (restartPolicy {p:?})"),
            None => "main containers exited 0 (restart policy unknown)".into(),
        },
        inputs: serde_json::to_value(inputs).unwrap_or_default(),
    };
    (key, action)
}

/// Record, (write the verdict,) stop. Never fails: every failure is in the [`Done`].
pub async fn carry_out(
    cfg: &Config,
    key: String,
    action: journal::Action,
    requests: Vec<Request>,
) -> Done {
    let recorded = cfg
        .commits
        .decide(key.clone(), action.clone())
        .await
        .map_err(|e| e.to_string());
    if cfg.failpoint.as_deref() == Some("after-decide") && matches!(recorded, Ok(Recorded::New(_)))
    {
        eprintln!("nodeward: failpoint after-decide: aborting");
        std::process::abort();
    }
    // Upstream v1.9: with ignore-exit-code sidecars, the Job's phase is written before they are
    // stopped, so the kubelet never reports a phase from the sidecar's exit code; it is guarded
    // until the kubelet has judged the exits with it in view.
    let mut stopped = None;
    // (A journal that cannot record still stops the sidecars below: the verdict comes first then
    // too.)
    if let (Some((client, _)), Ok(Recorded::New(_) | Recorded::Pending) | Err(_)) =
        (&cfg.cluster, &recorded)
    {
        let ignoring = requests.iter().any(|r| r.target.ignore_exit_code);
        if let Some(patch) = super::report::verdict_patch(&action, ignoring) {
            super::report::patch_verdict(client, &action.pod, &patch).await;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sidecars = requests.iter().map(|r| r.target.name.clone()).collect();
            tokio::spawn(super::report::guard_verdict(
                client.clone(),
                action.pod.clone(),
                patch,
                sidecars,
                rx,
            ));
            stopped = Some(tx);
        }
    }
    let outcomes = match recorded {
        Ok(Recorded::AlreadyDone) => None,
        // A journal that cannot record must not stop the agent from acting.
        Ok(_) | Err(_) => Some(
            futures::future::join_all(requests.iter().cloned().map(|r| stop(&cfg.cri, r))).await,
        ),
    };
    drop(stopped);
    Done {
        key,
        action,
        requests,
        outcomes,
        journal_error: recorded.err(),
    }
}

/// Stop one sidecar and read its final status.
async fn stop(cri: &CriClient, request: Request) -> Outcome {
    let (pre_stop, stopped) = request.kill().run(cri).await;
    let pre_stop = match pre_stop {
        PreStopOutcome::None if request.resumed => PreStopOutcome::NotRerun,
        other => other,
    };
    let result = match stopped.result {
        Ok(()) if stopped.removed => Ok(None),
        Ok(()) => match cri.container_status(&request.target.id, false).await {
            Ok((st, _)) => Ok(Some(st)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(format!("stopped, but reading the final status failed: {e}")),
        },
        Err(e) => Err(e.to_string()),
    };
    Outcome {
        request,
        pre_stop,
        stop_grace: stopped.grace,
        stop_sent_at: stopped.sent_at,
        result,
    }
}
