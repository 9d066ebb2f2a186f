//! Normal calls to each provider type, streamed and not, with tools translated for Anthropic.

use agent_operator::api::llm_provider::ProviderType;
use serde_json::{Value, json};

use crate::fake_provider::{Behaviour, FakeProvider};
use crate::harness::{
    Link, RouterProcess, chat_request, content, metric, quick_settings, streamed_content,
};

/// One fake per provider type, each behind its own router.
async fn each_type() -> Vec<(FakeProvider, Link)> {
    let mut pairs = Vec::new();
    for provider_type in [
        ProviderType::OpenAI,
        ProviderType::OpenAICompatible,
        ProviderType::AzureOpenAI,
        ProviderType::Anthropic,
        ProviderType::Ollama,
    ] {
        let fake = FakeProvider::start(Behaviour::default()).await;
        let endpoint = match provider_type {
            ProviderType::OpenAI | ProviderType::OpenAICompatible => fake.openai_endpoint(),
            _ => fake.root_endpoint(),
        };
        let mut link = Link::new(provider_type.as_str(), provider_type, endpoint);
        if provider_type == ProviderType::AzureOpenAI {
            link.api.azure_api_version = Some("2024-10-21".into());
            link.api
                .azure_deployments
                .insert("gpt-4o".into(), "prod-4o".into());
        }
        if provider_type == ProviderType::Anthropic {
            link = link.model("claude-sonnet-4-5");
        }
        pairs.push((fake, link));
    }
    pairs
}

#[tokio::test]
async fn every_provider_type_answers_in_openai_format() {
    for (fake, link) in each_type().await {
        let router = RouterProcess::start(std::slice::from_ref(&link), &quick_settings()).await;
        let (status, answer) = router.chat(&chat_request(false)).await;
        assert_eq!(status, 200, "{}: {answer}", link.name);
        assert_eq!(
            content(&answer),
            "Hello from the fake provider",
            "{}",
            link.name
        );
        assert_eq!(answer["usage"]["prompt_tokens"], 11, "{}", link.name);

        let received = fake.chats().pop().expect("the fake got the request");
        let key = link.key.clone().expect("key");
        let (path, auth) = match link.provider_type {
            ProviderType::AzureOpenAI => (
                "/openai/deployments/prod-4o/chat/completions",
                ("api-key", key.clone()),
            ),
            ProviderType::Anthropic => ("/v1/messages", ("x-api-key", key.clone())),
            _ => (
                "/v1/chat/completions",
                ("authorization", format!("Bearer {key}")),
            ),
        };
        assert_eq!(received.path, path, "{}", link.name);
        assert_eq!(
            received.headers.get(auth.0).and_then(|v| v.to_str().ok()),
            Some(auth.1.as_str()),
            "{} gets its own credential in its own header",
            link.name
        );
        if link.provider_type == ProviderType::Anthropic {
            assert_eq!(
                received.body["model"], "claude-sonnet-4-5",
                "the chain's model"
            );
            assert_eq!(received.body["system"], "You are terse.");
            assert_eq!(
                received
                    .headers
                    .get("anthropic-version")
                    .map(|v| v.as_bytes()),
                Some(&b"2023-06-01"[..])
            );
        } else {
            assert_eq!(
                received.body["model"], "gpt-4o",
                "the agent's model is kept"
            );
        }
    }
}

#[tokio::test]
async fn every_provider_type_streams_in_openai_format() {
    for (_fake, link) in each_type().await {
        let router = RouterProcess::start(std::slice::from_ref(&link), &quick_settings()).await;
        let (status, events) = router.stream(&chat_request(true)).await;
        assert_whole_openai_stream(&link, status, &events);
    }
}

/// A provider that sends its whole answer at once (a fast model, a short answer): the router
/// forwards the events it has gathered together, none lost, reordered or cut.
#[tokio::test]
async fn a_stream_that_arrives_at_once_is_forwarded_whole() {
    for (fake, link) in each_type().await {
        fake.set(|behaviour| behaviour.stream_pace = std::time::Duration::ZERO);
        let router = RouterProcess::start(std::slice::from_ref(&link), &quick_settings()).await;
        for _ in 0..20 {
            let (status, events) = router.stream(&chat_request(true)).await;
            assert_whole_openai_stream(&link, status, &events);
        }
    }
}

