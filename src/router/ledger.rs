//! What the pod has spent, and whether a request may still be sent. Before a request goes out
//! the router reserves what it may cost at most (its prompt estimated from its size, and its
//! `max_tokens`); a request that does not fit beside what is spent and reserved is refused. A
//! stream may use what it reserved; past that, it goes on only while the budget has room. The
//! answer's reported usage then replaces the reservation.
//!
//! [`Book`] is the arithmetic, pure and unit-tested; [`Ledger`] shares it between requests and
//! writes the [`UsageReport`] after each change to where the operator reads it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::anthropic::DEFAULT_MAX_TOKENS;
use super::usage::Usage;
use crate::api::budget::{Pricing, cost_of, format_amount, parse_amount};
use crate::resources::budget_lease::{Grant, GrantMode, LeaseReading, LeaseRequest, Refused};
use crate::resources::provider_config::Allowance;
use crate::resources::usage_report::{MAX_MODELS, ModelTally, Tally, UsageReport};

/// Bytes of request body counted as one prompt token. Real prompts average about four bytes
/// of text per token; the JSON around them makes this an overestimate, which is the safe side.
pub const BYTES_PER_TOKEN: u64 = 4;

/// A model's prices in nano-units per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
}

impl Rates {
    /// The cost of an answer's usage, each kind of token at its price.
    pub fn cost(&self, usage: &Usage) -> u64 {
        [
            cost_of(usage.uncached_prompt(), self.input),
            cost_of(usage.cache_read, self.cached_input),
            cost_of(usage.cache_write, self.cache_write),
            cost_of(usage.completion, self.output),
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }
}

/// A provider's prices, parsed once when the config is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceList {
    pub currency: String,
    models: Vec<(String, Rates)>,
}

impl PriceList {
    /// The prices the schema admitted; a price that does not parse leaves its model unpriced.
    pub fn of(pricing: &Pricing) -> Self {
        let models = pricing
            .models
            .iter()
            .filter_map(|price| {
                let input = parse_amount(&price.input)?;
                let optional = |text: &Option<String>| match text {
                    Some(text) => parse_amount(text),
                    None => Some(input),
                };
                Some((
                    price.model.clone(),
                    Rates {
                        input,
                        output: parse_amount(&price.output)?,
                        cached_input: optional(&price.cached_input)?,
                        cache_write: optional(&price.cache_write)?,
                    },
                ))
            })
            .collect();
        Self {
            currency: pricing.currency.clone(),
            models,
        }
    }

    pub fn rates(&self, model: &str) -> Option<&Rates> {
        self.models
            .iter()
            .find(|(name, _)| name == model)
            .map(|(_, rates)| rates)
    }
}

/// What a request may cost at most, held while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// In the allowance's currency; 0 without prices.
    pub cost_nanos: u64,
}

impl Estimate {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The most a request can cost: its body's size in tokens, and `max_tokens` (or the router's
/// default when the agent sets none) for each of its `n` choices, at `rates` when priced.
pub fn estimate(
    request: &Map<String, Value>,
    body_bytes: usize,
    rates: Option<&Rates>,
) -> Estimate {
    let input_tokens = u64::try_from(body_bytes)
        .unwrap_or(u64::MAX)
        .div_ceil(BYTES_PER_TOKEN);
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|name| request.get(*name).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let choices = request.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    let output_tokens = max_tokens.saturating_mul(choices);
    let cost_nanos = rates.map_or(0, |rates| {
        cost_of(input_tokens, rates.input).saturating_add(cost_of(output_tokens, rates.output))
    });
    Estimate {
        input_tokens,
        output_tokens,
        cost_nanos,
    }
}

/// The pod's allowance, and the prices a request's reservation was estimated at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub allowance: Allowance,
    pub rates: Option<Rates>,
}

/// Why a request may not be sent or go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spent {
    Tokens {
        limit: u64,
        used: u64,
        needed: u64,
    },
    Cost {
        limit: u64,
        used: u64,
        needed: u64,
        currency: String,
    },
}

