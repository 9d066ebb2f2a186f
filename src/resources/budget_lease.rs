//! The budget lease: how an AgentDeployment's budget reaches the routers of its pods, and their
//! usage the operator, without any Kubernetes credential in the pod. The operator calls each
//! running pod's router on [`LEASE_PORT`] with the bearer token of the agent's lease Secret,
//! which only the router mounts: a call reads the router's cumulative counters and what it
//! may still spend, and may grant it more room. The design and its bound are in
//! `docs/architecture.md` ("Budgets and usage").

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use super::names::{DNS_SUBDOMAIN_MAX, child_name};
use crate::api::AgentDeployment;
use crate::resources::provider_config::Allowance;
use crate::resources::usage_report::Tally;

/// The port the router serves the lease on, on the pod's address.
pub const LEASE_PORT: u16 = 8791;
/// The lease's path.
pub const LEASE_PATH: &str = "/v1/lease";
/// Where the router mounts the agent's lease Secret.
pub const LEASE_TOKEN_DIR: &str = "/var/run/agentoperator/lease";
/// The Secret's key holding the token, and its file's name in [`LEASE_TOKEN_DIR`].
pub const LEASE_TOKEN_KEY: &str = "token";
/// The router's volume of the lease Secret.
pub const LEASE_VOLUME: &str = "llm-lease";

/// How often the operator reads and leases each agent's routers.
pub const LEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The name of an agent's lease Secret.
pub fn lease_secret_name(agent: &str) -> String {
    child_name(agent, "router-lease", DNS_SUBDOMAIN_MAX)
}

/// The agent's lease Secret holding `token`.
pub fn lease_secret(agent: &AgentDeployment, name: &str, token: &str) -> Secret {
    Secret {
        metadata: super::child_metadata(agent, name),
        data: Some(BTreeMap::from([(
            LEASE_TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// A new token: 32 random bytes, hex-encoded.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the operator sends. Without `grant`, the call only reads (and updates the terms).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// The agent's whole window is spent, not only this pod's share of it: retrying cannot
    /// help before `windowEnd`.
    #[serde(default)]
    pub window_spent: bool,
    /// When the window ends (RFC 3339), for the agent's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    /// How long until the next lease, so a refusal for a spent share says when to retry.
    #[serde(default)]
    pub retry_after_seconds: u64,
}

/// How a grant changes the router's allowance. Neither can make the pods' allowances together
/// exceed what the operator holds free: an addition comes out of the free budget, and a limit
/// only ever lowers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantMode {
    /// Add the room to the allowance (to the usage and reservations, before the first grant).
    #[default]
    Add,
    /// Lower the allowance to the usage and reservations as they are, plus the room; never
    /// raise it.
    Limit,
}

/// Room to spend, as `mode` applies it. Relative to the router's own counters when it
/// arrives, so what a pod spends between the operator's reading and the grant is never
/// granted twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    #[serde(default)]
    pub mode: GrantMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// In nano-units of `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nanos: Option<u64>,
    pub currency: String,
}

/// What the router answers, after applying a grant: its counters, what its requests in
/// flight hold, its allowance, and the largest request it refused since the last grant (so
/// the operator can tell a spent window from a spent share).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseReading {
    pub usage: Tally,
    #[serde(default)]
    pub reserved: Refused,
    /// The counters the router may reach; absent before its first grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<Allowance>,
    /// The currency `usage.costNanos` is in, once something was priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default)]
    pub largest_refused: Refused,
}

/// Tokens and cost a request needs, or requests hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost_nanos: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_read_only_request_has_no_allowance_on_the_wire() {
        let json = serde_json::to_value(LeaseRequest::default()).expect("json");
        assert!(json.get("grant").is_none(), "{json}");
    }
}
