//! OpenKruise (kruise-manager + kruise-daemon) on the real cluster, as the migration test and the
//! peers benchmark run it: binaries built apart from its Go module (README "Upgrading from
//! kruise-daemon" says how; never built by this repository), given by `NODEWARD_PEER_KRUISE_MANAGER`,
//! `NODEWARD_PEER_KRUISE_DAEMON` and its source tree by `NODEWARD_PEER_KRUISE_SOURCE`; installed from
//! the source's own kustomize manifests (`config/default`: its CRDs, RBAC, webhooks with the
//! certificates kruise-manager makes itself) with the images pushed to the cluster's registry.

use crate::k8s::RealCluster;

use anyhow::{Context, Result, ensure};

/// The feature gates both binaries run with: what a user of the Helm chart turns on for the
/// sidecar terminator and image pre-pull (the chart's default is none; `config/default` turns on
/// every alpha and beta gate, more than a user runs).
pub const GATES: &str = "SidecarTerminator=true,ImagePullJobGate=true";
/// The Helm chart's default log level (`manager.log.level`, `daemon.log.level`): 4.
pub const LOG_LEVEL: &str = "4";

/// The built binaries and the source tree of one OpenKruise release.
pub struct Kruise {
    pub manager: String,
    pub daemon: String,
    pub source: String,
}

impl Kruise {
    /// From the environment; the error names the variable that is not set.
    pub fn from_env() -> Result<Kruise> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!(
                    "{name} is not set (README \"Upgrading from kruise-daemon\" says how to build OpenKruise)"
                )
            })
        };
        Ok(Kruise {
            manager: var("NODEWARD_PEER_KRUISE_MANAGER")?,
            daemon: var("NODEWARD_PEER_KRUISE_DAEMON")?,
            source: var("NODEWARD_PEER_KRUISE_SOURCE")?,
        })
    }

    /// The release, from the source tree's directory name (`…/kruise@v1.9.1`), else `unknown`.
    pub fn version(&self) -> String {
        self.source
            .trim_end_matches('/')
            .rsplit_once('@')
            .map_or("unknown", |(_, v)| v)
            .to_owned()
    }

    /// Push both images, apply the manifests (server-side, over nodeward's CRDs if they are
    /// there) and wait for kruise-manager and kruise-daemon to roll out.
    pub fn install(&self, cluster: &RealCluster) -> Result<()> {
        let image = |bin: &str, name: &str, path: &str| -> Result<String> {
            Ok(cluster
                .script(&["image", bin, name, path])?
                .trim()
                .to_owned())
        };
        let manager = image(&self.manager, "kruise-manager", "/manager")?;
        let daemon = image(&self.daemon, "kruise-daemon", "/kruise-daemon")?;
        let (all, deletable) = self.manifests(cluster, &manager, &daemon)?;
        let file = cluster.dir.join("kruise.yaml");
        std::fs::write(&file, all)?;
        std::fs::write(cluster.dir.join("kruise-objects.yaml"), deletable)?;
        let file = file.to_str().context("path")?;
        cluster.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", file])?;
        for what in [
            "deployment/kruise-controller-manager",
            "daemonset/kruise-daemon",
        ] {
            cluster.kubectl(&[
                "-n",
                "kruise-system",
                "rollout",
                "status",
                what,
                "--timeout=300s",
            ])?;
        }
        Ok(())
    }

    /// Remove what [`install`](Self::install) made but the CRDs (nodeward's kinds are among
    /// them): its webhooks first (its pod webhook fails closed), then the rest; nodeward's CRDs
    /// applied again over kruise's.
    pub fn uninstall(&self, cluster: &RealCluster) -> Result<()> {
        for (kind, name) in [
            (
                "mutatingwebhookconfiguration",
                "kruise-mutating-webhook-configuration",
            ),
            (
                "validatingwebhookconfiguration",
                "kruise-validating-webhook-configuration",
            ),
        ] {
            cluster.kubectl(&["delete", "--ignore-not-found", kind, name])?;
        }
        let objects = cluster.dir.join("kruise-objects.yaml");
        let objects = objects.to_str().context("path")?;
        cluster.kubectl(&["delete", "--ignore-not-found", "--wait", "-f", objects])?;
        let crds = crate::repo().join("packaging/kubernetes/crds.yaml");
        cluster.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=nodeward-deploy",
            "-f",
            crds.to_str().context("path")?,
        ])?;
        Ok(())
    }

    /// `config/default` rendered with the two images, the gates and log level above, and
    /// kruise-daemon's `/var/run` being the cluster's run directory; all documents, and apart
    /// those to delete afterwards (all but the CRDs).
    fn manifests(
        &self,
        cluster: &RealCluster,
        manager: &str,
        daemon: &str,
    ) -> Result<(String, String)> {
        let rendered =
            cluster.kubectl(&["kustomize", &format!("{}/config/default", self.source)])?;
        // The Deployment (manager) comes before the DaemonSet (daemon).
        let rendered = rendered
            .replacen("image: controller:latest", &format!("image: {manager}"), 1)
            .replacen("image: controller:latest", &format!("image: {daemon}"), 1);
        let run = cluster.dir.join("run");
        let rendered = rendered.replace(
            "      - hostPath:\n          path: /var/run\n",
            &format!("      - hostPath:\n          path: {}\n", run.display()),
        );
        // kruise's own image has /log and /tmp; an image of the bare binary needs them as
        // volumes (the manager runs as 65534 and writes its protection log and webhook
        // certificates there).
        let rendered = rendered
            .replace(
                "        - mountPath: /tmp/k8s-webhook-server/serving-certs\n",
                "        - mountPath: /log\n          name: log\n        - mountPath: /tmp\n          name: tmp\n        - mountPath: /tmp/k8s-webhook-server/serving-certs\n",
            )
            .replace(
                "      volumes:\n      - name: cert\n",
                "      volumes:\n      - emptyDir: {}\n        name: log\n      - emptyDir: {}\n        name: tmp\n      - name: cert\n",
            );
        let gates = format!("--feature-gates={GATES}");
        let rendered = rendered
            .replace(
                "--feature-gates=AllAlpha=true,AllBeta=true,EnableExternalCerts=false,TemplateNoDefaults=false",
                &format!("{gates},EnableExternalCerts=false,TemplateNoDefaults=false"),
            )
            .replace("--feature-gates=AllAlpha=true,AllBeta=true", &gates)
            .replace("--v=5", &format!("--v={LOG_LEVEL}"))
            .replace("-v=5", &format!("-v={LOG_LEVEL}"));
        ensure!(
            !rendered.contains("controller:latest")
                && rendered.contains(&*run.to_string_lossy())
                && rendered.contains("name: log\n")
                && rendered.contains("name: tmp\n")
                && !rendered.contains("AllAlpha")
                && rendered.matches(&gates).count() == 2,
            "OpenKruise's config/default is not laid out as expected (release {})",
            self.version()
        );
        let deletable: Vec<&str> = rendered
            .split("\n---\n")
            .filter(|d| !d.contains("\nkind: CustomResourceDefinition\n"))
            .collect();
        Ok((rendered.clone(), deletable.join("\n---\n")))
    }
}