impl Spent {
    /// The agent's error message: what the limit is, what is used, and what to do.
    pub fn describe(&self) -> String {
        match self {
            Spent::Tokens {
                limit,
                used,
                needed,
            } => format!(
                "the token budget is spent: {used} of {limit} tokens used or held by requests in flight, and this request may need {needed} (its prompt and max_tokens); lower max_tokens or raise the budget"
            ),
            Spent::Cost {
                limit,
                used,
                needed,
                currency,
            } => format!(
                "the cost budget is spent: {} of {} {currency} used or held by requests in flight, and this request may cost {}; lower max_tokens or raise the budget",
                format_amount(*used),
                format_amount(*limit),
                format_amount(*needed),
            ),
        }
    }
}

/// The arithmetic of spending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    pub report: UsageReport,
    /// Held by requests in flight.
    reserved: Estimate,
    /// The most a refused request needed, since the last lease.
    largest_refused: Refused,
}

impl Book {
    pub fn from_report(report: UsageReport) -> Self {
        Self {
            report,
            reserved: Estimate::default(),
            largest_refused: Refused::default(),
        }
    }

    fn refused(&mut self, needed: Estimate) {
        self.report.refused = self.report.refused.saturating_add(1);
        self.largest_refused = Refused {
            tokens: self.largest_refused.tokens.max(needed.tokens()),
            cost_nanos: self.largest_refused.cost_nanos.max(needed.cost_nanos),
        };
    }

    /// What the operator's lease call reads, with the allowance now in force.
    fn reading(&self, allowance: Option<Allowance>) -> LeaseReading {
        LeaseReading {
            usage: self.report.total,
            reserved: Refused {
                tokens: self.reserved.tokens(),
                cost_nanos: self.reserved.cost_nanos,
            },
            allowance,
            currency: self.report.currency.clone(),
            largest_refused: self.largest_refused,
        }
    }

    /// The allowance `grant` makes of `current` (`None` before the first grant).
    fn allowance_after(&self, current: Option<&Allowance>, grant: &Grant) -> Allowance {
        let cost_used = if self.report.currency.as_deref() == Some(grant.currency.as_str()) {
            self.report.total.cost_nanos
        } else {
            0
        };
        let held_tokens = self
            .report
            .total
            .tokens()
            .saturating_add(self.reserved.tokens());
        let held_cost = cost_used.saturating_add(self.reserved.cost_nanos);
        let apply = |current: Option<u64>, held: u64, room: u64| match (grant.mode, current) {
            (GrantMode::Add, Some(current)) => current.saturating_add(room),
            (GrantMode::Add, None) => held.saturating_add(room),
            (GrantMode::Limit, Some(current)) => current.min(held.saturating_add(room)),
            (GrantMode::Limit, None) => held.saturating_add(room),
        };
        Allowance {
            max_tokens: grant
                .tokens
                .map(|room| apply(current.and_then(|a| a.max_tokens), held_tokens, room)),
            max_cost_nanos: grant
                .cost_nanos
                .map(|room| apply(current.and_then(|a| a.max_cost_nanos), held_cost, room)),
            currency: grant.currency.clone(),
        }
    }

    /// Cost counted against `allowance`: only that priced in its currency.
    fn cost_used(&self, allowance: &Allowance) -> u64 {
        if self.report.currency.as_deref() == Some(allowance.currency.as_str()) {
            self.report.total.cost_nanos
        } else {
            0
        }
    }

    /// Whether `extra` more fits beside what is spent and held.
    fn check(&self, allowance: &Allowance, extra: Estimate) -> Result<(), Spent> {
        if let Some(limit) = allowance.max_tokens {
            let used = self
                .report
                .total
                .tokens()
                .saturating_add(self.reserved.tokens());
            if used.saturating_add(extra.tokens()) > limit {
                return Err(Spent::Tokens {
                    limit,
                    used,
                    needed: extra.tokens(),
                });
            }
        }
        if let Some(limit) = allowance.max_cost_nanos {
            let used = self
                .cost_used(allowance)
                .saturating_add(self.reserved.cost_nanos);
            if used.saturating_add(extra.cost_nanos) > limit {
                return Err(Spent::Cost {
                    limit,
                    used,
                    needed: extra.cost_nanos,
                    currency: allowance.currency.clone(),
                });
            }
        }
        Ok(())
    }

