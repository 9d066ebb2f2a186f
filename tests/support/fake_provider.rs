//! A fake LLM provider on a loopback port: the model listings of OpenAI (and compatible),
//! Azure OpenAI, Anthropic and Ollama, with faults a test switches at run time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

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
        }
    }
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: AtomicU64,
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
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/v1/models", get(list_models))
            .route("/openai/models", get(list_models))
            .route("/api/tags", get(ollama_tags))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .unwrap_or_else(|error| panic!("cannot listen on {address}: {error}"));
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            shared,
            server,
        }
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