fn assert_whole_openai_stream(link: &Link, status: u16, events: &[String]) {
    assert_eq!(status, 200, "{}", link.name);
    assert_eq!(
        streamed_content(events),
        "Hello from the fake provider",
        "{}: {events:?}",
        link.name
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        link.name
    );
    let finish: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v.pointer("/choices/0/finish_reason").cloned())
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [json!("stop")], "{}", link.name);
}

fn tool_request(stream: bool) -> Value {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }}]
    })
}

#[tokio::test]
async fn anthropic_tool_use_becomes_openai_tool_calls_both_ways() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let link = Link::new("claude", ProviderType::Anthropic, fake.root_endpoint())
        .model("claude-sonnet-4-5");
    let router = RouterProcess::start(&[link], &quick_settings()).await;

    let (status, answer) = router.chat(&tool_request(false)).await;
    assert_eq!(status, 200, "{answer}");
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let sent = fake.chats().pop().expect("request");
    assert_eq!(sent.body["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent.body["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );

    let (status, events) = router.stream(&tool_request(true)).await;
    assert_eq!(status, 200);
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let name = chunks.iter().find_map(|c| {
        c.pointer("/choices/0/delta/tool_calls/0/function/name")
            .and_then(Value::as_str)
    });
    assert_eq!(name, Some("get_weather"));
    let arguments: String = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(arguments, "{\"city\":\"Paris\"}");
    assert!(
        chunks
            .iter()
            .any(|c| c.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls")))
    );
}

#[tokio::test]
async fn tool_results_go_back_to_anthropic_as_tool_result_blocks() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let link = Link::new("claude", ProviderType::Anthropic, fake.root_endpoint())
        .model("claude-sonnet-4-5");
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let mut request = tool_request(false);
    request["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "18C and sunny"}
    ]);
    let (status, _) = router.chat(&request).await;
    assert_eq!(status, 200);
    let sent = fake.chats().pop().expect("request").body;
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        sent["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "call_9", "content": "18C and sunny"})
    );
}

#[tokio::test]
async fn models_lists_the_chain_and_metrics_count_tokens() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let links = [
        Link::new("primary", ProviderType::OpenAI, fake.openai_endpoint()).model("gpt-4o"),
        Link::new("fallback", ProviderType::Ollama, fake.root_endpoint()).model("llama3.1:8b"),
    ];
    let router = RouterProcess::start(&links, &quick_settings()).await;
    let models: Value = reqwest::get(router.url("/v1/models"))
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["gpt-4o", "llama3.1:8b"]);

    let (status, _) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 200);
    let metrics = router.metrics().await;
    assert!(metrics.contains(r#"agent_operator_router_requests_total{model="gpt-4o",outcome="success",provider="primary"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"agent_operator_router_tokens_total{kind="prompt",model="gpt-4o",provider="primary"} 11"#), "{metrics}");
    assert!(
        metrics.contains(
            "agent_operator_router_time_to_first_byte_seconds_count{provider=\"primary\"} 1"
        ),
        "{metrics}"
    );
    // The router's own share of the request: observed once, and less than the whole.
    let overhead = metric(
        &metrics,
        "agent_operator_router_overhead_seconds_sum{provider=\"primary\"}",
    );
    let duration = metric(
        &metrics,
        "agent_operator_router_request_duration_seconds_sum{provider=\"primary\"}",
    );
    assert!(
        metrics.contains("agent_operator_router_overhead_seconds_count{provider=\"primary\"} 1"),
        "{metrics}"
    );
    assert!(
        overhead > 0.0 && overhead < duration,
        "overhead {overhead} of {duration}"
    );
    // The line is written as the answer goes out, and read from the router's pipe by another
    // thread: it may land a moment after the answer.
    let mut log_line = None;
    for _ in 0..100 {
        log_line = router
            .logs()
            .lines()
            .find(|l| l.contains("llm request"))
            .map(str::to_string);
        if log_line.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log_line = log_line.expect("one log line per request");
    let parsed: Value = serde_json::from_str(&log_line).expect("JSON log line");
    assert_eq!(parsed["provider"], "primary");
    assert_eq!(parsed["api"], "chat_completions");
    assert_eq!(parsed["prompt_tokens"], 11);
    assert!(!log_line.contains("Say hello"), "prompts are never logged");
}
