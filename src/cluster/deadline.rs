//! A deadline on every short API request. kube-client sets no read timeout (it would cut watch
//! streams and exec sessions), so a request to an apiserver that accepted the connection and then
//! went silent would wait forever and hold whatever guard its caller keeps (a CRR pass, a report,
//! a leader's reconcile). This tower layer bounds the time to the response's head of every
//! request except the long-running ones (watches, exec/attach/port-forward, followed logs), which
//! kube-runtime's watcher bounds with its own idle timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Request;
use tower::{BoxError, Layer, Service};

/// The kube-apiserver's own default `--request-timeout` for short requests: a request still
/// unanswered then will not be answered.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// The layer: [`RequestDeadline::new`] with the deadline for short requests.
#[derive(Clone, Copy, Debug)]
pub struct RequestDeadline(Duration);

impl RequestDeadline {
    pub fn new(deadline: Duration) -> Self {
        Self(deadline)
    }
}

impl<S> Layer<S> for RequestDeadline {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            deadline: self.0,
        }
    }
}

/// The service [`RequestDeadline`] wraps around the client's stack.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    deadline: Duration,
}

/// A short request got no answer within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: the API server did not answer within {deadline:?}")]
pub struct NoAnswer {
    method: String,
    path: String,
    deadline: Duration,
}

/// Whether the request stays open by design: a watch, a followed log, or a streaming
/// subresource.
pub fn is_long_running<B>(req: &Request<B>) -> bool {
    let query = req.uri().query().unwrap_or_default();
    let flag = |name: &str| {
        query
            .split('&')
            .any(|kv| kv == format!("{name}=true") || kv == format!("{name}=1"))
    };
    let path = req.uri().path();
    flag("watch")
        || (path.ends_with("/log") && flag("follow"))
        || ["/exec", "/attach", "/portforward", "/proxy"]
            .iter()
            .any(|s| path.ends_with(s) || path.contains(&format!("{s}/")))
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_long_running(&req) {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(Into::into) });
        }
        let no_answer = NoAnswer {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            deadline: self.deadline,
        };
        let fut = tokio::time::timeout(self.deadline, self.inner.call(req));
        Box::pin(async move {
            match fut.await {
                Ok(res) => res.map_err(Into::into),
                Err(_) => Err(no_answer.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn req(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn only_streams_are_long_running() {
        let table = [
            ("/api/v1/pods?watch=true&resourceVersion=1", true),
            ("/api/v1/pods?watch=1", true),
            ("/api/v1/namespaces/a/pods/p/exec?command=sh", true),
            ("/api/v1/namespaces/a/pods/p/attach", true),
            ("/api/v1/namespaces/a/pods/p/portforward?ports=80", true),
            ("/api/v1/namespaces/a/pods/p/log?follow=true", true),
            ("/api/v1/namespaces/a/pods/p/log", false),
            ("/api/v1/pods?watch=false", false),
            ("/api/v1/pods?labelSelector=watch%3Dtrue", false),
            ("/apis/apps.kruise.io/v1alpha1/nodeimages/n", false),
            ("/api/v1/namespaces/a/pods/p/status", false),
        ];
        for (uri, want) in table {
            assert_eq!(is_long_running(&req(uri)), want, "{uri}");
        }
    }

    #[tokio::test]
    async fn a_silent_server_ends_short_requests_at_the_deadline_and_leaves_watches_open() {
        let silent = tower::service_fn(|_: Request<()>| async {
            std::future::pending::<Result<(), BoxError>>().await
        });
        let svc = RequestDeadline::new(Duration::from_millis(100)).layer(silent);
        let err = svc
            .clone()
            .oneshot(req("/api/v1/namespaces/a/pods/p"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET /api/v1/namespaces/a/pods/p: the API server did not answer within 100ms"
        );
        let watch = svc.oneshot(req("/api/v1/pods?watch=true"));
        assert!(
            tokio::time::timeout(Duration::from_millis(500), watch)
                .await
                .is_err(),
            "a watch has no deadline here"
        );
    }
}
