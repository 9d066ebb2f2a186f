//! The dedicated ServiceAccount of an agent that names none.

use k8s_openapi::api::core::v1::ServiceAccount;

use crate::api::AgentDeployment;

pub fn service_account(agent: &AgentDeployment, name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: super::child_metadata(agent, name),
        // Agents talk to LLMs, not to the Kubernetes API; no token unless a pod asks for one.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
