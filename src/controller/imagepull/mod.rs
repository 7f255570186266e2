//! Image pre-pull, the controller side: ImageListPullJob → one ImagePullJob per image (`list`,
//! upstream `imagelistpulljob_controller.go`), ImagePullJob → NodeImage fan-out (`job`, upstream
//! `imagepulljob_controller.go`) and the NodeImage lifecycle (`node_image`: one per Ready node,
//! deleted with its node, tags failed when the agent stays silent, expired tags dropped). They
//! share the settings, the error type, the requeue rule and the read-modify-write of a NodeImage
//! defined here; `job` and `node_image` do not import each other, `list` uses `job`'s template
//! validation. The webhooks' answers for both job kinds are in `admission`.

pub mod admission;
pub mod job;
pub mod list;
pub mod node_image;

use std::time::Duration;

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use crate::api::clamp;
use crate::api::kruise::{
    DEFAULT_TTL_SECONDS_FOR_ALWAYS_NODE_IMAGE, KRUISE_DAEMON_CONFIG_NAMESPACE,
    NODE_IMAGE_RESPONSE_TIMEOUT_SECONDS, NodeImage,
};
use crate::cluster::{is_not_found, retry_on_conflict};
use crate::controller::metrics::{ControllerMetrics, Reason};

/// Settings of the image pre-pull controllers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace the agents read pull secrets from; job secrets are copied there.
    pub pull_secret_namespace: String,
    /// How long a Node must be Ready before it gets a NodeImage (upstream 30 s).
    pub node_image_creation_delay: Duration,
    /// How long the agent may stay silent about a tag before the controller fails it (10 min).
    pub node_image_response_timeout: Duration,
    /// Added to an `Always` job's tag TTL (upstream `--default-ttlseconds-for-always-nodeimage`).
    pub default_ttl_seconds_for_always: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pull_secret_namespace: KRUISE_DAEMON_CONFIG_NAMESPACE.into(),
            node_image_creation_delay: Duration::from_secs(30),
            node_image_response_timeout: Duration::from_secs(
                NODE_IMAGE_RESPONSE_TIMEOUT_SECONDS as u64,
            ),
            default_ttl_seconds_for_always: DEFAULT_TTL_SECONDS_FOR_ALWAYS_NODE_IMAGE,
        }
    }
}

/// Errors of the image pre-pull reconcilers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl Reason for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => source.reason(),
        }
    }
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }
}

/// Longest wait between two passes over an unfinished job or a NodeImage.
const RESYNC: Duration = Duration::from_secs(300);

/// Requeue after `secs` (at least 1 s), or after `max` when there is nothing to wait for.
pub(crate) fn requeue_after(secs: Option<i64>, max: Duration) -> Action {
    match secs {
        Some(s) => Action::requeue(clamp::seconds(s.max(1)).min(max)),
        None => Action::requeue(max),
    }
}

/// Runs the NodeImage lifecycle, ImagePullJob and ImageListPullJob controllers until the task
/// is dropped.
pub async fn run(client: kube::Client, cfg: Config, metrics: ControllerMetrics) {
    let node_images = node_image::Controllers::new(&client);
    let (job_loop, jobs) = job::controller(&client, &cfg, &metrics);
    let list_loop = list::controller(&client, &metrics);
    info!(pull_secret_namespace = %cfg.pull_secret_namespace, "image pull controllers started");
    futures::join!(
        job_loop,
        list_loop,
        node_images.run(client, cfg, jobs, metrics)
    );
}

/// Seconds from `now` until `secs` after `t` (clamped to a year; negative once past).
pub(crate) fn seconds_until(t: &Time, secs: i64, now: Timestamp) -> i64 {
    let secs = clamp::seconds(secs).as_secs().cast_signed();
    t.0.as_second()
        .saturating_add(secs)
        .saturating_sub(now.as_second())
}

/// A finished job (of either kind) is left as it is, and deleted `ttl` seconds after `done`
/// (`ttlSecondsAfterFinished`); until then it is requeued for that moment.
pub(crate) async fn expire<K>(
    api: &Api<K>,
    job: &K,
    done: &Time,
    ttl: Option<i32>,
    now: Timestamp,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(ttl) = ttl else {
        return Ok(Action::await_change());
    };
    let left = seconds_until(done, i64::from(ttl), now);
    if left > 0 {
        return Ok(Action::requeue(clamp::seconds(left)));
    }
    let (kind, ns, name) = (
        K::kind(&()),
        job.namespace().unwrap_or_default(),
        job.name_any(),
    );
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(kind = %kind, job = %name, namespace = %ns, "finished job deleted after its TTL")
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(Error::kube(format!("delete {kind} {ns}/{name}"), e)),
    }
    Ok(Action::await_change())
}

/// Full `/status` replace of a job with its resourceVersion (a conflict retries the reconcile);
/// nothing is written when the status is unchanged.
pub(crate) async fn write_status<K>(api: &Api<K>, obj: &K, status: K::Status) -> Result<(), Error>
where
    K: HasStatus + Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    K::Status: PartialEq,
{
    if obj.status() == Some(&status) {
        return Ok(());
    }
    let mut next = obj.clone();
    *next.status_mut() = Some(status);
    let name = obj.name_any();
    api.replace_status(&name, &PostParams::default(), &next)
        .await
        .map_err(|e| Error::kube(format!("update {} {name} status", K::kind(&())), e))?;
    Ok(())
}

/// Read-modify-write of a NodeImage with optimistic concurrency: `change` edits a fresh copy and
/// says whether it changed anything; on a conflict the object is re-read and `change` applied
/// again (concurrent spec writers no longer overwrite each other, upstream #1517). Gives the
/// object as written (or read, when unchanged) and whether it changed; `None` when the NodeImage
/// does not exist.
pub(crate) async fn update_node_image(
    api: &Api<NodeImage>,
    name: &str,
    change: impl FnMut(&mut NodeImage) -> bool,
) -> Result<Option<(NodeImage, bool)>, Error> {
    let change = std::sync::Mutex::new(change);
    retry_on_conflict(8, || async {
        let Some(mut obj) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let changed = change.lock().map(|mut f| f(&mut obj)).unwrap_or(false);
        if !changed {
            return Ok(Some((obj, false)));
        }
        let written = api.replace(name, &PostParams::default(), &obj).await?;
        Ok(Some((written, true)))
    })
    .await
    .map_err(|e| Error::kube(format!("update NodeImage {name}"), e))
}
