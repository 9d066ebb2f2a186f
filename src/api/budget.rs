//! Prices, budgets and usage: what an LLMProvider charges, what an AgentTask may spend, and what
//! it spent. Amounts of money are decimal strings in the API (no floating point in a spec or a
//! status) and whole nano-units of the currency inside the operator and the router, so sums
//! are exact.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An amount of money: up to 12 integer digits and 9 decimals, e.g. `2.50` or `0.000150`.
pub const AMOUNT_PATTERN: &str = r"^[0-9]{1,12}(\.[0-9]{1,9})?$";
/// An ISO 4217 currency code.
pub const CURRENCY_PATTERN: &str = r"^[A-Z]{3}$";

const NANOS_PER_UNIT: u64 = 1_000_000_000;

/// Nano-units of an amount written as [`AMOUNT_PATTERN`] allows; `None` for anything else.
pub fn parse_amount(text: &str) -> Option<u64> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (units, decimals) = match text.split_once('.') {
        Some((units, decimals)) if digits(decimals) => (units, decimals),
        Some(_) => return None,
        None => (text, ""),
    };
    if !digits(units) || units.len() > 12 || decimals.len() > 9 {
        return None;
    }
    let fraction = format!("{decimals:0<9}").parse::<u64>().ok()?;
    units
        .parse::<u64>()
        .ok()?
        .checked_mul(NANOS_PER_UNIT)?
        .checked_add(fraction)
}

/// An amount of nano-units for display, with six decimals (`0.012345`): a millionth of a
/// currency unit is below any price that matters, and a fixed width reads well in a column.
pub fn format_amount(nanos: u64) -> String {
    let micros = nanos.div_ceil(1_000);
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// The cost in nano-units of `tokens` at `per_million` nano-units per million tokens.
pub fn cost_of(tokens: u64, per_million: u64) -> u64 {
    let nanos = u128::from(tokens) * u128::from(per_million) / 1_000_000;
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// What a provider charges, per million tokens of each kind, for the models it lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// The currency of every price below, as an ISO 4217 code.
    #[serde(default = "default_currency")]
    #[schemars(length(min = 3, max = 3))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches('{CURRENCY_PATTERN}')")).message("must be an ISO 4217 currency code in capitals, e.g. USD or EUR"))]
    pub currency: String,
    /// One price per model, matched by the model name the provider is asked for.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["model"]))]
    pub models: Vec<ModelPrice>,
}

pub fn default_currency() -> String {
    "USD".into()
}

/// The prices of one model, each per million tokens as a decimal amount (`2.50`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelPrice {
    /// The model, as the provider names it (`gpt-4o-mini`, `claude-sonnet-4-5`).
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Input (prompt) tokens not read from the provider's cache.
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub input: String,
    /// Output (completion) tokens, reasoning tokens included.
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub output: String,
    /// Input tokens read from the provider's prompt cache. Defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub cached_input: Option<String>,
    /// Input tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`). Defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub cache_write: Option<String>,
}

/// A limit on tokens, on cost, or on both; the first one reached ends the spending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.maxTokens) || has(self.maxCost)").message("a budget needs spec.budget.maxTokens, spec.budget.maxCost or both"))]
pub struct Budget {
    /// Most tokens, input and output together (cached input included), over every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<i64>,
    /// Most cost, in `currency`, over every attempt, priced by the LLMProviders'
    /// `spec.pricing`. Usage of a model without a price counts for its tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub max_cost: Option<String>,
    /// The currency of `maxCost`. Only usage priced in it counts against `maxCost`.
    #[serde(default = "default_currency")]
    #[schemars(length(min = 3, max = 3))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches('{CURRENCY_PATTERN}')")).message("must be an ISO 4217 currency code in capitals, e.g. USD or EUR"))]
    pub currency: String,
}

/// How long an AgentDeployment's budget lasts before it starts again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BudgetPeriod {
    /// From midnight to midnight.
    #[default]
    Day,
    /// From Monday's midnight to the next Monday's.
    Week,
    /// From the first of the month's midnight to the next month's.
    Month,
}

/// The window an AgentDeployment's budget counts over: whole days, weeks or months, in a
/// time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetWindow {
    /// Day, Week or Month.
    #[serde(default)]
    pub period: BudgetPeriod,
    /// The IANA time zone whose midnights start the windows (`Europe/Paris`,
    /// `America/New_York`). A zone the operator does not know is reported by the
    /// `BudgetExceeded` condition with reason `InvalidTimeZone`, and nothing is spent.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_+/-]*$"))]
    pub time_zone: String,
}

