//! packaging/kubernetes: the committed CRDs equal `nodeward crds`; every manifest passes the
//! Kubernetes OpenAPI schemas offline (kubernetes-validate, installed by scripts/deps.sh); the
//! DaemonSet and Deployment keep the promised shape; and the RBAC allows every API call the agent
//! and the controller make (a reviewed table, below) and nothing the table marks as forbidden.
//! The integration tests hold the real calls to the same RBAC: the agent and controller
//! processes use service-account kubeconfigs, which the in-memory API server authorizes with
//! `support::rbac` (`ApiServer::assert_no_denials`).

use nodeward_testkit as support;

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;
use support::rbac::{self, Attributes, Rbac};

const K8S: &str = "packaging/kubernetes";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn docs(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The plain manifests (the kustomization's resources and the optional components' resources).
const MANIFESTS: &[&str] = &[
    "namespace.yaml",
    "crds.yaml",
    "agent-rbac.yaml",
    "agent-policy.yaml",
    "controller-rbac.yaml",
    "agent-daemonset.yaml",
    "controller-deployment.yaml",
    "controller-pdb.yaml",
    "controller-webhook.yaml",
];

#[test]
fn committed_crds_equal_nodeward_crds() {
    assert_eq!(
        read(&format!("{K8S}/crds.yaml")),
        nodeward::api::kruise::crds_yaml(),
        "regenerate with: nodeward crds > {K8S}/crds.yaml"
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let k: Value = serde_saphyr::from_str(&read(&format!("{K8S}/kustomization.yaml"))).unwrap();
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(listed, MANIFESTS);
}

fn kubernetes_validate() -> PathBuf {
    let venv = std::env::var_os("NODEWARD_VENV").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/nodeward-venv"),
        PathBuf::from,
    );
    let bin = venv.join("bin/kubernetes-validate");
    assert!(
        bin.exists(),
        "{} missing: run scripts/deps.sh",
        bin.display()
    );
    bin
}

fn validate(files: &[PathBuf]) {
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--quiet", "--no-warn"])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let dir = root().join(K8S);
    let mut files: Vec<PathBuf> = MANIFESTS.iter().map(|f| dir.join(f)).collect();
    // The Service half of the optional ServiceMonitor component (ServiceMonitor is not a core kind).
    let tmp = tempfile::tempdir().unwrap();
    let sm = docs(&format!(
        "{K8S}/components/servicemonitor/servicemonitor.yaml"
    ));
    let service = tmp.path().join("service.yaml");
    std::fs::write(&service, serde_saphyr::to_string(&sm[0]).unwrap()).unwrap();
    files.push(service);
    // Rendered overlays, when kubectl (with its built-in kustomize) is available.
    if let Ok(kubectl) = which("kubectl") {
        for overlay in [
            "packaging/kubernetes",
            "packaging/kubernetes-overlays/hostpid",
            "packaging/kubernetes-overlays/cri-o",
            "packaging/kubernetes-overlays/cri-dockerd",
        ] {
            let out = Command::new(&kubectl)
                .args(["kustomize"])
                .arg(root().join(overlay))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl kustomize {overlay}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = tmp
                .path()
                .join(format!("{}.yaml", overlay.replace('/', "_")));
            std::fs::write(&file, out.stdout).unwrap();
            files.push(file);
        }
    } else {
        eprintln!("kubectl not found: overlays not rendered, plain manifests validated");
    }
    validate(&files);
}

fn which(cmd: &str) -> Result<PathBuf, ()> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .ok_or(())
}

fn millicores(q: &Quantity) -> u64 {
    let s = &q.0;
    match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => (s.parse::<f64>().unwrap() * 1000.0) as u64,
    }
}

fn mebibytes(q: &Quantity) -> u64 {
    let s = &q.0;
    if let Some(mi) = s.strip_suffix("Mi") {
        mi.parse().unwrap()
    } else if let Some(gi) = s.strip_suffix("Gi") {
        gi.parse::<u64>().unwrap() * 1024
    } else {
        s.parse::<u64>().unwrap() / (1 << 20)
    }
}

