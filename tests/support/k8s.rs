//! The real single-node Kubernetes of `scripts/cluster.sh` (kube-apiserver, etcd,
//! kube-controller-manager, kube-scheduler and a kubelet on Debian's containerd, built from the
//! k8s.io/kubernetes module), and nodeward deployed on it from `packaging/kubernetes` as a user
//! would: the agent as the DaemonSet's pod, the controller as the Deployment's pods, both under the
//! shipped RBAC.
//!
//! [`RealCluster::shared`] runs `scripts/cluster.sh up` (which reuses a running cluster) once per
//! process and leaves the cluster running for the next test binary; `scripts/test.sh` stops it
//! with `scripts/cluster.sh down`. A cluster that cannot start fails the test with the script's
//! reason: it is never skipped.

use super::repo;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, ContainerStatus, ContainerStatusRequest, ExecSyncRequest,
    ListContainersRequest,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Prefixes of the variables cargo sets for a test process (not for a plain `cargo build`).
const TEST_ONLY_CARGO_VARS: &[&str] = &[
    "OUT_DIR",
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_BIN_EXE_",
    "CARGO_TARGET_TMPDIR",
];

/// The packaged namespace of the agent and the controller.
pub const NAMESPACE: &str = "nodeward-system";

/// The running cluster, as `scripts/cluster.sh env` describes it.
pub struct RealCluster {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub node: String,
    pub registry: String,
    pub runtime_dir: PathBuf,
    pub kubeconfig: PathBuf,
    deployed: OnceLock<std::result::Result<String, String>>,
}

/// Run a command to completion; its stdout, or an error carrying its stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl RealCluster {
    /// The cluster, started (or found running) on first use. Panics with the reason when it
    /// cannot start.
    pub fn shared() -> &'static RealCluster {
        static SHARED: OnceLock<std::result::Result<RealCluster, String>> = OnceLock::new();
        let cluster = SHARED.get_or_init(|| Self::up().map_err(|e| format!("{e:#}")));
        match cluster {
            Ok(c) => c,
            Err(e) => panic!("the real cluster (scripts/cluster.sh up) failed to start: {e}"),
        }
    }

    fn up() -> Result<RealCluster> {
        let script = repo().join("scripts/cluster.sh");
        run(Command::new(&script).arg("up"))?;
        let env: BTreeMap<String, String> = run(Command::new(&script).arg("env"))?
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let var = |k: &str| {
            env.get(k)
                .cloned()
                .with_context(|| format!("cluster.sh env printed no {k}"))
        };
        Ok(RealCluster {
            dir: var("NODEWARD_CLUSTER_DIR")?.into(),
            bin: var("NODEWARD_CLUSTER_BIN")?.into(),
            node: var("NODEWARD_CLUSTER_NODE")?,
            registry: var("NODEWARD_CLUSTER_REGISTRY")?,
            runtime_dir: var("NODEWARD_CLUSTER_RUNTIME_DIR")?.into(),
            kubeconfig: var("KUBECONFIG")?.into(),
            deployed: OnceLock::new(),
        })
    }

    /// An admin client (system:masters).
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("admin kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("admin client config");
        Client::try_from(config).expect("admin client")
    }

    /// `kubectl <args>` as the admin; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args))
    }

    /// `scripts/cluster.sh <args>` (e.g. `stop kube-apiserver`); its stdout.
    pub fn script(&self, args: &[&str]) -> Result<String> {
        run(Command::new(repo().join("scripts/cluster.sh")).args(args))
    }

    /// A test image reference in the cluster's registry (`busybox:1` is always there).
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry)
    }

    /// nodeward deployed from `packaging/kubernetes` (once per process; a later call waits for
    /// the same rollout): the static binary built, then `scripts/cluster.sh deploy` (its image
    /// pushed, the shipped manifests applied server-side through an overlay that only names that
    /// image and puts the hostPath volumes on the cluster's dirs). Returns the image.
    pub fn deploy_nodeward(&self) -> String {
        let deployed = self
            .deployed
            .get_or_init(|| self.deploy().map_err(|e| format!("{e:#}")));
        match deployed {
            Ok(image) => image.clone(),
            Err(e) => panic!("deploying nodeward on the real cluster failed: {e}"),
        }
    }

    fn deploy(&self) -> Result<String> {
        let target = "x86_64-unknown-linux-musl";
        let mut cargo = Command::new(env!("CARGO"));
        // Without the variables cargo sets for a test process: ring's build script tracks
        // OUT_DIR and CARGO_MANIFEST_DIR, so inheriting them would rebuild ring and everything
        // above it here, and again in the next plain `cargo build` (scripts/package-test.sh).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if TEST_ONLY_CARGO_VARS.iter().any(|p| name.starts_with(p)) {
                cargo.env_remove(name.as_ref());
            }
        }
        run(cargo
            .current_dir(repo())
            .args(["build", "--quiet", "--release", "--target", target])
            .args(["--bin", "nodeward"]))?;
        self.deploy_built()
    }

    /// Deploy nodeward from `packaging/kubernetes` again with the binary [`deploy_nodeward`]
    /// built (after a test replaced it, e.g. with the Helm chart); its image.
    ///
    /// [`deploy_nodeward`]: Self::deploy_nodeward
    pub fn redeploy_nodeward(&self) -> String {
        self.deploy_nodeward();
        self.deploy_built()
            .unwrap_or_else(|e| panic!("deploying nodeward again failed: {e:#}"))
    }

    /// Remove what [`deploy_nodeward`] applied but the CRDs and the namespace (the objects
    /// stored in them stay), and wait until nodeward's pods are gone, to leave the node to a
    /// peer; [`redeploy_nodeward`] brings it back.
    ///
    /// [`deploy_nodeward`]: Self::deploy_nodeward
    /// [`redeploy_nodeward`]: Self::redeploy_nodeward
    pub fn undeploy_nodeward(&self) -> Result<()> {
        let overlay = repo().join("target/real-cluster-overlay");
        let rendered = self.kubectl(&["kustomize", overlay.to_str().context("path")?])?;
        let objects: Vec<&str> = rendered
            .split("\n---\n")
            .filter(|d| {
                !d.contains("\nkind: CustomResourceDefinition\n")
                    && !d.contains("\nkind: Namespace\n")
            })
            .collect();
        let file = self.dir.join("nodeward-objects.yaml");
        std::fs::write(&file, objects.join("\n---\n"))?;
        let file = file.to_str().context("path")?;
        self.kubectl(&["delete", "--ignore-not-found", "--wait", "-f", file])?;
        self.kubectl(&[
            "-n",
            NAMESPACE,
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app.kubernetes.io/part-of=nodeward",
            "--timeout=120s",
        ])?;
        Ok(())
    }

    fn deploy_built(&self) -> Result<String> {
        let binary = repo().join("target/x86_64-unknown-linux-musl/release/nodeward");
        let binary = binary.to_str().context("binary path")?;
        Ok(self.script(&["deploy", binary])?.trim().to_owned())
    }

    /// The statuses of a pod's containers as the cluster's containerd has them, by container name
    /// (state, and `finished_at` in ns: containerd's own exit timestamp).
    pub async fn runtime_statuses(
        &self,
        pod_uid: &str,
    ) -> Result<HashMap<String, ContainerStatus>> {
        let socket = self.runtime_dir.join("containerd/containerd.sock");
        let mut cri = RuntimeServiceClient::new(nodeward::cri::channel(&socket));
        let filter = ContainerFilter {
            label_selector: [("io.kubernetes.pod.uid".to_string(), pod_uid.to_string())].into(),
            ..Default::default()
        };
        let list = cri
            .list_containers(ListContainersRequest {
                filter: Some(filter),
            })
            .await?
            .into_inner();
        let mut out = HashMap::new();
        for c in list.containers {
            let req = ContainerStatusRequest {
                container_id: c.id,
                verbose: false,
            };
            let status = cri.container_status(req).await?.into_inner().status;
            let status = status.context("ContainerStatus without a status")?;
            let name = status.metadata.as_ref().map(|m| m.name.clone());
            out.insert(name.unwrap_or_default(), status);
        }
        Ok(out)
    }

    /// Run `cmd` in a container through the cluster's containerd (CRI ExecSync, 10 s): its
    /// stdout, or an error with its exit code and stderr.
    pub async fn exec(&self, container_id: &str, cmd: &[&str]) -> Result<String> {
        let socket = self.runtime_dir.join("containerd/containerd.sock");
        let mut cri = RuntimeServiceClient::new(nodeward::cri::channel(&socket));
        let req = ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        };
        let resp = cri.exec_sync(req).await?.into_inner();
        if resp.exit_code != 0 {
            bail!(
                "{cmd:?} exited with {}: {}",
                resp.exit_code,
                String::from_utf8_lossy(&resp.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&resp.stdout).into_owned())
    }

    /// The Running pods of one packaged workload.
    pub async fn nodeward_pods_of(&self, client: &Client, app: &str) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
        pods.list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && p.metadata.deletion_timestamp.is_none()
            })
            .collect()
    }
}