impl Default for BudgetWindow {
    fn default() -> Self {
        Self {
            period: BudgetPeriod::Day,
            time_zone: default_time_zone(),
        }
    }
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_alert_percent() -> i32 {
    80
}

/// An AgentDeployment's budget: limits per window over all its pods, enforced by their
/// routers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.maxTokens) || has(self.maxCost)").message("a budget needs spec.budget.maxTokens, spec.budget.maxCost or both"))]
pub struct AgentBudget {
    /// Most tokens per window, input and output together (cached input included), over all
    /// the agent's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<i64>,
    /// Most cost per window, in `currency`, priced by the LLMProviders' `spec.pricing`.
    /// Usage of a model without a price counts for its tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"))]
    pub max_cost: Option<String>,
    /// The currency of `maxCost`. Only usage priced in it counts against `maxCost`.
    #[serde(default = "default_currency")]
    #[schemars(length(min = 3, max = 3))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches('{CURRENCY_PATTERN}')")).message("must be an ISO 4217 currency code in capitals, e.g. USD or EUR"))]
    pub currency: String,
    /// The window the limits count over. Defaults to a day in UTC.
    #[serde(default)]
    pub window: BudgetWindow,
    /// The share of a limit, in percent, whose crossing sends a `BudgetAlert` event and sets
    /// the `agent_operator_agent_budget_used_ratio` metric's alert in the chart's rules.
    #[serde(default = "default_alert_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub alert_at_percent: i32,
}

/// Requests and tokens counted by the router from the usage the providers report, and their
/// cost. Cached input tokens are part of `inputTokens`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// Requests a provider answered.
    #[serde(default)]
    pub requests: i64,
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub input_tokens: i64,
    /// Input tokens read from a provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: i64,
    /// Output tokens, reasoning tokens included.
    #[serde(default)]
    pub output_tokens: i64,
    /// `inputTokens` plus `outputTokens`: what `budget.maxTokens` limits.
    #[serde(default)]
    pub total_tokens: i64,
    /// The cost of the priced usage, as a decimal amount in `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// The currency of `cost`: the budget's, or else the first priced provider's. Usage
    /// priced in another currency counts for its tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The usage of one provider and model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    /// The LLMProvider.
    pub provider: String,
    /// The model it was asked for.
    pub model: String,
    #[serde(flatten)]
    pub usage: UsageTotals,
}

/// The usage of one attempt, as its router counted it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptUsage {
    /// The attempt's number, from 1.
    pub attempt: i32,
    #[serde(flatten)]
    pub usage: UsageTotals,
    /// The router refused or cut a request because the budget was spent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub budget_exceeded: bool,
    /// Per provider and model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelUsage>,
}

/// The usage of a task: over all attempts, and per attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskUsage {
    #[serde(flatten)]
    pub total: UsageTotals,
    /// One entry per finished attempt whose router reported its usage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptUsage>,
}

/// What an AgentDeployment spent in its current budget window, and what its pods' routers
/// were leased.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentBudgetStatus {
    /// When the current window began (RFC 3339).
    pub window_start: String,
    /// When it ends and the limits start again (RFC 3339).
    pub window_end: String,
    /// The usage counted in this window; its cost is `costNanos` rounded for display.
    pub usage: UsageTotals,
    /// The exact cost counted in this window, in nano-units of the budget's currency.
    #[serde(default)]
    pub cost_nanos: i64,
    /// Each running pod's router: what of its usage is counted, and how far it may spend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pod"]))]
    pub leases: Vec<PodLease>,
}

/// One pod's router in an AgentDeployment's budget. Its counters are cumulative for the pod,
/// so `counted` is the part of them already in the window's usage: a reading is counted once
/// however often it is read, and across restarts of the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodLease {
    /// The pod's name.
    pub pod: String,
    /// The router's counters as last counted.
    pub counted: RouterCounters,
    /// The counters the router may reach before the next lease: it refuses a request that
    /// could take it past them.
    pub granted: LeasedLimits,
}

/// The allowance leased to a router, in its counters' values; a limit the budget does not set
/// is absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeasedLimits {
    /// The most input plus output tokens the router's counters may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i64>,
    /// The most cost, in nano-units of the budget's currency, they may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nanos: Option<i64>,
}

/// A router's cumulative counters: requests, tokens, and cost in the budget's currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterCounters {
    /// Requests a provider answered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requests: i64,
    /// Input tokens, cached ones included.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_tokens: i64,
    /// Input tokens read from a provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: i64,
    /// Output tokens, reasoning tokens included.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_tokens: i64,
    /// In nano-units of the budget's currency.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cost_nanos: i64,
}

impl RouterCounters {
    pub fn tokens(&self) -> i64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly_and_refuse_what_the_pattern_refuses() {
        assert_eq!(parse_amount("2.50"), Some(2_500_000_000));
        assert_eq!(parse_amount("0.000000001"), Some(1));
        assert_eq!(parse_amount("15"), Some(15 * NANOS_PER_UNIT));
        for bad in ["", ".5", "1.", "1.2.3", "-1", "1e3", "0.0000000001", "1,5"] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
        let pattern = regex::Regex::new(AMOUNT_PATTERN).expect("pattern");
        for text in [
            "2.50",
            "0.000000001",
            "15",
            "",
            ".5",
            "1.",
            "-1",
            "0.0000000001",
        ] {
            assert_eq!(
                pattern.is_match(text),
                parse_amount(text).is_some(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn amounts_display_with_six_decimals_rounding_up() {
        assert_eq!(format_amount(0), "0.000000");
        assert_eq!(format_amount(2_500_000_000), "2.500000");
        assert_eq!(format_amount(1), "0.000001", "a spent amount never shows 0");
    }

    #[test]
    fn cost_is_priced_per_million_tokens() {
        let per_million = parse_amount("0.15").expect("price");
        assert_eq!(cost_of(1_000_000, per_million), per_million);
        assert_eq!(
            cost_of(1, per_million),
            150,
            "0.15 per million is 150 nanos a token"
        );
        assert_eq!(cost_of(u64::MAX, u64::MAX), u64::MAX);
    }
}