#[test]
fn agent_daemonset_shape() {
    let ds: DaemonSet =
        serde_saphyr::from_str(&read(&format!("{K8S}/agent-daemonset.yaml"))).unwrap();
    let pod = ds.spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true), "hostPID is the opt-in component");
    assert_eq!(pod.service_account_name.as_deref(), Some("nodeward-agent"));
    let tolerations = pod.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
    );
    let terms = pod
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    assert!(terms.iter().all(
        |t| t.match_expressions.iter().flatten().any(|e| e.key == "type"
            && e.operator == "NotIn"
            && e.values.iter().flatten().any(|v| v == "virtual-kubelet"))
    ));
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let env = c.env.as_ref().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    let res = c.resources.as_ref().unwrap();
    let (requests, limits) = (res.requests.as_ref().unwrap(), res.limits.as_ref().unwrap());
    assert!(millicores(&requests["cpu"]) <= 50 && mebibytes(&requests["memory"]) <= 128);
    assert!(mebibytes(&limits["memory"]) <= 128);
    assert!(
        !limits.contains_key("cpu"),
        "no CPU quota: throttling would stall exit handling"
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/run/cri")
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(mount.name, RUNTIME_VOLUME);
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    // containerd's socket directory only, not all of /var/run.
    let host = vol.host_path.as_ref().unwrap();
    assert_eq!(host.path, "/run/containerd");
    assert_eq!(host.type_.as_deref(), Some("Directory"));
    assert!(
        c.args
            .iter()
            .flatten()
            .any(|a| a == "--runtime-dir=/run/cri")
    );
}

/// The DaemonSet's volume holding the runtime's socket directory.
const RUNTIME_VOLUME: &str = "runtime";

/// Each runtime component points the socket volume at the directory holding that runtime's
/// socket, under a name the agent probes at the top of its runtime dir.
#[test]
fn runtime_components_mount_their_socket_directory() {
    let probed = nodeward::cri::connect::PROBE_ORDER;
    for (component, host_dir, socket) in [
        ("runtime-cri-o", "/var/run/crio", "crio.sock"),
        ("runtime-cri-dockerd", "/var/run", "cri-dockerd.sock"),
    ] {
        let k = docs(&format!("{K8S}/components/{component}/kustomization.yaml"));
        let patch = k[0]["patches"][0]["patch"].as_str().unwrap();
        let patch: Value = serde_saphyr::from_str(patch).unwrap();
        assert_eq!(patch["kind"], "DaemonSet", "{component}");
        assert_eq!(patch["metadata"]["name"], "nodeward-agent", "{component}");
        let volumes = &patch["spec"]["template"]["spec"]["volumes"];
        assert_eq!(volumes[0]["name"], RUNTIME_VOLUME, "{component}");
        assert_eq!(volumes[0]["hostPath"]["path"], host_dir, "{component}");
        assert!(probed.contains(&socket), "{socket} is not probed");
    }
    assert!(probed.contains(&"containerd.sock"));
}

#[test]
fn controller_deployment_shape() {
    let d: Deployment =
        serde_saphyr::from_str(&read(&format!("{K8S}/controller-deployment.yaml"))).unwrap();
    let spec = d.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("nodeward-controller")
    );
    let env = pod.containers[0].env.as_ref().unwrap();
    assert!(
        env.iter().any(|e| e.name == "POD_NAME") && env.iter().any(|e| e.name == "POD_NAMESPACE")
    );
}

// ---- RBAC ----

const NS: &str = rbac::NAMESPACE;
const CONFIG_NS: &str = "kruise-daemon-config";
const KRUISE: &str = "apps.kruise.io";

/// One API call: (verb, group, resource or resource/subresource, namespace; None = all namespaces
/// or a cluster-scoped resource).
type Call = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// Every call the agent makes. Reviewed against the code: src/cluster/pods.rs (Pod watch, all
/// namespaces, field selector spec.nodeName), src/sidecar/report.rs (pods/status strategic patch,
/// Event create), the CRR executor (CRR list/watch with a label selector, status patch, Pod get,
/// Events) and the image puller (NodeImage get/watch, status patch, pull Secrets in
/// kruise-daemon-config, Events).
const AGENT_CALLS: &[Call] = &[
    ("list", "", "pods", None),
    ("watch", "", "pods", None),
    ("get", "", "pods", Some("default")),
    ("patch", "", "pods/status", Some("default")),
    ("create", "", "events", Some("default")),
    ("list", KRUISE, "containerrecreaterequests", None),
    ("watch", KRUISE, "containerrecreaterequests", None),
    ("get", KRUISE, "containerrecreaterequests", Some("default")),
    (
        "get",
        KRUISE,
        "containerrecreaterequests/status",
        Some("default"),
    ),
    (
        "patch",
        KRUISE,
        "containerrecreaterequests/status",
        Some("default"),
    ),
    (
        "update",
        KRUISE,
        "containerrecreaterequests/status",
        Some("default"),
    ),
    ("get", KRUISE, "nodeimages", None),
    ("list", KRUISE, "nodeimages", None),
    ("watch", KRUISE, "nodeimages", None),
    ("patch", KRUISE, "nodeimages/status", None),
    ("update", KRUISE, "nodeimages/status", None),
    ("list", KRUISE, "nodepodprobes", None),
    ("watch", KRUISE, "nodepodprobes", None),
    ("patch", KRUISE, "nodepodprobes/status", None),
    ("get", "", "secrets", Some(CONFIG_NS)),
];

