//! The provider config mounted into agent pods: the failover chain with each provider's health,
//! in the order the agent should try them, and where each credential file is. It never holds a
//! credential value. The file format is the contract in `docs/agent-contract.md`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::{Deserialize, Serialize};

use crate::api::AgentDeployment;
use crate::api::budget::Pricing;
use crate::api::common::{Duration, RouterSpec, SecretKeyRef, Tool};
use crate::api::llm_provider::{DEFAULT_ANTHROPIC_VERSION, LLMProviderSpec, ProviderType};

/// Annotation on an agent's running pods: the hash of the provider config they should see.
pub const PROVIDER_CONFIG_ANNOTATION: &str = "agentoperator.dev/provider-config";
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
    pub api: ProviderApi,
}

/// What shapes a request to one provider besides its type and endpoint: the settings of its
/// LLMProvider spec that go on the wire, and its account's limits. Never a credential.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderApi {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_deployment: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub azure_deployments: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai_organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

impl ProviderApi {
    pub fn of(spec: &LLMProviderSpec) -> Self {
        let azure = spec.azure.as_ref();
        let openai = spec.openai.as_ref();
        Self {
            azure_api_version: azure.map(|a| a.api_version.clone()),
            azure_deployment: azure.and_then(|a| a.deployment.clone()),
            azure_deployments: azure.map(|a| a.deployments.clone()).unwrap_or_default(),
            anthropic_version: (spec.provider_type == ProviderType::Anthropic).then(|| {
                spec.anthropic
                    .as_ref()
                    .and_then(|a| a.version.clone())
                    .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string())
            }),
            openai_organization: openai.and_then(|o| o.organization.clone()),
            openai_project: openai.and_then(|o| o.project.clone()),
            requests_per_minute: spec.limits.as_ref().and_then(|l| l.requests_per_minute),
            max_concurrent_requests: spec.limits.as_ref().and_then(|l| l.max_concurrent_requests),
            pricing: spec.pricing.clone(),
        }
    }
}

/// The config file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    /// Format version of this file.
    pub version: u32,
    /// The first Ready provider, if any.
    pub active_provider: Option<String>,
    /// Ready providers first, each group in chain order.
    pub providers: Vec<ProviderEntry>,
    #[serde(default)]
    pub tools: Vec<ToolEntry>,
    /// The router's settings; absent when the pod runs no router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterSettings>,
    /// What the pod's router may still spend; absent when nothing limits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<Allowance>,
}

/// What a pod may spend: for a task's worker, its budget less what the earlier attempts spent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allowance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// In nano-units of `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_nanos: Option<u64>,
    pub currency: String,
}

/// How the in-pod router fails over, from the workload's `router` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterSettings {
    pub request_timeout: Duration,
    pub first_byte_timeout: Duration,
    /// Absent from files an older operator wrote: then the default.
    #[serde(default = "default_stream_idle_timeout")]
    pub stream_idle_timeout: Duration,
    pub max_attempts: u32,
    pub circuit_failure_threshold: u32,
    pub circuit_open_duration: Duration,
    /// Below 100 only, so that the files of workloads that do not set it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_sampling_percent: Option<u8>,
}

fn default_stream_idle_timeout() -> Duration {
    RouterSpec::default().stream_idle_timeout
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self::of(&RouterSpec::default())
    }
}

impl RouterSettings {
    pub fn of(spec: &RouterSpec) -> Self {
        let positive = |n: i32| u32::try_from(n).unwrap_or(1).max(1);
        Self {
            request_timeout: spec.request_timeout,
            first_byte_timeout: spec.first_byte_timeout,
            stream_idle_timeout: spec.stream_idle_timeout,
            max_attempts: positive(spec.max_attempts),
            circuit_failure_threshold: positive(spec.circuit_failure_threshold),
            circuit_open_duration: spec.circuit_open_duration,
            trace_sampling_percent: spec
                .trace_sampling_percent
                .and_then(|percent| u8::try_from(percent.clamp(0, 100)).ok())
                .filter(|percent| *percent < 100),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_file: Option<String>,
    #[serde(flatten)]
    pub api: ProviderApi,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
/// `router` carries the router's settings when the pod runs one.
pub fn provider_config(
    chain: &[ResolvedProvider],
    tools: &[Tool],
    router: Option<&RouterSpec>,
) -> ProviderConfig {
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
            api: p.api.clone(),
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
                url: crate::providers::scrub::without_userinfo(&t.url),
                description: t.description.clone(),
            })
            .collect(),
        router: router.map(RouterSettings::of),
        allowance: None,
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
            api: ProviderApi::default(),
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
        let config = provider_config(&chain, &[], None);
        let order: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
        assert_eq!(config.active_provider.as_deref(), Some("b"));
    }

    #[test]
    fn no_ready_provider_means_no_active_one() {
        let config = provider_config(&[provider("a", false)], &[], None);
        assert_eq!(config.active_provider, None);
        assert_eq!(config.providers.len(), 1);
    }

    #[test]
    fn the_file_names_credential_paths_never_values() {
        let config = provider_config(&[provider("a", true)], &[], None);
        let json = serde_json::to_string(&config).expect("serialize");
        assert!(json.contains("/var/run/agentoperator/credentials/a/api-key"));
        assert!(
            !json.contains("a-key"),
            "not even the Secret's name is needed by the agent"
        );
    }

    #[test]
    fn credentials_in_a_tool_url_never_reach_the_agents_config() {
        // The schema refuses such URLs; an object stored before that rule must still not leak.
        let tool = crate::api::common::Tool {
            name: "tickets".into(),
            url: "https://bot:hunter2@tickets.example/api".into(),
            description: None,
        };
        let config = provider_config(&[provider("a", true)], &[tool], None);
        let json = serde_json::to_string(&config).expect("serialize");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("https://tickets.example/api"), "{json}");
    }

    #[test]
    fn the_router_reads_back_what_the_operator_writes() {
        let mut a = provider("a", true);
        a.api
            .azure_deployments
            .insert("gpt-4o".into(), "prod-4o".into());
        a.api.requests_per_minute = Some(60);
        let config = provider_config(&[a], &[], Some(&RouterSpec::default()));
        let json = serde_json::to_string(&config).expect("serialize");
        let read: ProviderConfig = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(read, config);
        assert_eq!(read.router.map(|r| r.max_attempts), Some(3));
    }

    #[test]
    fn a_sampling_percent_below_100_reaches_the_router_and_the_default_changes_no_file() {
        let sampled = |percent: Option<i32>| {
            let spec = RouterSpec {
                trace_sampling_percent: percent,
                ..RouterSpec::default()
            };
            RouterSettings::of(&spec).trace_sampling_percent
        };
        assert_eq!(sampled(Some(10)), Some(10));
        assert_eq!(sampled(Some(0)), Some(0));
        assert_eq!(sampled(Some(100)), None);
        assert_eq!(sampled(None), None);
        let json = serde_json::to_string(&RouterSettings::default()).expect("serialize");
        assert!(!json.contains("traceSampling"), "{json}");
    }
}
