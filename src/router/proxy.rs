//! One request from the agent, carried along the failover chain: skip providers whose circuit
//! is open or whose `Retry-After` holds them, wait a bounded time for room under their limits,
//! send, and move on after a connection error, a timeout, a 5xx, a 429, an error streamed
//! before any content, or a refusal caused only by translating the request to another API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};

use super::answer;
use super::client::{self, ProviderClient, ProviderResponse, SendError};
use super::config::{Snapshot, Upstream};
use super::failover::{Admission, Circuit, CircuitSettings, Failure, SkipReason, Verdict, verdict};
use super::ledger::{self, Estimate, Ledger, Rates};
use super::limits::{LimitSettings, Limits};
use super::metrics::RouterMetrics;
use super::stream::{self, StreamContext};
use super::telemetry::{RequestRecord, Telemetry};
use super::upstream::{Dialect, Inbound, Outbound, outbound};
use super::usage::Usage;
use crate::providers::probe::parse_retry_after;
use crate::resources::provider_config::RouterSettings;

/// The router's state: the current snapshot of the mounted files, and per provider its circuit
/// and limits, which outlive reloads.
pub struct Router {
    snapshot: RwLock<Arc<Snapshot>>,
    providers: Mutex<HashMap<String, Arc<ProviderState>>>,
    http: ProviderClient,
    pub metrics: RouterMetrics,
    /// What the pod spent, and its budget's reservations.
    pub ledger: Arc<Ledger>,
    /// Spans and GenAI metrics, when an OTLP endpoint is set.
    pub telemetry: Option<Telemetry>,
    /// Longest wait for room under a provider's limits.
    limit_wait: Duration,
}

struct ProviderState {
    circuit: Mutex<Circuit>,
    limits: Limits,
}

impl Router {
    pub fn new(
        snapshot: Snapshot,
        http: ProviderClient,
        metrics: RouterMetrics,
        ledger: Arc<Ledger>,
        telemetry: Option<Telemetry>,
        limit_wait: Duration,
    ) -> Self {
        Self {
            snapshot: RwLock::new(Arc::new(snapshot)),
            providers: Mutex::new(HashMap::new()),
            http,
            metrics,
            ledger,
            telemetry,
            limit_wait,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Swaps in a new snapshot, forgetting the circuits it invalidates. Requests in flight keep
    /// the snapshot they started with.
    pub fn replace(&self, snapshot: Snapshot) {
        let mut current = self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let invalidated = super::config::invalidated_circuits(&current, &snapshot);
        if !invalidated.is_empty() {
            let providers = self
                .providers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // The limits stay: they count this pod's requests, which no config change undoes.
            for state in invalidated.iter().filter_map(|name| providers.get(name)) {
                self.with_circuit(state, |circuit| *circuit = Circuit::default());
            }
            tracing::info!(providers = %invalidated.join(","), "reset the circuits a config change invalidated");
        }
        *current = Arc::new(snapshot);
    }

    fn state(&self, upstream: &Upstream) -> Arc<ProviderState> {
        let settings = LimitSettings {
            requests_per_minute: upstream
                .api
                .requests_per_minute
                .and_then(|n| u32::try_from(n).ok()),
            max_concurrent_requests: upstream
                .api
                .max_concurrent_requests
                .and_then(|n| u32::try_from(n).ok()),
        };
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match providers.get(&upstream.name) {
            Some(state) if state.limits.settings() == settings => state.clone(),
            existing => {
                let circuit = existing
                    .map(|s| s.circuit.lock().map(|c| c.clone()).unwrap_or_default())
                    .unwrap_or_default();
                let state = Arc::new(ProviderState {
                    circuit: Mutex::new(circuit),
                    limits: Limits::new(settings),
                });
                providers.insert(upstream.name.clone(), state.clone());
                state
            }
        }
    }

    fn with_circuit<T>(&self, state: &ProviderState, f: impl FnOnce(&mut Circuit) -> T) -> T {
        let mut circuit = state
            .circuit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut circuit)
    }
}

/// What became of one request, for its log line and metrics.
pub struct Report {
    started: Instant,
    /// Time spent awaiting providers (connecting, sending, their bytes) and the agent's reading
    /// of a stream: what is not the router's own time.
    pub waited: Duration,
    stream: bool,
    api: Dialect,
    model: String,
    attempts: Vec<(String, &'static str)>,
    /// The router's class of an error it answered itself.
    class: Option<&'static str>,
    /// What the span and the GenAI metrics say; `None` without telemetry.
    record: Option<Box<RequestRecord>>,
}

impl Report {
    fn failed(&mut self, router: &Router, provider: &str, failure: Failure) {
        router
            .metrics
            .failovers
            .with_label_values(&[provider, failure.label()])
            .inc();
        self.attempts.push((provider.to_string(), failure.label()));
        if let Some(record) = &mut self.record {
            record
                .failovers
                .push((SystemTime::now(), provider.to_string(), failure.label()));
        }
    }

