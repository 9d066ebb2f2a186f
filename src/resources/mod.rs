//! Pure builders of the child objects the controllers own. Each takes plain data and returns the
//! object to server-side apply: no client, no clock.

pub mod deployment;
pub mod hpa;
pub mod labels;
pub mod names;
pub mod network_policy;
pub mod pdb;
pub mod provider_config;
pub mod service;
pub mod service_account;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

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
