//! `agent-operator dashboard`: a read-only web page of the agents, the providers and the task
//! queue, served on loopback with the viewer's own kubeconfig. It shows exactly what their RBAC
//! lets them read and needs no credentials of its own.
//!
//! [`scope`] decides which namespaces the account may read; [`cache`] keeps those objects in
//! reflectors and signals every change; [`model`] turns a snapshot of them into what each page
//! shows and [`pages`] renders that as HTML (both pure); [`server`] serves the pages and pushes
//! each open page's new rendering over server-sent events when the cluster changes.

pub mod cache;
pub mod model;
pub mod pages;
pub mod scope;
pub mod server;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use clap::Args;
use kube::config::KubeConfigOptions;

use crate::api::{GROUP, VERSION};
use crate::runtime::options::{LogFormat, parse_namespace};

/// The port the dashboard serves on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8088;

#[derive(Args, Clone, Debug)]
pub struct DashboardOptions {
    /// Address to serve on. Loopback unless you choose otherwise: the page shows what your
    /// kubeconfig may read to anyone who reaches it.
    #[arg(
        long,
        env = "AGENT_OPERATOR_DASHBOARD_ADDRESS",
        default_value = "127.0.0.1"
    )]
    pub address: IpAddr,

    /// Port to serve on; 0 picks a free one.
    #[arg(long, env = "AGENT_OPERATOR_DASHBOARD_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Namespaces to show, comma-separated. Without it: every namespace when your account may
    /// read them all, else your kubeconfig context's namespace.
    #[arg(short, long = "namespace", env = "AGENT_OPERATOR_DASHBOARD_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub namespaces: Vec<String>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long)]
    pub context: Option<String>,

    /// Log format (log lines go to standard error).
    #[arg(
        long,
        env = "AGENT_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `agent_operator=debug`.
    #[arg(long, env = "AGENT_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Ask the dashboard at --address and --port for its health and exit 0 when healthy (the
    /// in-cluster probe: the kubelet cannot reach loopback).
    #[arg(long)]
    pub check: bool,
}

impl DashboardOptions {
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// Why the dashboard cannot start. Each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("no usable kubeconfig: {0}; set KUBECONFIG or pass --context")]
    KubeConfig(String),
    #[error("the Kubernetes API server does not answer: {0}")]
    ApiServerUnreachable(kube::Error),
    #[error("{0}")]
    Startup(#[from] crate::Error),
    #[error("{0}")]
    Scope(#[from] scope::ScopeError),
    #[error("cannot listen on {address}: {source}; choose another --port")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the dashboard at {0} is not healthy")]
    Unhealthy(SocketAddr),
}

/// Serves the dashboard until SIGTERM or Ctrl-C.
pub async fn run(options: DashboardOptions) -> Result<(), DashboardError> {
    if options.check {
        return if crate::runtime::http::healthz_ok(options.listen()).await {
            Ok(())
        } else {
            Err(DashboardError::Unhealthy(options.listen()))
        };
    }
    crate::runtime::telemetry::init_stderr(options.log_format, &options.log_level)?;
    crate::runtime::install_crypto_provider();
    let config = match &options.context {
        Some(context) => kube::Config::from_kubeconfig(&KubeConfigOptions {
            context: Some(context.clone()),
            ..KubeConfigOptions::default()
        })
        .await
        .map_err(|error| DashboardError::KubeConfig(error.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|error| DashboardError::KubeConfig(error.to_string()))?,
    };
    let default_namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)
        .map_err(|error| DashboardError::KubeConfig(error.to_string()))?;
    client
        .apiserver_version()
        .await
        .map_err(DashboardError::ApiServerUnreachable)?;
    crate::runtime::startup::check_crds(&client, &format!("{GROUP}/{VERSION}")).await?;
    let visibility = scope::resolve(&client, &options.namespaces, &default_namespace).await?;
    if let Some(note) = &visibility.note {
        tracing::warn!("{note}");
    }
    let cache = cache::Cache::start(client, visibility);

    let listen = options.listen();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DashboardError::Bind {
            address: listen,
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind {
            address: listen,
            source,
        })?;
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "serving on a non-loopback address: anyone who reaches it sees what this kubeconfig may read");
    }
    // The address on standard output, alone on its line, for the person and for scripts.
    println!("agent-operator dashboard: open http://{address}/");
    let _ = std::io::stdout().flush();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::runtime::wait_for_signal().await;
        signal.cancel();
    });
    let routes = server::routes(server::AppState::new(cache, address, shutdown.clone()));
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| DashboardError::Bind {
            address: listen,
            source,
        })
}
