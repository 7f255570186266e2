//! The webhook's writes: the certificate Secret (made or renewed when [`certs::needs_renewal`]
//! says so; every replica may, and a conflict means another one did: read it again) and the CA
//! bundle in the webhook configurations.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use std::fmt::Debug;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::certs::{self, Bundle, KEY_CA, KEY_CERT, KEY_KEY};
use crate::cluster::retry_on_conflict;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Secret {secret}: {source}")]
    Secret {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name}: {source}")]
    Configuration {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Certificate(#[from] certs::Error),
}

fn bundle_of(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(Bundle {
        ca: text(KEY_CA)?,
        cert: text(KEY_CERT)?,
        key: text(KEY_KEY)?,
    })
}

fn data_of(bundle: &Bundle) -> BTreeMap<String, ByteString> {
    [
        (KEY_CA, &bundle.ca),
        (KEY_CERT, &bundle.cert),
        (KEY_KEY, &bundle.key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
    .collect()
}

/// The bundle to serve: the Secret's, or a new one written to it when the Secret is missing or
/// its bundle needs renewal.
pub async fn ensure_bundle(
    secrets: &Api<Secret>,
    name: &str,
    names: &[String],
) -> Result<Bundle, Error> {
    let err = |source| Error::Secret {
        secret: name.to_string(),
        source,
    };
    // A Secret another replica wrote meanwhile is read again and served (the outer `Result`:
    // API errors, retried on a conflict; the inner: a certificate that cannot be made).
    let issued = retry_on_conflict(5, || async {
        let current = secrets.get_opt(name).await?;
        let bundle = current.as_ref().and_then(bundle_of);
        let now = SystemTime::now();
        let why = match &bundle {
            Some(b) => match certs::needs_renewal(b, names, now) {
                None => return Ok(Ok(b.clone())),
                Some(why) => why,
            },
            None => "no certificate yet".into(),
        };
        let fresh = match certs::issue(names, now, bundle.as_ref().map(|b| b.ca.as_str())) {
            Ok(fresh) => fresh,
            Err(e) => return Ok(Err(e)),
        };
        match current {
            Some(mut secret) => {
                secret.data = Some(data_of(&fresh));
                secret.string_data = None;
                secrets
                    .replace(name, &PostParams::default(), &secret)
                    .await?;
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        ..Default::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data_of(&fresh)),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await?;
            }
        }
        info!(secret = %name, reason = %why, "webhook certificate issued");
        Ok(Ok(fresh))
    })
    .await
    .map_err(err)?;
    Ok(issued?)
}

/// A webhook configuration kind whose webhooks may call our Service.
pub trait WebhookConfiguration:
    kube::Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize
{
    const KIND: &'static str;
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig>;
}

/// The client configs of a configuration's webhooks.
fn client_configs<W>(
    webhooks: &mut Option<Vec<W>>,
    config: fn(&mut W) -> &mut WebhookClientConfig,
) -> Vec<&mut WebhookClientConfig> {
    webhooks.iter_mut().flatten().map(config).collect()
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    const KIND: &'static str = "MutatingWebhookConfiguration";
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        client_configs(&mut self.webhooks, |w| &mut w.client_config)
    }
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    const KIND: &'static str = "ValidatingWebhookConfiguration";
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        client_configs(&mut self.webhooks, |w| &mut w.client_config)
    }
}

/// Set `ca` as the caBundle of every webhook in configuration `name` that calls our Service;
/// `Ok(true)` when something changed.
pub async fn inject_ca<K: WebhookConfiguration>(
    api: &Api<K>,
    name: &str,
    service: (&str, &str),
    ca: &str,
) -> Result<bool, Error> {
    let want = ByteString(ca.as_bytes().to_vec());
    retry_on_conflict(5, || async {
        let mut config = api.get(name).await?;
        let mut changed = false;
        for client in config.client_configs() {
            let ours = client
                .service
                .as_ref()
                .is_some_and(|s| s.namespace == service.0 && s.name == service.1);
            if ours && client.ca_bundle.as_ref() != Some(&want) {
                client.ca_bundle = Some(want.clone());
                changed = true;
            }
        }
        if changed {
            api.replace(name, &PostParams::default(), &config).await?;
            info!(kind = K::KIND, configuration = %name, "webhook CA bundle injected");
        }
        Ok(changed)
    })
    .await
    .map_err(|source| Error::Configuration {
        kind: K::KIND,
        name: name.to_string(),
        source,
    })
}
