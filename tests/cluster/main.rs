//! Cluster-backed tests: everything here runs against the local control plane that
//! `e2e/cluster/up` starts. Each test works in its own namespace.

/// The router as a local process, as its own tests run it; it finds its ports in `crate::net`.
#[path = "../router/harness.rs"]
#[allow(dead_code)]
mod router_harness;
use support::net;
#[path = "../support/mod.rs"]
mod support;

mod agent_deployment;
mod agent_task;
mod api;
mod events;
mod health;
mod leader_election;
mod llm_provider;
mod local_cluster;
mod monitoring;
mod packaging;
mod rbac;
mod router;
mod runtime;
mod telemetry;
