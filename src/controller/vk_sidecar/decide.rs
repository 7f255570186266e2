//! The rule of the virtual-node sidecar swap, over a Pod object: pure.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};

use crate::api::role::{Role, swap_image};

/// Node label marking virtual nodes.
pub const VIRTUAL_NODE_LABEL: (&str, &str) = ("type", "virtual-kubelet");
/// Event reason, as upstream.
pub const EVENT_REASON: &str = "SidecarTerminator";

/// One image swap to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swap {
    pub container: String,
    pub image: String,
}

fn is_sidecar(c: &Container) -> bool {
    Role::of_container(c).is_sidecar()
}

fn exit_code(st: &ContainerStatus) -> Option<i32> {
    st.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// What to swap for a pod on a virtual node, per upstream's rule: restart policy `Never` → every
/// main container terminated; `OnFailure` → every main container terminated with code 0. Empty when
/// nothing is to be done (not a Job pod, mains still running, already swapped or terminated).
pub fn decide(pod: &Pod) -> Vec<Swap> {
    let (Some(spec), Some(status)) = (pod.spec.as_ref(), pod.status.as_ref()) else {
        return Vec::new();
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if policy == "Always" || status.phase.as_deref().unwrap_or("Pending") == "Pending" {
        return Vec::new();
    }
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    // Upstream: only once every container has a status.
    if statuses.len() != spec.containers.len() {
        return Vec::new();
    }
    let status_of = |name: &str| statuses.iter().find(|s| s.name == name);
    let mains_done = spec.containers.iter().filter(|c| !is_sidecar(c)).all(|c| {
        let code = status_of(&c.name).and_then(exit_code);
        match policy {
            "Never" => code.is_some(),
            _ => code == Some(0),
        }
    });
    if !mains_done {
        return Vec::new();
    }
    spec.containers
        .iter()
        .filter_map(|c| {
            let image = swap_image(c)?;
            let st = status_of(&c.name);
            let terminated = st.and_then(exit_code).is_some();
            (c.image.as_deref() != Some(image) && !terminated).then(|| Swap {
                container: c.name.clone(),
                image: image.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: &str = "127.0.0.1:5000/quick-exit:1";

    /// A pod with a main container and `sidecars` in-place sidecars; `None` state = running.
    fn pod(policy: &str, main: Option<i32>, sidecars: &[Option<i32>]) -> Pod {
        let mut containers = vec![serde_json::json!({"name": "main", "image": "app"})];
        let mut statuses = vec![status("main", main)];
        for (i, s) in sidecars.iter().enumerate() {
            containers.push(serde_json::json!({
                "name": format!("s{i}"), "image": "proxy",
                "env": [{"name": "KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE", "value": QUICK}]
            }));
            statuses.push(status(&format!("s{i}"), *s));
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"restartPolicy": policy, "nodeName": "vk-1", "containers": containers},
            "status": {"phase": "Running", "containerStatuses": statuses}
        }))
        .unwrap()
    }

    fn status(name: &str, code: Option<i32>) -> serde_json::Value {
        let state = match code {
            Some(c) => serde_json::json!({"terminated": {"exitCode": c}}),
            None => serde_json::json!({"running": {}}),
        };
        serde_json::json!({"name": name, "image": "x", "imageID": "", "ready": code.is_none(),
                           "restartCount": 0, "state": state})
    }

    fn swapped(p: &Pod) -> Vec<String> {
        decide(p).into_iter().map(|s| s.container).collect()
    }

    /// Upstream's 9 virtual-kubelet cases: Never/OnFailure × main running/failed/succeeded, with
    /// sidecars partly terminated.
    #[test]
    fn upstream_virtual_kubelet_matrix() {
        type Case<'a> = (&'a str, Option<i32>, &'a [Option<i32>], &'a [&'a str]);
        let cases: [Case; 9] = [
            ("Never", None, &[None], &[]),
            ("Never", Some(1), &[None], &["s0"]),
            ("Never", Some(0), &[None, None], &["s0", "s1"]),
            ("Never", Some(0), &[Some(0), None], &["s1"]),
            ("OnFailure", None, &[None], &[]),
            ("OnFailure", Some(1), &[None], &[]),
            ("OnFailure", Some(0), &[None], &["s0"]),
            (
                "OnFailure",
                Some(0),
                &[None, Some(137), None],
                &["s0", "s2"],
            ),
            ("OnFailure", Some(0), &[Some(0)], &[]),
        ];
        for (policy, main, sidecars, expect) in cases {
            let p = pod(policy, main, sidecars);
            assert_eq!(
                swapped(&p),
                expect,
                "{policy} main={main:?} sidecars={sidecars:?}"
            );
        }
        assert_eq!(decide(&pod("Never", Some(0), &[None]))[0].image, QUICK);
    }

    #[test]
    fn nothing_to_do() {
        assert!(decide(&pod("Always", Some(0), &[None])).is_empty());
        let mut p = pod("Never", Some(0), &[None]);
        p.spec.as_mut().unwrap().containers[1].image = Some(QUICK.into());
        assert!(decide(&p).is_empty(), "already swapped");
        let mut p = pod("Never", Some(0), &[None]);
        p.status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()
            .pop();
        assert!(decide(&p).is_empty(), "statuses incomplete");
        let mut p = pod("Never", Some(0), &[None]);
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        assert!(decide(&p).is_empty());
    }
}
