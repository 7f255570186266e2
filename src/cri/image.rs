//! The CRI image service calls of [`CriClient`]: whether an image is present, and pulling one
//! with credentials and the sandbox metadata a registry or runtime plugin may throttle by.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_cri::v1::{AuthConfig, ImageSpec, ImageStatusRequest, PodSandboxConfig, PullImageRequest};

use super::client::{CriClient, CriError};

/// Registry credentials for one pull (CRI `AuthConfig` username and password; identity and
/// registry tokens are not forwarded, as kruise-daemon does not forward them either).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    /// The registry host the credentials were found for (e.g. `registry.example.com:5000`), for
    /// messages. Not sent: containerd wants a URL there and drops credentials whose host differs
    /// from the one it resolved (Docker Hub's is not `docker.io`).
    pub server_address: String,
}

impl std::fmt::Debug for RegistryAuth {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// The `PullImageRequest` for `image`: `sandbox_config` is always set (some runtimes crash on a
/// nil one) and carries `labels` and `annotations` as given.
pub fn pull_request(
    image: &str,
    auth: Option<&RegistryAuth>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        auth: auth.map(|a| AuthConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            ..Default::default()
        }),
        sandbox_config: Some(PodSandboxConfig {
            labels: labels.clone().into_iter().collect(),
            annotations: annotations.clone().into_iter().collect(),
            ..Default::default()
        }),
    }
}

impl CriClient {
    /// The runtime's image ID of `image` (a name, `name:tag` or `name@digest`), `None` when the
    /// image is not present.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, CriError> {
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let resp = self
            .observed(
                "ImageStatus",
                image,
                super::client::CALL_DEADLINE,
                self.img.clone().image_status(req),
            )
            .await?;
        Ok(resp.image.map(|i| i.id).filter(|id| !id.is_empty()))
    }

    /// Pull an image within `deadline` (the pull policy's per-attempt timeout); returns the
    /// runtime's image reference (containerd: the image ID).
    pub async fn pull_image(
        &self,
        req: PullImageRequest,
        deadline: Duration,
    ) -> Result<String, CriError> {
        let target = req
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let resp = self
            .observed(
                "PullImage",
                &target,
                deadline,
                self.img.clone().pull_image(req),
            )
            .await?;
        Ok(resp.image_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_always_has_a_sandbox_config() {
        let none = BTreeMap::new();
        let req = pull_request("127.0.0.1:5000/app:1", None, &none, &none);
        assert_eq!(req.image.unwrap().image, "127.0.0.1:5000/app:1");
        assert!(req.auth.is_none());
        let sandbox = req.sandbox_config.expect("sandbox config");
        assert!(sandbox.labels.is_empty() && sandbox.annotations.is_empty());
    }

    #[test]
    fn pull_request_carries_auth_and_metadata() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let annotations = BTreeMap::from([("team".to_string(), "x".to_string())]);
        let auth = RegistryAuth {
            username: "u".into(),
            password: "s3cret".into(),
            server_address: "r.example.com".into(),
        };
        let req = pull_request("r.example.com/app:1", Some(&auth), &labels, &annotations);
        let a = req.auth.unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "s3cret"));
        assert!(a.server_address.is_empty());
        let sandbox = req.sandbox_config.unwrap();
        assert_eq!(sandbox.labels["app"], "web");
        assert_eq!(sandbox.annotations["team"], "x");
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
