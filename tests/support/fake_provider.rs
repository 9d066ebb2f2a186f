//! A fake LLM provider on a loopback port: the model listings and chat endpoints of OpenAI (and
//! compatible), Azure OpenAI, Anthropic and Ollama, streamed or not, with faults a test switches
//! at run time. Its Messages endpoint refuses what the real Anthropic API refuses (a
//! `temperature` above 1, empty text, unknown parameters), so translations are checked
//! against those rules.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the fake does on its next requests.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// The only key accepted; `None` accepts any request.
    pub api_key: Option<String>,
    pub models: Vec<String>,
    /// Answer every request with this status (and a JSON error body).
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with `status`.
    pub retry_after: Option<u32>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer 200 with a body that is no listing.
    pub garbage: bool,
    /// The text of chat answers.
    pub reply: String,
    /// Streamed answers send their first event, then the connection breaks.
    pub break_stream: bool,
    /// Streamed answers are this error, as the first event of a 200 stream (Anthropic's
    /// `overloaded_error`, or an OpenAI-compatible server's `error` object).
    pub stream_error: Option<String>,
    /// Streamed requests get a whole JSON answer instead of events.
    pub json_for_streams: bool,
    /// Streamed answers pause this long after their first content.
    pub stall_stream: Duration,
    /// The pause before each streamed event, as a model's tokens arrive.
    pub stream_pace: Duration,
    /// Prompt tokens reported as read from the cache.
    pub cached_tokens: u64,
    /// Anthropic's `stop_reason` for answers without tools.
    pub stop_reason: Option<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            api_key: None,
            models: vec!["gpt-4o".into(), "gpt-4o-mini".into()],
            status: None,
            retry_after: None,
            delay: Duration::ZERO,
            garbage: false,
            reply: "Hello from the fake provider".into(),
            break_stream: false,
            stream_error: None,
            json_for_streams: false,
            stall_stream: Duration::ZERO,
            stream_pace: Duration::from_millis(2),
            cached_tokens: 0,
            stop_reason: None,
        }
    }
}

/// A chat request as the fake received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// The HTTP version the request came in.
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Value,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: AtomicU64,
    chats: Mutex<Vec<Received>>,
}

pub struct FakeProvider {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::start_on("127.0.0.1:0", behaviour).await
    }

    /// As `start`, on a given loopback address.
    pub async fn start_on(address: &str, behaviour: Behaviour) -> Self {
        let listener = bind(address).await;
        let address = listener.local_addr().expect("address");
        // Streamed answers are small writes; real providers do not delay them (Nagle).
        let listener = axum::serve::ListenerExt::tap_io(listener, |connection| {
            let _ = connection.set_nodelay(true);
        });
        Self::serve(address, behaviour, listener)
    }

    /// As `start`, over TLS with `tls` (its certificate and its ALPN protocols), as a hosted
    /// provider serves; `https_endpoint` names it by the certificate's name.
    pub async fn start_tls(behaviour: Behaviour, tls: Arc<rustls::ServerConfig>) -> Self {
        let tcp = bind("127.0.0.1:0").await;
        let address = tcp.local_addr().expect("address");
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
        };
        Self::serve(address, behaviour, listener)
    }

    fn serve<L: axum::serve::Listener>(
        address: SocketAddr,
        behaviour: Behaviour,
        listener: L,
    ) -> Self
    where
        L::Addr: std::fmt::Debug,
    {
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            requests: AtomicU64::new(0),
            chats: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(azure_chat),
            )
            .route("/v1/messages", post(anthropic_chat))
            .route("/v1/models", get(list_models))
            .route("/openai/models", get(list_models))
            .route("/api/tags", get(ollama_tags))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            shared,
            server,
        }
    }

    /// Base URL in the OpenAI style over TLS, by the name `localhost` a test certificate is for.
    pub fn https_endpoint(&self) -> String {
        format!("https://localhost:{}/v1", self.address.port())
    }

    /// Base URL in the OpenAI style (`.../v1`).
    pub fn openai_endpoint(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// Base URL without a path, for Anthropic, Azure and Ollama.
    pub fn root_endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        let mut behaviour = self.shared.behaviour.lock().expect("not poisoned");
        change(&mut behaviour);
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The chat requests received so far.
    pub fn chats(&self) -> Vec<Received> {
        self.shared.chats.lock().expect("not poisoned").clone()
    }
}

async fn bind(address: &str) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(address)
        .await
        .unwrap_or_else(|error| panic!("cannot listen on {address}: {error}"))
}

/// Connections that complete a TLS handshake; one that fails it is dropped, as a server does.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn presented_key(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    header("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        .or_else(|| header("x-api-key"))
        .or_else(|| header("api-key"))
}

