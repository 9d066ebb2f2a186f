//! The LLMProvider kind: one LLM endpoint, its credential, its models and how to probe it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::budget::Pricing;
use super::common::{Duration, SecretKeyRef};

/// The API an LLMProvider speaks. It decides the probe, the auth header and the request format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProviderType {
    /// api.openai.com or any endpoint with OpenAI's API and bearer-token auth.
    OpenAI,
    /// Anthropic's Messages API (`x-api-key` header).
    Anthropic,
    /// An Azure OpenAI resource (`api-key` header, deployment URLs, `api-version`).
    AzureOpenAI,
    /// An Ollama server (no credential needed).
    Ollama,
    /// A server speaking the OpenAI API: vLLM, LiteLLM, llama.cpp, TGI and others.
    OpenAICompatible,
}

impl ProviderType {
    /// Whether this type can be used without an API key.
    pub fn credentials_optional(self) -> bool {
        matches!(self, ProviderType::Ollama | ProviderType::OpenAICompatible)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::OpenAI => "OpenAI",
            ProviderType::Anthropic => "Anthropic",
            ProviderType::AzureOpenAI => "AzureOpenAI",
            ProviderType::Ollama => "Ollama",
            ProviderType::OpenAICompatible => "OpenAICompatible",
        }
    }
}

/// LLMProvider declares one LLM endpoint. The operator probes it on `healthCheck.interval` and
/// reports its health, latency, models and credential validity; AgentDeployments and AgentTasks
/// fail over between providers by this health.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "agentoperator.dev",
    version = "v1alpha1",
    kind = "LLMProvider",
    plural = "llmproviders",
    singular = "llmprovider",
    namespaced,
    status = "LLMProviderStatus",
    shortname = "llmp",
    category = "agents",
    category = "agentoperator",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Models", type_ = "integer", json_path = ".status.modelCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Latency", type_ = "string", json_path = ".status.latency"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.credentials) || self.type in ['Ollama', 'OpenAICompatible']").message("spec.credentials is required for this provider type: set spec.credentials.name and spec.credentials.key to the Secret key holding the API key").field_path(".credentials"))]
#[x_kube(validation = kube::core::Rule::new("self.type == 'AzureOpenAI' ? has(self.azure) : !has(self.azure)").message("spec.azure must be set exactly when spec.type is AzureOpenAI: add spec.azure.apiVersion for Azure, or remove spec.azure for other types").field_path(".azure"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.anthropic) || self.type == 'Anthropic'").message("spec.anthropic applies only to spec.type Anthropic: remove it or change the type").field_path(".anthropic"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.openai) || self.type in ['OpenAI', 'OpenAICompatible']").message("spec.openai applies only to spec.type OpenAI or OpenAICompatible: remove it or change the type").field_path(".openai"))]
#[x_kube(validation = kube::core::Rule::new("self.allowInsecureHTTP || !isURL(self.endpoint) || url(self.endpoint).getScheme() == 'https'").message("spec.endpoint must use https://; set spec.allowInsecureHTTP: true to allow plain http (for in-cluster servers only)").field_path(".endpoint"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.defaultModel) || !has(self.models) || size(self.models) == 0 || self.defaultModel in self.models").message("spec.defaultModel must be one of spec.models").field_path(".defaultModel"))]
pub struct LLMProviderSpec {
    /// The API this endpoint speaks: OpenAI, Anthropic, AzureOpenAI, Ollama or OpenAICompatible.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,

    /// Base URL of the API, e.g. `https://api.openai.com/v1`, `https://api.anthropic.com`,
    /// `https://my-resource.openai.azure.com` or `http://ollama.llm.svc:11434`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("must be an absolute http:// or https:// URL with a host, e.g. https://api.openai.com/v1"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::no_userinfo()).message("must not contain credentials (user:password@): anyone who may read LLMProviders would see them, and agents' configs would carry them; put the API key in the Secret named by spec.credentials"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::url_port_in_range()).message("the port must be between 1 and 65535"))]
    pub endpoint: String,

    /// Allow an `http://` endpoint. Only for servers inside the cluster or on a trusted network:
    /// the API key travels in clear text.
    #[serde(default, rename = "allowInsecureHTTP")]
    pub allow_insecure_http: bool,

    /// The Secret key holding the API key. Required for every type except Ollama and
    /// OpenAICompatible. The key is read at probe time and mounted into pods; it is never copied
    /// into status, events, logs or ConfigMaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretKeyRef>,

    /// Models this provider offers to agents. Each must appear in the provider's model listing,
    /// else the provider reports reason ModelNotFound. Empty means any listed model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(m, size(m) > 0 && size(m) <= 256)").message("each model name must be 1 to 256 characters"))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub models: Vec<String>,

    /// Model used when an agent's failover chain names no model for this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub default_model: Option<String>,

