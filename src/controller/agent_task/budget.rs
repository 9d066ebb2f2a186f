//! A task's spending: the usage of its attempts as their routers reported it, what of
//! `spec.budget` is left for the next attempt, and whether nothing is. Pure.

use super::attempts::{Attempt, Outcome};
use crate::api::budget::{
    AttemptUsage, Budget, TaskUsage, UsageTotals, format_amount, parse_amount,
};
use crate::resources::provider_config::Allowance;

/// The task's usage: what the status recorded, and the attempts that ended since. An attempt
/// is recorded once, by number, so reading its pod again never counts it twice, and the record
/// stays when its Job and pod are gone.
pub fn usage_of(recorded: Option<&TaskUsage>, attempts: &[Attempt]) -> Option<TaskUsage> {
    let mut entries: Vec<AttemptUsage> = recorded.map(|u| u.attempts.clone()).unwrap_or_default();
    for attempt in attempts {
        let ended = !matches!(attempt.outcome, Outcome::Running);
        if let (true, Some(report)) = (ended, &attempt.usage)
            && !entries.iter().any(|e| e.attempt == attempt.number)
        {
            entries.push(report.attempt_usage(attempt.number));
        }
    }
    if entries.is_empty() {
        return None;
    }
    entries.sort_by_key(|e| e.attempt);
    Some(TaskUsage {
        total: sum(entries.iter().map(|e| &e.usage)),
        attempts: entries,
    })
}

fn sum<'a>(all: impl Iterator<Item = &'a UsageTotals>) -> UsageTotals {
    let mut total = UsageTotals::default();
    let mut cost: Option<u64> = None;
    for usage in all {
        total.requests += usage.requests;
        total.input_tokens += usage.input_tokens;
        total.cached_input_tokens += usage.cached_input_tokens;
        total.output_tokens += usage.output_tokens;
        total.total_tokens += usage.total_tokens;
        let priced = usage.cost.as_deref().and_then(parse_amount);
        if let Some(nanos) = priced
            && (total.currency.is_none() || total.currency == usage.currency)
        {
            total.currency = total.currency.take().or_else(|| usage.currency.clone());
            cost = Some(cost.unwrap_or(0).saturating_add(nanos));
        }
    }
    total.cost = cost.map(format_amount);
    total
}

/// What is spent of `budget`, in its terms.
fn spent(budget: &Budget, usage: Option<&TaskUsage>) -> (u64, u64) {
    let Some(total) = usage.map(|u| &u.total) else {
        return (0, 0);
    };
    let tokens = u64::try_from(total.total_tokens).unwrap_or(0);
    let cost = match (&total.cost, &total.currency) {
        (Some(cost), Some(currency)) if *currency == budget.currency => {
            parse_amount(cost).unwrap_or(0)
        }
        _ => 0,
    };
    (tokens, cost)
}

/// What the next attempt's router may spend: the budget less what earlier attempts spent.
pub fn allowance(budget: Option<&Budget>, usage: Option<&TaskUsage>) -> Option<Allowance> {
    let budget = budget?;
    let (tokens, cost) = spent(budget, usage);
    Some(Allowance {
        max_tokens: budget
            .max_tokens
            .map(|max| u64::try_from(max).unwrap_or(0).saturating_sub(tokens)),
        max_cost_nanos: budget
            .max_cost
            .as_deref()
            .and_then(parse_amount)
            .map(|max| max.saturating_sub(cost)),
        currency: budget.currency.clone(),
    })
}

/// Why no further attempt can run, when the budget is spent.
pub fn exhausted(budget: Option<&Budget>, usage: Option<&TaskUsage>) -> Option<String> {
    let budget = budget?;
    let (tokens, cost) = spent(budget, usage);
    if let Some(max) = budget.max_tokens.and_then(|m| u64::try_from(m).ok())
        && tokens >= max
    {
        return Some(format!(
            "{tokens} tokens used of spec.budget.maxTokens {max}"
        ));
    }
    if let Some(max) = budget.max_cost.as_deref().and_then(parse_amount)
        && cost >= max
    {
        return Some(format!(
            "{} {} spent of spec.budget.maxCost {}",
            format_amount(cost),
            budget.currency,
            format_amount(max)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::usage_report::{Tally, UsageReport};

    fn attempt(number: i32, outcome: Outcome, tokens: u64, cost_nanos: u64) -> Attempt {
        Attempt {
            number,
            job_name: format!("t-{number}"),
            pod_name: None,
            provider: None,
            started: None,
            outcome,
            usage: Some(UsageReport {
                total: Tally {
                    requests: 1,
                    input_tokens: tokens / 2,
                    cached_input_tokens: 0,
                    output_tokens: tokens - tokens / 2,
                    cost_nanos,
                },
                currency: Some("USD".into()),
                refused: 0,
                models: Vec::new(),
            }),
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            failure: super::super::attempts::Failure::Timeout,
            finished: None,
        }
    }

    fn budget(max_tokens: Option<i64>, max_cost: Option<&str>) -> Budget {
        Budget {
            max_tokens,
            max_cost: max_cost.map(str::to_string),
            currency: "USD".into(),
        }
    }

    #[test]
    fn ended_attempts_are_recorded_once_and_kept_when_their_pods_are_gone() {
        let attempts = [
            attempt(1, failed(), 100, 2_000),
            attempt(2, Outcome::Running, 50, 0),
        ];
        let usage = usage_of(None, &attempts).expect("usage");
        assert_eq!(
            usage.attempts.len(),
            1,
            "a running attempt is not counted yet"
        );
        assert_eq!(usage.total.total_tokens, 100);
        assert_eq!(usage.total.cost.as_deref(), Some("0.000002"));
        let again = usage_of(Some(&usage), &attempts).expect("usage");
        assert_eq!(again, usage, "read again, counted once");
        let gone = usage_of(Some(&usage), &[]).expect("usage");
        assert_eq!(gone, usage);
        let second = [attempt(2, failed(), 50, 1_000)];
        let both = usage_of(Some(&usage), &second).expect("usage");
        assert_eq!(both.total.total_tokens, 150);
        assert_eq!(both.total.cost.as_deref(), Some("0.000003"));
    }

    #[test]
    fn the_next_attempt_may_spend_what_the_earlier_ones_left() {
        let usage = usage_of(None, &[attempt(1, failed(), 300, 40_000_000)]);
        let allowance =
            allowance(Some(&budget(Some(1_000), Some("0.05"))), usage.as_ref()).expect("allowance");
        assert_eq!(allowance.max_tokens, Some(700));
        assert_eq!(allowance.max_cost_nanos, Some(10_000_000));
        assert_eq!(super::allowance(None, usage.as_ref()), None);
    }

    #[test]
    fn a_spent_budget_says_which_limit_and_by_how_much() {
        let usage = usage_of(None, &[attempt(1, failed(), 1_000, 0)]);
        let message = exhausted(Some(&budget(Some(1_000), None)), usage.as_ref());
        assert_eq!(
            message.as_deref(),
            Some("1000 tokens used of spec.budget.maxTokens 1000")
        );
        assert_eq!(
            exhausted(Some(&budget(Some(1_001), None)), usage.as_ref()),
            None
        );
        let euro = Budget {
            currency: "EUR".into(),
            ..budget(None, Some("0.000001"))
        };
        let priced = usage_of(None, &[attempt(1, failed(), 10, 5_000)]);
        assert_eq!(
            exhausted(Some(&euro), priced.as_ref()),
            None,
            "cost in another currency does not count"
        );
    }
}