/// Applies delay, faults and auth; `Ok` carries the models to list.
async fn answer(shared: &Shared, headers: &HeaderMap) -> Result<Vec<String>, Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let behaviour = shared.behaviour.lock().expect("not poisoned").clone();
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    if let Some(code) = behaviour.status {
        let status = StatusCode::from_u16(code).expect("valid status");
        let mut response = (
            status,
            axum::Json(json!({"error": {"message": format!("injected {code}")}})),
        )
            .into_response();
        if let Some(seconds) = behaviour.retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().expect("header"));
        }
        return Err(response);
    }
    if let Some(expected) = &behaviour.api_key {
        let presented = presented_key(headers);
        if presented.as_deref() != Some(expected.as_str()) {
            // Real providers echo part of the refused key; the operator must scrub it.
            let echo = presented.unwrap_or_default();
            let message = format!("Incorrect API key provided: {echo}");
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {"message": message}})),
            )
                .into_response());
        }
    }
    if behaviour.garbage {
        return Err((StatusCode::OK, "<html>maintenance</html>").into_response());
    }
    Ok(behaviour.models)
}

async fn list_models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match answer(&shared, &headers).await {
        Ok(models) => {
            let data: Vec<_> = models
                .iter()
                .map(|id| json!({"id": id, "object": "model"}))
                .collect();
            axum::Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(response) => response,
    }
}

async fn ollama_tags(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match answer(&shared, &headers).await {
        Ok(models) => {
            let tags: Vec<_> = models
                .iter()
                .map(|name| json!({"name": name, "size": 1}))
                .collect();
            axum::Json(json!({"models": tags})).into_response()
        }
        Err(response) => response,
    }
}

async fn openai_chat(
    State(shared): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    chat(
        &shared,
        ("/v1/chat/completions".into(), version),
        headers,
        body,
        Dialect::OpenAI,
    )
    .await
}

async fn azure_chat(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/openai/deployments/{deployment}/chat/completions");
    chat(&shared, (path, version), headers, body, Dialect::OpenAI).await
}

async fn anthropic_chat(
    State(shared): State<Arc<Shared>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    chat(
        &shared,
        ("/v1/messages".into(), version),
        headers,
        body,
        Dialect::Anthropic,
    )
    .await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAI,
    Anthropic,
}

async fn chat(
    shared: &Shared,
    (path, version): (String, Version),
    headers: HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "bad json"}})),
        )
            .into_response();
    };
    shared.chats.lock().expect("not poisoned").push(Received {
        path,
        version,
        headers: headers.clone(),
        body: request.clone(),
    });
    let behaviour = match answer(shared, &headers).await {
        Ok(_) => shared.behaviour.lock().expect("not poisoned").clone(),
        Err(response) => return response,
    };
    if dialect == Dialect::Anthropic
        && let Err(message) = anthropic_rules(&request)
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"type": "error",
                "error": {"type": "invalid_request_error", "message": message}})),
        )
            .into_response();
    }
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tool = request
        .pointer("/tools/0/function/name")
        .or_else(|| request.pointer("/tools/0/name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let choices = request.get("n").and_then(Value::as_u64).unwrap_or(1);
    let events = match (dialect, stream && !behaviour.json_for_streams) {
        (Dialect::OpenAI, false) => {
            let answer = openai_answer(&model, &behaviour, tool.as_deref(), choices);
            return axum::Json(answer).into_response();
        }
        (Dialect::Anthropic, false) => {
            let answer = anthropic_answer(&model, &behaviour, tool.as_deref());
            return axum::Json(answer).into_response();
        }
        (dialect, true) if behaviour.stream_error.is_some() => {
            let kind = behaviour.stream_error.clone().unwrap_or_default();
            vec![match dialect {
                Dialect::Anthropic => format!(
                    "event: error\ndata: {}\n\n",
                    json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}})
                ),
                Dialect::OpenAI => format!(
                    "data: {}\n\n",
                    json!({"error": {"message": "injected stream error", "code": kind}})
                ),
            }]
        }
        (Dialect::OpenAI, true) => openai_events(&model, &behaviour, &request),
        (Dialect::Anthropic, true) => anthropic_events(&model, &behaviour, tool.as_deref()),
    };
    let broken = behaviour.break_stream;
    let stall = behaviour.stall_stream;
    let pace = behaviour.stream_pace;
    let chunks = events.into_iter().enumerate().map(move |(i, event)| {
        if broken && i > 0 {
            Err(std::io::Error::other("stream broken by the test"))
        } else {
            Ok((i, Bytes::from(event)))
        }
    });
    let paced = futures::StreamExt::then(futures::stream::iter(chunks), move |chunk| async move {
        let pause = match &chunk {
            // After the first content event (the role chunk, or message_start and ping).
            Ok((3, _)) if !stall.is_zero() => stall,
            _ => pace,
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        chunk.map(|(_, bytes)| bytes)
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(paced))
        .expect("response")
}

pub const PROMPT_TOKENS: u64 = 11;
pub const COMPLETION_TOKENS: u64 = 7;

/// What the real Messages API refuses with a 400 and OpenAI's API accepts.
fn anthropic_rules(request: &Value) -> Result<(), String> {
    const KNOWN: [&str; 14] = [
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    ];
    let body = request.as_object().ok_or("the body must be an object")?;
    if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("{unknown}: Extra inputs are not permitted"));
    }
    if !body.get("max_tokens").is_some_and(Value::is_u64) {
        return Err("max_tokens: Field required".into());
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64)
        && !(0.0..=1.0).contains(&t)
    {
        return Err("temperature: Input should be less than or equal to 1".into());
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    for (i, message) in messages.iter().enumerate() {
        let empty = match message.get("content") {
            Some(Value::String(text)) => text.is_empty(),
            Some(Value::Array(blocks)) => {
                blocks.is_empty()
                    || blocks.iter().any(|b| {
                        b["type"] == "text" && b["text"].as_str().is_none_or(str::is_empty)
                    })
            }
            _ => true,
        };
        if empty {
            return Err(format!(
                "messages.{i}: all messages must have non-empty content"
            ));
        }
    }
    Ok(())
}

