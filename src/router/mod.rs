//! `agent-router`: the LLM router that runs as a native sidecar in agent pods. It
//! serves the OpenAI chat completions and the Anthropic Messages APIs on loopback and carries
//! each request along the pod's failover chain in the providers' own APIs, holding the
//! credentials the agent never sees.
//!
//! [`config`] reads the mounted files; [`upstream`] builds each provider's request, translated
//! by [`anthropic`] (OpenAI's API to Anthropic's) or [`messages`] (Anthropic's to OpenAI's),
//! and [`client`] sends it;
//! [`answer`] and [`stream`] carry the answer back in the agent's API, with [`usage`] counted;
//! [`failover`] decides when to move on; [`json`] looks into and writes JSON without
//! allocating; [`limits`] enforces the providers' limits; [`proxy`]
//! runs one request; this module serves them and reloads the files.

pub mod answer;
pub mod anthropic;
pub mod client;
pub mod config;
pub mod failover;
pub mod json;
pub mod lease;
pub mod ledger;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod proxy;
pub mod sse;
pub mod stream;
pub mod telemetry;
pub mod upstream;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router as Routes;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Args;
use serde_json::json;

use crate::resources::router_sidecar::ROUTER_PORT;
use crate::runtime::options::LogOptions;
use proxy::Router;
use upstream::{Dialect, Inbound};

#[derive(Args, Clone, Debug)]
pub struct RouterOptions {
    /// Loopback address to serve on. Agents in the pod reach it; nothing outside does.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_LISTEN", default_value_t = SocketAddr::from(([127, 0, 0, 1], ROUTER_PORT)))]
    pub listen: SocketAddr,

    /// The provider config the operator mounts.
    #[arg(long, env = "AGENT_OPERATOR_PROVIDERS_FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// How often the config and credential files are checked for changes.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_RELOAD_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,

    /// Largest request body accepted from the agent, in bytes.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest wait for room under a provider's limits before trying the next provider.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_LIMIT_WAIT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub limit_wait: Duration,

    /// Where the usage report is kept across restarts of the router (a file on the pod's
    /// usage volume). Unset keeps it in memory only.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_USAGE_FILE")]
    pub usage_file: Option<PathBuf>,

    /// The OTLP/HTTP endpoint (a collector's base URL, e.g. `http://otel-collector:4318`) for
    /// the router's spans and GenAI metrics. Unset, the router exports nothing.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// How often the GenAI metrics are exported.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_METRICS_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub otlp_metrics_interval: Duration,

    /// Where the usage report is also written for the kubelet to copy into the pod's status
    /// when the router stops (the container's `terminationMessagePath`).
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,

    /// Serve the operator's budget lease on this address (the pod's, port 8791): the router
    /// then spends only what the operator grants it. Unset, no lease is served and only the
    /// config's allowance, if any, limits the pod.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_LEASE_LISTEN")]
    pub lease_listen: Option<SocketAddr>,

    /// How long a leased router, asked to stop, waits for the operator to read its final
    /// counters. Within the pod's termination grace period (30 s by default), and longer than
    /// one lease interval (10 s).
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_FINAL_READ_WAIT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub final_read_wait: Duration,

    /// The lease token the operator presents, as mounted from the agent's lease Secret.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_LEASE_TOKEN_FILE", default_value = DEFAULT_LEASE_TOKEN_PATH)]
    pub lease_token_file: PathBuf,

    #[command(flatten)]
    pub log: LogOptions,

    /// Ask the router at `--listen` for its health and exit 0 when healthy (the sidecar's probe).
    #[arg(long)]
    pub check: bool,
}

