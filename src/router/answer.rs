//! Whole answers and errors in the agent's API: a provider's answer converted (or passed on as
//! it came when the provider speaks the agent's API), the provider's refusals, and the router's
//! own errors, each in the shape the agent's SDK reads.

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::config::Upstream;
use super::upstream::Dialect;
use super::usage::Usage;
use super::{anthropic, messages};

/// What the router reads of an answer: its usage, and for telemetry its id, model and finish
/// reasons, in the provider's own words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub usage: Usage,
    pub id: Option<String>,
    pub model: Option<String>,
    pub finish_reasons: Vec<String>,
}

/// Only those fields of an answer: reading them leaves the answer's bytes as the provider sent
/// them, with no second serialization.
#[derive(Default, serde::Deserialize)]
struct Summary {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    /// OpenAI's.
    #[serde(default)]
    choices: Vec<ChoiceSummary>,
    /// Anthropic's.
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Default, serde::Deserialize)]
struct ChoiceSummary {
    #[serde(default)]
    finish_reason: Option<String>,
}

impl Summary {
    fn facts(self, read: fn(&Value) -> Usage) -> Facts {
        let finish_reasons = self
            .choices
            .into_iter()
            .filter_map(|c| c.finish_reason)
            .chain(self.stop_reason)
            .collect();
        Facts {
            usage: self.usage.as_ref().map(read).unwrap_or_default(),
            id: self.id,
            model: self.model,
            finish_reasons,
        }
    }
}

/// A provider's whole answer in the agent's dialect, and what it says of itself; `None` when
/// the body is not an answer of the provider's dialect.
pub fn whole(agent: Dialect, provider: Dialect, body: Bytes) -> Option<(Bytes, Facts)> {
    let read = match provider {
        Dialect::OpenAI => Usage::from_openai,
        Dialect::Anthropic => Usage::from_anthropic,
    };
    if agent == provider {
        let facts = serde_json::from_slice::<Summary>(&body).ok()?.facts(read);
        return Some((body, facts));
    }
    let answer = serde_json::from_slice::<Value>(&body).ok()?;
    if !answer.is_object() {
        return None;
    }
    let facts = <Summary as serde::Deserialize>::deserialize(&answer)
        .unwrap_or_default()
        .facts(read);
    let translated = match agent {
        Dialect::OpenAI => anthropic::response(&answer, super::unix_now()),
        Dialect::Anthropic => messages::response(&answer),
    };
    // Written straight into the body: `to_string` goes through `Display`, a token at a time.
    Some((Bytes::from(serde_json::to_vec(&translated).ok()?), facts))
}

/// A 4xx the provider answered, for the agent: in the agent's error format, and with the
/// credential removed should the provider echo it.
pub fn refused(
    upstream: &Upstream,
    agent: Dialect,
    provider: Dialect,
    status: StatusCode,
    body: &[u8],
) -> Response {
    let parsed = || serde_json::from_slice::<Value>(body).ok();
    let translated = match (agent, provider) {
        (Dialect::OpenAI, Dialect::Anthropic) => parsed().map(|v| anthropic::error(&v)),
        (Dialect::Anthropic, Dialect::OpenAI) => {
            parsed().map(|v| messages::error(status.as_u16(), &v))
        }
        _ => None,
    };
    let text = translated
        .map(|v| v.to_string())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = match &upstream.credential {
        Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "[redacted]"),
        _ => text,
    };
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// A whole answer, sent.
pub fn ok(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The router's own error in the agent's format. `class` is the router's name for it, which
/// OpenAI's format carries as `code` and Anthropic's in the message.
pub fn error(dialect: Dialect, status: StatusCode, class: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_body(dialect, status, class, message).to_string(),
    )
        .into_response()
}

pub fn error_body(dialect: Dialect, status: StatusCode, class: &str, message: &str) -> Value {
    match dialect {
        Dialect::OpenAI => {
            let kind = if class == super::proxy::BUDGET_EXCEEDED {
                // OpenAI's own type for a spent quota, which its SDKs and agents know.
                "insufficient_quota"
            } else if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                "invalid_request_error"
            } else {
                "router_error"
            };
            json!({"error": {"message": message, "type": kind, "code": class}})
        }
        Dialect::Anthropic => messages::error_body(
            messages::error_type(status.as_u16()),
            &format!("{message} ({class})"),
        ),
    }
}

/// An error event ending a stream the agent has started reading.
pub fn stream_error_event(dialect: Dialect, class: &str, message: &str) -> Bytes {
    let body = error_body(dialect, StatusCode::BAD_GATEWAY, class, message);
    Bytes::from(match dialect {
        Dialect::OpenAI => format!("data: {body}\n\n"),
        Dialect::Anthropic => format!("event: error\ndata: {body}\n\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_gets_the_provider_answer_in_its_own_api() {
        let anthropic_answer = json!({"id": "msg_1", "type": "message", "model": "claude",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 2, "output_tokens": 1, "cache_read_input_tokens": 8}});
        let bytes = Bytes::from(anthropic_answer.to_string());
        let (same, facts) =
            whole(Dialect::Anthropic, Dialect::Anthropic, bytes.clone()).expect("answer");
        assert_eq!(same, bytes, "passed on byte for byte");
        assert_eq!((facts.usage.prompt, facts.usage.cache_read), (10, 8));
        assert_eq!(facts.finish_reasons, ["end_turn"]);
        assert_eq!(facts.id.as_deref(), Some("msg_1"));
        let (openai, _) = whole(Dialect::OpenAI, Dialect::Anthropic, bytes).expect("answer");
        let openai: Value = serde_json::from_slice(&openai).expect("json");
        assert_eq!(openai["choices"][0]["message"]["content"], "Hi");
        assert_eq!(openai["usage"]["prompt_tokens_details"]["cached_tokens"], 8);
        assert!(whole(Dialect::OpenAI, Dialect::OpenAI, Bytes::from("<html>")).is_none());
    }

    #[test]
    fn router_errors_take_each_apis_shape() {
        let openai = error_body(
            Dialect::OpenAI,
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            "m",
        );
        assert_eq!(openai["error"]["code"], "circuit_open");
        let anthropic = error_body(
            Dialect::Anthropic,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "m",
        );
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "rate_limit_error");
    }
}
