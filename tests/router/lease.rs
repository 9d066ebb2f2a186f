//! The budget lease as the router serves it to the operator: only to the lease token, a pod
//! waits for its first grant, grants add room or lower it, and a refusal says whether a
//! retry can help.

use agent_operator::api::llm_provider::ProviderType;
use agent_operator::resources::budget_lease::{Grant, GrantMode, LeaseReading, LeaseRequest};
use serde_json::{Value, json};

use crate::fake_provider::{Behaviour, COMPLETION_TOKENS, FakeProvider, PROMPT_TOKENS};
use crate::harness::{Link, RouterProcess, chat_request, quick_settings};
use crate::net::free_port;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Leased {
    router: RouterProcess,
    lease_url: String,
    fake: FakeProvider,
    http: reqwest::Client,
}

impl Leased {
    async fn start() -> Self {
        let fake = FakeProvider::start(Behaviour::default()).await;
        let openai = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint());
        let folder = std::env::temp_dir().join(format!("lease-token-{}", free_port()));
        std::fs::create_dir_all(&folder).expect("folder");
        let token_file = folder.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
        let address = format!("127.0.0.1:{}", free_port());
        let token_path = token_file.display().to_string();
        let router = RouterProcess::start_with(
            &[openai],
            &quick_settings(),
            &[
                "--lease-listen",
                &address,
                "--lease-token-file",
                &token_path,
            ],
        )
        .await;
        Self {
            router,
            lease_url: format!("http://{address}/v1/lease"),
            fake,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, token: Option<&str>, request: &LeaseRequest) -> reqwest::Response {
        let mut call = self.http.post(&self.lease_url).json(request);
        if let Some(token) = token {
            call = call.bearer_auth(token);
        }
        call.send().await.expect("the lease answers")
    }

    async fn lease(&self, request: &LeaseRequest) -> LeaseReading {
        let response = self.call(Some(TOKEN), request).await;
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("a reading")
    }
}

fn grant(mode: GrantMode, tokens: u64, window_spent: bool) -> LeaseRequest {
    LeaseRequest {
        grant: Some(Grant {
            mode,
            tokens: Some(tokens),
            cost_nanos: None,
            currency: "USD".into(),
        }),
        window_spent,
        window_end: Some("2026-12-02T00:00:00Z".into()),
        retry_after_seconds: 10,
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn small_request() -> Value {
    let mut body = chat_request(false);
    body["max_tokens"] = json!(50);
    body
}

#[tokio::test]
async fn the_lease_answers_only_the_lease_token() {
    let leased = Leased::start().await;
    let nothing = LeaseRequest::default();
    for token in [None, Some("wrong"), Some("0123456789abcdef")] {
        let response = leased.call(token, &nothing).await;
        assert_eq!(response.status().as_u16(), 401, "token {token:?}");
    }
    // A caller without the token cannot grant itself room either.
    let response = leased
        .call(Some("wrong"), &grant(GrantMode::Add, 1_000_000, false))
        .await;
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        leased.router.post(&small_request()).await.status().as_u16(),
        429
    );
    assert_eq!(leased.fake.requests(), 0);
}

#[tokio::test]
async fn a_pod_spends_only_what_it_is_granted_and_a_spent_window_says_not_to_retry() {
    let leased = Leased::start().await;

    // Before its first grant the router refuses, and says a retry will soon help.
    let waiting = leased.router.post(&small_request()).await;
    assert_eq!(waiting.status().as_u16(), 429);
    assert_eq!(header(&waiting, "x-should-retry"), Some("true"));
    assert!(header(&waiting, "retry-after").is_some());
    assert_eq!(leased.fake.requests(), 0, "nothing was sent");
    let reading = leased.lease(&LeaseRequest::default()).await;
    assert_eq!(reading.allowance, None, "a read grants nothing");
    assert!(reading.largest_refused.tokens > 50, "{reading:?}");

    // Room for exactly two requests: each reserves its prompt estimate and max_tokens.
    let body = small_request();
    let estimate = (serde_json::to_vec(&body).expect("json").len() as u64).div_ceil(4) + 50;
    let reading = leased
        .lease(&grant(GrantMode::Add, 2 * estimate, false))
        .await;
    assert_eq!(
        reading.allowance.and_then(|a| a.max_tokens),
        Some(2 * estimate)
    );
    for _ in 0..2 {
        assert_eq!(leased.router.post(&body).await.status().as_u16(), 200);
    }
    let reading = leased.lease(&LeaseRequest::default()).await;
    let per_request = PROMPT_TOKENS + COMPLETION_TOKENS;
    assert_eq!(reading.usage.requests, 2);
    assert_eq!(reading.usage.tokens(), 2 * per_request);
    // What the answers used is less than what was held: the rest is room again. After k
    // answers one more fits while k answers and one reservation fit in the grant.
    let fits = estimate / per_request - 1;
    for _ in 0..fits {
        assert_eq!(leased.router.post(&body).await.status().as_u16(), 200);
    }
    let share_spent = leased.router.post(&body).await;
    assert_eq!(share_spent.status().as_u16(), 429);
    assert_eq!(
        header(&share_spent, "x-should-retry"),
        Some("true"),
        "only the pod's share is spent: the next lease may bring more"
    );
    assert_eq!(header(&share_spent, "retry-after"), Some("10"));
    assert_eq!(leased.fake.requests(), 2 + fits);

    // An addition adds; a limit never raises.
    let before = leased.lease(&LeaseRequest::default()).await;
    let cap = before.allowance.and_then(|a| a.max_tokens).expect("cap");
    let after = leased.lease(&grant(GrantMode::Add, 1_000, false)).await;
    assert_eq!(
        after.allowance.and_then(|a| a.max_tokens),
        Some(cap + 1_000)
    );
    let limited = leased
        .lease(&grant(GrantMode::Limit, 1_000_000, false))
        .await;
    assert_eq!(
        limited.allowance.and_then(|a| a.max_tokens),
        Some(cap + 1_000)
    );

    // The operator found the window spent: the room goes, and the agent is told not to retry.
    let spent = leased.lease(&grant(GrantMode::Limit, 0, true)).await;
    assert_eq!(
        spent.allowance.and_then(|a| a.max_tokens),
        Some(spent.usage.tokens())
    );
    let refused = leased.router.post(&body).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(header(&refused, "x-should-retry"), Some("false"));
    let error: Value = refused.json().await.expect("an OpenAI error");
    assert_eq!(error["error"]["code"], "budget_exceeded");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("budget for this window is spent until 2026-12-02T00:00:00Z"),
        "{message}"
    );
    assert_eq!(leased.fake.requests(), 2 + fits, "nothing more was sent");
}

#[tokio::test]
async fn a_stopping_router_waits_for_the_operator_to_read_its_last_counters() {
    let mut leased = Leased::start().await;
    leased.lease(&grant(GrantMode::Add, 100_000, false)).await;
    for _ in 0..3 {
        assert_eq!(
            leased.router.post(&small_request()).await.status().as_u16(),
            200
        );
    }
    leased.router.ask_to_stop();
    // Past the agent endpoint's shutdown, the router is still there for the lease.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!leased.router.exited(), "it waits for a last reading");
    let last = leased.lease(&LeaseRequest::default()).await;
    assert_eq!(last.usage.requests, 3, "the final counters");
    let mut exited = false;
    for _ in 0..50 {
        if leased.router.exited() {
            exited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(exited, "read, it stops: {}", leased.router.logs());
    assert!(
        leased
            .router
            .logs()
            .contains("the operator read the final counters")
    );
}