/// What least privilege forbids the agent.
const AGENT_FORBIDDEN: &[Call] = &[
    ("patch", "", "events", Some("default")),
    ("create", "events.k8s.io", "events", Some("default")),
    ("update", "", "pods", Some("default")),
    ("patch", "", "pods", Some("default")),
    ("delete", "", "pods", Some("default")),
    ("get", "", "secrets", Some("default")),
    ("list", "", "secrets", None),
    ("list", "", "secrets", Some(CONFIG_NS)),
    ("watch", "", "secrets", Some(CONFIG_NS)),
    (
        "update",
        KRUISE,
        "containerrecreaterequests",
        Some("default"),
    ),
    (
        "delete",
        KRUISE,
        "containerrecreaterequests",
        Some("default"),
    ),
    ("update", KRUISE, "nodeimages", None),
    ("create", KRUISE, "nodeimages", None),
    ("update", KRUISE, "nodepodprobes", None),
    ("update", KRUISE, "nodepodprobes/status", None),
    ("list", KRUISE, "podprobemarkers", Some("default")),
    ("list", "", "nodes", None),
    ("create", "coordination.k8s.io", "leases", Some(NS)),
];

/// Every call the controller makes: src/controller/mod.rs (Lease election via kube-lease-manager,
/// Node and Pod watches, Pod get/replace for the virtual-node image swap, Events), the CRR
/// lifecycle (CRR get/list/watch/patch/update/delete, status, pods/status patch for
/// KruisePodReady) and the ImagePullJob/NodeImage reconcilers (NodeImage spec, ImagePullJob
/// status and finalizers, Secret copies in kruise-daemon-config, reads of Nodes, Pods, Secrets).
const CONTROLLER_CALLS: &[Call] = &[
    ("get", "coordination.k8s.io", "leases", Some(NS)),
    ("create", "coordination.k8s.io", "leases", Some(NS)),
    ("patch", "coordination.k8s.io", "leases", Some(NS)),
    ("update", "coordination.k8s.io", "leases", Some(NS)),
    ("list", "", "nodes", None),
    ("watch", "", "nodes", None),
    ("get", "", "nodes", None),
    ("list", "", "pods", None),
    ("watch", "", "pods", None),
    ("get", "", "pods", Some("default")),
    ("update", "", "pods", Some("default")),
    ("patch", "", "pods/status", Some("default")),
    ("create", "", "events", Some("default")),
    ("get", "", "secrets", Some("default")),
    ("list", "", "secrets", None),
    ("watch", "", "secrets", None),
    ("create", "", "secrets", Some(CONFIG_NS)),
    ("update", "", "secrets", Some(CONFIG_NS)),
    ("patch", "", "secrets", Some(CONFIG_NS)),
    ("delete", "", "secrets", Some(CONFIG_NS)),
    ("get", KRUISE, "containerrecreaterequests", Some("default")),
    ("list", KRUISE, "containerrecreaterequests", None),
    ("watch", KRUISE, "containerrecreaterequests", None),
    (
        "patch",
        KRUISE,
        "containerrecreaterequests",
        Some("default"),
    ),
    (
        "update",
        KRUISE,
        "containerrecreaterequests",
        Some("default"),
    ),
    (
        "delete",
        KRUISE,
        "containerrecreaterequests",
        Some("default"),
    ),
    (
        "patch",
        KRUISE,
        "containerrecreaterequests/status",
        Some("default"),
    ),
    (
        "update",
        KRUISE,
        "containerrecreaterequests/status",
        Some("default"),
    ),
    ("get", KRUISE, "imagepulljobs", Some("default")),
    ("list", KRUISE, "imagepulljobs", None),
    ("watch", KRUISE, "imagepulljobs", None),
    ("patch", KRUISE, "imagepulljobs", Some("default")),
    ("update", KRUISE, "imagepulljobs", Some("default")),
    ("delete", KRUISE, "imagepulljobs", Some("default")),
    ("create", KRUISE, "imagepulljobs", Some("default")),
    ("get", KRUISE, "imagelistpulljobs", Some("default")),
    ("list", KRUISE, "imagelistpulljobs", None),
    ("watch", KRUISE, "imagelistpulljobs", None),
    ("patch", KRUISE, "imagelistpulljobs", Some("default")),
    ("update", KRUISE, "imagelistpulljobs", Some("default")),
    ("delete", KRUISE, "imagelistpulljobs", Some("default")),
    (
        "update",
        KRUISE,
        "imagelistpulljobs/status",
        Some("default"),
    ),
    (
        "update",
        KRUISE,
        "imagelistpulljobs/finalizers",
        Some("default"),
    ),
    ("patch", KRUISE, "imagepulljobs/status", Some("default")),
    ("update", KRUISE, "imagepulljobs/status", Some("default")),
    (
        "update",
        KRUISE,
        "imagepulljobs/finalizers",
        Some("default"),
    ),
    ("get", KRUISE, "nodeimages", None),
    ("list", KRUISE, "nodeimages", None),
    ("watch", KRUISE, "nodeimages", None),
    ("create", KRUISE, "nodeimages", None),
    ("patch", KRUISE, "nodeimages", None),
    ("update", KRUISE, "nodeimages", None),
    ("delete", KRUISE, "nodeimages", None),
];