    /// Holds `estimate` for a request, or refuses it.
    pub fn admit(
        &mut self,
        allowance: Option<&Allowance>,
        estimate: Estimate,
    ) -> Result<(), Spent> {
        if let Some(allowance) = allowance {
            if allowance.max_cost_nanos.is_some() && self.report.currency.is_none() {
                // The report counts cost in the budget's currency, whatever is priced first.
                self.report.currency = Some(allowance.currency.clone());
            }
            if let Err(spent) = self.check(allowance, estimate) {
                self.refused(estimate);
                return Err(spent);
            }
        }
        self.reserved = add(self.reserved, estimate);
        Ok(())
    }

    /// Whether a stream that reserved `held` may go on after `streamed` output tokens: always
    /// within its reservation, and past it while the budget has room for the excess.
    pub fn may_stream(
        &mut self,
        allowance: Option<&Allowance>,
        held: Estimate,
        streamed: u64,
        rates: Option<&Rates>,
    ) -> Result<(), Spent> {
        let (Some(allowance), Some(excess)) = (allowance, streamed.checked_sub(held.output_tokens))
        else {
            return Ok(());
        };
        let extra = Estimate {
            input_tokens: 0,
            output_tokens: excess,
            cost_nanos: rates.map_or(0, |r| cost_of(excess, r.output)),
        };
        self.check(allowance, extra)
            .inspect_err(|_| self.refused(extra))
    }

    /// Replaces a request's reservation by its reported usage. `cost` is in `currency`.
    pub fn settle(
        &mut self,
        held: Estimate,
        provider: &str,
        model: &str,
        usage: &Usage,
        cost: Option<(&str, u64)>,
    ) {
        self.release(held);
        let counted_cost = match cost {
            Some((currency, nanos)) => match &self.report.currency {
                Some(ours) if ours != currency => 0,
                Some(_) => nanos,
                None => {
                    self.report.currency = Some(currency.to_string());
                    nanos
                }
            },
            None => 0,
        };
        let tally = Tally {
            requests: 1,
            input_tokens: usage.prompt,
            cached_input_tokens: usage.cache_read,
            output_tokens: usage.completion,
            cost_nanos: counted_cost,
        };
        self.report.total.add(&tally);
        let models = &mut self.report.models;
        if let Some(existing) = models
            .iter_mut()
            .find(|m| m.provider == provider && m.model == model)
        {
            existing.tally.add(&tally);
        } else if models.len() < MAX_MODELS {
            models.push(ModelTally {
                provider: provider.to_string(),
                model: model.to_string(),
                tally,
            });
        }
    }

    /// Frees a reservation whose request got no answer.
    pub fn release(&mut self, held: Estimate) {
        self.reserved = Estimate {
            input_tokens: self.reserved.input_tokens.saturating_sub(held.input_tokens),
            output_tokens: self
                .reserved
                .output_tokens
                .saturating_sub(held.output_tokens),
            cost_nanos: self.reserved.cost_nanos.saturating_sub(held.cost_nanos),
        };
    }
}

fn add(a: Estimate, b: Estimate) -> Estimate {
    Estimate {
        input_tokens: a.input_tokens.saturating_add(b.input_tokens),
        output_tokens: a.output_tokens.saturating_add(b.output_tokens),
        cost_nanos: a.cost_nanos.saturating_add(b.cost_nanos),
    }
}

