//! The provider config mounted into agent pods: the failover chain with each provider's health,
//! in the order the agent should try them, and where each credential file is. It never holds a
//! credential value. The file format is the contract in `docs/agent-contract.md`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;

use crate::api::AgentDeployment;
use crate::api::common::{SecretKeyRef, Tool};
use crate::api::llm_provider::ProviderType;

/// Where the config file is mounted.
pub const CONFIG_DIR: &str = "/etc/agentoperator";
/// The config file's name in the ConfigMap and in `CONFIG_DIR`.
pub const CONFIG_FILE: &str = "providers.json";
/// Where provider credentials are mounted, one folder per provider.
pub const CREDENTIALS_DIR: &str = "/var/run/agentoperator/credentials";
/// The file holding a provider's API key inside its folder.
pub const CREDENTIAL_FILE: &str = "api-key";

/// One link of the failover chain as the controller resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedProvider {
    pub name: String,
    /// `None` when the LLMProvider does not exist.
    pub provider_type: Option<ProviderType>,
    pub endpoint: Option<String>,
    pub model: Option<String>,
    pub ready: bool,
    /// Why the provider is not Ready.
    pub reason: Option<String>,
    /// The credential to mount, when the provider has one and its Secret key exists.
    pub credential: Option<SecretKeyRef>,
    pub azure_api_version: Option<String>,
}

/// The config file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    /// Format version of this file.
    pub version: u32,
    /// The first Ready provider, if any.
    pub active_provider: Option<String>,
    /// Ready providers first, each group in chain order.
    pub providers: Vec<ProviderEntry>,
    pub tools: Vec<ToolEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEntry {
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<ProviderType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Path of the file holding the API key, when the provider has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_api_version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ToolEntry {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The path of a provider's credential file inside the pod.
pub fn credential_path(provider: &str) -> String {
    format!("{CREDENTIALS_DIR}/{provider}/{CREDENTIAL_FILE}")
}

/// Orders the chain for the agent: Ready providers first, unready after, each in chain order.
pub fn provider_config(chain: &[ResolvedProvider], tools: &[Tool]) -> ProviderConfig {
    let (ready, unready): (Vec<&ResolvedProvider>, Vec<&ResolvedProvider>) =
        chain.iter().partition(|p| p.ready);
    let providers = ready
        .iter()
        .chain(unready.iter())
        .map(|p| ProviderEntry {
            name: p.name.clone(),
            provider_type: p.provider_type,
            endpoint: p.endpoint.clone(),
            model: p.model.clone(),
            ready: p.ready,
            reason: p.reason.clone(),
            credential_file: p.credential.as_ref().map(|_| credential_path(&p.name)),
            azure_api_version: p.azure_api_version.clone(),
        })
        .collect();
    ProviderConfig {
        version: 1,
        active_provider: ready.first().map(|p| p.name.clone()),
        providers,
        tools: tools
            .iter()
            .map(|t| ToolEntry {
                name: t.name.clone(),
                url: t.url.clone(),
                description: t.description.clone(),
            })
            .collect(),
    }
}

/// The ConfigMap holding the config file.
pub fn config_map(agent: &AgentDeployment, name: &str, config: &ProviderConfig) -> ConfigMap {
    let json = serde_json::to_string_pretty(config).unwrap_or_default();
    ConfigMap {
        metadata: super::child_metadata(agent, name),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), json)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, ready: bool) -> ResolvedProvider {
        ResolvedProvider {
            name: name.into(),
            provider_type: Some(ProviderType::OpenAI),
            endpoint: Some(format!("https://{name}.example/v1")),
            model: Some("gpt-4o".into()),
            ready,
            reason: (!ready).then(|| "Unreachable".to_string()),
            credential: Some(SecretKeyRef {
                name: format!("{name}-key"),
                key: "apiKey".into(),
            }),
            azure_api_version: None,
        }
    }

    #[test]
    fn ready_providers_come_first_in_chain_order() {
        let chain = [
            provider("a", false),
            provider("b", true),
            provider("c", false),
            provider("d", true),
        ];
        let config = provider_config(&chain, &[]);
        let order: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
        assert_eq!(config.active_provider.as_deref(), Some("b"));
    }

    #[test]
    fn no_ready_provider_means_no_active_one() {
        let config = provider_config(&[provider("a", false)], &[]);
        assert_eq!(config.active_provider, None);
        assert_eq!(config.providers.len(), 1);
    }

    #[test]
    fn the_file_names_credential_paths_never_values() {
        let config = provider_config(&[provider("a", true)], &[]);
        let json = serde_json::to_string(&config).expect("serialize");
        assert!(json.contains("/var/run/agentoperator/credentials/a/api-key"));
        assert!(
            !json.contains("a-key"),
            "not even the Secret's name is needed by the agent"
        );
    }
}
