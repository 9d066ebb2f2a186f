//! The model listing of each provider type: the request that costs no tokens, and how its
//! answer is read. Pure functions, so every type's wire format is unit-tested.

use crate::api::llm_provider::{DEFAULT_ANTHROPIC_VERSION, LLMProviderSpec, ProviderType};

/// The HTTP request of a probe, before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingRequest {
    pub url: String,
    /// Headers other than the credential's.
    pub headers: Vec<(&'static str, String)>,
    /// The header that carries the credential, and its value's prefix.
    pub auth_header: Option<(&'static str, &'static str)>,
}

/// Builds the listing request for a provider.
pub fn listing_request(spec: &LLMProviderSpec) -> ListingRequest {
    let endpoint = super::scrub::without_userinfo(&spec.endpoint);
    let base = endpoint.trim_end_matches('/');
    match spec.provider_type {
        ProviderType::OpenAI | ProviderType::OpenAICompatible => {
            let mut headers = Vec::new();
            if let Some(openai) = &spec.openai {
                if let Some(org) = &openai.organization {
                    headers.push(("OpenAI-Organization", org.clone()));
                }
                if let Some(project) = &openai.project {
                    headers.push(("OpenAI-Project", project.clone()));
                }
            }
            ListingRequest {
                url: format!("{base}/models"),
                headers,
                auth_header: Some(("Authorization", "Bearer ")),
            }
        }
        ProviderType::AzureOpenAI => {
            let api_version = spec
                .azure
                .as_ref()
                .map(|a| a.api_version.as_str())
                .unwrap_or_default();
            ListingRequest {
                url: format!("{base}/openai/models?api-version={api_version}"),
                headers: Vec::new(),
                auth_header: Some(("api-key", "")),
            }
        }
        ProviderType::Anthropic => {
            let version = spec
                .anthropic
                .as_ref()
                .and_then(|a| a.version.clone())
                .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string());
            let url = if base.ends_with("/v1") {
                format!("{base}/models")
            } else {
                format!("{base}/v1/models")
            };
            ListingRequest {
                url,
                headers: vec![("anthropic-version", version)],
                auth_header: Some(("x-api-key", "")),
            }
        }
        ProviderType::Ollama => ListingRequest {
            url: format!("{base}/api/tags"),
            headers: Vec::new(),
            auth_header: Some(("Authorization", "Bearer ")),
        },
    }
}

/// Reads model names from a listing body; `None` when the body is not this type's listing.
pub fn models_in_listing(provider_type: ProviderType, body: &[u8]) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let (array_key, name_key) = match provider_type {
        ProviderType::Ollama => ("models", "name"),
        _ => ("data", "id"),
    };
    let entries = value.get(array_key)?.as_array()?;
    entries
        .iter()
        .map(|entry| entry.get(name_key)?.as_str().map(str::to_string))
        .collect()
}

/// Configured models missing from the listing. Azure lists base models while agents address
/// deployments, so its listing cannot confirm them and none is reported missing.
pub fn missing_models(spec: &LLMProviderSpec, listed: &[String]) -> Vec<String> {
    if spec.provider_type == ProviderType::AzureOpenAI {
        return Vec::new();
    }
    spec.models
        .iter()
        .filter(|model| !listed.iter().any(|l| l == *model || ollama_alias(l, model)))
        .cloned()
        .collect()
}

/// Ollama lists `llama3:latest` for a model pulled as `llama3`.
fn ollama_alias(listed: &str, configured: &str) -> bool {
    listed.strip_suffix(":latest") == Some(configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> LLMProviderSpec {
        serde_yaml::from_str(yaml).expect("valid spec")
    }

    #[test]
    fn each_type_lists_models_at_its_own_path_with_its_own_auth_header() {
        let cases = [
            (
                "type: OpenAI\nendpoint: https://api.openai.com/v1/",
                "https://api.openai.com/v1/models",
                "Authorization",
            ),
            (
                "type: OpenAICompatible\nendpoint: http://vllm:8000/v1",
                "http://vllm:8000/v1/models",
                "Authorization",
            ),
            (
                "type: AzureOpenAI\nendpoint: https://acme.openai.azure.com\nazure: {apiVersion: 2024-10-21}",
                "https://acme.openai.azure.com/openai/models?api-version=2024-10-21",
                "api-key",
            ),
            (
                "type: Anthropic\nendpoint: https://api.anthropic.com",
                "https://api.anthropic.com/v1/models",
                "x-api-key",
            ),
            (
                "type: Anthropic\nendpoint: https://proxy/v1",
                "https://proxy/v1/models",
                "x-api-key",
            ),
            (
                "type: Ollama\nendpoint: http://ollama:11434",
                "http://ollama:11434/api/tags",
                "Authorization",
            ),
        ];
        for (yaml, url, header) in cases {
            let request = listing_request(&spec(yaml));
            assert_eq!(request.url, url);
            assert_eq!(request.auth_header.map(|h| h.0), Some(header));
        }
        let anthropic = listing_request(&spec(
            "type: Anthropic\nendpoint: https://api.anthropic.com",
        ));
        assert_eq!(
            anthropic.headers,
            vec![("anthropic-version", "2023-06-01".to_string())]
        );
    }

    #[test]
    fn listings_are_read_per_type() {
        let openai = br#"{"object":"list","data":[{"id":"gpt-4o"},{"id":"gpt-4o-mini"}]}"#;
        assert_eq!(
            models_in_listing(ProviderType::OpenAI, openai),
            Some(vec!["gpt-4o".into(), "gpt-4o-mini".into()])
        );
        let ollama = br#"{"models":[{"name":"llama3:latest","size":1}]}"#;
        assert_eq!(
            models_in_listing(ProviderType::Ollama, ollama),
            Some(vec!["llama3:latest".into()])
        );
        assert_eq!(models_in_listing(ProviderType::OpenAI, ollama), None);
        assert_eq!(models_in_listing(ProviderType::Anthropic, b"<html>"), None);
        assert_eq!(
            models_in_listing(ProviderType::OpenAI, br#"{"data":[{"name":"x"}]}"#),
            None
        );
    }

    #[test]
    fn missing_models_respect_ollama_tags_and_skip_azure() {
        let ollama = spec("type: Ollama\nendpoint: http://o:11434\nmodels: [llama3, mistral]");
        assert_eq!(
            missing_models(&ollama, &["llama3:latest".into()]),
            vec!["mistral".to_string()]
        );
        let azure = spec(
            "type: AzureOpenAI\nendpoint: https://a\nazure: {apiVersion: 2024-10-21}\nmodels: [prod]",
        );
        assert!(missing_models(&azure, &[]).is_empty());
    }
}
