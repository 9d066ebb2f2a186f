//! Process runtime: logging, metrics, the health/metrics HTTP server, start-up checks, and the
//! lifecycle of the controllers from start to graceful shutdown.

pub mod http;
pub mod metrics;
pub mod options;
pub mod startup;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::controller::{self, Context};
use options::RunOptions;

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<(), Error> {
    telemetry::init(options.log_format, &options.log_level)?;
    install_crypto_provider();
    let client = Client::try_default()
        .await
        .map_err(|source| Error::KubeConfig { source })?;
    startup::check(&client).await?;

    let metrics = Arc::new(Metrics::new().map_err(|source| Error::Metrics { source })?);
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

    let context = Arc::new(Context::new(client, metrics, readiness)?);
    let controllers = tokio::spawn(controller::run_all(
        context,
        options.clone(),
        shutdown.clone(),
    ));

    wait_for_signal().await;
    tracing::info!("shutting down: no new reconciles start");
    shutdown.cancel();
    let bound = Duration::from_secs(options.shutdown_timeout_seconds);
    if tokio::time::timeout(bound, controllers).await.is_err() {
        tracing::warn!(
            ?bound,
            "in-flight reconciles did not finish in time and were abandoned"
        );
    }
    let _ = server.await;
    tracing::info!("agent-operator stopped");
    Ok(())
}

use metrics::Metrics;

/// kube's and reqwest's rustls are both in the binary, so rustls cannot choose a crypto
/// provider by itself and the first TLS connection would panic; choose ring once, here.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn wait_for_signal() {
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
