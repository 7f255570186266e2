//! The packaged RBAC (`packaging/kubernetes/*rbac*.yaml`) evaluated as kube-apiserver's RBAC
//! authorizer does for a service account: the in-memory API server enforces it on requests made
//! with a service account's token, and tests/manifests.rs checks its reviewed tables with it.

use std::path::PathBuf;

use serde_json::Value;

/// The namespace of the packaged service accounts.
pub const NAMESPACE: &str = "nodeward-system";
pub const AGENT: &str = "nodeward-agent";
pub const CONTROLLER: &str = "nodeward-controller";

/// The user name kube-apiserver gives a service account's token.
pub fn user(service_account: &str) -> String {
    format!("system:serviceaccount:{NAMESPACE}:{service_account}")
}

/// The service account a user name stands for (the inverse of [`user`]).
pub fn service_account(user: &str) -> Option<&str> {
    user.strip_prefix("system:serviceaccount:")?
        .strip_prefix(NAMESPACE)?
        .strip_prefix(':')
}

/// One API request as RBAC sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// `resource` or `resource/subresource`.
    pub resource: &'a str,
    /// `None`: all namespaces, or a cluster-scoped resource.
    pub namespace: Option<&'a str>,
    /// The object's name, when the request names one (get, update, patch, delete).
    pub name: Option<&'a str>,
}

/// Roles, cluster roles and their bindings.
#[derive(Clone, Debug)]
pub struct Rbac {
    docs: Vec<Value>,
}

impl Rbac {
    /// The documents of `packaging/kubernetes/*rbac*.yaml`.
    pub fn packaged() -> Self {
        Self::from_dirs(&["packaging/kubernetes"])
    }

    /// The packaged RBAC with that of `packaging/kubernetes/components/<component>`.
    pub fn with_component(component: &str) -> Self {
        Self::from_dirs(&[
            "packaging/kubernetes",
            &format!("packaging/kubernetes/components/{component}"),
        ])
    }

    /// The documents of `*rbac*.yaml` in each of `dirs` (relative to the repository).
    fn from_dirs(dirs: &[&str]) -> Self {
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            let dir = super::repo().join(dir);
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("directory entry").path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().contains("rbac"))
                .collect();
            assert!(!found.is_empty(), "no RBAC manifests in {}", dir.display());
            found.sort();
            files.extend(found);
        }
        let docs = files
            .iter()
            .flat_map(|f| {
                let text =
                    std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                serde_saphyr::from_multiple::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            })
            .collect::<Vec<Value>>();
        for rule in docs
            .iter()
            .flat_map(|d| d["rules"].as_array().into_iter().flatten())
        {
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "the test RBAC evaluator does not model nonResourceURLs: {rule}"
            );
        }
        Self { docs }
    }

    pub fn docs(&self) -> &[Value] {
        &self.docs
    }

    /// Whether service account `sa` (in [`NAMESPACE`]) may make the request.
    pub fn allows(&self, sa: &str, req: Attributes<'_>) -> bool {
        let role = |kind: &str, name: &str, role_ns: Option<&str>| {
            self.docs.iter().find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && d["metadata"]["namespace"].as_str() == role_ns
            })
        };
        self.docs
            .iter()
            .filter(|b| {
                b["subjects"].as_array().is_some_and(|s| {
                    s.iter().any(|s| {
                        s["kind"] == "ServiceAccount"
                            && s["name"] == sa
                            && s["namespace"] == NAMESPACE
                    })
                })
            })
            .filter_map(|b| {
                let binding_ns = b["metadata"]["namespace"].as_str();
                let scope_ok = match b["kind"].as_str() {
                    Some("ClusterRoleBinding") => true,
                    Some("RoleBinding") => req.namespace.is_some() && req.namespace == binding_ns,
                    _ => false,
                };
                let name = b["roleRef"]["name"].as_str()?;
                let r = match b["roleRef"]["kind"].as_str()? {
                    "ClusterRole" => role("ClusterRole", name, None),
                    _ => role("Role", name, binding_ns),
                };
                scope_ok.then_some(r).flatten()
            })
            .flat_map(|r| r["rules"].as_array().into_iter().flatten())
            .any(|rule| {
                contains(&rule["apiGroups"], req.group)
                    && contains(&rule["resources"], req.resource)
                    && contains(&rule["verbs"], req.verb)
                    // A rule naming objects grants only requests for one of them.
                    && (rule.get("resourceNames").is_none()
                        || req.name.is_some_and(|n| contains(&rule["resourceNames"], n)))
            })
    }
}

fn contains(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
}
