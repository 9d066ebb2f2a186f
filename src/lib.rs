//! agent-operator: a Kubernetes operator that runs AI agent workloads.
//!
//! Layers, from the bottom: [`api`] holds the custom resource types.

pub mod api;
pub mod providers;