const CONTROLLER_FORBIDDEN: &[Call] = &[
    ("patch", "", "events", Some("default")),
    ("create", "", "secrets", Some("default")),
    ("delete", "", "secrets", Some("default")),
    ("delete", "", "pods", Some("default")),
    ("create", "coordination.k8s.io", "leases", Some("default")),
    ("update", "", "nodes", None),
];

/// Whether service account `sa` may make `call` under the packaged RBAC.
fn allowed(rbac: &Rbac, sa: &str, call: Call) -> bool {
    allowed_named(rbac, sa, call, None)
}

fn check(sa: &str, calls: &[Call], forbidden: &[Call]) {
    let packaged = Rbac::packaged();
    let missing: Vec<_> = calls
        .iter()
        .filter(|c| !allowed(&packaged, sa, **c))
        .collect();
    assert!(missing.is_empty(), "{sa}: RBAC does not allow {missing:?}");
    let extra: Vec<_> = forbidden
        .iter()
        .filter(|c| allowed(&packaged, sa, **c))
        .collect();
    assert!(
        extra.is_empty(),
        "{sa}: RBAC allows more than least privilege: {extra:?}"
    );
}

/// The CloneSet controller's calls (src/controller/cloneset/act.rs and mod.rs): the pod and
/// PVC watches, pods and PVCs created, patched and deleted, pods' InPlaceUpdateReady condition,
/// ControllerRevisions listed, created, patched and deleted, the CloneSet watched and its
/// podsToDelete patched, its status patched, Events.
const CLONESET_CALLS: &[Call] = &[
    ("list", "", "pods", None),
    ("watch", "", "pods", None),
    ("create", "", "pods", Some("default")),
    ("patch", "", "pods", Some("default")),
    ("delete", "", "pods", Some("default")),
    ("patch", "", "pods/status", Some("default")),
    ("list", "", "persistentvolumeclaims", None),
    ("watch", "", "persistentvolumeclaims", None),
    ("create", "", "persistentvolumeclaims", Some("default")),
    ("patch", "", "persistentvolumeclaims", Some("default")),
    ("delete", "", "persistentvolumeclaims", Some("default")),
    ("list", "apps", "controllerrevisions", Some("default")),
    ("get", "apps", "controllerrevisions", Some("default")),
    ("create", "apps", "controllerrevisions", Some("default")),
    ("patch", "apps", "controllerrevisions", Some("default")),
    ("delete", "apps", "controllerrevisions", Some("default")),
    ("list", KRUISE, "clonesets", None),
    ("watch", KRUISE, "clonesets", None),
    ("patch", KRUISE, "clonesets", Some("default")),
    ("patch", KRUISE, "clonesets/status", Some("default")),
    ("update", KRUISE, "clonesets/finalizers", Some("default")),
    ("create", "", "events", Some("default")),
];

