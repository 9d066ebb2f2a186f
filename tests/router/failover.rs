//! Request-level failover: what moves a request to the next provider, what does not, and how
//! long a failing provider is left alone.

use std::time::Duration;

use agent_operator::api::common::RouterSpec;
use agent_operator::api::llm_provider::ProviderType;
use serde_json::Value;

use crate::fake_provider::{Behaviour, FakeProvider};
use crate::harness::{
    Link, RouterProcess, chat_request, content, quick_settings, resetting_endpoint,
    streamed_content,
};
use crate::net::closed_endpoint;

/// A healthy fallback of another type, so every failover also crosses provider types.
async fn fallback() -> (FakeProvider, Link) {
    let fake = FakeProvider::start(Behaviour {
        reply: "answer from the fallback".into(),
        ..Behaviour::default()
    })
    .await;
    let link = Link::new("fallback", ProviderType::Anthropic, fake.root_endpoint())
        .model("claude-sonnet-4-5");
    (fake, link)
}

async fn failing(change: impl FnOnce(&mut Behaviour)) -> (FakeProvider, Link) {
    let mut behaviour = Behaviour::default();
    change(&mut behaviour);
    let fake = FakeProvider::start(behaviour).await;
    let link = Link::new("primary", ProviderType::OpenAI, fake.openai_endpoint());
    (fake, link)
}

/// Both a plain and a streamed request reach the fallback.
async fn assert_fails_over(primary: Link, why: &str) {
    let (fallback_fake, fallback) = fallback().await;
    let router = RouterProcess::start(&[primary, fallback], &quick_settings()).await;
    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 200, "{why}: {answer}");
    assert_eq!(content(&answer), "answer from the fallback", "{why}");
    let (status, events) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200, "{why}");
    assert_eq!(
        streamed_content(&events),
        "answer from the fallback",
        "{why}"
    );
    assert_eq!(fallback_fake.chats().len(), 2, "{why}");
    let metrics = router.metrics().await;
    assert!(
        metrics.contains("agent_operator_router_failovers_total{class="),
        "{why}: {metrics}"
    );
}

#[tokio::test]
async fn connection_refused_fails_over() {
    let primary = Link::new("primary", ProviderType::OpenAI, closed_endpoint());
    assert_fails_over(primary, "connection refused").await;
}

#[tokio::test]
async fn a_reset_connection_fails_over() {
    let (endpoint, _server) = resetting_endpoint().await;
    let primary = Link::new("primary", ProviderType::OpenAI, endpoint);
    assert_fails_over(primary, "reset").await;
}

#[tokio::test]
async fn a_provider_that_hangs_is_abandoned_at_the_first_byte_timeout() {
    let (_fake, primary) = failing(|b| b.delay = Duration::from_secs(60)).await;
    assert_fails_over(primary, "hang").await;
}

#[tokio::test]
async fn server_errors_and_rate_limits_fail_over_with_or_without_headers() {
    for (status, retry_after) in [(500, None), (503, None), (429, None), (429, Some(1))] {
        let (fake, primary) = failing(|b| {
            b.status = Some(status);
            b.retry_after = retry_after;
        })
        .await;
        assert_fails_over(primary, &format!("{status} retry-after {retry_after:?}")).await;
        assert!(!fake.chats().is_empty(), "the primary was asked first");
    }
}

#[tokio::test]
async fn a_request_the_provider_refuses_as_invalid_goes_back_unchanged() {
    let (primary_fake, primary) = failing(|b| b.status = Some(400)).await;
    let (fallback_fake, fallback) = fallback().await;
    let router = RouterProcess::start(&[primary, fallback], &quick_settings()).await;
    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"]["message"], "injected 400",
        "the provider's own error"
    );
    assert_eq!(primary_fake.chats().len(), 1);
    assert!(
        fallback_fake.chats().is_empty(),
        "another provider would refuse it too"
    );
}

#[tokio::test]
async fn retry_after_keeps_the_provider_out_for_that_long() {
    let (primary_fake, primary) = failing(|b| {
        b.status = Some(429);
        b.retry_after = Some(2);
    })
    .await;
    let (_fallback_fake, fallback) = fallback().await;
    let router = RouterProcess::start(&[primary, fallback], &quick_settings()).await;
    assert_eq!(router.chat(&chat_request(false)).await.0, 200);
    assert_eq!(primary_fake.chats().len(), 1);
    primary_fake.set(|b| b.status = None);
    for _ in 0..3 {
        let (status, answer) = router.chat(&chat_request(false)).await;
        assert_eq!(status, 200);
        assert_eq!(content(&answer), "answer from the fallback", "held for 2 s");
    }
    assert_eq!(primary_fake.chats().len(), 1, "not asked again while held");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(
        content(&answer),
        "Hello from the fake provider",
        "back after Retry-After"
    );
}

