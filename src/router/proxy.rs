//! One chat request from the agent, carried along the failover chain: skip providers whose
//! circuit is open or whose `Retry-After` holds them, wait a bounded time for room under their
//! limits, send, and move on after a connection error, a first-byte timeout, a 5xx or a 429.
//! Once a streamed answer has sent a byte to the agent it is never switched to another provider.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::anthropic::{self, StreamTranslator};
use super::config::{Snapshot, Upstream};
use super::failover::{Admission, Circuit, CircuitSettings, Failure, SkipReason, Verdict, verdict};
use super::limits::{LimitSettings, Limits};
use super::metrics::RouterMetrics;
use super::sse;
use super::upstream::{Dialect, Outbound, outbound};
use crate::providers::probe::parse_retry_after;

/// The router's state: the current snapshot of the mounted files, and per provider its circuit
/// and limits, which outlive reloads.
pub struct Router {
    snapshot: RwLock<Arc<Snapshot>>,
    providers: Mutex<HashMap<String, Arc<ProviderState>>>,
    http: reqwest::Client,
    pub metrics: RouterMetrics,
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
        http: reqwest::Client,
        metrics: RouterMetrics,
        limit_wait: Duration,
    ) -> Self {
        Self {
            snapshot: RwLock::new(Arc::new(snapshot)),
            providers: Mutex::new(HashMap::new()),
            http,
            metrics,
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
struct Report {
    started: Instant,
    stream: bool,
    model: String,
    attempts: Vec<(String, &'static str)>,
}

impl Report {
    fn failed(&mut self, router: &Router, provider: &str, failure: Failure) {
        router
            .metrics
            .failovers
            .with_label_values(&[provider, failure.label()])
            .inc();
        self.attempts.push((provider.to_string(), failure.label()));
    }

    fn attempts_text(&self) -> String {
        self.attempts
            .iter()
            .map(|(p, class)| format!("{p}:{class}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The one log line per request: never the prompt, the answer or a key.
    fn log(&self, router: &Router, provider: &str, status: u16, tokens: (u64, u64)) {
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
        router
            .metrics
            .duration
            .with_label_values(&[provider])
            .observe(self.started.elapsed().as_secs_f64());
        tracing::info!(
            provider,
            model = %self.model,
            status,
            stream = self.stream,
            attempts = %self.attempts_text(),
            prompt_tokens = tokens.0,
            completion_tokens = tokens.1,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "chat completion"
        );
    }
}

/// An error in OpenAI's format, so the agent's SDK shows its message.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": Value::Null}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Reads the agent's request body: a JSON object with a `messages` array.
pub fn parse_request(body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| format!("the request body is not valid JSON: {error}"))?;
    let Value::Object(request) = value else {
        return Err("the request body must be a JSON object".into());
    };
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err("'messages' must be an array of chat messages".into());
    }
    Ok(request)
}

/// Serves `POST /v1/chat/completions`.
pub async fn chat(router: Arc<Router>, request: Map<String, Value>) -> Response {
    let started = Instant::now();
    let snapshot = router.snapshot();
    let settings = &snapshot.settings;
    let deadline = started + settings.request_timeout.as_std();
    let circuit = CircuitSettings {
        failure_threshold: settings.circuit_failure_threshold,
        open_duration: settings.circuit_open_duration.as_std(),
        trial_timeout: settings.request_timeout.as_std(),
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let mut report = Report {
        started,
        stream,
        model: request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        attempts: Vec::new(),
    };
    if snapshot.upstreams.is_empty() {
        router
            .metrics
            .errors
            .with_label_values(&["no_provider"])
            .inc();
        report.log(&router, "none", 503, (0, 0));
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "router_error",
            "no usable LLM provider is configured for this agent",
        );
    }
    let mut sent = 0;
    let mut soonest_retry: Option<Instant> = None;
    let mut only_busy = true;
    // What opened the circuits of the providers skipped for them.
    let mut circuits_open: Vec<&'static str> = Vec::new();
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
            continue;
        }
        let wait = router
            .limit_wait
            .min(deadline.saturating_duration_since(now));
        let admitted = match state.limits.admit(wait).await {
            Ok(admitted) => admitted,
            Err(full) => {
                let until = Instant::now() + full.retry_after;
                soonest_retry = Some(soonest_retry.map_or(until, |s| s.min(until)));
                report.failed(&router, &upstream.name, Failure::LimitReached);
                continue;
            }
        };
        let outbound = match outbound(upstream, &request) {
            Ok(outbound) => outbound,
            Err(error) => {
                // Only this provider's API cannot express the request; another's may.
                tracing::debug!(provider = %upstream.name, %error, "request not translatable");
                report
                    .attempts
                    .push((upstream.name.clone(), "untranslatable"));
                continue;
            }
        };
        sent += 1;
        let attempt = attempt(&router, upstream, &outbound, stream, deadline, settings).await;
        match attempt {
            Attempt::Answered(answer) => {
                router.with_circuit(&state, |c| c.succeeded());
                router
                    .metrics
                    .circuit_open
                    .with_label_values(&[&upstream.name])
                    .set(0);
                return answer.into_response(router.clone(), upstream, report, admitted);
            }
            Attempt::Refused { status, body } => {
                // The provider is healthy; the request is at fault.
                router.with_circuit(&state, |c| c.succeeded());
                report.log(&router, &upstream.name, status.as_u16(), (0, 0));
                let body = refused_body(upstream, outbound.dialect, &body);
                return (status, [(header::CONTENT_TYPE, "application/json")], body)
                    .into_response();
            }
            Attempt::Failed {
                failure,
                retry_after,
            } => {
                let now = Instant::now();
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
    let circuits_only = sent == 0 && !circuits_open.is_empty();
    exhausted(
        &router,
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
    router.metrics.errors.with_label_values(&[class]).inc();
    report.log(router, "none", status.as_u16(), (0, 0));
    let mut response = error_response(status, "router_error", &message);
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

/// A 4xx the agent caused, passed back: translated to OpenAI's error format for Anthropic, and
/// with the credential removed should the provider echo it.
fn refused_body(upstream: &Upstream, dialect: Dialect, body: &[u8]) -> String {
    let text = match dialect {
        Dialect::OpenAI => String::from_utf8_lossy(body).into_owned(),
        Dialect::Anthropic => serde_json::from_slice::<Value>(body)
            .map(|v| anthropic::error(&v).to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned()),
    };
    match &upstream.credential {
        Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "[redacted]"),
        _ => text,
    }
}

enum Attempt {
    Answered(Answer),
    Refused {
        status: StatusCode,
        body: Bytes,
    },
    Failed {
        failure: Failure,
        retry_after: Option<Duration>,
    },
}

enum Answer {
    /// A whole answer in OpenAI's format, and its token counts.
    Whole { body: Bytes, tokens: (u64, u64) },
    Stream {
        dialect: Dialect,
        response: reqwest::Response,
        first: Bytes,
        deadline: Instant,
        include_usage: bool,
    },
}

fn failed(failure: Failure) -> Attempt {
    Attempt::Failed {
        failure,
        retry_after: None,
    }
}

fn transport_failure(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Unreachable
    }
}

/// Sends one request and waits for its first byte (a whole answer when not streamed).
async fn attempt(
    router: &Router,
    upstream: &Upstream,
    outbound: &Outbound,
    stream: bool,
    deadline: Instant,
    settings: &crate::resources::provider_config::RouterSettings,
) -> Attempt {
    let sent_at = Instant::now();
    let first_byte_by = deadline.min(sent_at + settings.first_byte_timeout.as_std());
    let mut builder = router.http.post(&outbound.url).json(&outbound.body);
    for (name, value) in &outbound.headers {
        builder = builder.header(*name, value);
    }
    let head = tokio::time::timeout_at(first_byte_by.into(), async {
        let mut response = builder.send().await?;
        let first = response.chunk().await?;
        Ok::<_, reqwest::Error>((response, first))
    })
    .await;
    let (response, first) = match head {
        Err(_) => return failed(Failure::Timeout),
        Ok(Err(error)) => return failed(transport_failure(&error)),
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
        Verdict::ReturnToAgent => match rest_of_body(response, first, deadline).await {
            Ok(body) => Attempt::Refused {
                status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                body,
            },
            Err(failure) => failed(failure),
        },
        Verdict::Success if stream => Attempt::Answered(Answer::Stream {
            dialect: outbound.dialect,
            response,
            first: first.unwrap_or_default(),
            deadline,
            include_usage: outbound
                .body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
        }),
        Verdict::Success => {
            // Nothing has reached the agent yet: a broken or garbled body still fails over.
            match rest_of_body(response, first, deadline).await {
                Ok(body) => whole_answer(outbound.dialect, body)
                    .map(Attempt::Answered)
                    .unwrap_or_else(|| failed(Failure::InvalidResponse)),
                Err(failure) => failed(failure),
            }
        }
    }
}

/// The token counts of an OpenAI answer; reading only them leaves the answer's bytes as the
/// provider sent them, with no second serialization.
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(serde::Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// A whole answer in OpenAI's format, `None` when the body is not one.
fn whole_answer(dialect: Dialect, body: Bytes) -> Option<Answer> {
    match dialect {
        Dialect::OpenAI => {
            let usage = serde_json::from_slice::<UsageOnly>(&body).ok()?.usage;
            let tokens = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
            Some(Answer::Whole { body, tokens })
        }
        Dialect::Anthropic => {
            let answer = serde_json::from_slice::<Value>(&body).ok()?;
            if !answer.is_object() {
                return None;
            }
            let translated = anthropic::response(&answer, unix_now());
            let tokens = usage_of(&translated);
            Some(Answer::Whole {
                body: Bytes::from(translated.to_string()),
                tokens,
            })
        }
    }
}

async fn rest_of_body(
    mut response: reqwest::Response,
    first: Option<Bytes>,
    deadline: Instant,
) -> Result<Bytes, Failure> {
    let mut body = first.map(|b| b.to_vec()).unwrap_or_default();
    loop {
        match tokio::time::timeout_at(deadline.into(), response.chunk()).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(error)) => return Err(transport_failure(&error)),
            Ok(Ok(None)) => return Ok(Bytes::from(body)),
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn usage_of(body: &Value) -> (u64, u64) {
    let tokens = |key: &str| {
        body.pointer(&format!("/usage/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    (tokens("prompt_tokens"), tokens("completion_tokens"))
}

impl Answer {
    fn into_response(
        self,
        router: Arc<Router>,
        upstream: &Upstream,
        report: Report,
        admitted: super::limits::Admitted,
    ) -> Response {
        let model = upstream
            .model
            .clone()
            .unwrap_or_else(|| report.model.clone());
        match self {
            Answer::Whole { body, tokens } => {
                router
                    .metrics
                    .record_tokens(&upstream.name, &model, tokens.0, tokens.1);
                report.log(&router, &upstream.name, 200, tokens);
                drop(admitted);
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
            Answer::Stream {
                dialect,
                response,
                first,
                deadline,
                include_usage,
            } => {
                let (sender, receiver) = mpsc::channel::<Bytes>(32);
                let pump = StreamPump {
                    router,
                    provider: upstream.name.clone(),
                    model,
                    report,
                    dialect,
                    reader: sse::Reader::default(),
                    translator: StreamTranslator::new(unix_now(), include_usage),
                    tokens: (0, 0),
                    sender,
                };
                tokio::spawn(pump.run(response, first, deadline, admitted));
                let body = futures::stream::unfold(receiver, |mut receiver| async move {
                    receiver
                        .recv()
                        .await
                        .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
                });
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(Body::from_stream(body))
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
        }
    }
}

/// Carries a streamed answer to the agent, translating Anthropic's events, counting tokens,
/// and ending a broken stream with an error event instead of switching providers.
struct StreamPump {
    router: Arc<Router>,
    provider: String,
    model: String,
    report: Report,
    dialect: Dialect,
    reader: sse::Reader,
    translator: StreamTranslator,
    tokens: (u64, u64),
    sender: mpsc::Sender<Bytes>,
}

impl StreamPump {
    async fn run(
        mut self,
        mut response: reqwest::Response,
        first: Bytes,
        deadline: Instant,
        admitted: super::limits::Admitted,
    ) {
        let mut status = 200;
        let mut chunk = Some(first);
        loop {
            if let Some(bytes) = chunk.take()
                && !self.forward(&bytes).await
            {
                // The agent went away; dropping the upstream response closes it.
                status = 499;
                break;
            }
            match tokio::time::timeout_at(deadline.into(), response.chunk()).await {
                Ok(Ok(Some(bytes))) => chunk = Some(bytes),
                Ok(Ok(None)) => break,
                Ok(Err(_)) | Err(_) => {
                    status = 502;
                    self.router
                        .metrics
                        .errors
                        .with_label_values(&["stream_broken"])
                        .inc();
                    let event = json!({"error": {
                        "message": format!("the stream from provider {} broke off; the answer is incomplete", self.provider),
                        "type": "router_error", "code": "stream_broken",
                    }});
                    let _ = self
                        .sender
                        .send(Bytes::from(format!("data: {event}\n\n")))
                        .await;
                    break;
                }
            }
        }
        drop(admitted);
        if self.dialect == Dialect::Anthropic {
            self.tokens = self.translator.tokens();
        }
        self.router.metrics.record_tokens(
            &self.provider,
            &self.model,
            self.tokens.0,
            self.tokens.1,
        );
        self.report
            .log(&self.router, &self.provider, status, self.tokens);
    }

    /// Sends `bytes` on (translated for Anthropic); false when the agent is gone.
    async fn forward(&mut self, bytes: &Bytes) -> bool {
        let events = self.reader.push(bytes);
        match self.dialect {
            Dialect::OpenAI => {
                for event in &events {
                    if event.data.contains("\"usage\"")
                        && let Ok(value) = serde_json::from_str::<Value>(&event.data)
                    {
                        let tokens = usage_of(&value);
                        if tokens != (0, 0) {
                            self.tokens = tokens;
                        }
                    }
                }
                self.sender.send(bytes.clone()).await.is_ok()
            }
            Dialect::Anthropic => {
                let mut out = String::new();
                for event in events {
                    let data = serde_json::from_str::<Value>(&event.data).unwrap_or(Value::Null);
                    let name = event
                        .event
                        .or_else(|| data.get("type").and_then(Value::as_str).map(str::to_string))
                        .unwrap_or_default();
                    for line in self.translator.translate(&name, &data) {
                        out.push_str(&line);
                    }
                }
                out.is_empty() || self.sender.send(Bytes::from(out)).await.is_ok()
            }
        }
    }
}
