//! OpenTelemetry for the router, after the GenAI semantic conventions: a `CLIENT` span per
//! request of the agent's (`chat <model>`), continuing the agent's `traceparent`, with the
//! answering provider, the request and response models, the usage and finish reasons, and each
//! abandoned attempt as an event; and the GenAI client metrics `gen_ai.client.token.usage` and
//! `gen_ai.client.operation.duration`. Exported over OTLP/HTTP when an endpoint is set; without
//! one nothing is built and a request pays nothing.
//!
//! Never recorded: a prompt, an answer, a tool's arguments, a header, a key. There is no switch
//! to record them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use super::upstream::{Dialect, Inbound};
use crate::api::llm_provider::ProviderType;

/// The semantic conventions' bucket boundaries for `gen_ai.client.token.usage`.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// And for `gen_ai.client.operation.duration`, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// The exporters and instruments, when an endpoint is set.
pub struct Telemetry {
    tracer: SdkTracer,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
}

/// The trace context an agent sent with its request (W3C `traceparent` and `tracestate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parent {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Extractor for Parent {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Everything one request's span and metrics say, gathered by the proxy as it runs.
#[derive(Clone, Debug, Default)]
pub struct RequestRecord {
    pub started: Option<SystemTime>,
    pub duration: Duration,
    pub parent: Parent,
    /// `chat_completions` or `messages`.
    pub api: &'static str,
    pub request_model: Arc<str>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stream: bool,
    /// The LLMProvider that answered.
    pub provider: Option<Answerer>,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    pub finish_reasons: Vec<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub status: u16,
    /// The router's class of the failure, for `error.type`.
    pub error: Option<String>,
    /// The attempts abandoned for the next provider: when, which provider, why.
    pub failovers: Vec<(SystemTime, String, &'static str)>,
    /// Whether the request has a span: with the agent's trace context, as its sampled flag
    /// says (the tracer's parent-based sampler reads it); without, as the sampling percent
    /// drew. Its metrics are recorded either way.
    pub traced: bool,
}

impl RequestRecord {
    /// What the request itself says: its model and parameters, and the agent's trace context;
    /// `sampling_percent` (unset: 100) decides whether a request without a context is traced.
    pub fn of(inbound: &Inbound, model: &str, sampling_percent: Option<u8>) -> Self {
        let body = &inbound.body;
        Self {
            started: Some(SystemTime::now()),
            traced: inbound.parent.traceparent.is_some()
                || sampling_percent
                    .is_none_or(|percent| rand::random_ratio(u32::from(percent.min(100)), 100)),
            parent: inbound.parent.clone(),
            api: match inbound.dialect {
                Dialect::OpenAI => "chat_completions",
                Dialect::Anthropic => "messages",
            },
            request_model: Arc::from(model),
            max_tokens: ["max_completion_tokens", "max_tokens"]
                .iter()
                .find_map(|name| body.get(*name).and_then(serde_json::Value::as_u64)),
            temperature: body.get("temperature").and_then(serde_json::Value::as_f64),
            top_p: body.get("top_p").and_then(serde_json::Value::as_f64),
            stream: body.get("stream").and_then(serde_json::Value::as_bool) == Some(true),
            ..Self::default()
        }
    }
}

/// The provider that answered a request, as the attributes that say so: built once per
/// config load, so a request clones reference counts rather than strings.
#[derive(Clone, Debug, PartialEq)]
pub struct Answerer {
    /// `gen_ai.provider.name`, `server.address` and `server.port`: on the span and metrics.
    common: Arc<[KeyValue]>,
    /// `agent_operator.provider`, the LLMProvider's name: on the span only.
    name: KeyValue,
}

impl Answerer {
    pub fn new(name: &str, provider_type: ProviderType, endpoint: &str) -> Self {
        let mut common = vec![KeyValue::new(
            "gen_ai.provider.name",
            provider_name(provider_type),
        )];
        if let Some((address, port)) = server_of(endpoint) {
            common.push(KeyValue::new("server.address", shared(&address)));
            common.push(KeyValue::new("server.port", i64::from(port)));
        }
        Self {
            common: common.into(),
            name: KeyValue::new("agent_operator.provider", shared(name)),
        }
    }
}

// Its values are strings and integers, never a float, so equality is total.
impl Eq for Answerer {}

/// A string attribute value whose clones share one allocation.
fn shared(value: &str) -> Value {
    Value::String(StringValue::from(Arc::<str>::from(value)))
}

/// The conventions' `gen_ai.provider.name` of a provider type.
pub fn provider_name(provider_type: ProviderType) -> &'static str {
    match provider_type {
        ProviderType::OpenAI => "openai",
        ProviderType::Anthropic => "anthropic",
        ProviderType::AzureOpenAI => "azure.ai.openai",
        ProviderType::Ollama => "ollama",
        ProviderType::OpenAICompatible => "openai_compatible",
    }
}

/// `server.address` and `server.port` of an endpoint URL.
fn server_of(endpoint: &str) -> Option<(String, u16)> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?.to_string();
    let port = url.port_or_known_default()?;
    Some((host, port))
}

