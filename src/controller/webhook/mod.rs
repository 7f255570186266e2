//! The admission webhook server, on every replica (leader or not: the Service sends the API
//! server to any ready one): HTTPS with a certificate the controller makes itself ([`certs`]),
//! kept in a Secret and injected as the CA bundle of the webhook configurations ([`act`]), and
//! behind it the CRR admission ([`crate::controller::crr::admission`], mutating), the ImagePullJob
//! and ImageListPullJob admission ([`crate::controller::imagepull::admission`], mutating and
//! validating), the PodProbeMarker admission ([`crate::controller::podprobe::admission`],
//! validating) and the CloneSet admission ([`crate::controller::cloneset::admission`], mutating
//! and validating; registered only with the CloneSet component).
//!
//! With the shipped `failurePolicy: Fail`, CRRs cannot be created while no replica serves; the
//! rules that need no lookup are also a ValidatingAdmissionPolicy, which holds without us.

pub mod act;
pub mod certs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, State};
use axum::routing::post;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tracing::{info, warn};

use crate::controller::crr::admission;
use crate::controller::{cloneset, imagepull, podprobe};
use crate::telemetry::http::{Limits, Listed};

/// How often the Secret is read again (renewal, another replica's renewal, a deleted Secret).
const RESYNC: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    /// Namespace of the Service and the Secret (the controller's own).
    pub namespace: String,
    /// The Service the webhook configuration names.
    pub service: String,
    /// The Secret holding the certificate bundle.
    pub secret: String,
    /// The MutatingWebhookConfiguration (CRR) whose CA bundle we keep.
    pub configuration: String,
    /// The ValidatingWebhookConfiguration (PodProbeMarker) whose CA bundle we keep.
    pub validating_configuration: String,
}

/// Serve until `shutdown`; `ready` is done once a certificate is served and its CA injected.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    ready: Listed,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let resolver = Arc::new(certs::Resolver::default());
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(resolver.server_config()?));
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| anyhow::anyhow!("webhook listener {}: {e}", cfg.addr))?;
    info!(addr = %listener.local_addr()?, path = admission::PATH, "serving the admission webhook");
    let keeper = tokio::spawn(keep_certificate(
        client.clone(),
        cfg.clone(),
        resolver,
        ready,
    ));
    let app = Router::new()
        .route(admission::PATH, post(crr))
        .route(
            podprobe::admission::PATH,
            route_to(podprobe::admission::review),
        )
        .route(
            imagepull::admission::MUTATE_PATH,
            route_to(imagepull::admission::mutate),
        )
        .route(
            imagepull::admission::VALIDATE_PATH,
            route_to(imagepull::admission::validate),
        )
        .route(
            imagepull::admission::LIST_MUTATE_PATH,
            route_to(imagepull::admission::mutate_list),
        )
        .route(
            imagepull::admission::LIST_VALIDATE_PATH,
            route_to(imagepull::admission::validate_list),
        )
        .route(
            cloneset::admission::MUTATE_PATH,
            route_to(cloneset::admission::mutate),
        )
        .route(cloneset::admission::VALIDATE_PATH, post(cloneset_validate))
        .with_state(client);
    let served =
        crate::telemetry::http::serve_tls(listener, app, tls, Limits::default(), shutdown).await;
    keeper.abort();
    Ok(served?)
}

async fn crr(
    State(client): State<kube::Client>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    Json(admission::review(&client, review).await)
}

async fn cloneset_validate(
    State(client): State<kube::Client>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    Json(cloneset::admission::validate(&client, review).await)
}

