//! The sidecar termination rule, over plain data.
//!
//! Upstream (OpenKruise `sidecarterminator`): a container with `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT=true`
//! is a sidecar, every other regular container is a main container. With restart policy `Never`,
//! sidecars are stopped once every main container has exited (any code); with `OnFailure`, once every
//! main container has exited with code 0 (a failed main is restarted by the kubelet). nodeward also
//! acts when the policy is unknown (no API access and no `nodeward.io/restart-policy` annotation), but
//! only when every main container exited 0, which is safe under both Job policies.

use std::collections::HashMap;

use crate::api::role::Role;
use crate::cri::kubelet::RestartPolicy;
use crate::node::model::{ContainerRecord, NodeModel, State};

/// Per-container input of the decision: the latest attempt of each container name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFacts {
    pub id: String,
    pub name: String,
    pub role: Option<Role>,
    pub state: State,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub policy: Option<RestartPolicy>,
    pub containers: Vec<ContainerFacts>,
}

/// The latest attempt of each container name of a pod, as input for a decision. With the
/// Pod object, its spec decides the policy and roles, init containers are left out, and a
/// main container the runtime has not created yet counts as not exited.
pub fn facts(model: &NodeModel, uid: &str) -> Option<PodFacts> {
    let pod = model.pod(uid)?;
    let latest: HashMap<&str, &ContainerRecord> = model
        .latest(uid)
        .into_iter()
        .map(|c| (c.meta.name.as_str(), c))
        .collect();
    if let Some(spec) = model.pod_spec(uid) {
        let mut containers: Vec<ContainerFacts> = spec
            .containers
            .iter()
            .map(|(name, role)| match latest.get(name.as_str()) {
                Some(c) => ContainerFacts {
                    id: c.id.clone(),
                    name: name.clone(),
                    role: Some(*role),
                    state: c.state,
                },
                None => ContainerFacts {
                    id: String::new(),
                    name: name.clone(),
                    role: Some(*role),
                    state: State::Created,
                },
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        return Some(PodFacts {
            policy: Some(spec.restart_policy),
            containers,
        });
    }
    let mut containers: Vec<ContainerFacts> = latest
        .into_values()
        .map(|c| ContainerFacts {
            id: c.id.clone(),
            name: c.meta.name.clone(),
            role: c.role,
            state: c.state,
        })
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Some(PodFacts {
        policy: pod.restart_policy,
        containers,
    })
}

/// One sidecar to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub name: String,
    pub ignore_exit_code: bool,
}

/// Why nothing is done (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Some container's env has not been read yet.
    ClassificationPending,
    NoSidecars,
    NoMainContainers,
    /// `restartPolicy: Always` is not a Job.
    RestartPolicyAlways,
    MainsRunning,
    /// A main container exited; its exit code is not known yet and the policy needs it.
    ExitCodePending,
    /// `OnFailure` and a main container failed: the kubelet restarts it.
    MainWillRestart,
    /// Policy unknown and a main container failed: it may be restarted, so hands off.
    MainFailedPolicyUnknown,
    /// Every sidecar has already exited (or not started).
    NoRunningSidecars,
}

impl Hold {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClassificationPending => "classification_pending",
            Self::NoSidecars => "no_sidecars",
            Self::NoMainContainers => "no_main_containers",
            Self::RestartPolicyAlways => "restart_policy_always",
            Self::MainsRunning => "mains_running",
            Self::ExitCodePending => "exit_code_pending",
            Self::MainWillRestart => "main_will_restart",
            Self::MainFailedPolicyUnknown => "main_failed_policy_unknown",
            Self::NoRunningSidecars => "no_running_sidecars",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Stop(Vec<Target>),
    Hold(Hold),
}

/// What the verdict guard does with the pod as the API shows it while its ignore-exit-code
/// sidecars stop (see `report::guard_verdict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardStep {
    /// The verdict stands; the kubelet has not judged the sidecars' exits yet.
    Watch,
    /// The phase is not terminal: the kubelet's status reconcile wrote its cached phase over the
    /// verdict (or the verdict never landed). Write it again before the sidecar's exit is judged.
    Rewrite,
    /// The kubelet reported every stopped sidecar terminated and kept the verdict: it is final.
    Settled,
    /// The kubelet wrote the other terminal phase first; a terminal phase never changes.
    Lost,
    /// Another pod of that name (the one guarded was deleted).
    Gone,
}

/// The guard's step for the pod seen: `same_pod` (its uid is the guarded one), its phase, the
/// verdict's phase, and whether its status shows every stopped sidecar terminated.
pub fn guard_step(
    same_pod: bool,
    phase: Option<&str>,
    verdict: &str,
    sidecars_reported: bool,
) -> GuardStep {
    match phase {
        _ if !same_pod => GuardStep::Gone,
        Some(p) if p == verdict && sidecars_reported => GuardStep::Settled,
        Some(p) if p == verdict => GuardStep::Watch,
        Some("Succeeded" | "Failed") => GuardStep::Lost,
        _ => GuardStep::Rewrite,
    }
}

