//! Budgets as the router enforces them: a request that cannot fit is refused before it is
//! sent, in the agent's API; a stream past its reservation is cut once the budget is spent;
//! usage is priced, survives a restart of the router, and is left as its termination message.

use agent_operator::api::budget::{ModelPrice, Pricing};
use agent_operator::api::llm_provider::ProviderType;
use agent_operator::resources::provider_config::Allowance;
use serde_json::{Value, json};

use crate::fake_provider::{Behaviour, COMPLETION_TOKENS, FakeProvider, PROMPT_TOKENS};
use crate::harness::{
    Link, RouterProcess, chat_request, messages_request, metric, quick_settings, streamed_content,
};

fn tokens(max_tokens: u64) -> Allowance {
    Allowance {
        max_tokens: Some(max_tokens),
        max_cost_nanos: None,
        currency: "USD".into(),
    }
}

/// What the router reserves for `body`'s prompt: a token per four bytes of it.
fn prompt_estimate(body: &Value) -> u64 {
    (serde_json::to_vec(body).expect("json").len() as u64).div_ceil(4)
}

fn with_max_tokens(mut body: Value, max_tokens: u64) -> Value {
    body["max_tokens"] = json!(max_tokens);
    body
}

#[tokio::test]
async fn a_request_that_cannot_fit_is_refused_in_the_agents_api_and_never_sent() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let openai = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint());
    let router =
        RouterProcess::start_budgeted(&[openai], &quick_settings(), Some(&tokens(1_000)), &[])
            .await;

    let response = router
        .post(&with_max_tokens(chat_request(false), 2_000))
        .await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok()),
        Some("false"),
        "the SDKs must not retry what cannot succeed"
    );
    let error: Value = response.json().await.expect("an OpenAI error");
    assert_eq!(error["error"]["type"], "insufficient_quota");
    assert_eq!(error["error"]["code"], "budget_exceeded");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("of 1000 tokens") && message.contains("lower max_tokens"),
        "{message}"
    );

    let (status, anthropic) = router
        .messages(&with_max_tokens(messages_request(false), 2_000))
        .await;
    assert_eq!(status, 429, "{anthropic}");
    assert_eq!(anthropic["type"], "error");
    assert_eq!(anthropic["error"]["type"], "rate_limit_error");
    assert_eq!(fake.requests(), 0, "nothing refused reached the provider");

    let (status, answer) = router
        .chat(&with_max_tokens(chat_request(false), 100))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fake.requests(), 1);
    let report = router.usage_after(1).await;
    assert_eq!(report.total.requests, 1);
    assert_eq!(report.total.tokens(), PROMPT_TOKENS + COMPLETION_TOKENS);
    assert_eq!(report.refused, 2);
    assert_eq!(report.models[0].provider, "openai");
}

#[tokio::test]
async fn a_stream_past_its_reservation_is_cut_with_an_error_event_once_the_budget_is_spent() {
    // The fake ignores max_tokens and streams a word per event: a provider's stream longer
    // than the request reserved.
    let reply: String = (0..40).map(|n| format!("w{n} ")).collect();
    let fake = FakeProvider::start(Behaviour {
        reply: reply.clone(),
        ..Behaviour::default()
    })
    .await;
    let openai = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint());
    let request = with_max_tokens(chat_request(true), 1);
    let allowance = tokens(prompt_estimate(&request) + 10);
    let router =
        RouterProcess::start_budgeted(&[openai], &quick_settings(), Some(&allowance), &[]).await;

    let (status, events) = router.stream(&request).await;
    assert_eq!(status, 200, "the stream started within the budget");
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("json");
    assert_eq!(
        last["error"]["code"], "budget_exceeded",
        "the stream ends with an error event: {events:?}"
    );
    let received = streamed_content(&events);
    assert!(
        !received.is_empty() && received.len() < reply.len(),
        "part of the answer arrived before the cut: {received:?}"
    );

    let report = router.usage_after(1).await;
    assert_eq!(report.refused, 1);
    // Without the provider's usage, each event counts as a token, the prompt as reserved:
    // past the allowance by at most the event that crossed it.
    assert!(
        report.total.tokens() <= allowance.max_tokens.unwrap_or(0) + 1,
        "{report:?}"
    );
    let (status, _) = router.chat(&with_max_tokens(chat_request(false), 1)).await;
    assert_eq!(status, 429, "nothing is left for the next request");
}