fn openai_usage(behaviour: &Behaviour) -> Value {
    let mut usage = json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                           "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS});
    if behaviour.cached_tokens > 0 {
        usage["prompt_tokens"] = json!(PROMPT_TOKENS + behaviour.cached_tokens);
        usage["total_tokens"] = json!(PROMPT_TOKENS + behaviour.cached_tokens + COMPLETION_TOKENS);
        usage["prompt_tokens_details"] = json!({"cached_tokens": behaviour.cached_tokens});
    }
    usage
}

fn anthropic_usage(behaviour: &Behaviour, output: u64) -> Value {
    json!({"input_tokens": PROMPT_TOKENS, "output_tokens": output,
           "cache_read_input_tokens": behaviour.cached_tokens, "cache_creation_input_tokens": 0})
}

fn openai_answer(model: &str, behaviour: &Behaviour, tool: Option<&str>, choices: u64) -> Value {
    let message = match tool {
        Some(name) => json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}}]}),
        None => json!({"role": "assistant", "content": behaviour.reply}),
    };
    let choices: Vec<Value> = (0..choices)
        .map(|index| {
            json!({"index": index, "message": message,
            "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }})
        })
        .collect();
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": choices,
        "usage": openai_usage(behaviour),
    })
}

fn anthropic_answer(model: &str, behaviour: &Behaviour, tool: Option<&str>) -> Value {
    let reply = &behaviour.reply;
    let content = match tool {
        Some(name) => {
            json!([{"type": "tool_use", "id": "toolu_1", "name": name, "input": {"city": "Paris"}}])
        }
        None => json!([{"type": "text", "text": reply}]),
    };
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason(behaviour, tool),
        "usage": anthropic_usage(behaviour, COMPLETION_TOKENS),
    })
}

fn stop_reason(behaviour: &Behaviour, tool: Option<&str>) -> Value {
    match (tool, &behaviour.stop_reason) {
        (Some(_), _) => json!("tool_use"),
        (None, Some(reason)) => json!(reason),
        (None, None) => json!("end_turn"),
    }
}

fn openai_events(model: &str, behaviour: &Behaviour, request: &Value) -> Vec<String> {
    let reply = &behaviour.reply;
    let chunk = |delta: Value, finish: Value| {
        let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {chunk}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for word in reply.split_inclusive(' ') {
        events.push(chunk(json!({"content": word}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [], "usage": openai_usage(behaviour)});
        events.push(format!("data: {usage}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    events
}

fn anthropic_events(model: &str, behaviour: &Behaviour, tool: Option<&str>) -> Vec<String> {
    let reply = &behaviour.reply;
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                   "role": "assistant", "model": model, "content": [], "stop_reason": null,
                   "stop_sequence": null, "usage": anthropic_usage(behaviour, 1)}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    match tool {
        Some(name) => {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}}),
            ));
            for part in ["{\"city\":", "\"Paris\"}"] {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
        }
        None => {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            for word in reply.split_inclusive(' ') {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": word}}),
                ));
            }
        }
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason(behaviour, tool), "stop_sequence": null},
        "usage": {"output_tokens": COMPLETION_TOKENS}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}
