//! The thin adapter to the Kubernetes API shared by the agent and the controller: the client, the
//! one Event writer (`events`), the deadline on short requests (`deadline`), kube's error
//! predicates, and the first-list mark of a watch.

use std::path::Path;

use futures::{Stream, StreamExt};
use kube::runtime::watcher;

use crate::telemetry::http::Listed;

pub mod deadline;
pub mod events;

/// The Event source component of everything the agent writes.
pub const COMPONENT: &str = "nodeward-agent";

/// The object does not exist (404 NotFound), by kube's own predicate.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

/// The object changed since it was read (409 Conflict): read again and retry.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict())
}

/// Read, change and write with `attempt`; when the object changed since it was read (a conflict,
/// or a create that found the name taken), read again and retry, `tries` times in all, 10 ms
/// apart: client-go's `RetryOnConflict` (its `DefaultRetry` is 5 tries). Any other result, or the
/// last conflict, is returned.
pub async fn retry_on_conflict<T, F, Fut>(tries: usize, attempt: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    use backon::Retryable;
    attempt
        .retry(
            backon::ConstantBuilder::default()
                .with_delay(std::time::Duration::from_millis(10))
                .with_max_times(tries.saturating_sub(1)),
        )
        .when(|e| is_conflict(e) || is_already_exists(e))
        .await
}

/// Wait until a reflector's store holds its first list. kube-runtime's
/// `Store::wait_until_ready` keeps one waker for all its waiters (a oneshot receiver shared by
/// every clone of the store), so of several tasks waiting at once only the last to poll is
/// woken, and the others sleep for ever: seen as a NodePodProbe never created on a fresh
/// leader. The wait is polled again every 200 ms instead.
pub async fn store_ready<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    const REPOLL: std::time::Duration = std::time::Duration::from_millis(200);
    while tokio::time::timeout(REPOLL, store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// A create found the name taken (409 AlreadyExists).
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists())
}

/// `stream`, marking `first_list` done at its first complete list, or when the API does not
/// serve the resource (its CRD is not installed): the watch keeps retrying, but there is nothing
/// to wait for until then.
pub fn marking_first_list<K, S>(stream: S, first_list: Listed) -> impl Stream<Item = S::Item>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    stream.inspect(move |ev| match ev {
        Ok(watcher::Event::InitDone) => first_list.done(),
        Err(watcher::Error::InitialListFailed(e)) if is_not_found(e) => first_list.done(),
        _ => {}
    })
}

/// What the watch of one object by name says.
#[derive(Debug)]
pub enum Named<K> {
    /// The object as it is now (listed or changed).
    Seen(K),
    /// It was deleted, or a (re)list did not find it.
    Gone,
}

/// Watch the one object `name` of `api` (a field selector on its name, default backoff),
/// marking `first_list` done as [`marking_first_list`] does: each listing or change of it, and
/// its absence. The node's own NodeImage and NodePodProbe are watched so.
pub fn watch_named<K>(
    api: kube::Api<K>,
    name: &str,
    first_list: Listed,
) -> impl Stream<Item = Result<Named<K>, watcher::Error>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    let selector = format!("metadata.name={name}");
    let events = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    marking_first_list(events, first_list)
        .scan(false, |seen_in_listing, ev| {
            let named = match ev {
                Ok(watcher::Event::Init) => {
                    *seen_in_listing = false;
                    None
                }
                Ok(watcher::Event::InitApply(obj) | watcher::Event::Apply(obj)) => {
                    *seen_in_listing = true;
                    Some(Ok(Named::Seen(obj)))
                }
                Ok(watcher::Event::InitDone) => (!*seen_in_listing).then_some(Ok(Named::Gone)),
                Ok(watcher::Event::Delete(_)) => Some(Ok(Named::Gone)),
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(Some(named))
        })
        .filter_map(futures::future::ready)
}

/// A client from `--kubeconfig`, or in-cluster / `$KUBECONFIG` / `~/.kube/config` inference,
/// whose short requests end at [`deadline::REQUEST_DEADLINE`].
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no Kubernetes configuration: {e}"))?,
    };
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&deadline::RequestDeadline::new(deadline::REQUEST_DEADLINE))
        .build();
    Ok(client)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::{reflector, watcher};

    /// Every task waiting on one store wakes when its first list ends, whichever polled last.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_wakes_when_the_store_is_ready() {
        let (store, mut writer) = reflector::store::<Node>();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { super::store_ready(&store).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(2), w)
                .await
                .expect("a waiter slept through the store becoming ready")
                .unwrap();
        }
    }
}