    /// Settings for type AzureOpenAI (required for that type, refused for others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,

    /// Settings for type Anthropic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<AnthropicSettings>,

    /// Settings for types OpenAI and OpenAICompatible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAISettings>,

    /// How the operator probes this provider.
    #[serde(default)]
    pub health_check: HealthCheck,

    /// Limits of this provider's account, used to admit AgentTasks and by the in-pod router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ProviderLimits>,

    /// What this provider charges per model. The router prices the usage each answer reports
    /// with it, for `status.usage` and for budgets' `maxCost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// Azure OpenAI settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureSettings {
    /// The `api-version` query parameter, e.g. `2024-10-21`.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$')").message("must be an Azure OpenAI API version such as 2024-10-21 or 2025-01-01-preview"))]
    pub api_version: String,
    /// The deployment used for a model that has no entry in `deployments`. Azure addresses models
    /// by deployment name; when unset, the model name is used as the deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({AZURE_DEPLOYMENT})")).message("must be an Azure deployment name (letters, digits, '-', '_' or '.'), not a URL"))]
    pub deployment: Option<String>,
    /// Deployment name per model, for resources whose deployments are not named after models.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(model, size(model) > 0 && size(model) <= 256 && size(self[model]) <= 64 && self[model].matches({AZURE_DEPLOYMENT}))")).message("each deployments entry maps a model to an Azure deployment name (letters, digits, '-', '_' or '.', at most 64), not a URL"))]
    pub deployments: std::collections::BTreeMap<String, String>,
}

/// An Azure OpenAI deployment name, as a CEL string literal.
const AZURE_DEPLOYMENT: &str = r"'^[A-Za-z0-9][-A-Za-z0-9_.]*$'";

/// Anthropic settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnthropicSettings {
    /// The `anthropic-version` header sent with every request; defaults to `2023-06-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}$')").message("must be an Anthropic API version, a date such as 2023-06-01"))]
    pub version: Option<String>,
}

/// The `anthropic-version` sent when `spec.anthropic.version` is unset.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// OpenAI settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAISettings {
    /// Sent as the `OpenAI-Organization` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::HEADER_VALUE)).message("is sent as an HTTP header: no line breaks or control characters"))]
    pub organization: Option<String>,
    /// Sent as the `OpenAI-Project` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::HEADER_VALUE)).message("is sent as an HTTP header: no line breaks or control characters"))]
    pub project: Option<String>,
}

/// How and how often the operator probes the provider. A probe lists the provider's models,
/// which costs no tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(super::common::rule_on_durations(&["self.timeout", "self.interval"], "duration(self.timeout) <= duration(self.interval)")).message("spec.healthCheck.timeout must not exceed spec.healthCheck.interval"))]
#[x_kube(validation = kube::core::Rule::new(super::common::rule_on_durations(&["self.interval"], "duration(self.interval) >= duration('1s')")).message("spec.healthCheck.interval must be at least 1s"))]
pub struct HealthCheck {
    /// Time between probes while the provider is healthy.
    #[serde(default = "default_probe_interval")]
    pub interval: Duration,
    /// Deadline of one probe request.
    #[serde(default = "default_probe_timeout")]
    #[x_kube(validation = kube::core::Rule::new(super::common::positive_duration("self")).message("must be longer than 0s"))]
    pub timeout: Duration,
    /// Consecutive failed probes after which the provider is no longer Ready.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Consecutive successful probes after which a failed provider is Ready again.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval: default_probe_interval(),
            timeout: default_probe_timeout(),
            failure_threshold: default_failure_threshold(),
            success_threshold: default_success_threshold(),
        }
    }
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_failure_threshold() -> i32 {
    3
}
fn default_success_threshold() -> i32 {
    1
}

/// Rate and concurrency limits of the provider account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderLimits {
    /// Requests per minute the account allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_minute: Option<i32>,
    /// Requests that may be in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_concurrent_requests: Option<i32>,
}

/// What the operator last observed of the provider. Written only when a fact a person cares
/// about changes, never on every probe: per-probe figures are Prometheus metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LLMProviderStatus {
    /// `Ready` (the provider answers and offers the configured models) and `CredentialsValid`
    /// (the API key was accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Models the provider listed at the last probe (at most 100 are kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Number of models the provider listed at the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_count: Option<i32>,
    /// Probe latency when the status was last written, rounded for display (e.g. `120ms`).
    /// Current latency is the `agent_operator_provider_probe_duration_seconds` metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Probes failed in a row; 0 when the last probe succeeded.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// SHA-256 (first 16 hex digits) of the API key last probed, so a rotation is visible without
    /// revealing the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_hash: Option<String>,
}

/// Condition types of an LLMProvider.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const CREDENTIALS_VALID: &str = "CredentialsValid";
}
