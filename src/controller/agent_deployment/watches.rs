//! Maps changes of LLMProviders and Secrets back to the AgentDeployments that use them, so a
//! provider turning healthy or a rotated key reaches the agents at once.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::AgentDeployment;
use crate::api::llm_provider::LLMProvider;
use crate::controller::compact::CachedPod;

/// Agents whose failover chain names this provider (also before the provider existed).
pub fn agents_using_provider(
    agents: &Store<AgentDeployment>,
    provider: &LLMProvider,
) -> Vec<ObjectRef<AgentDeployment>> {
    let (namespace, name) = (provider.namespace(), provider.name_any());
    agents
        .state()
        .iter()
        .filter(|agent| agent.namespace() == namespace)
        .filter(|agent| agent.spec.workload.providers.iter().any(|p| p.name == name))
        .map(|agent| ObjectRef::from_obj(agent.as_ref()))
        .collect()
}

/// Agents that read this Secret: through `spec.secrets`, or through a provider's credentials.
pub fn agents_using_secret(
    agents: &Store<AgentDeployment>,
    providers: &Store<LLMProvider>,
    secret: &Secret,
) -> Vec<ObjectRef<AgentDeployment>> {
    let (namespace, name) = (secret.namespace(), secret.name_any());
    let providers_with_secret: Vec<String> = providers
        .state()
        .iter()
        .filter(|p| {
            p.namespace() == namespace
                && p.spec.credentials.as_ref().is_some_and(|c| c.name == name)
        })
        .map(|p| p.name_any())
        .collect();
    agents
        .state()
        .iter()
        .filter(|agent| agent.namespace() == namespace)
        .filter(|agent| {
            agent
                .spec
                .workload
                .secrets
                .iter()
                .any(|s| s.secret_key_ref.name == name)
                || agent
                    .spec
                    .workload
                    .providers
                    .iter()
                    .any(|p| providers_with_secret.contains(&p.name))
        })
        .map(|agent| ObjectRef::from_obj(agent.as_ref()))
        .collect()
}

/// The agent a pod belongs to, by the selector label the operator puts on its pods.
pub fn agent_of_pod(pod: CachedPod) -> Option<ObjectRef<AgentDeployment>> {
    let agent = pod.label(crate::resources::labels::AGENT_LABEL)?;
    Some(ObjectRef::new(agent).within(&pod.namespace()?))
}