/// A route for an admission answer that needs no lookup.
fn route_to(
    judge: fn(AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject>,
) -> axum::routing::MethodRouter<kube::Client> {
    post(
        move |Json(review): Json<AdmissionReview<DynamicObject>>| async move { Json(judge(review)) },
    )
}

/// Keep the served certificate and the configuration's CA bundle in step with the Secret.
async fn keep_certificate(
    client: kube::Client,
    cfg: Config,
    resolver: Arc<certs::Resolver>,
    ready: Listed,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let names = certs::dns_names(&cfg.service, &cfg.namespace);
    let mut failures = 0u32;
    let mut served: Option<certs::Bundle> = None;
    loop {
        let synced = async {
            let bundle = act::ensure_bundle(&secrets, &cfg.secret, &names).await?;
            if served.as_ref() != Some(&bundle) {
                resolver.set(certs::certified_key(&bundle)?);
                served = Some(bundle.clone());
            }
            let service = (cfg.namespace.as_str(), cfg.service.as_str());
            act::inject_ca(&mutating, &cfg.configuration, service, &bundle.ca).await?;
            act::inject_ca(
                &validating,
                &cfg.validating_configuration,
                service,
                &bundle.ca,
            )
            .await?;
            Ok::<_, act::Error>(())
        }
        .await;
        let wait = match synced {
            Ok(()) => {
                failures = 0;
                ready.done();
                RESYNC
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = crate::backoff::after(failures, Duration::from_secs(1), RESYNC);
                warn!(error = %e, serving = resolver.is_set(), retry_in_ms = wait.as_millis() as u64, "webhook certificate not in step");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// A JSON patch from the object as sent to it with the decided changes laid over it (a merge:
/// fields the typed model does not know stay as they are).
pub fn patch<T: serde::Serialize>(
    raw: &serde_json::Value,
    next: &T,
) -> Result<json_patch::Patch, serde_json::Error> {
    let mut want = raw.clone();
    let next = serde_json::to_value(next)?;
    for key in ["metadata", "spec"] {
        if let Some(v) = next.get(key) {
            let mut part = want.get(key).cloned().unwrap_or_default();
            json_patch::merge(&mut part, v);
            want[key] = part;
        }
    }
    Ok(json_patch::diff(raw, &want))
}

/// Answer a create or an update with `judge` (anything else is allowed).
pub fn answer(
    review: AdmissionReview<DynamicObject>,
    judge: impl FnOnce(&AdmissionRequest<DynamicObject>, AdmissionResponse) -> AdmissionResponse,
) -> AdmissionReview<DynamicObject> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(req) => req,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let resp = AdmissionResponse::from(&req);
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return resp.into_review();
    }
    judge(&req, resp).into_review()
}

/// How long an admission answer's Pod lookups may take together (the API server gives the whole
/// webhook 10 s).
const POD_LOOKUP: Duration = Duration::from_secs(5);

/// The Pods `names` in `namespace` as one lookup with one deadline finds them (`Ok(None)`: no
/// such Pod; `Err`: why it could not be read).
pub async fn lookup_pods(
    client: &kube::Client,
    namespace: &str,
    names: &[String],
) -> Vec<(String, Result<Option<Pod>, String>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let all = futures::future::join_all(names.iter().map(|n| pods.get_opt(n)));
    match tokio::time::timeout(POD_LOOKUP, all).await {
        Ok(found) => names
            .iter()
            .cloned()
            .zip(found.into_iter().map(|r| r.map_err(|e| e.to_string())))
            .collect(),
        Err(_) => names
            .iter()
            .map(|n| (n.clone(), Err("timed out".to_string())))
            .collect(),
    }
}

/// Refuse with `message`, logged once with who asked.
pub fn deny(
    req: &AdmissionRequest<DynamicObject>,
    resp: AdmissionResponse,
    kind: &str,
    message: String,
) -> AdmissionResponse {
    info!(
        namespace = %req.namespace.as_deref().unwrap_or_default(),
        name = %req.name,
        operation = ?req.operation,
        user = %req.user_info.username.as_deref().unwrap_or_default(),
        reason = %message,
        "{kind} denied at admission"
    );
    resp.deny(message)
}

/// The `what` of a review (object or old object) as a `kind`, and as sent (the base of a patch).
pub fn typed<T: serde::de::DeserializeOwned>(
    obj: Option<&DynamicObject>,
    what: &str,
    kind: &str,
) -> Result<(T, serde_json::Value), String> {
    let obj = obj.ok_or_else(|| format!("the request has no {what}"))?;
    let raw = serde_json::to_value(obj).map_err(|e| format!("reading the {what}: {e}"))?;
    let typed =
        serde_json::from_value(raw.clone()).map_err(|e| format!("not a valid {kind}: {e}"))?;
    Ok((typed, raw))
}
