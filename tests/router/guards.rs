//! What the router refuses: bad bodies, attempts to reach the credential, and load beyond a
//! provider's limits.

use std::sync::Arc;
use std::time::Duration;

use agent_operator::api::llm_provider::ProviderType;

use crate::fake_provider::{Behaviour, FakeProvider};
use crate::harness::{Link, RouterProcess, chat_request, quick_settings};

async fn router_with_one_provider() -> (FakeProvider, RouterProcess) {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let link = Link::new("a", ProviderType::OpenAI, fake.openai_endpoint());
    let router =
        RouterProcess::start_with(&[link], &quick_settings(), &["--max-body-bytes", "65536"]).await;
    (fake, router)
}

async fn post_raw(router: &RouterProcess, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(router.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answer");
    (
        response.status().as_u16(),
        response.text().await.expect("text"),
    )
}

#[tokio::test]
async fn malformed_bodies_are_refused_before_any_provider_is_called() {
    let (fake, router) = router_with_one_provider().await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{\"messages\": [".to_vec(), 400, "not valid JSON"),
        (
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(),
            400,
            "not valid JSON",
        ),
        (b"[1, 2]".to_vec(), 400, "must be a JSON object"),
        (
            b"{\"model\": \"gpt-4o\"}".to_vec(),
            400,
            "'messages' must be an array",
        ),
        (vec![b' '; 100_000], 413, "larger than the router accepts"),
    ];
    for (body, status, message) in cases {
        let (got, text) = post_raw(&router, body).await;
        assert_eq!(got, status, "{text}");
        let error: serde_json::Value = serde_json::from_str(&text).expect("an OpenAI error body");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{text}"
        );
    }
    assert!(fake.chats().is_empty());
}

#[tokio::test]
async fn headers_from_the_agent_never_reach_the_provider() {
    let (fake, router) = router_with_one_provider().await;
    let response = reqwest::Client::new()
        .post(router.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-attacker")
        .header("x-api-key", "sk-attacker")
        .header("api-key", "sk-attacker")
        .header("openai-organization", "org-attacker")
        .json(&chat_request(false))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    let received = fake.chats().pop().expect("request");
    assert_eq!(
        received
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer sk-a-0123456789abcdef")
    );
    for header in ["x-api-key", "api-key", "openai-organization"] {
        assert!(
            received.headers.get(header).is_none(),
            "{header} was forwarded"
        );
    }
}

#[tokio::test]
async fn a_refused_key_echoed_by_the_provider_never_reaches_the_agent_or_the_logs() {
    let fake = FakeProvider::start(Behaviour {
        api_key: Some("sk-the-right-one".into()),
        ..Behaviour::default()
    })
    .await;
    let link = Link::new("a", ProviderType::OpenAI, fake.openai_endpoint());
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    // The fake answers 401 quoting the key it was sent; the harness checks the answer and,
    // when the router stops, every log line for that key.
    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("a:unauthorized")
    );
}

#[tokio::test]
async fn concurrency_limits_queue_briefly_then_answer_429_with_retry_after() {
    let fake = FakeProvider::start(Behaviour {
        delay: Duration::from_millis(800),
        ..Behaviour::default()
    })
    .await;
    let mut link = Link::new("a", ProviderType::OpenAI, fake.openai_endpoint());
    link.api.max_concurrent_requests = Some(1);
    let mut settings = quick_settings();
    settings.first_byte_timeout = Duration::from_secs(5).into();
    let router = Arc::new(RouterProcess::start(&[link], &settings).await);
    let first = {
        let router = router.clone();
        tokio::spawn(async move { router.chat(&chat_request(false)).await.0 })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = router.post(&chat_request(false)).await;
    assert_eq!(response.status().as_u16(), 429, "the wait (300 ms) ran out");
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(first.await.expect("first"), 200);
    assert_eq!(fake.chats().len(), 1, "the provider never saw two at once");
}

#[tokio::test]
async fn the_per_minute_limit_is_enforced() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut link = Link::new("a", ProviderType::OpenAI, fake.openai_endpoint());
    link.api.requests_per_minute = Some(2);
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    assert_eq!(router.chat(&chat_request(false)).await.0, 200);
    assert_eq!(router.chat(&chat_request(false)).await.0, 200);
    let response = router.post(&chat_request(false)).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(fake.chats().len(), 2);
}

#[test]
fn the_router_refuses_to_listen_beyond_loopback() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent-router"))
        .args(["--listen", "0.0.0.0:18790", "--config", "/nonexistent"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a loopback address"), "{stderr}");
}

#[test]
fn the_check_fails_when_no_router_answers() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent-router"))
        .args(["--check", "--listen", "127.0.0.1:1"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
}

#[tokio::test]
async fn the_check_passes_against_a_running_router() {
    let (_fake, router) = router_with_one_provider().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent-router"))
        .args(["--check", "--listen", &router.address.to_string()])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
