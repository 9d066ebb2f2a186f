//! The request one provider type receives for an agent's request: its URL, its headers (the
//! credential among them) and its body, with the model mapped to the provider's and the body
//! translated when the agent's API is not the provider's.

use super::telemetry::Parent;
use axum::body::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::anthropic;
use super::config::Upstream;
use super::messages::{self, LengthParameter};
use crate::api::llm_provider::{DEFAULT_ANTHROPIC_VERSION, ProviderType};

/// A wire format: OpenAI's chat completions or Anthropic's Messages API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAI,
    Anthropic,
}

/// What the agent sent: its API's dialect, the body, and the one header of its own the router
/// passes on (`anthropic-beta`, which turns on Anthropic's features and carries no secret).
#[derive(Clone, Debug)]
pub struct Inbound {
    pub dialect: Dialect,
    pub body: Map<String, Value>,
    /// Bytes of the body as the agent sent it, from which a budget estimates the prompt.
    pub size: usize,
    pub anthropic_beta: Option<String>,
    /// The agent's trace context, which the request's span continues.
    pub parent: Parent,
}

impl Inbound {
    pub fn chat(body: Map<String, Value>, size: usize) -> Self {
        Self {
            dialect: Dialect::OpenAI,
            body,
            size,
            anthropic_beta: None,
            parent: Parent::default(),
        }
    }
}