/// Where the operator mounts the config: `CONFIG_DIR`/`CONFIG_FILE`, which a test checks.
const DEFAULT_CONFIG_PATH: &str = "/etc/agentoperator/providers.json";
/// Where the operator mounts the lease token: `LEASE_TOKEN_DIR`/`LEASE_TOKEN_KEY`.
const DEFAULT_LEASE_TOKEN_PATH: &str = "/var/run/agentoperator/lease/token";

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(
        "--listen {0} is not a loopback address; the router serves the pod only (use 127.0.0.1)"
    )]
    NotLoopback(SocketAddr),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] client::ClientError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Telemetry(#[from] crate::Error),
    #[error("{0}")]
    Otlp(#[from] telemetry::TelemetryError),
    #[error("the router at {0} is not healthy")]
    Unhealthy(SocketAddr),
}

/// Runs the router until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn run(options: RouterOptions) -> Result<(), RouterError> {
    if options.check {
        return check(options.listen).await;
    }
    if !options.listen.ip().is_loopback() {
        return Err(RouterError::NotLoopback(options.listen));
    }
    crate::runtime::telemetry::init(options.log.log_format, &options.log.log_level)?;
    crate::runtime::install_crypto_provider();
    let snapshot = config::load(&options.config)?;
    log_snapshot(&snapshot);
    let http = client::ProviderClient::new(Duration::from_secs(5), Duration::from_secs(90))?;
    let ledger = Arc::new(ledger::Ledger::open(ledger::ReportFiles {
        usage_file: options.usage_file.clone(),
        termination_log: options.termination_log.clone(),
    }));
    // What a previous router of this pod spent is the operator's to read from the start.
    ledger.write();
    tokio::spawn(ledger.clone().write_changes());
    if let Some(address) = options.lease_listen {
        ledger.expect_lease();
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| RouterError::Bind { address, source })?;
        // Served until the process exits, past SIGTERM: the operator reads a draining pod's
        // last counters from it.
        tokio::spawn(lease::serve(
            listener,
            options.lease_token_file.clone(),
            ledger.clone(),
        ));
    }
    let telemetry = match options.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => Some(telemetry::Telemetry::start(
            endpoint,
            options.otlp_metrics_interval,
        )?),
        None => None,
    };
    let router = Arc::new(Router::new(
        snapshot,
        http,
        metrics::RouterMetrics::new()?,
        ledger.clone(),
        telemetry,
        options.limit_wait,
    ));
    tokio::spawn(reload(
        router.clone(),
        options.config.clone(),
        options.reload_interval,
    ));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| RouterError::Bind {
            address: options.listen,
            source,
        })?
        // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm and the
        // agent's delayed ACKs hold each one back by tens of milliseconds.
        .tap_io(|connection| {
            let _ = connection.set_nodelay(true);
        });
    tracing::info!(address = %options.listen, "router serving");
    let served = axum::serve(listener, routes(router.clone(), options.max_body_bytes))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| RouterError::Bind {
            address: options.listen,
            source,
        });
    // The requests in flight have finished: the report the kubelet reads is complete, and the
    // last spans and metrics can go.
    ledger.write();
    if options.lease_listen.is_some() {
        // A leased pod's usage since the last round reaches the operator only by being read.
        if ledger.await_final_read(options.final_read_wait).await {
            tracing::info!("the operator read the final counters");
        } else {
            tracing::warn!(waited = ?options.final_read_wait, "no final lease reading; the usage since the last one is not counted");
        }
    }
    // The exporters block while they flush: off the runtime's one thread.
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(telemetry) = &router.telemetry {
            telemetry.shutdown();
        }
    })
    .await;
    served
}

/// The HTTP surface: the OpenAI and Anthropic endpoints agents use, health and metrics. Of the
/// agent's headers only `anthropic-beta` and the trace context (`traceparent`, `tracestate`)
/// are read, so no credential can reach a provider.
pub fn routes(router: Arc<Router>, max_body_bytes: usize) -> Routes {
    Routes::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(router)
}

async fn chat_completions(
    State(router): State<Arc<Router>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match read_request(body) {
        Ok((body, size)) => {
            let inbound = Inbound {
                parent: trace_parent(&headers),
                ..Inbound::chat(body, size)
            };
            proxy::serve(router, inbound).await
        }
        Err((status, message)) => refuse(&router, Dialect::OpenAI, status, &message),
    }
}