/// The most attributes the span and the metrics share, and room for `gen_ai.token.type`, which
/// the token histogram adds to them.
const COMMON_ATTRIBUTES: usize = 8;
/// The most attributes a span carries. Its vector is made this large at once: growing it
/// attribute by attribute (three reallocations, to room for 32) was a third of what recording
/// a request cost the router's thread.
const SPAN_ATTRIBUTES: usize = 18;

impl RequestRecord {
    /// The attributes both the span and the metrics carry.
    fn common_attributes(&self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(COMMON_ATTRIBUTES);
        attributes.push(KeyValue::new("gen_ai.operation.name", "chat"));
        attributes.push(KeyValue::new(
            "gen_ai.request.model",
            Value::String(StringValue::from(self.request_model.clone())),
        ));
        if let Some(answerer) = &self.provider {
            attributes.extend(answerer.common.iter().cloned());
        }
        if let Some(model) = &self.response_model {
            attributes.push(KeyValue::new("gen_ai.response.model", model.clone()));
        }
        if let Some(error) = &self.error {
            attributes.push(KeyValue::new("error.type", error.clone()));
        }
        attributes
    }

    /// The span's attributes: the common ones, the request's parameters, the answer.
    pub fn span_attributes(&self) -> Vec<KeyValue> {
        self.span_attributes_after(&self.common_attributes())
    }

    fn span_attributes_after(&self, common: &[KeyValue]) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(SPAN_ATTRIBUTES);
        attributes.extend_from_slice(common);
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(max_tokens) = self.max_tokens {
            attributes.push(KeyValue::new(
                "gen_ai.request.max_tokens",
                signed(max_tokens),
            ));
        }
        if let Some(temperature) = self.temperature {
            attributes.push(KeyValue::new("gen_ai.request.temperature", temperature));
        }
        if let Some(top_p) = self.top_p {
            attributes.push(KeyValue::new("gen_ai.request.top_p", top_p));
        }
        if let Some(id) = &self.response_id {
            attributes.push(KeyValue::new("gen_ai.response.id", id.clone()));
        }
        if !self.finish_reasons.is_empty() {
            let reasons: Vec<StringValue> = self
                .finish_reasons
                .iter()
                .map(|r| StringValue::from(r.clone()))
                .collect();
            attributes.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(reasons.into()),
            ));
        }
        if self.provider.is_some() && self.error.is_none() {
            attributes.push(KeyValue::new(
                "gen_ai.usage.input_tokens",
                signed(self.input_tokens),
            ));
            attributes.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                signed(self.output_tokens),
            ));
            if self.cached_input_tokens > 0 {
                attributes.push(KeyValue::new(
                    "gen_ai.usage.cache_read.input_tokens",
                    signed(self.cached_input_tokens),
                ));
            }
        }
        if let Some(answerer) = &self.provider {
            attributes.push(answerer.name.clone());
        }
        attributes.push(KeyValue::new("agent_operator.api", self.api));
        attributes.push(KeyValue::new("agent_operator.stream", self.stream));
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(self.status),
        ));
        attributes
    }
}

impl Telemetry {
    /// The exporters for `endpoint` (the collector's OTLP/HTTP base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` holds it). The service name and resource attributes come
    /// from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, which the operator sets.
    pub fn start(endpoint: &str, metrics_interval: Duration) -> Result<Self, TelemetryError> {
        let base = endpoint.trim_end_matches('/');
        let failed = |error: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
            endpoint: base.to_string(),
            message: error.to_string(),
        };
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(failed)?;
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/metrics"))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(failed)?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(spans)
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(
                PeriodicReader::builder(metrics)
                    .with_interval(metrics_interval)
                    .build(),
            )
            .build();
        let tracer = tracer_provider.tracer("agent-operator-router");
        let meter = meter_provider.meter("agent-operator-router");
        let token_usage = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used.")
            .with_boundaries(TOKEN_BUCKETS.to_vec())
            .build();
        let duration = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        Ok(Self {
            tracer,
            tracer_provider,
            meter_provider,
            token_usage,
            duration,
        })
    }

    /// The span and the metrics of one request.
    pub fn record(&self, record: &RequestRecord) {
        let started = record.started.unwrap_or_else(SystemTime::now);
        // Built once for the span and the three histogram records.
        let common = record.common_attributes();
        if record.traced {
            self.trace(record, &common, started);
        }
        self.duration.record(record.duration.as_secs_f64(), &common);
        if record.provider.is_some() && record.error.is_none() {
            let mut attributes = common;
            attributes.push(KeyValue::new("gen_ai.token.type", "input"));
            self.token_usage.record(record.input_tokens, &attributes);
            if let Some(last) = attributes.last_mut() {
                *last = KeyValue::new("gen_ai.token.type", "output");
            }
            self.token_usage.record(record.output_tokens, &attributes);
        }
    }

    /// The request's span, with each abandoned attempt as an event.
    fn trace(&self, record: &RequestRecord, common: &[KeyValue], started: SystemTime) {
        let parent = parent_context(&record.parent);
        let mut span = self
            .tracer
            .span_builder(format!("chat {}", record.request_model))
            .with_kind(SpanKind::Client)
            .with_start_time(started)
            .with_attributes(record.span_attributes_after(common))
            .start_with_context(&self.tracer, &parent);
        for (at, provider, class) in &record.failovers {
            span.add_event_with_timestamp(
                "agent_operator.failover",
                *at,
                vec![
                    KeyValue::new("agent_operator.provider", provider.clone()),
                    KeyValue::new("error.type", *class),
                ],
            );
        }
        if let Some(error) = &record.error {
            span.set_status(Status::error(error.clone()));
        }
        span.end_with_timestamp(started + record.duration);
    }

    /// Exports what is buffered; the router calls it as it stops.
    pub fn shutdown(&self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            tracing::warn!(%error, "the last spans could not be exported");
        }
        if let Err(error) = self.meter_provider.shutdown() {
            tracing::warn!(%error, "the last metrics could not be exported");
        }
    }
}

