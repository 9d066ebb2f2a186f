//! The operator's Prometheus metrics, registered once. One naming scheme: `agent_operator_*`.
//! Labels never carry a secret: namespace and name of objects, controller names and reasons.

use std::sync::Arc;

use super::census::{Census, CensusCollector};
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The `kind` label of `agent_operator_task_tokens_total`.
const TOKEN_KINDS: [&str; 3] = ["input", "cached_input", "output"];

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub status_writes: IntCounterVec,
    pub provider_up: IntGaugeVec,
    pub provider_probe_duration: HistogramVec,
    pub provider_probe_failures: IntCounterVec,
    pub agent_ready_replicas: IntGaugeVec,
    pub agent_ready: IntGaugeVec,
    /// Share of each limit of an AgentDeployment's budget used in the current window.
    pub agent_budget_used: GaugeVec,
    /// The share at which the budget alerts (`spec.budget.alertAtPercent`).
    pub agent_budget_alert: GaugeVec,
    pub failovers: IntCounterVec,
    pub task_attempts: IntCounterVec,
    pub task_duration: HistogramVec,
    /// Tokens the tasks' routers reported, counted when an attempt's usage is recorded.
    pub task_tokens: IntCounterVec,
    /// Their cost, in units of each currency.
    pub task_cost: CounterVec,
    pub api_requests: IntCounterVec,
    /// Objects by kind and condition, tasks by phase: counted from the caches at each scrape.
    pub census: Arc<Census>,
}