const CLONESET_FORBIDDEN: &[Call] = &[
    ("create", "", "persistentvolumes", None),
    ("delete", "", "persistentvolumes", None),
    ("delete", KRUISE, "clonesets", Some("default")),
    ("create", KRUISE, "clonesets", Some("default")),
    ("create", "apps", "deployments", Some("default")),
    ("update", "", "nodes", None),
];

/// The CloneSet component grants the controller what its CloneSet controller calls, and the
/// base alone does not grant pod creation or deletion.
#[test]
fn cloneset_component_rbac_allows_its_calls_and_no_more() {
    let with = Rbac::with_component("cloneset");
    let missing: Vec<_> = CLONESET_CALLS
        .iter()
        .filter(|c| !allowed(&with, rbac::CONTROLLER, **c))
        .collect();
    assert!(
        missing.is_empty(),
        "the cloneset component does not allow {missing:?}"
    );
    let extra: Vec<_> = CLONESET_FORBIDDEN
        .iter()
        .filter(|c| allowed(&with, rbac::CONTROLLER, **c))
        .collect();
    assert!(extra.is_empty(), "the cloneset component allows {extra:?}");
    let base = Rbac::packaged();
    assert!(!allowed(
        &base,
        rbac::CONTROLLER,
        ("create", "", "pods", Some("default"))
    ));
}

#[test]
fn agent_rbac_allows_its_calls_and_no_more() {
    check(rbac::AGENT, AGENT_CALLS, AGENT_FORBIDDEN);
}

#[test]
fn controller_rbac_allows_its_calls_and_no_more() {
    check(rbac::CONTROLLER, CONTROLLER_CALLS, CONTROLLER_FORBIDDEN);
}

/// Calls on one named object: the webhook's certificate Secret and its configurations' CA bundle
/// (src/controller/webhook/act.rs), and nothing of the same kind beside them.
#[test]
fn controller_rbac_names_the_webhook_objects() {
    let packaged = Rbac::packaged();
    let call = |verb, group, resource, namespace, name| {
        allowed_named(
            &packaged,
            rbac::CONTROLLER,
            (verb, group, resource, namespace),
            name,
        )
    };
    let reg = "admissionregistration.k8s.io";
    let certs = "nodeward-controller-webhook-certs";
    assert!(call("create", "", "secrets", Some(NS), None));
    assert!(call("get", "", "secrets", Some(NS), Some(certs)));
    assert!(call("update", "", "secrets", Some(NS), Some(certs)));
    assert!(!call("update", "", "secrets", Some(NS), Some("other")));
    assert!(!call("delete", "", "secrets", Some(NS), Some(certs)));
    let mwc = "mutatingwebhookconfigurations";
    assert!(call("get", reg, mwc, None, Some("nodeward-crr")));
    assert!(call("update", reg, mwc, None, Some("nodeward-crr")));
    assert!(!call("update", reg, mwc, None, Some("other")));
    assert!(!call("list", reg, mwc, None, None));
    assert!(!call("create", reg, mwc, None, None));
    let vwc = "validatingwebhookconfigurations";
    assert!(call("get", reg, vwc, None, Some("nodeward-validate")));
    assert!(call("update", reg, vwc, None, Some("nodeward-validate")));
    assert!(!call("update", reg, vwc, None, Some("other")));
    assert!(!call("list", reg, vwc, None, None));
}

/// Whether `sa` may make `call` on the object `name`.
fn allowed_named(
    rbac: &Rbac,
    sa: &str,
    (verb, group, resource, namespace): Call,
    name: Option<&str>,
) -> bool {
    rbac.allows(
        sa,
        Attributes {
            verb,
            group,
            resource,
            namespace,
            name,
        },
    )
}

#[test]
fn workloads_use_the_bound_service_accounts() {
    let packaged = Rbac::packaged();
    let docs = packaged.docs();
    for sa in [rbac::AGENT, rbac::CONTROLLER] {
        assert!(docs.iter().any(|d| d["kind"] == "ServiceAccount"
            && d["metadata"]["name"] == sa
            && d["metadata"]["namespace"] == NS));
    }
}