async fn messages(
    State(router): State<Arc<Router>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let anthropic_beta = headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match read_request(body) {
        Ok((body, size)) => {
            let inbound = Inbound {
                dialect: Dialect::Anthropic,
                body,
                size,
                anthropic_beta,
                parent: trace_parent(&headers),
            };
            proxy::serve(router, inbound).await
        }
        Err((status, message)) => refuse(&router, Dialect::Anthropic, status, &message),
    }
}

/// The W3C trace context headers the agent sent, if any.
fn trace_parent(headers: &HeaderMap) -> telemetry::Parent {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    telemetry::Parent {
        traceparent: text("traceparent"),
        tracestate: text("tracestate"),
    }
}

/// The agent's request as JSON and its size, or why it is refused.
fn read_request(
    body: Result<Bytes, BytesRejection>,
) -> Result<(serde_json::Map<String, serde_json::Value>, usize), (StatusCode, String)> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            (
                status,
                "the request body is larger than the router accepts".to_string(),
            )
        } else {
            (status, rejection.body_text())
        }
    })?;
    proxy::parse_request(&body)
        .map(|request| (request, body.len()))
        .map_err(|message| (StatusCode::BAD_REQUEST, message))
}

fn refuse(router: &Router, dialect: Dialect, status: StatusCode, message: &str) -> Response {
    router
        .metrics
        .errors
        .with_label_values(&["bad_request"])
        .inc();
    answer::error(dialect, status, "bad_request", message)
}

/// Seconds since the epoch, for the `created` field of translated answers.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The models the chain offers: each provider's model, once.
async fn models(State(router): State<Arc<Router>>) -> Response {
    let snapshot = router.snapshot();
    let mut seen = std::collections::BTreeSet::new();
    let data: Vec<_> = snapshot
        .upstreams
        .iter()
        .filter_map(|u| u.model.as_ref().map(|m| (m, &u.name)))
        .filter(|(model, _)| seen.insert(model.to_string()))
        .map(|(model, provider)| json!({"id": model, "object": "model", "owned_by": provider}))
        .collect();
    (
        [("content-type", "application/json")],
        json!({"object": "list", "data": data}).to_string(),
    )
        .into_response()
}

async fn metrics_text(State(router): State<Arc<Router>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        router.metrics.render(),
    )
        .into_response()
}

/// Checks the files every `interval` and swaps in a changed snapshot. A file caught mid-update
/// or broken keeps the current snapshot, so requests never see a half-written config.
async fn reload(router: Arc<Router>, path: PathBuf, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match config::load(&path) {
            Ok(snapshot) if snapshot.fingerprint != router.snapshot().fingerprint => {
                log_snapshot(&snapshot);
                router.replace(snapshot);
                router
                    .metrics
                    .config_reloads
                    .with_label_values(&["changed"])
                    .inc();
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "keeping the previous provider config");
                router
                    .metrics
                    .config_reloads
                    .with_label_values(&["failed"])
                    .inc();
            }
        }
    }
}

fn log_snapshot(snapshot: &config::Snapshot) {
    let chain: Vec<String> = snapshot
        .upstreams
        .iter()
        .map(|u| {
            format!(
                "{}({}{})",
                u.name,
                u.provider_type.as_str(),
                if u.ready { "" } else { ", not ready" }
            )
        })
        .collect();
    let unusable: Vec<String> = snapshot
        .unusable
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
    tracing::info!(chain = %chain.join(" > "), unusable = %unusable.join("; "), "provider config loaded");
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The probe: a plain HTTP/1.0 request to `/healthz` on loopback.
async fn check(address: SocketAddr) -> Result<(), RouterError> {
    if crate::runtime::http::healthz_ok(address).await {
        Ok(())
    } else {
        Err(RouterError::Unhealthy(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::provider_config::{CONFIG_DIR, CONFIG_FILE};

    #[test]
    fn the_default_config_path_is_where_the_operator_mounts_it() {
        assert_eq!(DEFAULT_CONFIG_PATH, format!("{CONFIG_DIR}/{CONFIG_FILE}"));
    }
}