/// The shortest time between two writes of the report while requests are answered.
pub const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Where the report is written: the usage volume's file, renamed into place so a reader
/// never sees half of it, and the termination message, which the kubelet reads when the
/// router stops.
#[derive(Clone, Debug, Default)]
pub struct ReportFiles {
    pub usage_file: Option<PathBuf>,
    pub termination_log: Option<PathBuf>,
}

/// The allowance of a pod whose router is leased its budget by the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Leased {
    /// Nothing is leased: the config's allowance, if any, limits the pod.
    #[default]
    NotLeased,
    /// The router waits for its first lease, and refuses until then.
    Waiting,
    Granted {
        allowance: Allowance,
        /// The call that granted it, for what a refusal tells the agent.
        terms: LeaseRequest,
    },
}

impl Leased {
    /// What limits a request: the config's allowance, the lease's, or nothing at all while
    /// the router waits for its first grant.
    pub fn allowance(&self, configured: Option<&Allowance>) -> Option<Allowance> {
        match self {
            Leased::NotLeased => configured.cloned(),
            Leased::Waiting => Some(Allowance {
                max_tokens: Some(0),
                max_cost_nanos: None,
                currency: String::new(),
            }),
            Leased::Granted { allowance, .. } => Some(allowance.clone()),
        }
    }
}

/// The book shared by the requests of the pod, and its writer.
pub struct Ledger {
    book: Mutex<Book>,
    files: ReportFiles,
    changed: tokio::sync::Notify,
    lease: Mutex<Leased>,
    /// Set once the last request has finished: the next lease call reads the final counters.
    stopping: std::sync::atomic::AtomicBool,
    final_read: tokio::sync::Notify,
    /// Held from taking a report to writing it: a periodic write that read the report before
    /// the last request, and reached the disk after the write at shutdown, left the older
    /// report as the termination message (found under CI load: a refusal went uncounted).
    writing: Mutex<()>,
}

impl Ledger {
    /// Starts from the report a previous router of this pod left, so a restart neither loses
    /// nor repeats what was spent.
    pub fn open(files: ReportFiles) -> Self {
        let report = files
            .usage_file
            .as_deref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| UsageReport::parse(&text))
            .unwrap_or_default();
        Self {
            book: Mutex::new(Book::from_report(report)),
            files,
            changed: tokio::sync::Notify::new(),
            lease: Mutex::new(Leased::NotLeased),
            stopping: std::sync::atomic::AtomicBool::new(false),
            final_read: tokio::sync::Notify::new(),
            writing: Mutex::new(()),
        }
    }

    /// Waits, at most `patience`, for the operator to read the counters as the router stops
    /// with them: what the pod spent since the last lease round is then counted, not lost with
    /// the pod. Called after the last request finished.
    pub async fn await_final_read(&self, patience: std::time::Duration) -> bool {
        let read = self.final_read.notified();
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(patience, read).await.is_ok()
    }

    /// Makes the pod's spending wait for the operator's lease.
    pub fn expect_lease(&self) {
        *self.lease_state() = Leased::Waiting;
    }

    fn lease_state(&self) -> std::sync::MutexGuard<'_, Leased> {
        self.lease
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn leased(&self) -> Leased {
        self.lease_state().clone()
    }

    /// Answers the operator's lease call: applies its grant, if it brings one, and reads the
    /// counters, under one lock so that no request falls between the two.
    pub fn lease(&self, request: LeaseRequest) -> LeaseReading {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut state = self.lease_state();
        let current = match &*state {
            Leased::Granted { allowance, .. } => Some(allowance.clone()),
            _ => None,
        };
        // A call without a grant only reads: the terms stay those of the last grant.
        if let Some(grant) = &request.grant {
            if grant.cost_nanos.is_some() && book.report.currency.is_none() {
                // Cost is counted in the budget's currency, whatever is priced first.
                book.report.currency = Some(grant.currency.clone());
            }
            let allowance = book.allowance_after(current.as_ref(), grant);
            book.largest_refused = Refused::default();
            *state = Leased::Granted {
                allowance,
                terms: request,
            };
        }
        let allowance = match &*state {
            Leased::Granted { allowance, .. } => Some(allowance.clone()),
            _ => None,
        };
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // `notify_one` keeps the permit if the waiter is not polled yet.
            self.final_read.notify_one();
        }
        book.reading(allowance)
    }

    /// Runs `f` on the book, and has the report written when `f` changed it.
    pub fn with<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = (book.report.total, book.report.refused);
        let result = f(&mut book);
        if (book.report.total, book.report.refused) != before {
            self.changed.notify_one();
        }
        result
    }

    pub fn report(&self) -> UsageReport {
        self.with(|book| book.report.clone())
    }

    /// Writes the report after a change, at most once per `WRITE_INTERVAL`: the changes of a
    /// busy pod are written together. A router killed outright (SIGKILL, an OOM kill) loses
    /// at most that interval's usage; one that is stopped writes everything (see `write`).
    pub async fn write_changes(self: Arc<Self>) {
        loop {
            self.changed.notified().await;
            let ledger = self.clone();
            let _ = tokio::task::spawn_blocking(move || ledger.write()).await;
            tokio::time::sleep(WRITE_INTERVAL).await;
        }
    }

    /// Writes the report now (at startup, and at shutdown after the last request).
    pub fn write(&self) {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let json = match serde_json::to_string(&self.report()) {
            Ok(json) => json,
            Err(_) => return,
        };
        if let Some(path) = &self.files.usage_file
            && let Err(error) = write_atomically(path, &json)
        {
            tracing::warn!(path = %path.display(), %error, "cannot write the usage report");
        }
        if let Some(path) = &self.files.termination_log
            && let Err(error) = std::fs::write(path, &json)
        {
            tracing::warn!(path = %path.display(), %error, "cannot write the termination message");
        }
    }
}

fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, content)?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::budget::ModelPrice;
    use serde_json::json;

    fn tokens(max_tokens: u64) -> Allowance {
        Allowance {
            max_tokens: Some(max_tokens),
            max_cost_nanos: None,
            currency: "USD".into(),
        }
    }

    fn request(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    fn usage(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt,
            completion,
            ..Usage::default()
        }
    }

    #[test]
    fn a_request_reserves_its_size_and_max_tokens_for_each_choice() {
        let body = request(json!({"messages": [], "max_tokens": 100, "n": 2}));
        let rates = Rates {
            input: 1_000_000_000,
            output: 2_000_000_000,
            ..Rates::default()
        };
        let estimate = estimate(&body, 401, Some(&rates));
        assert_eq!((estimate.input_tokens, estimate.output_tokens), (101, 200));
        assert_eq!(estimate.cost_nanos, 101 * 1_000 + 200 * 2_000);
        let unbounded = super::estimate(&request(json!({"messages": []})), 0, None);
        assert_eq!(unbounded.output_tokens, DEFAULT_MAX_TOKENS);
        let reasoning = request(json!({"max_completion_tokens": 7, "max_tokens": 9}));
        assert_eq!(super::estimate(&reasoning, 0, None).output_tokens, 7);
    }

    #[test]
    fn a_request_that_cannot_fit_beside_spent_and_held_tokens_is_refused() {
        let allowance = tokens(1_000);
        let mut book = Book::default();
        let first = Estimate {
            input_tokens: 100,
            output_tokens: 500,
            cost_nanos: 0,
        };
        book.admit(Some(&allowance), first).expect("fits");
        let second = Estimate {
            input_tokens: 100,
            output_tokens: 400,
            ..first
        };
        let refused = book
            .admit(Some(&allowance), second)
            .expect_err("600 held + 500 > 1000");
        assert_eq!(
            refused,
            Spent::Tokens {
                limit: 1_000,
                used: 600,
                needed: 500
            }
        );
        assert_eq!(book.report.refused, 1);
        // The first answer used less than it held: its reservation gives way to its usage.
        book.settle(first, "openai", "gpt", &usage(90, 10), None);
        book.admit(Some(&allowance), second)
            .expect("100 used + 500 fits");
        assert!(
            book.admit(None, second).is_ok(),
            "no allowance limits nothing"
        );
    }

    #[test]
    fn a_stream_keeps_its_reservation_and_goes_past_it_only_while_there_is_room() {
        let allowance = tokens(100);
        let mut book = Book::default();
        let held = Estimate {
            input_tokens: 10,
            output_tokens: 50,
            cost_nanos: 0,
        };
        book.admit(Some(&allowance), held).expect("fits");
        assert!(book.may_stream(Some(&allowance), held, 50, None).is_ok());
        assert!(
            book.may_stream(Some(&allowance), held, 90, None).is_ok(),
            "60 held + 40 more"
        );
        assert!(book.may_stream(Some(&allowance), held, 91, None).is_err());
        assert_eq!(book.report.refused, 1, "a cut stream counts as refused");
    }

    #[test]
    fn cost_counts_against_a_budget_only_in_its_currency() {
        let allowance = Allowance {
            max_tokens: None,
            max_cost_nanos: Some(1_000),
            currency: "USD".into(),
        };
        let mut book = Book::default();
        let held = Estimate::default();
        book.settle(held, "a", "m", &usage(1, 1), Some(("USD", 900)));
        book.settle(held, "b", "m", &usage(1, 1), Some(("EUR", 5_000)));
        assert_eq!(book.report.total.cost_nanos, 900);
        assert_eq!(
            book.report.total.tokens(),
            4,
            "tokens count whatever the currency"
        );
        let small = Estimate {
            cost_nanos: 100,
            ..Estimate::default()
        };
        book.admit(Some(&allowance), small).expect("900 + 100 fits");
        assert!(matches!(
            book.admit(Some(&allowance), small),
            Err(Spent::Cost { used: 1_000, .. })
        ));
    }

    #[test]
    fn models_past_the_report_limit_count_in_the_totals_only() {
        let mut book = Book::default();
        for n in 0..MAX_MODELS + 2 {
            book.settle(
                Estimate::default(),
                "p",
                &format!("m{n}"),
                &usage(1, 0),
                None,
            );
        }
        assert_eq!(book.report.models.len(), MAX_MODELS);
        assert_eq!(book.report.total.requests, MAX_MODELS as u64 + 2);
    }

    #[test]
    fn prices_cover_each_kind_of_token_with_cache_prices_defaulting_to_input() {
        let list = PriceList::of(&Pricing {
            currency: "USD".into(),
            models: vec![ModelPrice {
                model: "claude".into(),
                input: "3".into(),
                output: "15".into(),
                cached_input: Some("0.30".into()),
                cache_write: None,
            }],
        });
        let rates = *list.rates("claude").expect("priced");
        assert_eq!(rates.cache_write, rates.input);
        let usage = Usage {
            prompt: 1_000_000 + 2_000_000 + 1_000_000,
            completion: 1_000_000,
            cache_read: 2_000_000,
            cache_write: 1_000_000,
        };
        // 1M uncached at 3, 2M read at 0.30, 1M written at 3, 1M out at 15.
        assert_eq!(
            rates.cost(&usage),
            (3 + 15) * 1_000_000_000 + 600_000_000 + 3_000_000_000
        );
        assert!(list.rates("gpt").is_none());
    }

    #[test]
    fn a_restarted_router_continues_from_the_report_on_its_volume() {
        let dir = std::env::temp_dir().join(format!("ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let files = ReportFiles {
            usage_file: Some(dir.join("usage.json")),
            termination_log: Some(dir.join("termination-log")),
        };
        let ledger = Ledger::open(files.clone());
        ledger.with(|book| book.settle(Estimate::default(), "a", "m", &usage(3, 4), None));
        ledger.write();
        let again = Ledger::open(files);
        assert_eq!(again.report().total.tokens(), 7);
        let message = std::fs::read_to_string(dir.join("termination-log")).expect("message");
        assert_eq!(UsageReport::parse(&message), Some(again.report()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
