//! The usage report: what a pod's router spent, as it hands it to the operator. The router
//! writes it after answers (at most every 200 ms) and when it stops, to two places the
//! operator can read without giving the pod any
//! Kubernetes credential: a file on an `emptyDir` (so a restarted router continues from it) and
//! its termination message (so the kubelet copies it into the pod's status when the router
//! stops). The counts are cumulative for the pod, so reading one twice never counts it twice.

use serde::{Deserialize, Serialize};

use crate::api::budget::{AttemptUsage, ModelUsage, UsageTotals, format_amount};

/// Where the usage volume is mounted in the router container.
pub const USAGE_DIR: &str = "/var/run/agentoperator/usage";
/// The report's file on that volume.
pub const USAGE_FILE: &str = "usage.json";
/// The router's termination message path (the Kubernetes default).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The kubelet keeps at most 4096 bytes of a termination message; models past this many are
/// counted in the totals only, which keeps a report well under it.
pub const MAX_MODELS: usize = 8;

/// Counts of one scope: the pod, or one provider and model in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    #[serde(default)]
    pub requests: u64,
    /// Every input token, cached ones included.
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    /// In nano-units of the report's currency.
    #[serde(default)]
    pub cost_nanos: u64,
}

impl Tally {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    pub fn add(&mut self, other: &Tally) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(other.cost_nanos);
    }

    /// As the API shows it.
    pub fn totals(&self, currency: Option<&str>) -> UsageTotals {
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        UsageTotals {
            requests: signed(self.requests),
            input_tokens: signed(self.input_tokens),
            cached_input_tokens: signed(self.cached_input_tokens),
            output_tokens: signed(self.output_tokens),
            total_tokens: signed(self.tokens()),
            cost: currency.map(|_| format_amount(self.cost_nanos)),
            currency: currency.map(str::to_string),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelTally {
    pub provider: String,
    pub model: String,
    #[serde(flatten)]
    pub tally: Tally,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    #[serde(flatten)]
    pub total: Tally,
    /// The currency of `costNanos`; absent while nothing priced was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Requests refused, or streams cut, because the budget was spent.
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub models: Vec<ModelTally>,
}

impl UsageReport {
    /// Reads a report; `None` for anything else (a worker's own termination message, say).
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The usage of attempt `attempt` as the task's status records it.
    pub fn attempt_usage(&self, attempt: i32) -> AttemptUsage {
        let currency = self.currency.as_deref();
        AttemptUsage {
            attempt,
            usage: self.total.totals(currency),
            budget_exceeded: self.refused > 0,
            models: self
                .models
                .iter()
                .map(|m| ModelUsage {
                    provider: m.provider.clone(),
                    model: m.model.clone(),
                    usage: m.tally.totals(currency),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_report() -> UsageReport {
        let tally = Tally {
            requests: u64::MAX,
            input_tokens: u64::MAX,
            cached_input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cost_nanos: u64::MAX,
        };
        UsageReport {
            total: tally,
            currency: Some("USD".into()),
            refused: u64::MAX,
            models: (0..MAX_MODELS)
                .map(|_| ModelTally {
                    provider: "p".repeat(63),
                    model: "m".repeat(64),
                    tally,
                })
                .collect(),
        }
    }

    #[test]
    fn the_largest_report_fits_a_termination_message() {
        let json = serde_json::to_string(&full_report()).expect("json");
        assert!(json.len() <= 4096, "{} bytes", json.len());
        assert_eq!(UsageReport::parse(&json), Some(full_report()));
    }

    #[test]
    fn a_workers_own_message_is_not_a_report() {
        assert_eq!(UsageReport::parse("Hello from the agent"), None);
    }

    #[test]
    fn a_report_becomes_the_attempts_usage() {
        let report = UsageReport {
            total: Tally {
                requests: 2,
                input_tokens: 30,
                cached_input_tokens: 10,
                output_tokens: 12,
                cost_nanos: 1_500,
            },
            currency: Some("USD".into()),
            refused: 1,
            models: Vec::new(),
        };
        let usage = report.attempt_usage(3);
        assert_eq!(usage.attempt, 3);
        assert_eq!(usage.usage.total_tokens, 42);
        assert_eq!(usage.usage.cost.as_deref(), Some("0.000002"));
        assert!(usage.budget_exceeded);
    }
}