/// The cluster with nodeward deployed, an admin client, and a fresh namespace named `ns` (one
/// of that name left by an earlier run is deleted first).
pub async fn with_namespace(ns: &str) -> (&'static RealCluster, Client) {
    let cluster = RealCluster::shared();
    tokio::task::spawn_blocking(|| RealCluster::shared().deploy_nodeward())
        .await
        .unwrap();
    let client = cluster.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await.unwrap().is_some() {
        namespaces.delete(ns, &DeleteParams::default()).await.ok();
        crate::wait::until(&format!("namespace {ns} gone"), 120, || {
            let namespaces = namespaces.clone();
            async move {
                namespaces
                    .get_opt(ns)
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    }
    let object = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    // The service account admission needs the namespace's `default` ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    crate::wait::until("the default service account", 60, || {
        let accounts = accounts.clone();
        async move { accounts.get_opt("default").await.unwrap().map(|_| ()) }
    })
    .await;
    (cluster, client)
}

/// Delete the namespace `ns` a test worked in, with everything in it, without waiting for it to
/// go ([`with_namespace`] waits for a namespace of that name left by an earlier run).
pub async fn teardown(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(ns, &DeleteParams::default()).await.ok();
}

/// How long a test waits for something the cluster does at its own pace (scheduling, the
/// kubelet's 1 s relist, controllers' resyncs).
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(120);

/// An `apps.kruise.io` kind of `version` as dynamic objects, in namespace `ns` or cluster-wide.
pub fn kruise_api(
    client: &Client,
    ns: Option<&str>,
    kind: &str,
    version: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("apps.kruise.io", version, kind);
    let resource = ApiResource::from_gvk(&gvk);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}
