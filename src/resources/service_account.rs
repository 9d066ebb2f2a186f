//! The dedicated ServiceAccount of an agent that names none.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::ObjectMeta;

use crate::api::AgentDeployment;

pub fn service_account(agent: &AgentDeployment, name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: agent.metadata.namespace.clone(),
            labels: Some(super::labels::agent_labels(
                &agent.metadata.name.clone().unwrap_or_default(),
            )),
            owner_references: super::owner_reference(agent).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        // Agents talk to LLMs, not to the Kubernetes API; no token unless a pod asks for one.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