#[tokio::test]
async fn open_circuits_are_reported_as_unavailable_with_their_cause_not_as_rate_limits() {
    let (_first_fake, first) = failing(|b| b.status = Some(500)).await;
    let (_second_fake, mut second) = failing(|b| b.status = Some(401)).await;
    second.name = "secondary".into();
    let settings = RouterSpec {
        circuit_failure_threshold: 1,
        circuit_open_duration: Duration::from_secs(60).into(),
        ..quick_settings()
    };
    let router = RouterProcess::start(&[first, second], &settings).await;
    let (status, _) = router.chat(&chat_request(false)).await;
    assert_eq!(
        status, 502,
        "both failed: every provider of the chain failed"
    );
    let response = router.post(&chat_request(false)).await;
    assert_eq!(
        response.status().as_u16(),
        503,
        "no provider is tried, none is rate-limited"
    );
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.expect("an OpenAI-format error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("circuit is open")
            && message.contains("server_error")
            && message.contains("unauthorized"),
        "{message}"
    );
    assert!(
        router
            .metrics()
            .await
            .contains("agent_operator_router_errors_total{class=\"circuit_open\"} 1")
    );
}

#[tokio::test]
async fn the_circuit_opens_after_consecutive_failures_and_closes_after_a_good_trial() {
    let (primary_fake, primary) = failing(|b| b.status = Some(500)).await;
    let (_fallback_fake, fallback) = fallback().await;
    let settings = RouterSpec {
        circuit_failure_threshold: 2,
        circuit_open_duration: Duration::from_secs(1).into(),
        ..quick_settings()
    };
    let router = RouterProcess::start(&[primary, fallback], &settings).await;
    for _ in 0..4 {
        assert_eq!(router.chat(&chat_request(false)).await.0, 200);
    }
    assert_eq!(
        primary_fake.chats().len(),
        2,
        "skipped once the circuit opened"
    );
    assert!(
        router
            .metrics()
            .await
            .contains("agent_operator_router_circuit_open{provider=\"primary\"} 1")
    );

    primary_fake.set(|b| b.status = None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(
        content(&answer),
        "Hello from the fake provider",
        "the trial succeeds"
    );
    let (_, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(
        content(&answer),
        "Hello from the fake provider",
        "and the circuit is closed"
    );
    assert!(
        router
            .metrics()
            .await
            .contains("agent_operator_router_circuit_open{provider=\"primary\"} 0")
    );
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_byte_ends_with_an_error_and_is_not_switched() {
    let (primary_fake, primary) = failing(|b| b.break_stream = true).await;
    let (fallback_fake, fallback) = fallback().await;
    let router = RouterProcess::start(&[primary, fallback], &quick_settings()).await;
    let (status, events) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200, "the stream had started");
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON event");
    assert_eq!(last["error"]["code"], "stream_broken", "{events:?}");
    assert_eq!(primary_fake.chats().len(), 1);
    assert!(fallback_fake.chats().is_empty(), "never silently switched");
}

#[tokio::test]
async fn when_every_provider_fails_the_agent_gets_one_clear_error() {
    let (_a, mut a) = failing(|b| b.status = Some(500)).await;
    a.name = "a".into();
    let b = Link::new("b", ProviderType::Ollama, closed_endpoint());
    let router = RouterProcess::start(&[a, b], &quick_settings()).await;
    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 502);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("a:server_error") && message.contains("b:unreachable"),
        "{message}"
    );
}

#[tokio::test]
async fn attempts_per_request_are_bounded() {
    let mut links = Vec::new();
    let mut fakes = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let fake = FakeProvider::start(Behaviour {
            status: Some(500),
            ..Behaviour::default()
        })
        .await;
        links.push(Link::new(
            name,
            ProviderType::OpenAI,
            fake.openai_endpoint(),
        ));
        fakes.push(fake);
    }
    let settings = RouterSpec {
        max_attempts: 2,
        ..quick_settings()
    };
    let router = RouterProcess::start(&links, &settings).await;
    assert_eq!(router.chat(&chat_request(false)).await.0, 502);
    let asked: Vec<usize> = fakes.iter().map(|f| f.chats().len()).collect();
    assert_eq!(asked, [1, 1, 0, 0]);
}