impl Metrics {
    /// Creates and registers every metric. Fails only on a programming error (a duplicate name).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "agent_operator_reconciles_total",
                "Reconciles run, by controller.",
            ),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "agent_operator_reconcile_errors_total",
                "Reconciles that failed, by controller and reason.",
            ),
            &["controller", "reason"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "agent_operator_reconcile_duration_seconds",
                "Time one reconcile takes, by controller.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["controller"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "agent_operator_status_writes_total",
                "Status updates sent to the API server, by controller.",
            ),
            &["controller"],
        )?;
        let provider_up = IntGaugeVec::new(
            Opts::new(
                "agent_operator_provider_up",
                "1 when the LLMProvider is Ready, else 0.",
            ),
            &["namespace", "name"],
        )?;
        let provider_probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "agent_operator_provider_probe_duration_seconds",
                "Duration of one provider probe.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["namespace", "name"],
        )?;
        let provider_probe_failures = IntCounterVec::new(
            Opts::new(
                "agent_operator_provider_probe_failures_total",
                "Failed provider probes, by failure reason.",
            ),
            &["namespace", "name", "reason"],
        )?;
        let agent_ready_replicas = IntGaugeVec::new(
            Opts::new(
                "agent_operator_agent_ready_replicas",
                "Ready pods of an AgentDeployment.",
            ),
            &["namespace", "name"],
        )?;
        let agent_ready = IntGaugeVec::new(
            Opts::new(
                "agent_operator_agent_ready",
                "1 when the AgentDeployment is Ready, else 0.",
            ),
            &["namespace", "name"],
        )?;
        let agent_budget_used = GaugeVec::new(
            Opts::new(
                "agent_operator_agent_budget_used_ratio",
                "Share of each limit of an AgentDeployment's budget (limit=tokens|cost) used in the current window, from 0 to 1.",
            ),
            &["namespace", "name", "limit"],
        )?;
        let agent_budget_alert = GaugeVec::new(
            Opts::new(
                "agent_operator_agent_budget_alert_ratio",
                "The share of an AgentDeployment's budget whose use alerts (spec.budget.alertAtPercent / 100).",
            ),
            &["namespace", "name"],
        )?;
        let failovers = IntCounterVec::new(
            Opts::new(
                "agent_operator_failovers_total",
                "Switches of an AgentDeployment's active provider from one provider to another.",
            ),
            &["namespace", "name"],
        )?;
        let task_attempts = IntCounterVec::new(
            Opts::new(
                "agent_operator_task_attempts_total",
                "AgentTask attempts started (Jobs created), by namespace.",
            ),
            &["namespace"],
        )?;
        let task_duration = HistogramVec::new(
            HistogramOpts::new(
                "agent_operator_task_duration_seconds",
                "Time from an AgentTask's first attempt to its end, by namespace and final phase.",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0,
            ]),
            &["namespace", "phase"],
        )?;
        let task_tokens = IntCounterVec::new(
            Opts::new(
                "agent_operator_task_tokens_total",
                "Tokens AgentTasks spent, by namespace and kind (input, which includes cached_input; cached_input; output), counted once per attempt when its usage is recorded.",
            ),
            &["namespace", "kind"],
        )?;
        let task_cost = CounterVec::new(
            Opts::new(
                "agent_operator_task_cost_total",
                "What AgentTasks spent, priced by the LLMProviders' spec.pricing, by namespace and currency.",
            ),
            &["namespace", "currency"],
        )?;
        let api_requests = IntCounterVec::new(
            Opts::new(
                "agent_operator_kubernetes_requests_total",
                "Requests to the Kubernetes API, by verb, resource and HTTP status code (or error).",
            ),
            &["verb", "resource", "code"],
        )?;
        registry.register(Box::new(api_requests.clone()))?;
        let census = Arc::new(Census::default());
        registry.register(Box::new(CensusCollector::new(census.clone())?))?;
        registry.register(Box::new(task_attempts.clone()))?;
        registry.register(Box::new(task_duration.clone()))?;
        registry.register(Box::new(task_tokens.clone()))?;
        registry.register(Box::new(task_cost.clone()))?;
        registry.register(Box::new(agent_ready_replicas.clone()))?;
        registry.register(Box::new(agent_ready.clone()))?;
        registry.register(Box::new(agent_budget_used.clone()))?;
        registry.register(Box::new(agent_budget_alert.clone()))?;
        registry.register(Box::new(failovers.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(provider_up.clone()))?;
        registry.register(Box::new(provider_probe_duration.clone()))?;
        registry.register(Box::new(provider_probe_failures.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            status_writes,
            provider_up,
            provider_probe_duration,
            provider_probe_failures,
            agent_ready_replicas,
            agent_ready,
            agent_budget_used,
            agent_budget_alert,
            failovers,
            task_attempts,
            task_duration,
            task_tokens,
            task_cost,
            api_requests,
            census,
        })
    }

    /// Creates the series of a controller's reconciles and errors at zero, one per error reason,
    /// so that rates and dashboards read 0 instead of "No data" until the first error.
    pub fn start_controller(&self, controller: &str, error_reasons: &[&str]) {
        self.reconciles.with_label_values(&[controller]).inc_by(0);
        for reason in error_reasons {
            self.reconcile_errors
                .with_label_values(&[controller, reason])
                .inc_by(0);
        }
    }

    /// Creates a namespace's task series at zero when its first task starts, so that the first
    /// task to end in a phase shows as an increase (a counter born at 1 has no rate).
    pub fn start_task_namespace(&self, namespace: &str) {
        self.task_attempts.with_label_values(&[namespace]).inc_by(0);
        for kind in TOKEN_KINDS {
            self.task_tokens
                .with_label_values(&[namespace, kind])
                .inc_by(0);
        }
        for phase in crate::api::agent_task::TaskPhase::FINAL {
            // The same label as the observation at the end: the phase's name.
            let _ = self
                .task_duration
                .with_label_values(&[namespace, &format!("{phase:?}")]);
        }
    }

    /// Counts one status write of `controller`.
    pub fn status_written(&self, controller: &str) {
        self.status_writes.with_label_values(&[controller]).inc();
    }

    /// Counts the usage of an attempt just recorded in a task's status.
    pub fn record_task_usage(&self, namespace: &str, usage: &crate::api::budget::UsageTotals) {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let kinds = [
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
        ];
        for (kind, tokens) in TOKEN_KINDS.iter().zip(kinds) {
            self.task_tokens
                .with_label_values(&[namespace, kind])
                .inc_by(count(tokens));
        }
        if let (Some(cost), Some(currency)) = (&usage.cost, &usage.currency)
            && let Some(nanos) = crate::api::budget::parse_amount(cost)
        {
            self.task_cost
                .with_label_values(&[namespace, currency])
                .inc_by(nanos as f64 / 1e9);
        }
    }

    /// A timer that observes `reconcile_duration` of `controller` when dropped.
    pub fn reconcile_timer(&self, controller: &str) -> prometheus::HistogramTimer {
        self.reconcile_duration
            .with_label_values(&[controller])
            .start_timer()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if encoder
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_in_text_format() {
        let metrics = Metrics::new().expect("metrics register");
        metrics.reconciles.with_label_values(&["llmprovider"]).inc();
        metrics
            .provider_up
            .with_label_values(&["ns", "openai"])
            .set(1);
        let text = metrics.render();
        assert!(text.contains("agent_operator_reconciles_total{controller=\"llmprovider\"} 1"));
        assert!(text.contains("agent_operator_provider_up{name=\"openai\",namespace=\"ns\"} 1"));
    }
}
