//! Streamed answers: held back until their first content, so that an error a provider streams
//! before any (Anthropic's `overloaded_error` in a 200 stream) still fails over, then carried
//! to the agent in its API, counting the usage, with an idle timeout between events. Once a
//! byte of content has reached the agent the stream is never switched to another provider; a
//! broken one ends with an error event instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::mpsc;

use super::answer;
use super::client::{ProviderResponse, next_chunk};
use super::config::Upstream;
use super::failover::{Failure, stream_error_failure};
use super::json::value_at;
use super::limits::Admitted;
use super::proxy::{BUDGET_EXCEEDED, Report, Reservation, Router};
use super::sse::{self, Event};
use super::upstream::Dialect;
use super::usage::Usage;
use super::{anthropic, messages};

/// A stream whose first content has arrived, and what was read up to it.
pub struct Opened {
    response: ProviderResponse,
    reader: sse::Reader,
    raw: Vec<u8>,
    events: Vec<Event>,
}

/// Reads `response` until its first content, an error, or its end. `first_by` bounds the wait
/// for the first byte, `idle` each wait after it. A failure before any content means the next
/// provider may answer.
pub async fn open(
    mut response: ProviderResponse,
    first: Option<Bytes>,
    dialect: Dialect,
    first_by: Instant,
    idle: Duration,
    deadline: Instant,
) -> Result<Opened, Failure> {
    let event_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if !event_stream {
        // A JSON error, an HTML page or an answer that ignored `stream`: nothing an SDK reading
        // events could use, and nothing has reached the agent yet.
        return Err(Failure::InvalidResponse);
    }
    let mut reader = sse::Reader::default();
    let mut raw = Vec::new();
    let mut events = Vec::new();
    let mut chunk = first;
    let mut wait_until = first_by;
    loop {
        if let Some(bytes) = chunk.take() {
            raw.extend_from_slice(&bytes);
            events.extend(reader.push(&bytes));
            wait_until = deadline.min(Instant::now() + idle);
        }
        if let Some(failure) = events.iter().find_map(|e| error_in(dialect, e)) {
            return Err(failure);
        }
        if events.iter().any(|e| is_content(dialect, e)) {
            break;
        }
        match tokio::time::timeout_at(wait_until.into(), next_chunk(response.body_mut())).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(_)) => return Err(Failure::Unreachable),
            Ok(Ok(Some(bytes))) => chunk = Some(bytes),
            Ok(Ok(None)) if events.is_empty() => return Err(Failure::InvalidResponse),
            Ok(Ok(None)) => break,
        }
    }
    Ok(Opened {
        response,
        reader,
        raw,
        events,
    })
}

/// The failure an error event before any content stands for.
fn error_in(dialect: Dialect, event: &Event) -> Option<Failure> {
    match dialect {
        Dialect::Anthropic => {
            let named = event.event.as_deref() == Some("error");
            if !named && !event.data.contains("\"error\"") {
                return None;
            }
            let data: Value = serde_json::from_str(&event.data).ok()?;
            if !named && data.get("type").and_then(Value::as_str) != Some("error") {
                return None;
            }
            let kind = value_at(&data, &["error", "type"])
                .and_then(Value::as_str)
                .unwrap_or("api_error");
            Some(stream_error_failure(kind))
        }
        Dialect::OpenAI => {
            if !event.data.contains("\"error\"") {
                return None;
            }
            let data: Value = serde_json::from_str(&event.data).ok()?;
            let problem = data.get("error")?;
            let kind = problem
                .get("code")
                .and_then(Value::as_str)
                .or_else(|| problem.get("type").and_then(Value::as_str))
                .unwrap_or("server_error");
            Some(stream_error_failure(kind))
        }
    }
}

/// Whether the event carries content (or ends the answer), after which nothing fails over.
fn is_content(dialect: Dialect, event: &Event) -> bool {
    match dialect {
        Dialect::Anthropic => matches!(
            event.event.as_deref(),
            Some("content_block_start" | "content_block_delta" | "message_delta" | "message_stop")
        ),
        Dialect::OpenAI => event.data.trim() == "[DONE]" || event.data.contains("\"choices\""),
    }
}