#[tokio::test]
async fn usage_is_priced_per_model_and_a_cost_budget_refuses_what_it_cannot_pay() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut openai = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint());
    openai.api.pricing = Some(Pricing {
        currency: "USD".into(),
        models: vec![ModelPrice {
            model: "gpt-4o".into(),
            input: "2.50".into(),
            output: "10".into(),
            cached_input: None,
            cache_write: None,
        }],
    });
    // Room for one request of max_tokens 100 at these prices, not two.
    let request = with_max_tokens(chat_request(false), 100);
    let one = prompt_estimate(&request) * 2_500 + 100 * 10_000;
    let answered = PROMPT_TOKENS * 2_500 + COMPLETION_TOKENS * 10_000;
    let allowance = Allowance {
        max_tokens: None,
        max_cost_nanos: Some(answered + one - 1),
        currency: "USD".into(),
    };
    let router =
        RouterProcess::start_budgeted(&[openai], &quick_settings(), Some(&allowance), &[]).await;
    let (status, answer) = router.chat(&request).await;
    assert_eq!(status, 200, "{answer}");
    let report = router.usage_after(1).await;
    assert_eq!(report.total.cost_nanos, answered, "2.50 and 10 per million");
    assert_eq!(report.currency.as_deref(), Some("USD"));
    let cost = metric(
        &router.metrics().await,
        r#"agent_operator_router_cost_total{currency="USD",model="gpt-4o",provider="openai"}"#,
    );
    assert!(
        (cost - answered as f64 / 1e9).abs() < 1e-12,
        "the metric counts the same cost: {cost}"
    );
    let (status, refused) = router.chat(&request).await;
    assert_eq!(status, 429, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cost budget") && m.contains("USD")),
        "{refused}"
    );
}

#[tokio::test]
async fn usage_survives_a_killed_router_and_is_counted_once() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let openai = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint());
    let request = with_max_tokens(chat_request(false), 10);
    let answered = PROMPT_TOKENS + COMPLETION_TOKENS;
    // Three answers fit, a fourth does not: only if the restarted router remembers the first
    // two does it refuse the fourth.
    let allowance = tokens(2 * answered + prompt_estimate(&request) + 10);
    let mut router =
        RouterProcess::start_budgeted(&[openai], &quick_settings(), Some(&allowance), &[]).await;
    for _ in 0..2 {
        assert_eq!(router.chat(&request).await.0, 200);
    }
    // Killed only once the second answer is on the volume, as a crash after it would find it.
    router.usage_after(2).await;
    router.restart().await;
    assert_eq!(router.chat(&request).await.0, 200, "the third fits");
    assert_eq!(router.chat(&request).await.0, 429, "the fourth does not");
    router.terminate();
    let report = router.termination_message();
    assert_eq!(report.total.requests, 3, "{report:?}");
    assert_eq!(report.total.tokens(), 3 * answered);
    assert_eq!(report.refused, 1);
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn a_streams_usage_is_the_providers_count_even_when_the_agent_did_not_ask_for_it() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let openai = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint());
    let router = RouterProcess::start(&[openai], &quick_settings()).await;

    let (status, events) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200);
    let sent = &fake.chats()[0].body;
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the router asks for the usage chunk: {sent}"
    );
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    assert!(
        chunks.iter().all(|c| !c["usage"].is_object()),
        "the agent, which did not ask, gets no usage chunk: {events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let report = router.usage_after(1).await;
    assert_eq!(
        (report.total.input_tokens, report.total.output_tokens),
        (PROMPT_TOKENS, COMPLETION_TOKENS),
        "counted from the provider's usage, not estimated"
    );

    // An agent that asks gets the chunk, and its own other stream options are kept.
    let mut asking = chat_request(true);
    asking["stream_options"] = json!({"include_usage": true});
    let (_, events) = router.stream(&asking).await;
    assert!(
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .any(|c| c["usage"]["completion_tokens"] == COMPLETION_TOKENS),
        "{events:?}"
    );
}
