//! agent-operator: a Kubernetes operator that runs AI agent workloads.
//!
//! Layers, from the bottom: [`api`] holds the custom resource types; [`providers`] probes LLM
//! endpoints; [`controller`] reconciles each kind; [`runtime`] runs the process (logging,
//! metrics, health endpoints, start-up checks, shutdown). [`router`] is the LLM router that runs
//! as a sidecar in agent pods: a binary of its own, `agent-router`. [`dashboard`] serves a
//! read-only web page of the cluster's agents, providers and tasks: a second mode of the operator's
//! binary. [`process`] is what both binaries do around their command.

pub mod api;
pub mod controller;
pub mod dashboard;
pub mod process;
pub mod providers;
pub mod resources;
pub mod router;
pub mod runtime;

use std::net::SocketAddr;

/// Errors that stop the operator at start. Each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no usable kubeconfig or in-cluster configuration: {source}; set KUBECONFIG or run inside a pod"
    )]
    KubeConfig { source: kube::Error },

    #[error("the Kubernetes API server does not answer: {source}")]
    ApiServerUnreachable { source: kube::Error },

    #[error(
        "the CRDs of agentoperator.dev/v1alpha1 are not installed (missing: {missing}); install them with `agent-operator crds | kubectl apply --server-side -f -` or the Helm chart"
    )]
    CrdsMissing { missing: String },

    #[error(
        "the operator's account lacks permissions it needs: {missing}; grant them with the Helm chart's RBAC or `kubectl apply -k config/rbac` (the rules the operator uses are in config/rbac/role.yaml)"
    )]
    PermissionsMissing { missing: String },

    #[error(
        "--log-level '{level}' is not a valid filter ({reason}); use e.g. info or agent_operator=debug"
    )]
    InvalidLogLevel { level: String, reason: String },

    #[error("cannot export traces to --otlp-endpoint {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },

    #[error("cannot listen on --metrics-address {address}: {source}; choose a free port")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },

    #[error("cannot register metrics: {source}")]
    Metrics { source: prometheus::Error },

    #[error("cannot build the HTTP client for provider probes: {source}")]
    HttpClient { source: reqwest::Error },
}
