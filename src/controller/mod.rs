//! `nodeward controller`: one active replica, chosen by Lease leader election, running the
//! reconcilers: CRR defaulting and lifecycle (`crr`), image pre-pull (`imagepull`: ImagePullJob →
//! NodeImage), custom pod probes (`podprobe`: PodProbeMarker → NodePodProbe → pod marks) and the
//! sidecar image swap on virtual nodes (`vk_sidecar`), CloneSets when their gate is on
//! (`cloneset`); and, on every replica,
//! the CRR admission webhook (`webhook`).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::cluster::events::{EventType, EventWriter, Note};
use crate::gates::FeatureGates;
use crate::telemetry::http::Health;
use metrics::ControllerMetrics;

pub mod cloneset;
pub mod crr;
pub mod imagepull;
pub mod metrics;
pub mod podprobe;
pub mod readiness;
pub mod retries;
pub mod vk_sidecar;
pub mod webhook;

/// Event source component.
pub const COMPONENT: &str = "nodeward-controller";

#[derive(Clone, Debug)]
pub struct Config {
    pub lease_name: String,
    pub lease_namespace: String,
    /// This replica's identity in the Lease (pod name, else host name and pid).
    pub identity: String,
    /// Lease duration (upstream: 15 s; renewed `grace` before it expires: 10 s renew deadline).
    pub lease_duration: Duration,
    pub lease_grace: Duration,
    pub addr: Option<std::net::SocketAddr>,
    /// ImagePullJob / NodeImage controllers.
    pub image_pull: imagepull::Config,
    /// The admission webhook server; `None`: not served.
    pub webhook: Option<webhook::Config>,
    /// Which reconcilers run (the CRR lifecycle always does).
    pub gates: FeatureGates,
}

/// Run until `shutdown`; then stop the reconcilers and release the lease so another replica takes
/// over at once.
pub async fn run(
    client: kube::Client,
    cfg: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = ControllerMetrics::new();
    let health = Health::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(wh) = cfg.webhook.clone() {
        let ready = health.expect("webhook certificate");
        let mut rx = stop_rx.clone();
        let done = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = webhook::run(client, wh, ready, done).await {
                warn!(error = %e, "webhook server stopped");
            }
        });
    }
    if let Some(addr) = cfg.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("metrics/health listener {addr}: {e}"))?;
        info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
        let (m, h) = (metrics.clone(), health.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let done = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::telemetry::http::serve(listener, m, h, done).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.lease_duration.as_secs().max(2))
        .with_grace(
            cfg.lease_grace
                .as_secs()
                .clamp(1, cfg.lease_duration.as_secs().max(2) - 1),
        )
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("leader election: {e}"))?;
    let (mut leader, election) = manager.watch().await;
    health.set_runtime_connected(true);
    health.set_synced(true);
    info!(lease = %cfg.lease_name, namespace = %cfg.lease_namespace, identity = %cfg.identity, feature_gates = %cfg.gates, "waiting for leadership");
    tokio::pin!(shutdown);
    let mut reconcilers: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = leader.changed() => {
                if changed.is_err() {
                    warn!("leader election stopped");
                    break;
                }
                let is_leader = *leader.borrow_and_update();
                if is_leader && reconcilers.is_none() {
                    info!(identity = %cfg.identity, "became the leader; starting reconcilers");
                    metrics.set_leader(true);
                    reconcilers = Some(tokio::spawn(run_reconcilers(client.clone(), cfg.clone(), metrics.clone())));
                } else if !is_leader && let Some(r) = reconcilers.take() {
                    warn!(identity = %cfg.identity, "lost leadership; stopping reconcilers");
                    metrics.set_leader(false);
                    r.abort();
                }
            }
        }
    }
    if let Some(r) = reconcilers.take() {
        r.abort();
    }
    // Dropping the receiver makes the election task release the lease.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), election).await {
        Ok(Ok(Ok(_))) => info!("stepped down; lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the lease failed"),
        Ok(Err(e)) => warn!(error = %e, "leader election task failed"),
        Err(_) => warn!("releasing the lease timed out"),
    }
    let _ = stop_tx.send(true);
    Ok(())
}

/// The reconcilers the gates leave on, until the task is dropped.
async fn run_reconcilers(client: kube::Client, cfg: Config, metrics: ControllerMetrics) {
    let gates = cfg.gates;
    let when = |on: bool, f: futures::future::BoxFuture<'static, ()>| async move {
        if on {
            f.await;
        }
    };
    futures::join!(
        crr::run(client.clone(), metrics.clone()),
        when(
            gates.sidecar_terminator,
            Box::pin(vk_sidecar::run(client.clone(), metrics.clone()))
        ),
        when(
            gates.pod_probe,
            Box::pin(podprobe::run(client.clone(), metrics.clone()))
        ),
        when(
            gates.cloneset,
            Box::pin(cloneset::run(
                client.clone(),
                metrics.clone(),
                gates.cloneset_event_optimization
            ))
        ),
        when(
            gates.image_pull,
            Box::pin(imagepull::run(client, cfg.image_pull, metrics))
        ),
    );
}

/// Records an Event about `object` (namespace `default` for cluster-scoped objects).
pub(crate) async fn record_event(
    client: &kube::Client,
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    message: &str,
) {
    let note = Note::new(object.clone(), type_, reason, action, message);
    if let Err(e) = EventWriter::new(client.clone(), COMPONENT, None)
        .write(&note)
        .await
    {
        warn!(error = %e, object = ?object.name, reason, "recording the event failed");
    }
}
