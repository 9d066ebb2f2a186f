//! The Anthropic Messages API served to agents (`POST /v1/messages`, what Anthropic's SDKs and
//! the Claude Agent SDK call): passed on as it is to Anthropic providers, translated for the
//! others, with failover, key custody and errors in Anthropic's shape.

use agent_operator::api::llm_provider::ProviderType;
use serde_json::{Value, json};

use crate::fake_provider::{Behaviour, COMPLETION_TOKENS, FakeProvider, PROMPT_TOKENS};
use crate::harness::{Link, RouterProcess, message_text, messages_request, quick_settings};

async fn anthropic() -> (FakeProvider, Link) {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let link = Link::new("anthropic", ProviderType::Anthropic, fake.root_endpoint());
    (fake, link)
}

async fn openai() -> (FakeProvider, Link) {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let link = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint()).model("gpt-4o");
    (fake, link)
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| *name != "ping")
        .collect()
}

fn streamed_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, data)| data.pointer("/delta/text").and_then(Value::as_str))
        .collect()
}

#[tokio::test]
async fn an_anthropic_provider_gets_the_request_as_the_agent_sent_it() {
    let (fake, link) = anthropic().await;
    let router = RouterProcess::start(std::slice::from_ref(&link), &quick_settings()).await;
    let request = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 256, "top_k": 5,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Say hello."}],
    });
    let response = router
        .post_messages(&request, Some("prompt-caching-2024-07-31"))
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["type"], "message");
    assert_eq!(message_text(&answer), "Hello from the fake provider");
    assert_eq!(answer["usage"]["input_tokens"], PROMPT_TOKENS);

    let received = fake.chats().pop().expect("sent");
    assert_eq!(received.path, "/v1/messages");
    assert_eq!(received.body, request, "byte for byte what the agent sent");
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("x-api-key"),
        link.key.clone(),
        "the provider's key, not the agent's"
    );
    assert_eq!(
        header("anthropic-beta").as_deref(),
        Some("prompt-caching-2024-07-31")
    );

    let (status, events) = router.messages_stream(&messages_request(true)).await;
    assert_eq!(status, 200);
    assert_eq!(streamed_text(&events), "Hello from the fake provider");
    assert_eq!(names(&events).last().copied(), Some("message_stop"));
    let metrics = router.metrics().await;
    assert!(
        metrics.contains(&format!(
            "agent_operator_router_tokens_total{{kind=\"completion\",model=\"claude-sonnet-4-5\",provider=\"anthropic\"}} {}",
            2 * COMPLETION_TOKENS
        )),
        "both answers' tokens are counted: {metrics}"
    );
}

#[tokio::test]
async fn an_openai_provider_answers_in_anthropics_format() {
    let (fake, link) = openai().await;
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let (status, answer) = router.messages(&messages_request(false)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(message_text(&answer), "Hello from the fake provider");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(answer["usage"]["input_tokens"], PROMPT_TOKENS);
    assert_eq!(answer["usage"]["output_tokens"], COMPLETION_TOKENS);
    let sent = fake.chats().pop().expect("sent").body;
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(sent["max_completion_tokens"], 256);
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Say hello."}])
    );

    let (status, events) = router.messages_stream(&messages_request(true)).await;
    assert_eq!(status, 200);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(streamed_text(&events), "Hello from the fake provider");
    let (_, delta) = &events[events.len() - 2];
    assert_eq!(
        delta["usage"]["output_tokens"], COMPLETION_TOKENS,
        "{delta}"
    );
    assert_eq!(delta["usage"]["input_tokens"], PROMPT_TOKENS);
}

#[tokio::test]
async fn tool_use_round_trips_through_an_openai_provider() {
    let (fake, link) = openai().await;
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let tools = json!([{"name": "weather", "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let (status, answer) = router
        .messages(&json!({"model": "m", "max_tokens": 100, "tools": tools,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "tool_use");
    let call = &answer["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["input"], json!({"city": "Paris"}));

    let follow_up = json!({"model": "m", "max_tokens": 100, "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [call.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "18C"}]},
    ]});
    let (status, _) = router.messages(&follow_up).await;
    assert_eq!(status, 200);
    let sent = fake.chats().pop().expect("sent").body;
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], call["id"]);
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": call["id"], "content": "18C"})
    );
}

#[tokio::test]
async fn a_failing_anthropic_provider_fails_over_to_an_openai_one() {
    let (failing, first) = anthropic().await;
    failing.set(|b| b.stream_error = Some("overloaded_error".into()));
    let (_fake, second) = openai().await;
    let router = RouterProcess::start(&[first, second], &quick_settings()).await;
    let (status, events) = router.messages_stream(&messages_request(true)).await;
    assert_eq!(status, 200);
    assert_eq!(streamed_text(&events), "Hello from the fake provider");
    assert!(events.iter().all(|(name, _)| name != "error"), "{events:?}");

    failing.set(|b| b.status = Some(500));
    let (status, answer) = router.messages(&messages_request(false)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(message_text(&answer), "Hello from the fake provider");
}

#[tokio::test]
async fn errors_come_in_anthropics_shape() {
    let (failing, link) = anthropic().await;
    failing.set(|b| b.status = Some(503));
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let (status, answer) = router.messages(&messages_request(false)).await;
    assert_eq!(status, 502);
    assert_eq!(answer["type"], "error");
    assert_eq!(answer["error"]["type"], "api_error");

    let (status, answer) = router
        .messages(&json!({"model": "m", "max_tokens": 1}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("messages")),
        "{answer}"
    );

    // An OpenAI provider's refusal, translated.
    let (refusing, link) = openai().await;
    refusing.set(|b| b.status = Some(400));
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let (status, answer) = router.messages(&messages_request(false)).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "injected 400"}})
    );
}
