//! Process runtime: logging, metrics, the health/metrics HTTP server, start-up checks, leader
//! election, and the lifecycle of the controllers from start to graceful shutdown.

pub mod api_client;
pub mod census;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod options;
pub mod permissions;
pub mod startup;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::controller::{self, Context};
use crate::resources::router_sidecar::RouterDefaults;
use metrics::Metrics;
use options::RunOptions;

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<(), Error> {
    // Before the OTLP exporter's HTTP client is built.
    install_crypto_provider();
    let traces = telemetry::init_traced(
        options.log.log_format,
        &options.log.log_level,
        options.otlp_endpoint.as_deref(),
    )?;
    let metrics = Arc::new(Metrics::new().map_err(|source| Error::Metrics { source })?);
    let config = kube::Config::infer()
        .await
        .map_err(|source| Error::KubeConfig {
            source: kube::Error::InferConfig(source),
        })?;
    let timing = leader::LeaseTiming::default();
    let fence = options
        .leader_election
        .then(|| Arc::new(leader::WriteFence::new(timing.renew_deadline)));
    let client = api_client::client(
        config,
        options.client_qps,
        options.client_burst,
        metrics.api_requests.clone(),
        fence.clone(),
    )
    .map_err(|source| Error::KubeConfig { source })?;
    startup::check(&client, &options).await?;

    let readiness = Arc::new(http::Readiness::default());
    let shutdown = CancellationToken::new();
    let server = http::serve(
        options.metrics_address,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(address = %options.metrics_address, namespaces = ?options.namespaces, "agent-operator started");

    let context = Arc::new(Context::new(
        client.clone(),
        metrics,
        readiness.clone(),
        RouterDefaults {
            image: options.router_image.clone(),
            otlp_endpoint: options.otlp_endpoint.clone(),
        },
    )?);
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new reconciles start");
        signal.cancel();
    });

    if let Some(fence) = fence {
        let election = Election {
            client,
            timing,
            fence,
        };
        run_elected(election, context, &options, readiness, shutdown).await;
    } else {
        let controllers = tokio::spawn(controller::run_all(
            context,
            options.clone(),
            shutdown.clone(),
        ));
        shutdown.cancelled().await;
        finish(controllers, &options).await;
    }
    let _ = server.await;
    tracing::info!("agent-operator stopped");
    if let Some(traces) = traces {
        // The exporter blocks while it flushes the last spans.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    Ok(())
}

/// Waits at most the shutdown bound for in-flight reconciles.
async fn finish(controllers: tokio::task::JoinHandle<()>, options: &RunOptions) {
    let bound = Duration::from_secs(options.shutdown_timeout_seconds);
    if tokio::time::timeout(bound, controllers).await.is_err() {
        tracing::warn!(
            ?bound,
            "in-flight reconciles did not finish in time and were abandoned"
        );
    }
}

/// Runs the controllers only while this replica holds the Lease. Losing it aborts them at once,
/// without waiting for in-flight reconciles: a former leader must not write anything more.
/// What the election needs: its client, timing and the fence the client checks.
struct Election {
    client: Client,
    timing: leader::LeaseTiming,
    fence: Arc<leader::WriteFence>,
}

async fn run_elected(
    election: Election,
    context: Arc<Context>,
    options: &RunOptions,
    readiness: Arc<http::Readiness>,
    shutdown: CancellationToken,
) {
    let namespace = lease_namespace(options);
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "agent-operator".into());
    let identity = format!("{host}-{}", std::process::id());
    let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
    let elector = leader::LeaderElector::new(
        kube::Api::namespaced(election.client, &namespace),
        options.lease_name.clone(),
        identity,
        election.timing,
        election.fence,
    );
    // The elector stops only after the controllers did, so the Lease is released last.
    let stop_election = CancellationToken::new();
    let election = tokio::spawn(elector.run(leading_tx, stop_election.clone()));
    readiness.set_following(true);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.wait_for(|lead| *lead) => if changed.is_err() { break },
        }
        readiness.set_following(false);
        let controllers = tokio::spawn(controller::run_all(
            context.clone(),
            options.clone(),
            shutdown.child_token(),
        ));
        tokio::select! {
            _ = shutdown.cancelled() => {
                finish(controllers, options).await;
                break;
            }
            _ = leading.wait_for(|lead| !*lead) => {
                controllers.abort();
                let _ = controllers.await;
                readiness.set_following(true);
            }
        }
    }
    stop_election.cancel();
    let _ = election.await;
}

/// The Lease's namespace: the flag, else the pod's own namespace, else `default`.
pub fn lease_namespace(options: &RunOptions) -> String {
    options
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_string())
}

/// kube's and reqwest's rustls are both in the binary, so rustls cannot choose a crypto
/// provider by itself and the first TLS connection would panic; choose ring once, here.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