/// The agent's trace context, the parent of the request's span (none without `traceparent`).
fn parent_context(parent: &Parent) -> Context {
    TraceContextPropagator::new().extract(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn the_agents_traceparent_is_continued() {
        let parent = Parent {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
        };
        let context = parent_context(&parent);
        let span = context.span();
        let span_context = span.span_context();
        assert_eq!(
            span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(span_context.is_remote());
        assert!(!parent_context(&Parent::default()).has_active_span());
    }

    #[test]
    fn sampling_draws_only_for_requests_without_the_agents_trace_context() {
        let plain = Inbound::chat(serde_json::Map::new(), 2);
        let mut continued = Inbound::chat(serde_json::Map::new(), 2);
        continued.parent.traceparent =
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        for _ in 0..50 {
            assert!(RequestRecord::of(&plain, "m", None).traced);
            assert!(!RequestRecord::of(&plain, "m", Some(0)).traced);
            assert!(RequestRecord::of(&continued, "m", Some(0)).traced);
        }
        let drawn = (0..2000)
            .filter(|_| RequestRecord::of(&plain, "m", Some(25)).traced)
            .count();
        // 25% of 2,000 is 500; 350 and 650 are each more than seven standard deviations away.
        assert!((350..650).contains(&drawn), "{drawn} of 2000 traced at 25%");
    }

    #[test]
    fn the_fullest_record_fits_the_room_made_for_its_attributes() {
        let record = RequestRecord {
            request_model: "gpt-4o".into(),
            max_tokens: Some(100),
            temperature: Some(0.2),
            top_p: Some(0.9),
            provider: Some(Answerer::new(
                "azure",
                ProviderType::AzureOpenAI,
                "https://acme.openai.azure.com",
            )),
            response_model: Some("gpt-4o-2024-08-06".into()),
            response_id: Some("chatcmpl-1".into()),
            finish_reasons: vec!["stop".into()],
            cached_input_tokens: 3,
            status: 200,
            ..RequestRecord::default()
        };
        let mut common = record.common_attributes();
        let failed = RequestRecord {
            error: Some("all_failed".into()),
            ..record.clone()
        };
        // Growing either vector would reallocate it on every request.
        common.push(KeyValue::new("gen_ai.token.type", "input"));
        assert_eq!(common.capacity(), COMMON_ATTRIBUTES);
        assert_eq!(failed.common_attributes().len(), COMMON_ATTRIBUTES - 1);
        for record in [&record, &failed] {
            let attributes = record.span_attributes();
            assert!(attributes.len() <= SPAN_ATTRIBUTES, "{}", attributes.len());
            assert_eq!(attributes.capacity(), SPAN_ATTRIBUTES);
        }
    }

    #[test]
    fn a_failed_request_has_an_error_type_and_no_usage() {
        let record = RequestRecord {
            request_model: "gpt-4o".into(),
            error: Some("all_failed".into()),
            status: 502,
            ..RequestRecord::default()
        };
        let attributes = record.span_attributes();
        let keys: Vec<&str> = attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.contains(&"error.type"));
        assert!(!keys.contains(&"gen_ai.usage.input_tokens"));
    }

    #[test]
    fn the_answering_provider_names_the_system_and_server() {
        let record = RequestRecord {
            request_model: "gpt-4o".into(),
            provider: Some(Answerer::new(
                "azure",
                ProviderType::AzureOpenAI,
                "https://acme.openai.azure.com",
            )),
            finish_reasons: vec!["stop".into()],
            input_tokens: 11,
            output_tokens: 7,
            status: 200,
            ..RequestRecord::default()
        };
        let attributes = record.span_attributes();
        let get = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            get("gen_ai.provider.name").as_deref(),
            Some("azure.ai.openai")
        );
        assert_eq!(
            get("server.address").as_deref(),
            Some("acme.openai.azure.com")
        );
        assert_eq!(get("server.port").as_deref(), Some("443"));
        assert_eq!(get("gen_ai.usage.output_tokens").as_deref(), Some("7"));
        assert_eq!(
            get("gen_ai.response.finish_reasons").as_deref(),
            Some("[\"stop\"]")
        );
    }
}