    /// Notes the provider that answered (or refused), and what its answer says of itself.
    pub fn answered(&mut self, upstream: &Upstream, facts: Option<answer::Facts>) {
        let Some(record) = &mut self.record else {
            return;
        };
        record.provider = Some(upstream.answerer.clone());
        record.response_model = upstream.model.clone();
        if let Some(facts) = facts {
            self.streamed(facts);
        }
    }

    /// What a stream's events said of the answer, once it ended.
    pub fn streamed(&mut self, facts: answer::Facts) {
        if let Some(record) = &mut self.record {
            record.response_model = facts.model.or(record.response_model.take());
            record.response_id = facts.id;
            record.finish_reasons = facts.finish_reasons;
        }
    }

    /// Counts and logs an error the router answered itself, of class `class`.
    fn router_error(&mut self, router: &Router, class: &'static str, status: u16) {
        router.metrics.errors.with_label_values(&[class]).inc();
        self.class = Some(class);
        self.log(router, "none", status, &Usage::default());
    }

    /// Whether the span wants the answer's id, model and finish reasons.
    pub fn traced(&self) -> bool {
        self.record.is_some()
    }

    fn attempts_text(&self) -> String {
        self.attempts
            .iter()
            .map(|(p, class)| format!("{p}:{class}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The one log line per request: never the prompt, the answer or a key.
    pub fn log(&mut self, router: &Router, provider: &str, status: u16, usage: &Usage) {
        let outcome = match status {
            200..=299 => "success",
            400..=499 if provider != "none" => "client_error",
            _ => "error",
        };
        router
            .metrics
            .requests
            .with_label_values(&[provider, &self.model, outcome])
            .inc();
        let elapsed = self.started.elapsed();
        router
            .metrics
            .duration
            .with_label_values(&[provider])
            .observe(elapsed.as_secs_f64());
        router
            .metrics
            .overhead
            .with_label_values(&[provider])
            .observe(elapsed.saturating_sub(self.waited).as_secs_f64());
        if let (Some(telemetry), Some(mut record)) = (&router.telemetry, self.record.take()) {
            record.duration = elapsed;
            record.status = status;
            record.input_tokens = usage.prompt;
            record.output_tokens = usage.completion;
            record.cached_input_tokens = usage.cache_read;
            if !(200..300).contains(&status) {
                record.error = Some(
                    self.class
                        .map(str::to_string)
                        .unwrap_or_else(|| status.to_string()),
                );
            }
            telemetry.record(&record);
        }
        tracing::info!(
            provider,
            api = match self.api {
                Dialect::OpenAI => "chat_completions",
                Dialect::Anthropic => "messages",
            },
            model = %self.model,
            status,
            stream = self.stream,
            attempts = %self.attempts_text(),
            prompt_tokens = usage.prompt,
            completion_tokens = usage.completion,
            cached_prompt_tokens = usage.cache_read,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "llm request"
        );
    }
}

/// Reads the agent's request body: a JSON object with a `messages` array.
pub fn parse_request(body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| format!("the request body is not valid JSON: {error}"))?;
    let Value::Object(request) = value else {
        return Err("the request body must be a JSON object".into());
    };
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err("'messages' must be an array of messages".into());
    }
    Ok(request)
}

/// Serves one request of the agent's, in its API (`POST /v1/chat/completions` or
/// `POST /v1/messages`).
pub async fn serve(router: Arc<Router>, inbound: Inbound) -> Response {
    let started = Instant::now();
    let snapshot = router.snapshot();
    let settings = &snapshot.settings;
    let deadline = started + settings.request_timeout.as_std();
    let circuit = CircuitSettings {
        failure_threshold: settings.circuit_failure_threshold,
        open_duration: settings.circuit_open_duration.as_std(),
        trial_timeout: settings.request_timeout.as_std(),
    };
    let request = &inbound.body;
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut report = Report {
        started,
        waited: Duration::ZERO,
        stream,
        api: inbound.dialect,
        record: router.telemetry.as_ref().map(|_| {
            let sampling = settings.trace_sampling_percent;
            Box::new(RequestRecord::of(&inbound, &model, sampling))
        }),
        model,
        attempts: Vec::new(),
        class: None,
    };
    if snapshot.upstreams.is_empty() {
        report.router_error(&router, "no_provider", 503);
        return answer::error(
            inbound.dialect,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_provider",
            "no usable LLM provider is configured for this agent",
        );
    }
    let held = match Reservation::take(&router, &snapshot, &inbound, &report.model) {
        Ok(held) => held,
        Err(spent) => return budget_refused(&router, inbound.dialect, report, &spent),
    };
    let mut sent = 0;
    let mut soonest_retry: Option<Instant> = None;
    let mut only_busy = true;
    // What opened the circuits of the providers skipped for them.
    let mut circuits_open: Vec<&'static str> = Vec::new();
    let mut untranslatable: Option<String> = None;
    // A refusal by a provider the request reached through translation, kept while the rest
    // of the chain is tried.
    let mut refusal: Option<Response> = None;
    let mut other_failures = false;
    for upstream in &snapshot.upstreams {
        let now = Instant::now();
        if sent >= settings.max_attempts || now >= deadline {
            break;
        }
        let state = router.state(upstream);
        if let Admission::SkipUntil(until) = router.with_circuit(&state, |c| c.admit(now, &circuit))
        {
            soonest_retry = Some(soonest_retry.map_or(until, |s| s.min(until)));
            match router.with_circuit(&state, |c| c.skip_reason(now)) {
                Some(SkipReason::CircuitOpen(failure)) => {
                    only_busy = false;
                    circuits_open.push(failure.label());
                    report
                        .attempts
                        .push((upstream.name.clone(), "circuit_open"));
                }
                _ => report.attempts.push((upstream.name.clone(), "skipped")),
            }
            other_failures = true;
            continue;
        }
        let outbound = match outbound(upstream, &inbound) {
            Ok(outbound) => outbound,
            Err(error) => {
                // Only this provider's API cannot express the request; another's may.
                tracing::debug!(provider = %upstream.name, %error, "request not translatable");
                untranslatable.get_or_insert(format!("{}: {error}", upstream.name));
                report
                    .attempts
                    .push((upstream.name.clone(), "untranslatable"));
                continue;
            }
        };
        let wait = router
            .limit_wait
            .min(deadline.saturating_duration_since(now));
        let admitted = match state.limits.admit(wait).await {
            Ok(admitted) => admitted,
            Err(full) => {
                let until = Instant::now() + full.retry_after;
                soonest_retry = Some(soonest_retry.map_or(until, |s| s.min(until)));
                report.failed(&router, &upstream.name, Failure::LimitReached);
                other_failures = true;
                continue;
            }
        };
        sent += 1;
        let (attempt, waited) = attempt(
            &router,
            upstream,
            &outbound,
            inbound.dialect,
            stream,
            deadline,
            settings,
        )
        .await;
        report.waited += waited;
        match attempt {
            Attempt::Answered(answered) => {
                router.with_circuit(&state, |c| c.succeeded());
                router
                    .metrics
                    .circuit_open
                    .with_label_values(&[&upstream.name])
                    .set(0);
                let model = upstream
                    .model
                    .clone()
                    .unwrap_or_else(|| report.model.clone());
                return match answered {
                    Answered::Whole { body, facts } => {
                        let usage = facts.usage;
                        report.answered(upstream, Some(facts));
                        held.settle(&router, upstream, &model, &usage);
                        report.log(&router, &upstream.name, 200, &usage);
                        drop(admitted);
                        answer::ok(body)
                    }
                    Answered::Stream(opened) => stream::respond(
                        opened,
                        StreamContext {
                            router: router.clone(),
                            provider: upstream.name.clone(),
                            model,
                            report: {
                                report.answered(upstream, None);
                                report
                            },
                            agent: inbound.dialect,
                            provider_dialect: outbound.dialect,
                            include_usage: request
                                .get("stream_options")
                                .and_then(|o| o.get("include_usage"))
                                .and_then(Value::as_bool)
                                == Some(true),
                            strip_usage: outbound.usage_added,
                            idle: settings.stream_idle_timeout.as_std(),
                            deadline,
                            held,
                            upstream: upstream.clone(),
                        },
                        admitted,
                    ),
                };
            }
            Attempt::Refused { status, body } => {
                // The provider is healthy; the request is at fault, or its translation is.
                router.with_circuit(&state, |c| c.succeeded());
                let response =
                    answer::refused(upstream, inbound.dialect, outbound.dialect, status, &body);
                if outbound.dialect != inbound.dialect {
                    // A provider of the agent's own API further down the chain may take what
                    // this one refused after translation (OpenAI's temperature of 1.5, say).
                    report
                        .attempts
                        .push((upstream.name.clone(), "refused_translated"));
                    refusal.get_or_insert(response);
                    continue;
                }
                report.answered(upstream, None);
                report.log(&router, &upstream.name, status.as_u16(), &Usage::default());
                return response;
            }
            Attempt::Failed {
                failure,
                retry_after,
            } => {
                let now = Instant::now();
                other_failures = true;
                only_busy &= matches!(failure, Failure::RateLimited);
                if let Some(pause) = retry_after {
                    router.with_circuit(&state, |c| c.hold(now + pause));
                    let until = now + pause;
                    soonest_retry = Some(soonest_retry.map_or(until, |s| s.min(until)));
                }
                let open = router.with_circuit(&state, |c| {
                    c.failed(now, &circuit, failure);
                    c.is_open(now)
                });
                router
                    .metrics
                    .circuit_open
                    .with_label_values(&[&upstream.name])
                    .set(i64::from(open));
                report.failed(&router, &upstream.name, failure);
            }
        }
    }
    if !other_failures {
        // Every provider tried refused the request or could not express it: that is the
        // answer, not a failure of the chain.
        if let Some(refusal) = refusal {
            report.log(
                &router,
                "none",
                refusal.status().as_u16(),
                &Usage::default(),
            );
            return refusal;
        }
        if let Some(reason) = untranslatable {
            report.router_error(&router, "untranslatable", 400);
            return answer::error(
                inbound.dialect,
                StatusCode::BAD_REQUEST,
                "untranslatable",
                &format!("no provider of the chain can express this request ({reason})"),
            );
        }
    }
    let circuits_only = sent == 0 && !circuits_open.is_empty();
    exhausted(
        &router,
        inbound.dialect,
        report,
        deadline,
        soonest_retry,
        only_busy,
        circuits_only.then_some(circuits_open),
    )
}

/// The answer when no provider answered.
fn exhausted(
    router: &Router,
    dialect: Dialect,
    report: Report,
    deadline: Instant,
    soonest_retry: Option<Instant>,
    only_busy: bool,
    circuits_open: Option<Vec<&'static str>>,
) -> Response {
    let tried = report.attempts_text();
    let (status, class, message) = if let Some(causes) = circuits_open {
        // Not a rate limit: the providers failed (5xx, refused keys, timeouts) until their
        // circuits opened, and none is tried again before its next trial.
        let mut causes = causes;
        causes.sort_unstable();
        causes.dedup();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            format!(
                "every provider's circuit is open after repeated failures ({}; tried {tried}); the next one is tried after Retry-After",
                causes.join(", ")
            ),
        )
    } else if Instant::now() >= deadline {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "deadline",
            format!("no provider answered within the request timeout (tried {tried})"),
        )
    } else if only_busy && soonest_retry.is_some() {
        (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("every provider is rate-limited or at its limits (tried {tried})"),
        )
    } else {
        (
            StatusCode::BAD_GATEWAY,
            "all_failed",
            format!("every provider of the chain failed (tried {tried})"),
        )
    };
    let mut report = report;
    report.router_error(router, class, status.as_u16());
    let mut response = answer::error(dialect, status, class, &message);
    if let Some(until) = soonest_retry {
        let seconds = until
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            .ceil()
            .max(1.0);
        if let Ok(value) = HeaderValue::from_str(&format!("{seconds}")) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// What a request holds of the pod's budget while it runs. Dropped unsettled (no answer), it
/// gives the reservation back.
pub struct Reservation {
    ledger: Arc<Ledger>,
    estimate: Estimate,
    /// `None` when nothing limits the pod: then nothing is held or checked.
    allowance: Option<ledger::Limit>,
    settled: bool,
}

impl Reservation {
    /// Holds what the request may cost at most, or says why it may not be sent. Its cost is
    /// estimated at the dearest prices of the chain, since any provider of it may answer.
    fn take(
        router: &Router,
        snapshot: &Snapshot,
        inbound: &Inbound,
        model: &str,
    ) -> Result<Self, ledger::Spent> {
        let ledger = router.ledger.clone();
        let Some(allowance) = ledger.leased().allowance(snapshot.allowance.as_ref()) else {
            return Ok(Self {
                ledger,
                estimate: Estimate::default(),
                allowance: None,
                settled: false,
            });
        };
        let rates = dearest_rates(snapshot, model, &allowance.currency);
        let estimate = ledger::estimate(&inbound.body, inbound.size, rates.as_ref());
        ledger.with(|book| book.admit(Some(&allowance), estimate))?;
        Ok(Self {
            ledger,
            estimate,
            allowance: Some(ledger::Limit { allowance, rates }),
            settled: false,
        })
    }

    /// Counts the answer's usage, in place of the reservation and in the metrics.
    pub fn settle(mut self, router: &Router, upstream: &Upstream, model: &str, usage: &Usage) {
        let cost = upstream.prices.as_ref().and_then(|prices| {
            prices
                .rates(model)
                .map(|rates| (prices.currency.as_str(), rates.cost(usage)))
        });
        let estimate = self.estimate;
        self.ledger
            .with(|book| book.settle(estimate, &upstream.name, model, usage, cost));
        self.settled = true;
        router.metrics.record_tokens(&upstream.name, model, usage);
        if let Some((currency, nanos)) = cost {
            router
                .metrics
                .cost
                .with_label_values(&[&upstream.name, model, currency])
                .inc_by(nanos as f64 / 1e9);
        }
    }

    /// Whether a stream may go on after `streamed` output tokens.
    pub fn may_stream(&self, streamed: u64) -> Result<(), ledger::Spent> {
        let Some(limit) = &self.allowance else {
            return Ok(());
        };
        self.ledger.with(|book| {
            book.may_stream(
                Some(&limit.allowance),
                self.estimate,
                streamed,
                limit.rates.as_ref(),
            )
        })
    }

    /// What was held for the prompt, counted when a cut stream reports no usage.
    pub fn input_estimate(&self) -> u64 {
        self.estimate.input_tokens
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled && self.allowance.is_some() {
            let estimate = self.estimate;
            self.ledger.with(|book| book.release(estimate));
        }
    }
}

/// The highest prices in `currency` of the chain's providers for the model each is asked for.
fn dearest_rates(snapshot: &Snapshot, model: &str, currency: &str) -> Option<Rates> {
    snapshot
        .upstreams
        .iter()
        .filter_map(|upstream| {
            let prices = upstream.prices.as_ref()?;
            (prices.currency == currency)
                .then(|| prices.rates(upstream.model.as_deref().unwrap_or(model)))
                .flatten()
        })
        .copied()
        .max_by_key(|rates| rates.input.saturating_add(rates.output))
}

/// The answer to a request the budget has no room for. When the budget itself is spent,
/// retrying cannot help until it is raised or its window turns, so the SDKs are told not to
/// (`x-should-retry: false`). When only this pod's share of a leased budget is spent, the
/// operator's next lease may bring more: the SDKs are told when to retry.
fn budget_refused(
    router: &Router,
    dialect: Dialect,
    report: Report,
    spent: &ledger::Spent,
) -> Response {
    let mut report = report;
    report.router_error(router, BUDGET_EXCEEDED, 429);
    let (message, retry_after) = match router.ledger.leased() {
        ledger::Leased::NotLeased => (spent.describe(), None),
        ledger::Leased::Waiting => (
            "the agent's budget is leased to its pods by the operator, and this pod has not been leased its share yet; retry shortly".to_string(),
            Some(1),
        ),
        ledger::Leased::Granted { terms, .. } if terms.window_spent => (
            format!(
                "the agent's budget for this window is spent{}; raise spec.budget or wait for the window to turn",
                terms
                    .window_end
                    .as_deref()
                    .map(|end| format!(" until {end}"))
                    .unwrap_or_default()
            ),
            None,
        ),
        ledger::Leased::Granted { terms, .. } => (
            format!(
                "this pod's share of the agent's budget is spent until the operator's next lease: {}",
                spent.describe()
            ),
            Some(terms.retry_after_seconds.max(1)),
        ),
    };
    let mut response = answer::error(
        dialect,
        StatusCode::TOO_MANY_REQUESTS,
        BUDGET_EXCEEDED,
        &message,
    );
    let headers = response.headers_mut();
    match retry_after {
        Some(seconds) => {
            headers.insert("x-should-retry", HeaderValue::from_static("true"));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        None => {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
    }
    response
}

/// The class of the router's budget errors, in responses, stream errors and metrics.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

enum Attempt {
    Answered(Answered),
    Refused {
        status: StatusCode,
        body: Bytes,
    },
    Failed {
        failure: Failure,
        retry_after: Option<Duration>,
    },
}

enum Answered {
    /// A whole answer in the agent's dialect, and what it says of itself.
    Whole { body: Bytes, facts: answer::Facts },
    /// A stream whose first content has arrived.
    Stream(stream::Opened),
}

fn failed(failure: Failure) -> Attempt {
    Attempt::Failed {
        failure,
        retry_after: None,
    }
}

fn transport_failure(error: &SendError) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Unreachable
    }
}

/// Sends one request and waits for its first content (the whole answer when not streamed).
/// Also returns the time spent awaiting the provider.
async fn attempt(
    router: &Router,
    upstream: &Upstream,
    outbound: &Outbound,
    agent: Dialect,
    stream: bool,
    deadline: Instant,
    settings: &RouterSettings,
) -> (Attempt, Duration) {
    let mut waited = Duration::ZERO;
    let attempt = attempt_timed(
        router,
        upstream,
        outbound,
        (agent, stream),
        (deadline, settings),
        &mut waited,
    )
    .await;
    (attempt, waited)
}

async fn attempt_timed(
    router: &Router,
    upstream: &Upstream,
    outbound: &Outbound,
    (agent, stream): (Dialect, bool),
    (deadline, settings): (Instant, &RouterSettings),
    waited: &mut Duration,
) -> Attempt {
    let sent_at = Instant::now();
    let first_byte_by = deadline.min(sent_at + settings.first_byte_timeout.as_std());
    let head = tokio::time::timeout_at(first_byte_by.into(), async {
        let mut response = router.http.send(outbound).await.map_err(|error| {
            tracing::debug!(provider = %upstream.name, %error, "provider not reached");
            transport_failure(&error)
        })?;
        let first = client::next_chunk(response.body_mut())
            .await
            .map_err(|_| Failure::Unreachable)?;
        Ok::<_, Failure>((response, first))
    })
    .await;
    *waited += sent_at.elapsed();
    let (response, first) = match head {
        Err(_) => return failed(Failure::Timeout),
        Ok(Err(failure)) => return failed(failure),
        Ok(Ok(answer)) => answer,
    };
    router
        .metrics
        .time_to_first_byte
        .with_label_values(&[&upstream.name])
        .observe(sent_at.elapsed().as_secs_f64());
    let status = response.status();
    match verdict(status.as_u16()) {
        Verdict::Failover(failure) => Attempt::Failed {
            failure,
            retry_after: response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
        },
        Verdict::ReturnToAgent => {
            match timed(waited, rest_of_body(response, first, deadline)).await {
                Ok(body) => Attempt::Refused {
                    status: StatusCode::from_u16(status.as_u16())
                        .unwrap_or(StatusCode::BAD_REQUEST),
                    body,
                },
                Err(failure) => failed(failure),
            }
        }
        Verdict::Success if stream => {
            let idle = settings.stream_idle_timeout.as_std();
            let opening = stream::open(
                response,
                first,
                outbound.dialect,
                first_byte_by,
                idle,
                deadline,
            );
            match timed(waited, opening).await {
                Ok(opened) => Attempt::Answered(Answered::Stream(opened)),
                Err(failure) => failed(failure),
            }
        }
        Verdict::Success => {
            // Nothing has reached the agent yet: a broken or garbled body still fails over.
            match timed(waited, rest_of_body(response, first, deadline)).await {
                Ok(body) => match answer::whole(agent, outbound.dialect, body) {
                    Some((body, facts)) => Attempt::Answered(Answered::Whole { body, facts }),
                    None => failed(Failure::InvalidResponse),
                },
                Err(failure) => failed(failure),
            }
        }
    }
}

/// Awaits `future`, adding the time it took to `waited`.
async fn timed<T>(waited: &mut Duration, future: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let output = future.await;
    *waited += started.elapsed();
    output
}

async fn rest_of_body(
    mut response: ProviderResponse,
    first: Option<Bytes>,
    deadline: Instant,
) -> Result<Bytes, Failure> {
    let mut body = first.map(|b| b.to_vec()).unwrap_or_default();
    loop {
        match tokio::time::timeout_at(deadline.into(), client::next_chunk(response.body_mut()))
            .await
        {
            Err(_) => return Err(Failure::Timeout),
            // The connection broke mid-answer.
            Ok(Err(_)) => return Err(Failure::Unreachable),
            Ok(Ok(None)) => return Ok(Bytes::from(body)),
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
        }
    }
}
