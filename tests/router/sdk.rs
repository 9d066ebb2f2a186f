//! The official OpenAI and Anthropic Python SDKs, pinned in `e2e/tools/sdk-versions.env`, as
//! agents use them: each against a chain of each provider type, so both the translations and
//! the passed-on paths are read by the SDKs' own parsers (their models, stream accumulators
//! and `get_final_message`), not by ours.

use std::path::PathBuf;

use std::sync::OnceLock;

use agent_operator::api::llm_provider::ProviderType;
use serde_json::{Value, json};

use crate::fake_provider::{Behaviour, COMPLETION_TOKENS, FakeProvider, PROMPT_TOKENS};
use crate::harness::{Link, RouterProcess, quick_settings};

const REPLY: &str = "Hello from the fake provider";

/// The interpreter with the SDKs, made once per test run by `e2e/tools/sdk-python`.
fn sdk_python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let output = std::process::Command::new(format!("{root}/e2e/tools/sdk-python"))
            .output()
            .expect("e2e/tools/sdk-python runs");
        assert!(
            output.status.success(),
            "the SDKs could not be installed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

/// Runs every client scenario against `router`, with the environment the operator gives an
/// agent container.
async fn run_clients(router: &RouterProcess) -> Value {
    let python = sdk_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/router/sdk/clients.py");
    let root = format!("http://{}", router.address);
    // Async: the fake providers answer on this test's runtime while the clients wait.
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", format!("{root}/v1"))
        .env("OPENAI_API_KEY", "agent-operator-router")
        .env("ANTHROPIC_BASE_URL", &root)
        .env("ANTHROPIC_API_KEY", "agent-operator-router")
        .output()
        .await
        .expect("the clients run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the clients failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    router.assert_no_key_in(&stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("JSON results, not: {stdout}"))
}

fn result<'a>(results: &'a Value, scenario: &str) -> &'a Value {
    let result = &results[scenario];
    assert!(
        result.get("error").is_none(),
        "{scenario} raised in the SDK: {result}"
    );
    result
}

/// What every scenario must show, whichever provider type answered.
fn assert_every_scenario(results: &Value, cached: u64) {
    let chat = result(results, "openai_chat");
    assert_eq!(chat["text"], REPLY);
    assert_eq!(chat["finish_reason"], "stop");
    assert_eq!(chat["prompt_tokens"], PROMPT_TOKENS + cached);

    let stream = result(results, "openai_stream");
    assert_eq!(stream["text"], REPLY);
    assert_eq!(stream["finish_reason"], "stop");
    assert_eq!(
        stream["prompt_tokens"],
        PROMPT_TOKENS + cached,
        "the usage chunk reached the SDK"
    );

    let tools = result(results, "openai_tools");
    assert_eq!(tools["name"], "weather");
    assert_eq!(tools["arguments"], json!({"city": "Paris"}));
    assert_eq!(tools["finish_reason"], "tool_calls");

    let create = result(results, "anthropic_create");
    assert_eq!(create["text"], REPLY);
    assert_eq!(create["stop_reason"], "end_turn");
    assert_eq!(create["output_tokens"], COMPLETION_TOKENS);

    let stream = result(results, "anthropic_stream");
    assert_eq!(stream["text"], REPLY);
    assert_eq!(stream["final_text"], REPLY);
    assert_eq!(stream["stop_reason"], "end_turn");
    assert_eq!(stream["output_tokens"], COMPLETION_TOKENS);

    let tools = result(results, "anthropic_tools");
    assert_eq!(tools["name"], "weather");
    assert_eq!(tools["input"], json!({"city": "Paris"}));
    assert_eq!(tools["stop_reason"], "tool_use");
}

#[tokio::test]
async fn both_sdks_work_against_an_openai_provider() {
    let fake = FakeProvider::start(Behaviour {
        cached_tokens: 32,
        ..Behaviour::default()
    })
    .await;
    let link = Link::new("openai", ProviderType::OpenAI, fake.openai_endpoint()).model("gpt-4o");
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let results = run_clients(&router).await;
    assert_every_scenario(&results, 32);
    // Anthropic's SDK reads `input_tokens` without the cached ones.
    assert_eq!(
        result(&results, "anthropic_create")["input_tokens"],
        PROMPT_TOKENS
    );
}

#[tokio::test]
async fn both_sdks_work_against_an_anthropic_provider() {
    let fake = FakeProvider::start(Behaviour {
        cached_tokens: 32,
        ..Behaviour::default()
    })
    .await;
    let link = Link::new("anthropic", ProviderType::Anthropic, fake.root_endpoint())
        .model("claude-sonnet-4-5");
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    let results = run_clients(&router).await;
    assert_every_scenario(&results, 32);
    assert_eq!(
        result(&results, "anthropic_stream")["input_tokens"],
        PROMPT_TOKENS
    );
    // `parallel_tool_calls=False` from OpenAI's SDK, in Anthropic's terms.
    let sent = fake
        .chats()
        .into_iter()
        .find(|c| {
            c.body.get("tools").is_some()
                && c.body["tools"][0].get("input_schema").is_some()
                && c.body.get("tool_choice").is_some()
        })
        .expect("the OpenAI SDK's tool request");
    assert_eq!(sent.body["tool_choice"]["disable_parallel_tool_use"], true);
}
