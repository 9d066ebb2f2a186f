//! What real SDKs send and real providers answer, across the translation to Anthropic: usage on
//! streams, errors streamed before any content, parameters OpenAI accepts and Anthropic
//! refuses, cached tokens, finish reasons, answers that are no event stream, and silences.

use std::time::Duration;

use agent_operator::api::common::RouterSpec;
use agent_operator::api::llm_provider::ProviderType;
use serde_json::{Value, json};

use crate::fake_provider::{Behaviour, FakeProvider, PROMPT_TOKENS};
use crate::harness::{
    Link, RouterProcess, chat_request, content, metric, quick_settings, streamed_content,
};

async fn anthropic(behaviour: Behaviour) -> (FakeProvider, Link) {
    let fake = FakeProvider::start(behaviour).await;
    let link = Link::new("anthropic", ProviderType::Anthropic, fake.root_endpoint())
        .model("claude-sonnet-4-5");
    (fake, link)
}

async fn openai(behaviour: Behaviour) -> (FakeProvider, Link) {
    let fake = FakeProvider::start(behaviour).await;
    let link = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint());
    (fake, link)
}

fn with(request: Value, extra: Value) -> Value {
    let mut request = request;
    for (key, value) in extra.as_object().expect("object") {
        request[key] = value.clone();
    }
    request
}

/// The chunks of a stream, parsed (the `[DONE]` left out).
fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("a JSON chunk: {e}")))
        .collect()
}

#[tokio::test]
async fn a_translated_stream_ends_with_usage_when_the_agent_asks_for_it() {
    let (_fake, link) = anthropic(Behaviour {
        cached_tokens: 100,
        ..Behaviour::default()
    })
    .await;
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let asked = with(
        chat_request(true),
        json!({"stream_options": {"include_usage": true}}),
    );
    let (status, events) = router.stream(&asked).await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let last = chunks(&events).pop().expect("a chunk");
    assert_eq!(last["choices"], json!([]), "the usage chunk has no choices");
    assert_eq!(last["usage"]["prompt_tokens"], PROMPT_TOKENS + 100);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 100);

    let (_, events) = router.stream(&chat_request(true)).await;
    assert!(
        chunks(&events).iter().all(|c| c.get("usage").is_none()),
        "no usage chunk unless asked: {events:?}"
    );
}

#[tokio::test]
async fn an_error_streamed_before_any_content_fails_over_and_counts_against_the_provider() {
    let (anthropic_fake, first) = anthropic(Behaviour {
        stream_error: Some("overloaded_error".into()),
        ..Behaviour::default()
    })
    .await;
    let (_compatible_fake, mut second) = openai(Behaviour {
        stream_error: Some("server_error".into()),
        ..Behaviour::default()
    })
    .await;
    second.name = "compatible".into();
    second.provider_type = ProviderType::OpenAICompatible;
    let (_fake, third) = openai(Behaviour::default()).await;
    let settings = RouterSpec {
        circuit_failure_threshold: 1,
        ..quick_settings()
    };
    let router = RouterProcess::start(&[first, second, third], &settings).await;
    let (status, events) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200);
    assert_eq!(streamed_content(&events), "Hello from the fake provider");
    assert!(
        chunks(&events).iter().all(|c| c.get("error").is_none()),
        "the agent never sees the errors: {events:?}"
    );
    let metrics = router.metrics().await;
    for provider in ["anthropic", "compatible"] {
        assert_eq!(
            metric(
                &metrics,
                &format!(
                    "agent_operator_router_failovers_total{{class=\"server_error\",provider=\"{provider}\"}}"
                )
            ),
            1.0,
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                &format!("agent_operator_router_circuit_open{{provider=\"{provider}\"}}")
            ),
            1.0,
            "the failure opened the circuit"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            "agent_operator_router_requests_total{model=\"gpt-4o\",outcome=\"success\",provider=\"openai\"}"
        ),
        1.0
    );
    assert_eq!(anthropic_fake.chats().len(), 1);
}

#[tokio::test]
async fn what_openai_accepts_and_anthropic_refuses_is_adapted_not_refused() {
    let (fake, link) = anthropic(Behaviour::default()).await;
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let request = json!({
        "model": "gpt-4o",
        "temperature": 1.5,
        "parallel_tool_calls": false,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Weather?"}]},
        ],
    });
    let (status, answer) = router.chat(&request).await;
    assert_eq!(status, 200, "{answer}");
    let sent = fake.chats().pop().expect("sent").body;
    assert_eq!(sent["temperature"], 1.0, "clamped to Anthropic's maximum");
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}])
    );
}

