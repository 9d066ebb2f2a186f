//! The router's Prometheus metrics on its own `/metrics`, in the operator's `agent_operator_*`
//! scheme. Labels are provider names, models and failure classes: never a prompt or a key.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct RouterMetrics {
    registry: Registry,
    /// Requests from the agent, by the provider that answered (or `none`), model and outcome.
    pub requests: IntCounterVec,
    /// Attempts that moved on to the next provider, by provider and failure class.
    pub failovers: IntCounterVec,
    /// Requests answered with an error, by class.
    pub errors: IntCounterVec,
    pub time_to_first_byte: HistogramVec,
    pub duration: HistogramVec,
    /// The part of `duration` spent in the router rather than awaiting a provider or the agent.
    pub overhead: HistogramVec,
    pub tokens: IntCounterVec,
    /// What the tokens cost, by the provider's `spec.pricing`.
    pub cost: CounterVec,
    pub circuit_open: IntGaugeVec,
    pub config_reloads: IntCounterVec,
}

const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The router's own time is in microseconds to milliseconds.
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

impl RouterMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let histogram = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                &["provider"],
            )
        };
        let metrics = Self {
            registry: Registry::new(),
            requests: counter(
                "agent_operator_router_requests_total",
                "Requests from the agent, by the provider that answered, model and outcome.",
                &["provider", "model", "outcome"],
            )?,
            failovers: counter(
                "agent_operator_router_failovers_total",
                "Attempts abandoned for the next provider, by provider and failure class.",
                &["provider", "class"],
            )?,
            errors: counter(
                "agent_operator_router_errors_total",
                "Requests answered with an error by the router itself, by class.",
                &["class"],
            )?,
            time_to_first_byte: histogram(
                "agent_operator_router_time_to_first_byte_seconds",
                "Time from sending a request to a provider to its first byte.",
            )?,
            duration: histogram(
                "agent_operator_router_request_duration_seconds",
                "Time from the agent's request to the end of the answer.",
            )?,
            overhead: HistogramVec::new(
                HistogramOpts::new(
                    "agent_operator_router_overhead_seconds",
                    "Time a request spent in the router itself: its duration less the time awaiting the providers' bytes and the agent's reading.",
                )
                .buckets(OVERHEAD_BUCKETS.to_vec()),
                &["provider"],
            )?,
            tokens: counter(
                "agent_operator_router_tokens_total",
                "Tokens the providers reported, by provider, model and kind (prompt, which includes the cached prompt tokens; completion; cache_read and cache_write, the cached part of prompt).",
                &["provider", "model", "kind"],
            )?,
            cost: CounterVec::new(
                Opts::new(
                    "agent_operator_router_cost_total",
                    "What the answered requests cost, priced by the LLMProvider's spec.pricing, by provider, model and currency.",
                ),
                &["provider", "model", "currency"],
            )?,
            circuit_open: IntGaugeVec::new(
                Opts::new(
                    "agent_operator_router_circuit_open",
                    "1 while the provider's circuit is open and it is skipped.",
                ),
                &["provider"],
            )?,
            config_reloads: counter(
                "agent_operator_router_config_reloads_total",
                "Loads of the mounted config and credentials, by result.",
                &["result"],
            )?,
        };
        metrics
            .registry
            .register(Box::new(metrics.requests.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.failovers.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.errors.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.time_to_first_byte.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.duration.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.overhead.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.tokens.clone()))?;
        metrics.registry.register(Box::new(metrics.cost.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.circuit_open.clone()))?;
        metrics
            .registry
            .register(Box::new(metrics.config_reloads.clone()))?;
        Ok(metrics)
    }

    /// Counts an answer's tokens. `prompt` includes the cached prompt tokens, as OpenAI
    /// counts them; `cache_read` and `cache_write` count those again, by themselves.
    pub fn record_tokens(&self, provider: &str, model: &str, usage: &super::usage::Usage) {
        let kinds = [
            ("prompt", usage.prompt),
            ("completion", usage.completion),
            ("cache_read", usage.cache_read),
            ("cache_write", usage.cache_write),
        ];
        for (kind, tokens) in kinds {
            if tokens > 0 || kind == "prompt" || kind == "completion" {
                self.tokens
                    .with_label_values(&[provider, model, kind])
                    .inc_by(tokens);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
