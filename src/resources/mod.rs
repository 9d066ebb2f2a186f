//! Pure builders of the child objects the controllers own. Each takes plain data and returns the
//! object to server-side apply: no client, no clock.

pub mod budget_lease;
pub mod deployment;
pub mod hpa;
pub mod job;
pub mod labels;
pub mod names;
pub mod network_policy;
pub mod pdb;
pub mod pod;
pub mod provider_config;
pub mod router_sidecar;
pub mod service;
pub mod service_account;
pub mod task_config;
pub mod usage_report;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

/// The metadata every child of an AgentDeployment carries: its name and namespace, the agent's
/// labels, and the controller owner reference (deletion cascades, watches map back).
pub fn child_metadata(agent: &crate::api::AgentDeployment, name: &str) -> kube::api::ObjectMeta {
    owned_metadata(
        agent,
        name,
        labels::agent_labels(agent.metadata.name.as_deref().unwrap_or_default()),
    )
}

/// The metadata of a child of `owner`: name, the owner's namespace, labels and the controller
/// owner reference.
pub fn owned_metadata<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name.to_string()),
        namespace: owner.meta().namespace.clone(),
        labels: Some(labels),
        owner_references: owner_reference(owner).map(|o| vec![o]),
        ..kube::api::ObjectMeta::default()
    }
}

/// The controller owner reference of a child, so deletion cascades and watches map back.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    owner.controller_owner_ref(&())
}

/// SHA-256 of some bytes as 16 hex digits: for annotations that must change when the input
/// does, and reveal nothing about it.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}