#[tokio::test]
async fn a_refusal_caused_by_the_translation_tries_the_next_provider() {
    let (anthropic_fake, first) = anthropic(Behaviour {
        status: Some(400),
        ..Behaviour::default()
    })
    .await;
    let (openai_fake, second) = openai(Behaviour::default()).await;
    let router = RouterProcess::start(&[first.clone(), second.clone()], &quick_settings()).await;
    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(content(&answer), "Hello from the fake provider");
    assert_eq!(
        (anthropic_fake.chats().len(), openai_fake.chats().len()),
        (1, 1)
    );
    drop(router);

    // Alone, its refusal is the answer, in OpenAI's format.
    let router = RouterProcess::start(&[first], &quick_settings()).await;
    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["message"], "injected 400");
    drop(router);

    // A provider of the agent's own API that refuses: the request is at fault, as it is.
    openai_fake.set(|b| b.status = Some(400));
    let (untouched, third) = anthropic(Behaviour::default()).await;
    let router = RouterProcess::start(&[second, third], &quick_settings()).await;
    let (status, _) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 400);
    assert_eq!(openai_fake.chats().len(), 2);
    assert!(untouched.chats().is_empty());
}

#[tokio::test]
async fn several_choices_go_to_a_provider_that_can_answer_them() {
    let (anthropic_fake, first) = anthropic(Behaviour::default()).await;
    let (_fake, second) = openai(Behaviour::default()).await;
    let router = RouterProcess::start(&[first.clone(), second], &quick_settings()).await;
    let request = with(chat_request(false), json!({"n": 2}));
    let (status, answer) = router.chat(&request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"].as_array().map(Vec::len), Some(2));
    assert!(
        anthropic_fake.chats().is_empty(),
        "never sent where it cannot be answered"
    );
    drop(router);

    let router = RouterProcess::start(&[first], &quick_settings()).await;
    let (status, answer) = router.chat(&request).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("'n'"), "{message}");
    assert_eq!(answer["error"]["code"], "untranslatable");
}

#[tokio::test]
async fn cached_prompt_tokens_count_as_openai_defines_them() {
    let (_fake, link) = anthropic(Behaviour {
        cached_tokens: 100,
        ..Behaviour::default()
    })
    .await;
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["usage"]["prompt_tokens"], PROMPT_TOKENS + 100);
    assert_eq!(
        answer["usage"]["prompt_tokens_details"]["cached_tokens"],
        100
    );
    let metrics = router.metrics().await;
    let series = |kind: &str| {
        format!(
            "agent_operator_router_tokens_total{{kind=\"{kind}\",model=\"claude-sonnet-4-5\",provider=\"anthropic\"}}"
        )
    };
    assert_eq!(
        metric(&metrics, &series("prompt")),
        (PROMPT_TOKENS + 100) as f64
    );
    assert_eq!(metric(&metrics, &series("cache_read")), 100.0);
}

#[tokio::test]
async fn every_stop_reason_becomes_one_of_openais_finish_reasons() {
    let (fake, link) = anthropic(Behaviour::default()).await;
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    for (stop_reason, finish_reason) in [
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("a_reason_added_next_year", "stop"),
    ] {
        fake.set(|b| b.stop_reason = Some(stop_reason.into()));
        let (_, answer) = router.chat(&chat_request(false)).await;
        assert_eq!(
            answer["choices"][0]["finish_reason"], finish_reason,
            "{stop_reason}"
        );
        let (_, events) = router.stream(&chat_request(true)).await;
        let finish: Vec<Value> = chunks(&events)
            .iter()
            .map(|c| c["choices"][0]["finish_reason"].clone())
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [json!(finish_reason)], "{stop_reason} streamed");
    }
}

#[tokio::test]
async fn a_stream_answered_with_json_fails_over() {
    let (_bad, first) = openai(Behaviour {
        json_for_streams: true,
        ..Behaviour::default()
    })
    .await;
    let (_fake, second) = anthropic(Behaviour::default()).await;
    let router = RouterProcess::start(&[first, second], &quick_settings()).await;
    let (status, events) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200);
    assert_eq!(streamed_content(&events), "Hello from the fake provider");
    let metrics = router.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "agent_operator_router_failovers_total{class=\"invalid_response\",provider=\"openai\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_an_idle_timeout_error() {
    let (_fake, link) = anthropic(Behaviour {
        stall_stream: Duration::from_secs(5),
        ..Behaviour::default()
    })
    .await;
    let settings = RouterSpec {
        stream_idle_timeout: Duration::from_millis(300).into(),
        ..quick_settings()
    };
    let router = RouterProcess::start(&[link], &settings).await;
    let (status, events) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200, "the stream had started");
    let last = chunks(&events).pop().expect("an event");
    assert_eq!(last["error"]["code"], "stream_idle_timeout", "{events:?}");
    let metrics = router.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "agent_operator_router_errors_total{class=\"stream_idle_timeout\"}"
        ),
        1.0
    );
}