/// A request ready to send. Its `Debug` leaves the headers out: one of them is the key.
#[derive(Clone, PartialEq)]
pub struct Outbound {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body, serialized once for every attempt at this provider.
    pub body: Bytes,
    /// The provider's dialect, which its answer is in.
    pub dialect: Dialect,
    /// The router asked for OpenAI's usage chunk the agent did not ask for: the stream must
    /// leave it out.
    pub usage_added: bool,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("url", &self.url)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// Builds the request for `upstream`. The agent's own headers are never forwarded, so nothing
/// the agent sends can replace or reveal the credential.
pub fn outbound(
    upstream: &Upstream,
    inbound: &Inbound,
) -> Result<Outbound, anthropic::TranslateError> {
    let request = &inbound.body;
    let model = upstream
        .model
        .clone()
        .or_else(|| {
            request
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let base = upstream.endpoint.as_str();
    let key = upstream.credential.as_ref().map(|c| c.expose().to_string());
    let mut headers = Vec::new();
    // OpenAI's API reports a stream's usage only in a last chunk the agent must ask for; the
    // router asks for it whenever the provider's documented API has it, so budgets and traces
    // count what was spent rather than an estimate.
    let streamed = request.get("stream").and_then(Value::as_bool) == Some(true);
    let agent_asked = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let stream_usage = inbound.dialect == Dialect::OpenAI
        && streamed
        && matches!(
            upstream.provider_type,
            ProviderType::OpenAI | ProviderType::AzureOpenAI
        );
    let usage_added = stream_usage && !agent_asked;
    // The agent's own API: its body with the model replaced, written without a copy of it.
    let same_body = || {
        json_bytes(&WithModel {
            body: request,
            model: &model,
            stream_usage,
        })
    };
    let openai_body = |length| match inbound.dialect {
        Dialect::OpenAI => Ok(same_body()),
        Dialect::Anthropic => messages::request(request, &model, length).map(|v| json_bytes(&v)),
    };
    let outbound = match upstream.provider_type {
        ProviderType::OpenAI | ProviderType::OpenAICompatible => {
            if let Some(org) = &upstream.api.openai_organization {
                headers.push(("OpenAI-Organization", org.clone()));
            }
            if let Some(project) = &upstream.api.openai_project {
                headers.push(("OpenAI-Project", project.clone()));
            }
            if let Some(key) = key {
                headers.push(("Authorization", format!("Bearer {key}")));
            }
            Outbound {
                url: format!("{base}/chat/completions"),
                headers,
                body: openai_body(match upstream.provider_type {
                    ProviderType::OpenAI => LengthParameter::MaxCompletionTokens,
                    _ => LengthParameter::MaxTokens,
                })?,
                dialect: Dialect::OpenAI,
                usage_added,
            }
        }
        ProviderType::Ollama => {
            if let Some(key) = key {
                headers.push(("Authorization", format!("Bearer {key}")));
            }
            Outbound {
                url: format!("{base}/v1/chat/completions"),
                headers,
                body: openai_body(LengthParameter::MaxTokens)?,
                dialect: Dialect::OpenAI,
                usage_added,
            }
        }
        ProviderType::AzureOpenAI => {
            let api = &upstream.api;
            let deployment = api
                .azure_deployments
                .get(&model)
                .or(api.azure_deployment.as_ref())
                .unwrap_or(&model);
            if let Some(key) = key {
                headers.push(("api-key", key));
            }
            Outbound {
                url: format!(
                    "{base}/openai/deployments/{deployment}/chat/completions?api-version={}",
                    api.azure_api_version.as_deref().unwrap_or_default()
                ),
                headers,
                body: openai_body(LengthParameter::MaxCompletionTokens)?,
                dialect: Dialect::OpenAI,
                usage_added,
            }
        }
        ProviderType::Anthropic => {
            headers.push((
                "anthropic-version",
                upstream
                    .api
                    .anthropic_version
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string()),
            ));
            if let Some(key) = key {
                headers.push(("x-api-key", key));
            }
            if let Some(beta) = &inbound.anthropic_beta {
                headers.push(("anthropic-beta", beta.clone()));
            }
            let url = if base.ends_with("/v1") {
                format!("{base}/messages")
            } else {
                format!("{base}/v1/messages")
            };
            Outbound {
                url,
                headers,
                body: match inbound.dialect {
                    Dialect::OpenAI => json_bytes(&anthropic::request(request, &model)?),
                    Dialect::Anthropic => same_body(),
                },
                dialect: Dialect::Anthropic,
                usage_added: false,
            }
        }
    };
    Ok(outbound)
}

fn json_bytes(value: &impl Serialize) -> Bytes {
    // Serializing JSON values and maps of them cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A request body as the agent sent it, but for its `model` and, with `stream_usage`,
/// `stream_options.include_usage` set.
struct WithModel<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    stream_usage: bool,
}

impl Serialize for WithModel<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let has_model = self.body.contains_key("model");
        let add_options = self.stream_usage && !self.body.contains_key("stream_options");
        let mut map = serializer.serialize_map(Some(
            self.body.len() + usize::from(!has_model) + usize::from(add_options),
        ))?;
        for (key, value) in self.body {
            if key == "model" {
                map.serialize_entry(key, self.model)?;
            } else if key == "stream_options" && self.stream_usage {
                let mut options = value.as_object().cloned().unwrap_or_default();
                options.insert("include_usage".into(), Value::Bool(true));
                map.serialize_entry(key, &options)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        if !has_model {
            map.serialize_entry("model", self.model)?;
        }
        if add_options {
            map.serialize_entry(
                "stream_options",
                &serde_json::json!({"include_usage": true}),
            )?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::provider_config::ProviderApi;
    use crate::router::config::Credential;
    use serde_json::json;

    fn upstream(provider_type: ProviderType, endpoint: &str, model: Option<&str>) -> Upstream {
        Upstream {
            name: "p".into(),
            provider_type,
            endpoint: endpoint.into(),
            model: model.map(str::to_string),
            ready: true,
            credential: Some(Credential::new("sk-test")),
            api: ProviderApi::default(),
            prices: None,
            answerer: crate::router::telemetry::Answerer::new("p", provider_type, endpoint),
        }
    }

    fn request() -> Inbound {
        Inbound::chat(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
                .as_object()
                .cloned()
                .expect("object"),
            0,
        )
    }

    #[test]
    fn each_type_gets_its_own_url_and_auth_header() {
        let cases = [
            (
                ProviderType::OpenAI,
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/chat/completions",
                "Authorization",
                "Bearer sk-test",
            ),
            (
                ProviderType::Ollama,
                "http://ollama:11434",
                "http://ollama:11434/v1/chat/completions",
                "Authorization",
                "Bearer sk-test",
            ),
            (
                ProviderType::Anthropic,
                "https://api.anthropic.com",
                "https://api.anthropic.com/v1/messages",
                "x-api-key",
                "sk-test",
            ),
        ];
        for (provider_type, endpoint, url, header, value) in cases {
            let outbound =
                outbound(&upstream(provider_type, endpoint, None), &request()).expect("builds");
            assert_eq!(outbound.url, url);
            assert!(
                outbound.headers.contains(&(header, value.to_string())),
                "{provider_type:?}"
            );
        }
    }

    #[test]
    fn azure_addresses_the_models_deployment() {
        let mut azure = upstream(
            ProviderType::AzureOpenAI,
            "https://r.openai.azure.com",
            None,
        );
        azure.api.azure_api_version = Some("2024-10-21".into());
        azure
            .api
            .azure_deployments
            .insert("gpt-4o".into(), "prod-4o".into());
        let outbound = outbound(&azure, &request()).expect("builds");
        assert_eq!(
            outbound.url,
            "https://r.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
        assert!(
            outbound
                .headers
                .contains(&("api-key", "sk-test".to_string()))
        );
    }

    #[test]
    fn the_chain_model_replaces_the_agents() {
        let outbound = outbound(
            &upstream(ProviderType::OpenAI, "https://x/v1", Some("gpt-4o-mini")),
            &request(),
        )
        .expect("builds");
        let body: Value = serde_json::from_slice(&outbound.body).expect("JSON");
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["messages"], request().body["messages"]);
        assert!(!format!("{outbound:?}").contains("sk-test"));
    }
}