/// Decide what to do with a pod's sidecars, given the latest attempt of each container.
pub fn decide(pod: &PodFacts) -> Decision {
    if pod.containers.iter().any(|c| c.role.is_none()) {
        return Decision::Hold(Hold::ClassificationPending);
    }
    let sidecars: Vec<_> = pod
        .containers
        .iter()
        .filter(|c| matches!(c.role, Some(Role::Sidecar { .. })))
        .collect();
    if sidecars.is_empty() {
        return Decision::Hold(Hold::NoSidecars);
    }
    if pod.policy == Some(RestartPolicy::Always) {
        return Decision::Hold(Hold::RestartPolicyAlways);
    }
    let mains: Vec<_> = pod
        .containers
        .iter()
        .filter(|c| c.role == Some(Role::Main))
        .collect();
    if mains.is_empty() {
        return Decision::Hold(Hold::NoMainContainers);
    }
    if mains.iter().any(|c| !c.state.is_exited()) {
        return Decision::Hold(Hold::MainsRunning);
    }
    let ignoring = sidecars.iter().any(|c| {
        c.state == State::Running
            && c.role
                == Some(Role::Sidecar {
                    ignore_exit_code: true,
                })
    });
    // The Job's verdict is written from the main containers' exit codes when a sidecar's own
    // code is to be ignored, so they must be known even under `Never`.
    if ignoring
        && mains
            .iter()
            .any(|c| c.state == State::Exited { code: None })
    {
        return Decision::Hold(Hold::ExitCodePending);
    }
    if pod.policy != Some(RestartPolicy::Never) {
        let codes: Vec<Option<i32>> = mains
            .iter()
            .map(|c| match c.state {
                State::Exited { code } => code,
                _ => None,
            })
            .collect();
        if codes.iter().any(|c| c.is_some_and(|c| c != 0)) {
            return Decision::Hold(if pod.policy == Some(RestartPolicy::OnFailure) {
                Hold::MainWillRestart
            } else {
                Hold::MainFailedPolicyUnknown
            });
        }
        if codes.iter().any(Option::is_none) {
            return Decision::Hold(Hold::ExitCodePending);
        }
    }
    let targets: Vec<Target> = sidecars
        .iter()
        .filter(|c| c.state == State::Running)
        .map(|c| Target {
            id: c.id.clone(),
            name: c.name.clone(),
            ignore_exit_code: matches!(
                c.role,
                Some(Role::Sidecar {
                    ignore_exit_code: true
                })
            ),
        })
        .collect();
    if targets.is_empty() {
        Decision::Hold(Hold::NoRunningSidecars)
    } else {
        Decision::Stop(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::ContainerFacts;
    use super::*;
    use crate::node::model::PodSpecFacts;
    use crate::node::model::tests::{container, sandbox};
    use k8s_cri::v1::ContainerState;
    use std::time::SystemTime;

    const SIDE: Option<Role> = Some(Role::Sidecar {
        ignore_exit_code: false,
    });
    const MAIN: Option<Role> = Some(Role::Main);
    const RUNNING: State = State::Running;
    const SUCCEEDED: State = State::Exited { code: Some(0) };
    const FAILED: State = State::Exited { code: Some(1) };

    #[test]
    fn the_verdict_guard_rewrites_a_reverted_phase_until_the_kubelet_keeps_it() {
        use GuardStep::*;
        let table = [
            (true, Some("Succeeded"), "Succeeded", false, Watch),
            (true, Some("Succeeded"), "Succeeded", true, Settled),
            (true, Some("Running"), "Succeeded", false, Rewrite),
            (true, Some("Running"), "Succeeded", true, Rewrite),
            (true, Some("Pending"), "Failed", false, Rewrite),
            (true, None, "Succeeded", false, Rewrite),
            (true, Some("Failed"), "Succeeded", false, Lost),
            (true, Some("Failed"), "Succeeded", true, Lost),
            (true, Some("Succeeded"), "Failed", true, Lost),
            (true, Some("Failed"), "Failed", true, Settled),
            (false, Some("Running"), "Succeeded", false, Gone),
            (false, Some("Succeeded"), "Succeeded", true, Gone),
        ];
        for (same, phase, verdict, reported, want) in table {
            assert_eq!(
                guard_step(same, phase, verdict, reported),
                want,
                "{same} {phase:?} {verdict} {reported}"
            );
        }
    }

    fn c(name: &str, role: Option<Role>, state: State) -> ContainerFacts {
        ContainerFacts {
            id: format!("id-{name}"),
            name: name.into(),
            role,
            state,
        }
    }

    fn pod(policy: Option<RestartPolicy>, containers: Vec<ContainerFacts>) -> PodFacts {
        PodFacts { policy, containers }
    }

    fn stopped(d: &Decision) -> Vec<String> {
        match d {
            Decision::Stop(t) => t.iter().map(|t| t.name.clone()).collect(),
            Decision::Hold(_) => vec![],
        }
    }

    use RestartPolicy::{Never, OnFailure};

    /// The upstream unit suite's 13 normal-node cases: Never/OnFailure × main pending/failed/succeeded
    /// × 1–3 sidecars, some already completed.
    #[test]
    fn upstream_normal_node_matrix() {
        struct Case {
            name: &'static str,
            policy: RestartPolicy,
            main: State,
            sidecars: Vec<State>,
            expect: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "never, main running, 1 sidecar",
                policy: Never,
                main: RUNNING,
                sidecars: vec![RUNNING],
                expect: vec![],
            },
            Case {
                name: "never, main running, 2 sidecars",
                policy: Never,
                main: RUNNING,
                sidecars: vec![RUNNING, RUNNING],
                expect: vec![],
            },
            Case {
                name: "never, main failed, 1 sidecar",
                policy: Never,
                main: FAILED,
                sidecars: vec![RUNNING],
                expect: vec!["s0"],
            },
            Case {
                name: "never, main failed, 2 sidecars one done",
                policy: Never,
                main: FAILED,
                sidecars: vec![SUCCEEDED, RUNNING],
                expect: vec!["s1"],
            },
            Case {
                name: "never, main succeeded, 1 sidecar",
                policy: Never,
                main: SUCCEEDED,
                sidecars: vec![RUNNING],
                expect: vec!["s0"],
            },
            Case {
                name: "never, main succeeded, 3 sidecars",
                policy: Never,
                main: SUCCEEDED,
                sidecars: vec![RUNNING, RUNNING, RUNNING],
                expect: vec!["s0", "s1", "s2"],
            },
            Case {
                name: "never, main succeeded, all sidecars done",
                policy: Never,
                main: SUCCEEDED,
                sidecars: vec![SUCCEEDED, FAILED],
                expect: vec![],
            },
            Case {
                name: "onfailure, main running, 1 sidecar",
                policy: OnFailure,
                main: RUNNING,
                sidecars: vec![RUNNING],
                expect: vec![],
            },
            Case {
                name: "onfailure, main failed, 1 sidecar",
                policy: OnFailure,
                main: FAILED,
                sidecars: vec![RUNNING],
                expect: vec![],
            },
            Case {
                name: "onfailure, main failed, 2 sidecars",
                policy: OnFailure,
                main: FAILED,
                sidecars: vec![RUNNING, RUNNING],
                expect: vec![],
            },
            Case {
                name: "onfailure, main succeeded, 1 sidecar",
                policy: OnFailure,
                main: SUCCEEDED,
                sidecars: vec![RUNNING],
                expect: vec!["s0"],
            },
            Case {
                name: "onfailure, main succeeded, 3 sidecars one done",
                policy: OnFailure,
                main: SUCCEEDED,
                sidecars: vec![RUNNING, SUCCEEDED, RUNNING],
                expect: vec!["s0", "s2"],
            },
            Case {
                name: "onfailure, main succeeded, all sidecars done",
                policy: OnFailure,
                main: SUCCEEDED,
                sidecars: vec![SUCCEEDED],
                expect: vec![],
            },
        ];
        assert_eq!(cases.len(), 13);
        for case in cases {
            let mut cs = vec![c("main", MAIN, case.main)];
            cs.extend(
                case.sidecars
                    .iter()
                    .enumerate()
                    .map(|(i, s)| c(&format!("s{i}"), SIDE, *s)),
            );
            let d = decide(&pod(Some(case.policy), cs));
            assert_eq!(stopped(&d), case.expect, "{}: {d:?}", case.name);
        }
    }

    #[test]
    fn holds_explain_themselves() {
        let p = |policy, cs| decide(&pod(policy, cs));
        assert_eq!(
            p(
                Some(Never),
                vec![c("m", MAIN, SUCCEEDED), c("s", None, RUNNING)]
            ),
            Decision::Hold(Hold::ClassificationPending)
        );
        assert_eq!(
            p(Some(Never), vec![c("m", MAIN, SUCCEEDED)]),
            Decision::Hold(Hold::NoSidecars)
        );
        assert_eq!(
            p(Some(Never), vec![c("s", SIDE, RUNNING)]),
            Decision::Hold(Hold::NoMainContainers)
        );
        assert_eq!(
            p(
                Some(RestartPolicy::Always),
                vec![c("m", MAIN, SUCCEEDED), c("s", SIDE, RUNNING)]
            ),
            Decision::Hold(Hold::RestartPolicyAlways)
        );
        assert_eq!(
            p(
                Some(OnFailure),
                vec![c("m", MAIN, FAILED), c("s", SIDE, RUNNING)]
            ),
            Decision::Hold(Hold::MainWillRestart)
        );
        assert_eq!(
            p(None, vec![c("m", MAIN, FAILED), c("s", SIDE, RUNNING)]),
            Decision::Hold(Hold::MainFailedPolicyUnknown)
        );
        assert_eq!(
            p(
                None,
                vec![
                    c("m", MAIN, State::Exited { code: None }),
                    c("s", SIDE, RUNNING)
                ]
            ),
            Decision::Hold(Hold::ExitCodePending)
        );
        assert_eq!(
            p(
                Some(Never),
                vec![c("m", MAIN, SUCCEEDED), c("s", SIDE, State::Created)]
            ),
            Decision::Hold(Hold::NoRunningSidecars)
        );
    }

    #[test]
    fn never_acts_on_kernel_exit_without_code() {
        let d = decide(&pod(
            Some(Never),
            vec![
                c("m", MAIN, State::Exited { code: None }),
                c("s", SIDE, RUNNING),
            ],
        ));
        assert_eq!(stopped(&d), vec!["s"]);
    }

    #[test]
    fn unknown_policy_acts_only_when_all_mains_succeeded() {
        let d = decide(&pod(
            None,
            vec![
                c("a", MAIN, SUCCEEDED),
                c("b", MAIN, SUCCEEDED),
                c("s", SIDE, RUNNING),
            ],
        ));
        assert_eq!(stopped(&d), vec!["s"]);
        let d = decide(&pod(
            None,
            vec![
                c("a", MAIN, SUCCEEDED),
                c("b", MAIN, RUNNING),
                c("s", SIDE, RUNNING),
            ],
        ));
        assert_eq!(d, Decision::Hold(Hold::MainsRunning));
    }

    #[test]
    fn ignore_exit_code_waits_for_main_exit_codes() {
        let ignoring = Some(Role::Sidecar {
            ignore_exit_code: true,
        });
        let d = decide(&pod(
            Some(Never),
            vec![
                c("m", MAIN, State::Exited { code: None }),
                c("s", ignoring, RUNNING),
            ],
        ));
        assert_eq!(d, Decision::Hold(Hold::ExitCodePending));
    }

    #[test]
    fn ignore_exit_code_sidecars_are_flagged() {
        let d = decide(&pod(
            Some(Never),
            vec![
                c("m", MAIN, SUCCEEDED),
                c(
                    "s",
                    Some(Role::Sidecar {
                        ignore_exit_code: true,
                    }),
                    RUNNING,
                ),
            ],
        ));
        match d {
            Decision::Stop(t) => assert!(t[0].ignore_exit_code),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pod_spec_overrides_policy_and_roles_and_covers_uncreated_mains() {
        let mut m = NodeModel::default();
        let sbs = [sandbox("sb1", "u1", None)];
        let cs = [
            container(
                "i0",
                "sb1",
                "u1",
                "istio-init",
                ContainerState::ContainerExited,
                0,
            ),
            container(
                "m0",
                "sb1",
                "u1",
                "main",
                ContainerState::ContainerExited,
                0,
            ),
            container(
                "s0",
                "sb1",
                "u1",
                "proxy",
                ContainerState::ContainerRunning,
                0,
            ),
        ];
        m.apply_snapshot(&sbs, &cs, SystemTime::now());
        let spec = PodSpecFacts {
            restart_policy: RestartPolicy::Never,
            containers: vec![
                ("main".into(), Role::Main),
                ("second".into(), Role::Main),
                (
                    "proxy".into(),
                    Role::Sidecar {
                        ignore_exit_code: false,
                    },
                ),
            ],
            init_containers: vec!["istio-init".into()],
        };
        assert!(m.set_pod_spec("u1", spec.clone()));
        assert!(!m.set_pod_spec("u1", spec));
        let f = facts(&m, "u1").unwrap();
        assert_eq!(f.policy, Some(RestartPolicy::Never));
        let names: Vec<&str> = f.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["main", "proxy", "second"],
            "init containers left out"
        );
        let second = &f.containers[2];
        assert_eq!((second.id.as_str(), second.state), ("", State::Created));
        assert_eq!(
            f.containers[1].role,
            Some(Role::Sidecar {
                ignore_exit_code: false
            })
        );
        assert!(m.remove_pod_spec("u1"));
        assert_eq!(facts(&m, "u1").unwrap().containers.len(), 3);
    }
}