/// What a provider's event says of the answer: its id and model, and why it stopped. Only the
/// events that can say it are parsed (OpenAI's last chunk, Anthropic's start and delta).
fn read_facts(dialect: Dialect, event: &Event, facts: &mut answer::Facts) {
    let parse = || serde_json::from_str::<Value>(&event.data).ok();
    match dialect {
        Dialect::OpenAI => {
            if !event.data.contains("\"finish_reason\":\"") {
                return;
            }
            let Some(chunk) = parse() else { return };
            let text = |key: &str| chunk.get(key).and_then(Value::as_str).map(str::to_string);
            facts.id = facts.id.take().or_else(|| text("id"));
            facts.model = facts.model.take().or_else(|| text("model"));
            facts.finish_reasons.extend(
                chunk["choices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["finish_reason"].as_str().map(str::to_string)),
            );
        }
        Dialect::Anthropic => match event.event.as_deref() {
            Some("message_start") => {
                if let Some(message) = parse().and_then(|d| d.get("message").cloned()) {
                    let text = |key: &str| message.get(key).and_then(Value::as_str);
                    facts.id = text("id").map(str::to_string);
                    facts.model = text("model").map(str::to_string);
                }
            }
            Some("message_delta") => {
                if let Some(reason) = parse()
                    .as_ref()
                    .and_then(|d| value_at(d, &["delta", "stop_reason"]))
                    .and_then(Value::as_str)
                {
                    facts.finish_reasons.push(reason.to_string());
                }
            }
            _ => {}
        },
    }
}

/// OpenAI's last chunk with `stream_options.include_usage`: no choices, only the usage.
fn is_usage_chunk(event: &Event) -> bool {
    event.data.contains("\"choices\":[]")
        && serde_json::from_str::<Value>(&event.data).is_ok_and(|chunk| {
            chunk["choices"].as_array().is_some_and(Vec::is_empty) && chunk["usage"].is_object()
        })
}

/// Whether the event carries a piece of the answer (text, a tool call's arguments).
fn is_delta(dialect: Dialect, event: &Event) -> bool {
    match dialect {
        Dialect::Anthropic => event.event.as_deref() == Some("content_block_delta"),
        Dialect::OpenAI => event.data.contains("\"delta\""),
    }
}

/// How events reach the agent.
enum Conversion {
    /// The provider speaks the agent's API: its bytes go on as they came.
    Same(Dialect),
    /// Anthropic's events as OpenAI chunks.
    ToOpenAI(Box<anthropic::StreamTranslator>),
    /// OpenAI chunks as Anthropic's events.
    ToAnthropic(Box<messages::StreamTranslator>),
}

/// What the pump needs beyond the stream.
pub struct StreamContext {
    pub router: Arc<Router>,
    pub provider: String,
    pub model: String,
    pub report: Report,
    pub agent: Dialect,
    pub provider_dialect: Dialect,
    /// The agent asked for OpenAI's usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The router asked for that chunk itself: it is counted, and left out.
    pub strip_usage: bool,
    pub idle: Duration,
    pub deadline: Instant,
    /// The request's hold on the budget, settled when the stream ends.
    pub held: Reservation,
    /// The provider streaming, for its prices.
    pub upstream: Upstream,
}

/// Starts carrying the stream to the agent and returns the agent's response.
pub fn respond(opened: Opened, context: StreamContext, admitted: Admitted) -> Response {
    let conversion = match (context.agent, context.provider_dialect) {
        (Dialect::OpenAI, Dialect::Anthropic) => Conversion::ToOpenAI(Box::new(
            anthropic::StreamTranslator::new(super::unix_now(), context.include_usage),
        )),
        (Dialect::Anthropic, Dialect::OpenAI) => Conversion::ToAnthropic(Box::default()),
        (same, _) => Conversion::Same(same),
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(32);
    let mut pump = Pump {
        traced: context.report.traced(),
        context,
        conversion,
        usage: Usage::default(),
        streamed: 0,
        facts: answer::Facts::default(),
        sender,
    };
    let Opened {
        response,
        reader,
        raw,
        events,
    } = opened;
    // What was read while the stream opened is in the body before the response leaves, so the
    // head and the first events reach the agent in one write.
    let first = pump.convert(Bytes::from(raw), &events);
    if !first.is_empty() {
        // The channel is new: it has room.
        let _ = pump.sender.try_send(first);
    }
    tokio::spawn(pump.run(response, reader, admitted));
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

struct Pump {
    context: StreamContext,
    conversion: Conversion,
    /// Usage read from a stream passed on as it came.
    usage: Usage,
    /// Content events passed on, each counted as an output token until the provider's usage
    /// says how many there were.
    streamed: u64,
    /// Whether the request has a span, which wants `facts`.
    traced: bool,
    /// The answer's id, model and finish reasons, read from its events for the span.
    facts: answer::Facts,
    sender: mpsc::Sender<Bytes>,
}

impl Pump {
    async fn run(
        mut self,
        mut response: ProviderResponse,
        mut reader: sse::Reader,
        admitted: Admitted,
    ) {
        let mut status = 200;
        let mut next: Option<(Bytes, Vec<Event>)> = None;
        // How the body went on after the last chunks gathered, when it ended or broke there.
        let mut then: Option<Next> = None;
        loop {
            if let Some((bytes, events)) = next.take()
                && !self.forward(bytes, &events).await
            {
                // The agent went away; dropping the upstream response closes it.
                status = 499;
                break;
            }
            if let Err(spent) = self.context.held.may_stream(self.streamed) {
                status = 429;
                self.context
                    .router
                    .metrics
                    .errors
                    .with_label_values(&[BUDGET_EXCEEDED])
                    .inc();
                let event = answer::stream_error_event(
                    self.context.agent,
                    BUDGET_EXCEEDED,
                    &spent.describe(),
                );
                let _ = self.sender.send(event).await;
                break;
            }
            let step = match then.take() {
                Some(step) => step,
                None => {
                    let awaited = Instant::now();
                    let wait_until = self.context.deadline.min(awaited + self.context.idle);
                    let step = match tokio::time::timeout_at(
                        wait_until.into(),
                        next_chunk(response.body_mut()),
                    )
                    .await
                    {
                        Ok(Ok(Some(bytes))) => Next::Chunk(bytes),
                        Ok(Ok(None)) => Next::End,
                        Ok(Err(_)) => Next::Broken,
                        Err(_) => Next::Silent,
                    };
                    self.context.report.waited += awaited.elapsed();
                    step
                }
            };
            match step {
                Next::Chunk(bytes) => {
                    let (bytes, after) = gather_ready(response.body_mut(), bytes).await;
                    then = after;
                    let events = reader.push(&bytes);
                    next = Some((bytes, events));
                }
                Next::End => {
                    if let Conversion::ToAnthropic(translator) = &mut self.conversion {
                        // OpenAI-compatible servers may end without `[DONE]`.
                        let closing = translator.finish().concat();
                        if !closing.is_empty() {
                            let _ = self.sender.send(Bytes::from(closing)).await;
                        }
                    }
                    break;
                }
                Next::Broken => {
                    status = 502;
                    self.broke_off("stream_broken").await;
                    break;
                }
                Next::Silent => {
                    status = 504;
                    let idle = Instant::now() < self.context.deadline;
                    self.broke_off(if idle {
                        "stream_idle_timeout"
                    } else {
                        "stream_deadline"
                    })
                    .await;
                    break;
                }
            }
        }
        drop(admitted);
        let mut usage = match &self.conversion {
            Conversion::Same(_) => self.usage,
            Conversion::ToOpenAI(translator) => translator.usage(),
            Conversion::ToAnthropic(translator) => translator.usage(),
        };
        if usage.completion == 0 && self.streamed > 0 {
            // Cut or broken before the provider's usage came (or an OpenAI stream without
            // `include_usage`): what it held for the prompt and one token per event.
            usage.prompt = usage.prompt.max(self.context.held.input_estimate());
            usage.completion = self.streamed;
        }
        let mut context = self.context;
        context.report.streamed(self.facts);
        context
            .held
            .settle(&context.router, &context.upstream, &context.model, &usage);
        context
            .report
            .log(&context.router, &context.provider, status, &usage);
    }

    async fn broke_off(&mut self, class: &'static str) {
        let context = &self.context;
        context
            .router
            .metrics
            .errors
            .with_label_values(&[class])
            .inc();
        let provider = &context.provider;
        let message = match class {
            "stream_idle_timeout" => format!(
                "provider {provider} sent nothing for {}; the answer is incomplete",
                humantime::format_duration(context.idle)
            ),
            "stream_deadline" => format!(
                "provider {provider} did not finish within the request timeout; the answer is incomplete"
            ),
            _ => format!("the stream from provider {provider} broke off; the answer is incomplete"),
        };
        let event = answer::stream_error_event(context.agent, class, &message);
        let _ = self.sender.send(event).await;
    }

    /// Sends `bytes` (or their translation) on; false when the agent is gone.
    async fn forward(&mut self, bytes: Bytes, events: &[Event]) -> bool {
        let out = self.convert(bytes, events);
        if out.is_empty() {
            return true;
        }
        // A full channel is the agent reading slowly: its time, not the router's.
        let awaited = Instant::now();
        let sent = self.sender.send(out).await.is_ok();
        self.context.report.waited += awaited.elapsed();
        sent
    }

    /// What the agent gets for `bytes` and their `events`, counted as they pass.
    fn convert(&mut self, bytes: Bytes, events: &[Event]) -> Bytes {
        let provider_dialect = self.context.provider_dialect;
        self.streamed += events
            .iter()
            .filter(|event| is_delta(provider_dialect, event))
            .count() as u64;
        if self.traced {
            for event in events {
                read_facts(provider_dialect, event, &mut self.facts);
            }
        }
        match &mut self.conversion {
            Conversion::Same(dialect) => {
                for event in events {
                    count_usage(*dialect, event, &mut self.usage);
                }
                if self.context.strip_usage {
                    // Events, not the bytes as they came: a chunk may end inside an event,
                    // and the reader holds that part until the rest arrives.
                    let out: String = events
                        .iter()
                        .filter(|event| !is_usage_chunk(event))
                        .map(|event| format!("data: {}\n\n", event.data))
                        .collect();
                    Bytes::from(out)
                } else {
                    bytes
                }
            }
            Conversion::ToOpenAI(translator) => {
                let out: String = events
                    .iter()
                    .flat_map(|event| translator.translate(event.event.as_deref(), &event.data))
                    .collect();
                Bytes::from(out)
            }
            Conversion::ToAnthropic(translator) => {
                let out: String = events
                    .iter()
                    .flat_map(|event| translator.translate(&event.data))
                    .collect();
                Bytes::from(out)
            }
        }
    }
}

/// How a provider's stream went on.
enum Next {
    Chunk(Bytes),
    End,
    Broken,
    /// Nothing within the idle timeout, or the request's deadline passed.
    Silent,
}

/// The most gathered into one write: a provider that outruns the agent still sees its events
/// forwarded as they come, not held until it pauses.
const MOST_GATHERED: usize = 64 * 1024;

/// `first` and whatever else the provider has already sent, without waiting for more, so that
/// events that arrived together leave together: one write to the agent, where each event was
/// one. Returns also the body's end or break when the gathering reached it.
async fn gather_ready(body: &mut Incoming, first: Bytes) -> (Bytes, Option<Next>) {
    let mut gathered: Option<Vec<u8>> = None;
    // hyper hands a body over one chunk at a time and decodes the next only once this one is
    // taken, on its connection's task: a chunk already received may need that task to run
    // once more, so one yield without progress, not one poll, says nothing more is there.
    let mut yielded = false;
    let then = loop {
        if gathered.as_ref().map_or(first.len(), Vec::len) >= MOST_GATHERED {
            break None;
        }
        match next_chunk(body).now_or_never() {
            Some(Ok(Some(more))) => {
                gathered
                    .get_or_insert_with(|| first.to_vec())
                    .extend_from_slice(&more);
                yielded = false;
            }
            Some(Ok(None)) => break Some(Next::End),
            Some(Err(_)) => break Some(Next::Broken),
            None if !yielded => {
                tokio::task::yield_now().await;
                yielded = true;
            }
            None => break None,
        }
    };
    (gathered.map_or(first, Bytes::from), then)
}

/// Reads the usage an event of a passed-on stream carries.
fn count_usage(dialect: Dialect, event: &Event, usage: &mut Usage) {
    if !event.data.contains("\"usage\"") {
        return;
    }
    let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
        return;
    };
    match dialect {
        Dialect::OpenAI => {
            if let Some(reported) = data.get("usage").filter(|u| u.is_object()) {
                *usage = Usage::from_openai(reported);
            }
        }
        Dialect::Anthropic => {
            let reported = value_at(&data, &["message", "usage"]).or_else(|| data.get("usage"));
            if let Some(reported) = reported {
                usage.merge_anthropic(reported);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: Option<&str>, data: &str) -> Event {
        Event {
            event: name.map(str::to_string),
            data: data.into(),
        }
    }

    #[test]
    fn an_error_before_content_is_the_providers_failure() {
        let overloaded = event(
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            error_in(Dialect::Anthropic, &overloaded),
            Some(Failure::ServerError)
        );
        let openai = event(
            None,
            r#"{"error":{"message":"slow down","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            error_in(Dialect::OpenAI, &openai),
            Some(Failure::RateLimited)
        );
        let text = event(
            Some("content_block_delta"),
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"an \"error\""}}"#,
        );
        assert_eq!(error_in(Dialect::Anthropic, &text), None);
        assert!(is_content(Dialect::Anthropic, &text));
        assert!(!is_content(
            Dialect::Anthropic,
            &event(Some("message_start"), "{}")
        ));
    }

    #[test]
    fn passed_on_anthropic_streams_count_usage_from_start_and_delta() {
        let mut usage = Usage::default();
        count_usage(
            Dialect::Anthropic,
            &event(
                Some("message_start"),
                r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"cache_read_input_tokens":20,"output_tokens":1}}}"#,
            ),
            &mut usage,
        );
        count_usage(
            Dialect::Anthropic,
            &event(
                Some("message_delta"),
                r#"{"type":"message_delta","usage":{"output_tokens":9}}"#,
            ),
            &mut usage,
        );
        assert_eq!(
            (usage.prompt, usage.completion, usage.cache_read),
            (25, 9, 20)
        );
    }
}
