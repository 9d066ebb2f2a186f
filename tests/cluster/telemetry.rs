//! OpenTelemetry as a backend receives it: the router's GenAI spans and metrics and the
//! operator's reconcile spans, exported over OTLP to a real OpenTelemetry Collector and read
//! from what its file exporter wrote.

use agent_operator::api::common::RouterSpec;
use agent_operator::api::llm_provider::ProviderType;
use serde_json::{Value, json};

use crate::router_harness::{Link, RouterProcess, chat_request, quick_settings};
use crate::support::collector::{Collector, attribute};
use crate::support::fake_provider::{Behaviour, COMPLETION_TOKENS, FakeProvider, PROMPT_TOKENS};
use crate::support::objects::provider;
use crate::support::operator::OperatorProcess;
use crate::support::{TestNamespace, client, install_crds, wait_until};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn attr(span: &Value, key: &str) -> Option<Value> {
    attribute(&span["attributes"], key)
}

#[tokio::test]
async fn the_routers_genai_spans_and_metrics_reach_a_real_collector() {
    let collector = Collector::start("router").await;
    let failing = FakeProvider::start(Behaviour {
        status: Some(500),
        ..Behaviour::default()
    })
    .await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let links = [
        Link::new("primary", ProviderType::OpenAI, failing.openai_endpoint()),
        Link::new("backup", ProviderType::OpenAI, fake.openai_endpoint()).model("gpt-4o-mini"),
    ];
    let endpoint = collector.endpoint.clone();
    let mut router = RouterProcess::start_with(
        &links,
        &quick_settings(),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-metrics-interval",
            "1s",
        ],
    )
    .await;

    // The agent's own trace, which the router's span must continue.
    let mut request = chat_request(false);
    request["max_tokens"] = json!(64);
    request["temperature"] = json!(0.2);
    let answered = reqwest::Client::new()
        .post(router.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .json(&request)
        .send()
        .await
        .expect("an answer");
    assert_eq!(answered.status().as_u16(), 200);
    let (status, _) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200);
    // SIGTERM, as the kubelet stops the sidecar: the router flushes what it buffered.
    router.terminate();

    let span = collector
        .span("the request's span, in the agent's trace", |span| {
            span["traceId"] == TRACE_ID
        })
        .await;
    assert_eq!(span["parentSpanId"], PARENT_SPAN, "{span}");
    assert_eq!(span["name"], "chat gpt-4o");
    assert_eq!(span["kind"], 3, "SPAN_KIND_CLIENT");
    let expected = [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai")),
        ("gen_ai.request.model", json!("gpt-4o")),
        ("gen_ai.response.model", json!("gpt-4o-mini")),
        ("gen_ai.request.max_tokens", json!(64)),
        ("gen_ai.request.temperature", json!(0.2)),
        ("gen_ai.usage.input_tokens", json!(PROMPT_TOKENS)),
        ("gen_ai.usage.output_tokens", json!(COMPLETION_TOKENS)),
        ("gen_ai.response.finish_reasons", json!(["stop"])),
        ("server.address", json!("127.0.0.1")),
        ("agent_operator.provider", json!("backup")),
    ];
    for (key, value) in expected {
        assert_eq!(attr(&span, key), Some(value), "{key} in {span}");
    }
    let failovers: Vec<&Value> = span["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == "agent_operator.failover")
        .collect();
    assert_eq!(failovers.len(), 1, "{span}");
    assert_eq!(
        attribute(&failovers[0]["attributes"], "agent_operator.provider"),
        Some(json!("primary"))
    );
    assert_eq!(
        attribute(&failovers[0]["attributes"], "error.type"),
        Some(json!("server_error"))
    );

    let streamed = collector
        .span("the streamed request's span", |span| {
            attr(span, "agent_operator.stream") == Some(json!(true))
        })
        .await;
    assert_eq!(
        attr(&streamed, "gen_ai.response.finish_reasons"),
        Some(json!(["stop"])),
        "read from the stream's last chunk"
    );

    let traces = collector.traces_text();
    assert!(
        !traces.contains("Say hello") && !traces.contains("Hello from the fake provider"),
        "no prompt and no answer in the spans"
    );
    router.assert_no_key_in(&traces);

    // The GenAI client metrics, with the conventions' attributes.
    wait_until(
        std::time::Duration::from_secs(60),
        "the GenAI metrics",
        || async {
            let metrics = collector.metrics();
            let named = |name: &str| metrics.iter().find(|m| m["name"] == name).cloned();
            let tokens = named("gen_ai.client.token.usage")?;
            let duration = named("gen_ai.client.operation.duration")?;
            Some((tokens, duration))
        },
    )
    .await;
    let metrics = collector.metrics();
    let tokens = metrics
        .iter()
        .find(|m| m["name"] == "gen_ai.client.token.usage")
        .expect("token usage");
    assert_eq!(tokens["unit"], "{token}");
    let kinds: Vec<Value> = tokens["histogram"]["dataPoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| attribute(&p["attributes"], "gen_ai.token.type"))
        .collect();
    assert!(
        kinds.contains(&json!("input")) && kinds.contains(&json!("output")),
        "{tokens}"
    );
    let duration = metrics
        .iter()
        .find(|m| m["name"] == "gen_ai.client.operation.duration")
        .expect("duration");
    assert_eq!(duration["unit"], "s");
    let point = &duration["histogram"]["dataPoints"][0];
    assert_eq!(
        attribute(&point["attributes"], "gen_ai.operation.name"),
        Some(json!("chat"))
    );
}

#[tokio::test]
async fn a_sampled_router_traces_the_agents_sampled_trace_and_counts_every_request() {
    let collector = Collector::start("router-sampled").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let links = [Link::new(
        "only",
        ProviderType::OpenAI,
        fake.openai_endpoint(),
    )];
    let settings = RouterSpec {
        trace_sampling_percent: Some(0),
        ..quick_settings()
    };
    let endpoint = collector.endpoint.clone();
    let mut router = RouterProcess::start_with(
        &links,
        &settings,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-metrics-interval",
            "1s",
        ],
    )
    .await;
    for _ in 0..3 {
        let (status, _) = router.chat(&chat_request(false)).await;
        assert_eq!(status, 200);
    }
    let traced = "0af7651916cd43dd8448eb211c80319c";
    let answered = reqwest::Client::new()
        .post(router.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{traced}-{PARENT_SPAN}-01"))
        .json(&chat_request(false))
        .send()
        .await
        .expect("an answer");
    assert_eq!(answered.status().as_u16(), 200);
    router.terminate();

    collector
        .span("the span of the agent's sampled trace", |span| {
            span["traceId"] == traced
        })
        .await;
    let requests = |metric: &Value| -> u64 {
        let points = metric["histogram"]["dataPoints"].as_array().cloned();
        let count = |p: &Value| p["count"].as_str().and_then(|c| c.parse::<u64>().ok());
        points.into_iter().flatten().filter_map(|p| count(&p)).sum()
    };
    wait_until(
        std::time::Duration::from_secs(60),
        "the duration of all four requests",
        || async {
            let metrics = collector.metrics();
            metrics
                .iter()
                .filter(|m| m["name"] == "gen_ai.client.operation.duration")
                .any(|m| requests(m) == 4)
                .then_some(())
        },
    )
    .await;
    // Spans are exported in the order they end, so a span of any of the three requests before
    // would have arrived with the traced one or earlier: those requests, without a context,
    // drew 0% and have none.
    let spans = collector.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
}

#[tokio::test]
async fn the_operators_reconciles_are_traced_to_the_collector() {
    let collector = Collector::start("operator").await;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "traced-reconciles").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let endpoint = collector.endpoint.clone();
    let _operator =
        OperatorProcess::start_with(&ns.name, "", &["--otlp-endpoint", &endpoint]).await;
    provider(&ns, "openai", &fake).await;
    let span = collector
        .span("a reconcile of the LLMProvider", |span| {
            span["name"] == "reconcile LLMProvider"
                && attr(span, "namespace") == Some(json!(ns.name))
        })
        .await;
    assert_eq!(attr(&span, "name"), Some(json!("openai")), "{span}");
    assert_eq!(attr(&span, "kind"), Some(json!("LLMProvider")));
    assert!(attr(&span, "reconcile_id").is_some());
    assert_eq!(
        attribute(&span["resource"], "service.name"),
        Some(json!("agent-operator")),
        "{}",
        collector.log()
    );
}
