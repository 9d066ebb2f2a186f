//! The router's side of the budget lease (`crate::resources::budget_lease`): served on the
//! pod's address, apart from the agent's loopback endpoint, to the caller that presents the
//! agent's lease token. The token is read from its mounted file on every call, so a rotated
//! Secret takes effect without a restart; the agent container mounts neither the file nor
//! anything else that holds it.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};

use super::ledger::Ledger;
use crate::resources::budget_lease::{LEASE_PATH, LeaseRequest};

#[derive(Clone)]
struct Lessee {
    ledger: Arc<Ledger>,
    token_file: PathBuf,
}

/// Serves the lease on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, token_file: PathBuf, ledger: Arc<Ledger>) {
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, "serving the budget lease");
    let routes = axum::Router::new()
        .route(LEASE_PATH, post(lease))
        .with_state(Lessee { ledger, token_file });
    if let Err(error) = axum::serve(listener, routes).await {
        tracing::error!(address = ?address, %error, "the budget lease stopped");
    }
}

async fn lease(State(lessee): State<Lessee>, headers: HeaderMap, body: Bytes) -> Response {
    let expected = match tokio::fs::read_to_string(&lessee.token_file).await {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!(path = %lessee.token_file.display(), %error, "cannot read the lease token");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the lease token is not mounted",
            )
                .into_response();
        }
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !presented.is_some_and(|token| same_token(token, expected.trim())) {
        return (
            StatusCode::UNAUTHORIZED,
            "the lease needs the agent's lease token",
        )
            .into_response();
    }
    let request: LeaseRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a lease request: {error}"),
            )
                .into_response();
        }
    };
    let reading = lessee.ledger.lease(request);
    match serde_json::to_vec(&reading) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Compares digests, so the time taken says nothing about how much of the token matched.
fn same_token(presented: &str, expected: &str) -> bool {
    !expected.is_empty() && Sha256::digest(presented) == Sha256::digest(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_token_matches_and_an_empty_one_never_does() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", ""));
    }
}
