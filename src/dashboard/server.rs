//! The dashboard's HTTP server: the pages, their static script and style, and `/live/<page>`, a
//! server-sent event stream that sends the page's new `<main>` whenever the cluster changes what
//! it shows.
//!
//! The pages show what the viewer's kubeconfig may read, so the server refuses requests whose
//! `Host` is not a loopback name while it listens on loopback: a web page elsewhere cannot read
//! it through DNS rebinding.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::model::Filter;
use super::pages::{self, View};

/// How long a page's stream waits after a change before rendering, so a burst of changes (a
/// relist, a hundred tasks finishing) becomes one update.
const COALESCE: Duration = Duration::from_millis(100);

/// How long a page asked for before the caches have listed waits for them; past it, the page
/// renders what has come and says it is still loading (its live stream completes it).
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

const STYLE: &str = include_str!("assets/app.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// Scripts and styles from this server only, no inline script, no frames, no forms elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub struct AppState {
    cache: Arc<Cache>,
    /// Whether `Host` must name loopback (the server listens on loopback).
    loopback_only: bool,
    /// Ends the live streams, which would otherwise hold a graceful shutdown open.
    shutdown: CancellationToken,
}

impl AppState {
    pub fn new(cache: Arc<Cache>, address: SocketAddr, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(AppState {
            cache,
            loopback_only: address.ip().is_loopback(),
            shutdown,
        })
    }
}

pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/assets/app.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/app.js",
            get(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route("/live", get(live))
        .route("/live/", get(live))
        .route("/live/{*page}", get(live))
        .fallback(get(page))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The query of list pages; the live stream's also says which version the page shows.
#[derive(Debug, Default, Deserialize)]
pub struct FilterQuery {
    namespace: Option<String>,
    agent: Option<String>,
    phase: Option<String>,
    since: Option<u64>,
}

impl From<&FilterQuery> for Filter {
    fn from(query: &FilterQuery) -> Filter {
        let present = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        Filter {
            namespace: present(&query.namespace),
            agent: present(&query.agent),
            phase: present(&query.phase),
        }
    }
}

async fn page(State(state): State<Arc<AppState>>, uri: Uri, query: Query<FilterQuery>) -> Response {
    let Some(view) = View::parse(uri.path(), (&query.0).into()) else {
        return (StatusCode::NOT_FOUND, "no such page\n").into_response();
    };
    state.cache.settled(FIRST_LIST_WAIT).await;
    // The version first: a change between the two reads is then sent again, never lost.
    let version = state.cache.version();
    let snapshot = state.cache.snapshot();
    let page = pages::render(&view, &snapshot);
    let status = if page.found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    (
        status,
        pages::document(&view, &page, &snapshot.state, version),
    )
        .into_response()
}

/// One open page's stream: what it shows and what it was last sent.
struct Live {
    state: Arc<AppState>,
    view: View,
    changes: watch::Receiver<u64>,
    last: Option<String>,
}

async fn live(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    query: Query<FilterQuery>,
) -> Response {
    let path = uri.path().strip_prefix("/live").unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };
    let Some(view) = View::parse(path, (&query.0).into()) else {
        return (StatusCode::NOT_FOUND, "no such page\n").into_response();
    };
    let mut changes = state.cache.subscribe();
    let current = *changes.borrow_and_update();
    // The version the page shows: the last event's id after a reconnect, else the page's own.
    let shown = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok()?.parse::<u64>().ok())
        .or(query.since);
    // A page showing the current version needs nothing now: its stream waits for a change.
    // Any other gets the current page at once.
    let last = (shown == Some(current)).then(|| {
        pages::render(&view, &state.cache.snapshot())
            .main
            .into_string()
    });
    let live = Live {
        changes,
        state: state.clone(),
        view,
        last,
    };
    let updates = futures::stream::unfold(live, next_update)
        .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(updates)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Waits for a change that alters the page, and sends the page's new `<main>`; without a `last`
/// rendering, sends the current one at once.
async fn next_update(mut live: Live) -> Option<(Result<Event, Infallible>, Live)> {
    loop {
        if live.last.is_some() {
            live.changes.changed().await.ok()?;
            tokio::time::sleep(COALESCE).await;
        }
        let version = *live.changes.borrow_and_update();
        let snapshot = live.state.cache.snapshot();
        let main = pages::render(&live.view, &snapshot).main.into_string();
        if live.last.as_deref() != Some(main.as_str()) {
            // The id comes back as `Last-Event-ID` when the browser reconnects.
            let event = Event::default()
                .event("view")
                .id(version.to_string())
                .data(&main);
            live.last = Some(main);
            return Some((Ok(event), live));
        }
    }
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Refuses foreign `Host` names on loopback and sets the headers that keep the pages from
/// being framed, sniffed or fed scripts from elsewhere.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.loopback_only {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if !host.is_some_and(is_loopback_host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this dashboard answers requests for localhost, 127.0.0.1 and [::1] only\n",
            )
                .into_response();
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Whether a `Host` header names this machine's loopback, with any port (`kubectl
/// port-forward` may choose another local port than the one served).
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((address, _)) => address,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_with_any_port_pass_and_other_names_do_not() {
        for host in [
            "localhost",
            "localhost:8088",
            "127.0.0.1:41234",
            "[::1]:8088",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8088",
            "127.0.0.1.evil.example",
            "[::1",
            "10.0.0.1:8088",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
