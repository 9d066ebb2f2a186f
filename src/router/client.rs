//! The HTTP client the router reaches providers with: hyper's pooled client over rustls, trusting
//! what the platform trusts, speaking HTTP/2 where a provider offers it over TLS.
//!
//! Nothing sits between a request and its connection. A general-purpose client follows
//! redirects, retries, and parses the URL with IDNA on every request; the router wants none of
//! it: a provider's redirect must not carry its key elsewhere, the failover chain alone decides
//! what is tried next, and the URL is the provider's endpoint the operator already validated.
//! Those layers were a fifth of the router's CPU time per request.

use std::time::Duration;

use axum::body::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::ConfigVerifierExt;

use super::upstream::Outbound;

/// A provider's answer: its head, and its body still to read with [`next_chunk`].
pub type ProviderResponse = Response<Incoming>;

const ROUTER_AGENT: &str = concat!("agent-operator-router/", env!("CARGO_PKG_VERSION"));

/// The pooled client; cloning it shares the pool.
#[derive(Clone)]
pub struct ProviderClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot use the platform's trusted certificates: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a request got no answer head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the request cannot be sent: {0}")]
    Request(#[from] http::Error),
    /// With its causes: the client's own message ("client error (Connect)") says nothing of
    /// the refused connection, the unknown host or the untrusted certificate below it.
    #[error("{}", causes(.0))]
    Transport(hyper_util::client::legacy::Error),
}

impl From<hyper_util::client::legacy::Error> for SendError {
    fn from(error: hyper_util::client::legacy::Error) -> Self {
        Self::Transport(error)
    }
}

impl SendError {
    /// Whether connecting timed out: a provider that is slow to accept fails over as a timeout,
    /// one that refuses or cannot be resolved as unreachable.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Request(_) => false,
            Self::Transport(error) => caused_by_timeout(error),
        }
    }
}

/// `error` and each of its causes, `: `-separated.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    chain(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Whether an I/O timeout is among `error`'s causes, however deep the connector wrapped it.
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    chain(error).any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// `error`, then its source, its source's source, and so on.
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

impl ProviderClient {
    /// A client whose connections time out after `connect_timeout` and are closed after
    /// `idle_timeout` unused. Needs the process's rustls crypto provider installed.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Result<Self, ClientError> {
        let tls = rustls::ClientConfig::with_platform_verifier()?;
        let mut tcp = HttpConnector::new();
        // The TLS layer takes `https` endpoints; a local model server (Ollama) is plain HTTP.
        tcp.enforce_http(false);
        // Requests and streamed events are small writes that must not wait for an ACK.
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_timeout)
            .build(connector);
        Ok(Self { inner })
    }

    /// Sends `outbound` and waits for the answer's head.
    pub async fn send(&self, outbound: &Outbound) -> Result<ProviderResponse, SendError> {
        let mut request = Request::post(outbound.url.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, ROUTER_AGENT);
        for (name, value) in &outbound.headers {
            let mut value = HeaderValue::from_str(value).map_err(http::Error::from)?;
            // The credential is among them: never indexed by HTTP/2's header compression.
            value.set_sensitive(true);
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(outbound.body.clone()))?;
        Ok(self.inner.request(request).await?)
    }
}

/// The next piece of `body`, or `None` at its end. Trailers carry nothing the router reads.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Outer(#[source] Connect);

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct Connect(#[source] std::io::Error);

    #[test]
    fn a_connect_timeout_is_found_under_the_connectors_errors() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect");
        assert!(caused_by_timeout(&Outer(Connect(timed_out))));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connect");
        assert!(!caused_by_timeout(&Outer(Connect(refused))));
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_a_timeout() {
        crate::runtime::install_crypto_provider();
        let client =
            ProviderClient::new(Duration::from_secs(5), Duration::from_secs(1)).expect("client");
        // A port just freed: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let outbound = Outbound {
            url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
            headers: vec![("Authorization", "Bearer sk-test".into())],
            body: Bytes::from_static(b"{}"),
            dialect: super::super::upstream::Dialect::OpenAI,
            usage_added: false,
        };
        let error = client.send(&outbound).await.expect_err("nothing listens");
        assert!(matches!(error, SendError::Transport(_)), "{error}");
        assert!(error.to_string().contains("refused"), "{error}");
        assert!(!error.is_timeout());
        assert!(!error.to_string().contains("sk-test"));
    }
}
