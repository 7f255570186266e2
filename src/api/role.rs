//! The one role classifier of the Job sidecar terminator, shared by the agent (the container's env
//! as the runtime has it, or the Pod object's) and the controller (the Pod object on a virtual
//! node): one rule in every mode.

use k8s_openapi::api::core::v1::Container;

use super::well_known as wk;

/// A container's role for the Job sidecar terminator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Main,
    Sidecar {
        ignore_exit_code: bool,
    },
    /// Neither main nor stopped by the agent: init containers (including native sidecars).
    Other,
}

impl Role {
    /// Classify from the container's env (OCI spec env, which includes the pod spec's env, or the
    /// Pod object's). A sidecar is marked `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT=true`, or by a
    /// non-empty `KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE` alone: OpenKruise v1.4's
    /// `isSidecar` counts both on a normal node too (the image swap is only for virtual nodes).
    pub fn from_env<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let (mut sidecar, mut ignore) = (false, false);
        for (k, v) in env {
            if (k == wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT && wk::env_true(v))
                || (k == wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE && !v.is_empty())
            {
                sidecar = true;
            } else if k == wk::ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE && wk::env_true(v) {
                ignore = true;
            }
        }
        if sidecar {
            Self::Sidecar {
                ignore_exit_code: ignore,
            }
        } else {
            Self::Main
        }
    }

    /// The role of a regular container of a Pod object, by its spec env: env from `valueFrom`
    /// is not known here and does not count. (Init containers, native sidecars included, are
    /// [`Role::Other`] by their place in the spec, not by env.)
    pub fn of_container(c: &Container) -> Self {
        Self::from_env(
            c.env
                .iter()
                .flatten()
                .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?))),
        )
    }

    pub fn is_sidecar(self) -> bool {
        matches!(self, Self::Sidecar { .. })
    }
}

/// The quick-exit image of an image-swap sidecar (virtual nodes), if the container is one.
pub fn swap_image(c: &Container) -> Option<&str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE)
        .and_then(|e| e.value.as_deref())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_from_env_is_case_insensitive() {
        assert_eq!(
            Role::from_env([(wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT, "TRUE")]),
            Role::Sidecar {
                ignore_exit_code: false
            }
        );
        assert_eq!(
            Role::from_env([
                (wk::ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE, "true"),
                (wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT, "True"),
            ]),
            Role::Sidecar {
                ignore_exit_code: true
            }
        );
        assert_eq!(
            Role::from_env([(wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT, "yes")]),
            Role::Main
        );
        // Go's strings.EqualFold(value, "true"): no trimming.
        assert_eq!(
            Role::from_env([(wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT, " true ")]),
            Role::Main
        );
        assert_eq!(
            Role::from_env([(wk::ENV_TERMINATE_SIDECAR_IGNORE_EXIT_CODE, "true")]),
            Role::Main
        );
        assert_eq!(
            Role::from_env([(
                wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE,
                "quick:1"
            )]),
            Role::Sidecar {
                ignore_exit_code: false
            }
        );
        assert_eq!(
            Role::from_env([(wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE, "")]),
            Role::Main
        );
    }

    /// `_WITH_IMAGE` alone marks a sidecar in every mode: the runtime's env (standalone), the
    /// Pod object (cluster mode) and the controller's virtual-node view, as upstream v1.4.
    #[test]
    fn with_image_alone_is_a_sidecar_in_every_mode() {
        let sidecar = Role::Sidecar {
            ignore_exit_code: false,
        };
        assert_eq!(
            Role::from_env([(
                wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE,
                "quick:1"
            )]),
            sidecar
        );
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "vk",
            "env": [{"name": wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE, "value": "quick:1"}]
        }))
        .unwrap();
        assert_eq!(Role::of_container(&c), sidecar);
        assert_eq!(swap_image(&c), Some("quick:1"));
        let from_ref: Container = serde_json::from_value(serde_json::json!({
            "name": "x",
            "env": [{"name": wk::ENV_TERMINATE_SIDECAR_WHEN_JOB_EXIT,
                     "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        }))
        .unwrap();
        assert_eq!(Role::of_container(&from_ref), Role::Main);
    }
}
