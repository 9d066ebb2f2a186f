//! One probe of one provider: its model listing over HTTP, with a timeout per request and a
//! bounded number of retries (exponential backoff with jitter; a 429's `Retry-After` honoured).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::listing::{listing_request, missing_models, models_in_listing};
use super::scrub::scrub;
use super::{FailureClass, ProbeFailure, ProbeOutcome};
use crate::api::llm_provider::LLMProviderSpec;

/// Retries after the first request of a probe, for transient failures only.
pub const MAX_RETRIES: usize = 2;
/// Longest `Retry-After` a probe waits for; a longer one ends the probe as RateLimited.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One failed request, with the provider's requested delay when it sent one.
#[derive(Debug)]
struct Attempt {
    failure: ProbeFailure,
    retry_after: Option<Duration>,
}

/// Probes a provider. `credential` is the API key read from its Secret, if it has one.
pub async fn probe(
    http: &reqwest::Client,
    spec: &LLMProviderSpec,
    credential: Option<&str>,
    timeout: Duration,
) -> ProbeOutcome {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(MAX_RETRIES)
        .with_jitter();
    let result = (|| list_models(http, spec, credential, timeout))
        .retry(backoff)
        .when(|attempt: &Attempt| {
            attempt.failure.class.is_transient()
                && attempt.retry_after.is_none_or(|d| d <= MAX_RETRY_AFTER)
        })
        // `Retry-After` replaces the planned delay but never extends the retries: once they
        // are used up (`planned` is None) the probe ends. Returning the header's delay there
        // retried forever against a provider answering 429 with Retry-After, and its status
        // stayed Ready (found by the fault suite).
        .adjust(|attempt: &Attempt, planned| {
            planned.map(|planned| attempt.retry_after.unwrap_or(planned))
        })
        .await;
    match result {
        Err(attempt) => ProbeOutcome::Failed(attempt.failure),
        Ok(models) => {
            let missing = missing_models(spec, &models);
            if missing.is_empty() {
                ProbeOutcome::Healthy { models }
            } else {
                ProbeOutcome::Failed(ProbeFailure {
                    class: FailureClass::ModelNotFound,
                    message: format!(
                        "the provider does not list the configured model(s): {}",
                        missing.join(", ")
                    ),
                })
            }
        }
    }
}

async fn list_models(
    http: &reqwest::Client,
    spec: &LLMProviderSpec,
    credential: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>, Attempt> {
    let request = listing_request(spec);
    let mut builder = http.get(&request.url).timeout(timeout);
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    if let (Some((header, prefix)), Some(key)) = (request.auth_header, credential) {
        builder = builder.header(header, format!("{prefix}{key}"));
    }
    let response = builder
        .send()
        .await
        .map_err(|error| transport_failure(&error))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response
        .bytes()
        .await
        .map_err(|error| transport_failure(&error))?;
    if let Some(class) = classify_status(status) {
        let said = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
        let message = scrub(&format!("HTTP {}: {said}", status.as_u16()), credential);
        return Err(Attempt {
            failure: ProbeFailure { class, message },
            retry_after,
        });
    }
    models_in_listing(spec.provider_type, &body).ok_or_else(|| Attempt {
        failure: ProbeFailure {
            class: FailureClass::InvalidResponse,
            message: format!(
                "HTTP {} from {} is not a {} model listing",
                status.as_u16(),
                request.url,
                spec.provider_type.as_str()
            ),
        },
        retry_after: None,
    })
}

/// The failure class of an HTTP status, `None` for success.
pub fn classify_status(status: StatusCode) -> Option<FailureClass> {
    match status.as_u16() {
        200..=299 => None,
        401 | 403 => Some(FailureClass::Unauthorized),
        429 => Some(FailureClass::RateLimited),
        500..=599 => Some(FailureClass::ServerError),
        _ => Some(FailureClass::InvalidResponse),
    }
}

fn transport_failure(error: &reqwest::Error) -> Attempt {
    let class = if error.is_timeout() {
        FailureClass::Timeout
    } else {
        FailureClass::Unreachable
    };
    // reqwest's Display names the URL and the cause (DNS, refused, TLS), never headers.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Attempt {
        failure: ProbeFailure {
            class,
            message: scrub(&message, None),
        },
        retry_after: None,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from LLM APIs and treated as absent).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_failure_classes() {
        let cases = [
            (200, None),
            (401, Some(FailureClass::Unauthorized)),
            (403, Some(FailureClass::Unauthorized)),
            (429, Some(FailureClass::RateLimited)),
            (500, Some(FailureClass::ServerError)),
            (503, Some(FailureClass::ServerError)),
            (404, Some(FailureClass::InvalidResponse)),
        ];
        for (code, class) in cases {
            assert_eq!(
                classify_status(StatusCode::from_u16(code).expect("valid")),
                class,
                "HTTP {code}"
            );
        }
    }

    #[test]
    fn retry_after_accepts_seconds_only() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
