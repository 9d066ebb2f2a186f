//! The Kubernetes API client: kube's default stack plus one layer that keeps the operator within
//! `--client-qps`/`--client-burst` (a token bucket, as client-go does), counts every request by
//! verb, resource and status code, and, under leader election, refuses writes while the Lease is
//! not known to be held (see [`super::leader::WriteFence`]).

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Method, Request, Response};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use prometheus::IntCounterVec;
use tower::{Layer, Service};

use super::leader::WriteFence;

/// A write refused because this replica may no longer lead.
#[derive(Debug, thiserror::Error)]
#[error("write refused: this replica has not renewed its leader Lease within the renew deadline")]
pub struct FencedWrite;

/// Builds the client from the kubeconfig or in-cluster configuration. With `fence`, writes other
/// than to Leases pass only while the fence allows them.
pub fn client(
    config: Config,
    qps: u32,
    burst: u32,
    requests: IntCounterVec,
    fence: Option<Arc<WriteFence>>,
) -> Result<Client, kube::Error> {
    let limiter = NonZeroU32::new(qps).map(|qps| {
        let burst = NonZeroU32::new(burst.max(qps.get())).unwrap_or(qps);
        Arc::new(RateLimiter::direct(
            Quota::per_second(qps).allow_burst(burst),
        ))
    });
    let layer = ApiClientLayer {
        limiter,
        requests,
        fence,
    };
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

#[derive(Clone)]
struct ApiClientLayer {
    /// `None` when `--client-qps 0` turns client-side limiting off.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    requests: IntCounterVec,
    fence: Option<Arc<WriteFence>>,
}

impl<S> Layer<S> for ApiClientLayer {
    type Service = ApiClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiClientService {
            inner,
            limiter: self.limiter.clone(),
            requests: self.requests.clone(),
            fence: self.fence.clone(),
            waiting: None,
            granted: false,
        }
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

struct ApiClientService<S> {
    inner: S,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    requests: IntCounterVec,
    fence: Option<Arc<WriteFence>>,
    /// The wait for the next token, while one is pending.
    waiting: Option<Wait>,
    /// A token was taken for the next call.
    granted: bool,
}

impl<S, B, R> Service<Request<B>> for ApiClientService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: From<FencedWrite> + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    /// kube's client calls this before every request (through its buffer), so waiting here for a
    /// token spaces the requests out without dropping any.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let (Some(limiter), false) = (&self.limiter, self.granted) {
            let waiting = self.waiting.get_or_insert_with(|| {
                let limiter = limiter.clone();
                Box::pin(async move { limiter.until_ready().await })
            });
            ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
            self.granted = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.granted = false;
        let (verb, resource) = classify(request.method(), request.uri());
        let requests = self.requests.clone();
        // The Lease itself, and the start-up permission checks, are how a replica becomes leader.
        let fenced = is_write(verb)
            && !matches!(resource.as_str(), "leases" | "selfsubjectaccessreviews")
            && self.fence.as_ref().is_some_and(|f| !f.allows_writes());
        if fenced {
            requests
                .with_label_values(&[verb, resource.as_str(), "fenced"])
                .inc();
            return Box::pin(async { Err(FencedWrite.into()) });
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            requests
                .with_label_values(&[verb, resource.as_str(), code.as_str()])
                .inc();
            result
        })
    }
}

/// The Kubernetes verb and resource of a request, from its method and path:
/// `/api/v1/namespaces/ns/pods/name/status` is a `get` of `pods/status`.
pub fn classify(method: &Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        // `/version`, `/healthz` and the like: a get of nothing in particular.
        _ => return (verb_of(method, true, false), "other".into()),
    };
    // `namespaces/<ns>/...` scopes a resource; `namespaces` alone or `namespaces/<ns>` is one.
    let rest = match rest {
        ["namespaces", _namespace, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, subresource, ..] => (format!("{resource}/{subresource}"), true),
        [] => ("other".to_string(), false),
    };
    let watch = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    (verb_of(method, named, watch), resource)
}

fn verb_of(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// Verbs that change the cluster.
fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(method: Method, uri: &str) -> (&'static str, String) {
        classify(&method, &uri.parse().expect("uri"))
    }

    #[test]
    fn requests_are_named_by_kubernetes_verb_and_resource() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/pods?watch=true&resourceVersion=1",
                ("watch", "pods"),
            ),
            (Method::GET, "/api/v1/namespaces/a/pods", ("list", "pods")),
            (Method::GET, "/api/v1/pods", ("list", "pods")),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets/key",
                ("get", "secrets"),
            ),
            (
                Method::PATCH,
                "/apis/agentoperator.dev/v1alpha1/namespaces/a/agenttasks/t/status",
                ("patch", "agenttasks/status"),
            ),
            (
                Method::POST,
                "/apis/batch/v1/namespaces/a/jobs",
                ("create", "jobs"),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                ("update", "leases"),
            ),
            (
                Method::DELETE,
                "/apis/batch/v1/namespaces/a/jobs/t-1",
                ("delete", "jobs"),
            ),
            (Method::GET, "/api/v1/namespaces/a", ("get", "namespaces")),
            (Method::GET, "/version", ("get", "other")),
        ];
        for (method, uri, (verb, resource)) in cases {
            assert_eq!(
                classified(method, uri),
                (verb, resource.to_string()),
                "{uri}"
            );
        }
    }
}
