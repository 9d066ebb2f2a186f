//! When the router moves on to the next provider, and when it skips one: the classification of
//! an upstream answer and each provider's circuit breaker. Pure, so every rule is unit-tested.

use std::time::{Duration, Instant};

/// Why an attempt at one provider did not produce the answer. Each is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Connection refused or reset, DNS or TLS failure.
    Unreachable,
    /// No first byte within `firstByteTimeout`, or 408.
    Timeout,
    /// 5xx.
    ServerError,
    /// 429.
    RateLimited,
    /// 401 or 403: this provider refused its own credential; another has its own.
    Unauthorized,
    /// 404: this provider does not serve the model; another may.
    ModelNotFound,
    /// The provider's `limits` would be exceeded and the bounded wait ran out. Recorded as a
    /// failover, never against the circuit: a local limit says nothing of the provider.
    LimitReached,
    /// A 2xx whose body this provider type never sends, or a redirect: the endpoint is not
    /// the provider's API.
    InvalidResponse,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::ServerError => "server_error",
            Failure::RateLimited => "rate_limited",
            Failure::Unauthorized => "unauthorized",
            Failure::ModelNotFound => "model_not_found",
            Failure::LimitReached => "limit_reached",
            Failure::InvalidResponse => "invalid_response",
        }
    }
}

/// The failure an error sent inside a 200 stream stands for, before any content: Anthropic
/// streams its 529 as an `overloaded_error` event, and OpenAI-compatible servers put an
/// `error` object in a `data:` line. `kind` is Anthropic's error type or OpenAI's error code.
pub fn stream_error_failure(kind: &str) -> Failure {
    match kind {
        "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" => Failure::RateLimited,
        "authentication_error" | "permission_error" | "invalid_api_key" => Failure::Unauthorized,
        "not_found_error" | "model_not_found" => Failure::ModelNotFound,
        "timeout_error" => Failure::Timeout,
        // overloaded_error, api_error and whatever a provider adds: the provider failed.
        _ => Failure::ServerError,
    }
}

/// What to do with an upstream answer's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Try the next provider.
    Failover(Failure),
    /// The request itself is at fault (400, 413, 422, …): every provider would refuse it, so
    /// the answer goes back to the agent as it is.
    ReturnToAgent,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        // Never followed: a redirect would take the request, key and all, where the operator
        // did not point it. The endpoint is misconfigured; the next provider may be right.
        300..=399 => Verdict::Failover(Failure::InvalidResponse),
        401 | 403 => Verdict::Failover(Failure::Unauthorized),
        404 => Verdict::Failover(Failure::ModelNotFound),
        408 => Verdict::Failover(Failure::Timeout),
        429 => Verdict::Failover(Failure::RateLimited),
        500..=599 => Verdict::Failover(Failure::ServerError),
        _ => Verdict::ReturnToAgent,
    }
}

/// How a provider's circuit behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit skips the provider before one request tries it.
    pub open_duration: Duration,
    /// How long a trial request may take before another may try; a trial whose agent went away
    /// never reports back.
    pub trial_timeout: Duration,
}

/// One provider's circuit breaker, plus the hold a `Retry-After` puts on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Circuit {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    trial_since: Option<Instant>,
    held_until: Option<Instant>,
    /// The failure that opened the circuit, to tell the agent why it is skipped.
    opened_by: Option<Failure>,
}

/// Why a skipped provider is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its `Retry-After`, or a circuit its 429s opened: it is rate-limited.
    RateLimited,
    /// Its circuit, opened by this kind of failure.
    CircuitOpen(Failure),
}

/// Whether a request may use the provider now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// The circuit was open and this request is its one trial.
    Trial,
    /// Skip the provider until this instant (open circuit or `Retry-After`).
    SkipUntil(Instant),
}

impl Circuit {
    pub fn admit(&mut self, now: Instant, settings: &CircuitSettings) -> Admission {
        if let Some(until) = self.held_until {
            if now < until {
                return Admission::SkipUntil(until);
            }
            self.held_until = None;
        }
        match self.open_until {
            None => Admission::Closed,
            Some(until) if now < until => Admission::SkipUntil(until),
            Some(_) => match self.trial_since {
                Some(since) if now < since + settings.trial_timeout => {
                    Admission::SkipUntil(since + settings.trial_timeout)
                }
                _ => {
                    self.trial_since = Some(now);
                    Admission::Trial
                }
            },
        }
    }

    pub fn succeeded(&mut self) {
        *self = Circuit {
            held_until: self.held_until,
            ..Circuit::default()
        };
    }

    pub fn failed(&mut self, now: Instant, settings: &CircuitSettings, failure: Failure) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.trial_since = None;
        if self.consecutive_failures >= settings.failure_threshold {
            self.open_until = Some(now + settings.open_duration);
            self.opened_by = Some(failure);
        }
    }

    /// Why `admit` skips the provider at `now`, when it does.
    pub fn skip_reason(&self, now: Instant) -> Option<SkipReason> {
        if self.held_until.is_some_and(|until| now < until) {
            return Some(SkipReason::RateLimited);
        }
        self.open_until
            .map(|_| match self.opened_by.unwrap_or(Failure::ServerError) {
                Failure::RateLimited => SkipReason::RateLimited,
                other => SkipReason::CircuitOpen(other),
            })
    }

    /// Keeps the provider out until `until`, as its `Retry-After` asked.
    pub fn hold(&mut self, until: Instant) {
        self.held_until = Some(self.held_until.map_or(until, |h| h.max(until)));
    }

    pub fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failure_threshold: 2,
            open_duration: Duration::from_secs(10),
            trial_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn in_stream_errors_count_as_the_providers_failure() {
        assert_eq!(
            stream_error_failure("overloaded_error"),
            Failure::ServerError
        );
        assert_eq!(
            stream_error_failure("rate_limit_error"),
            Failure::RateLimited
        );
        assert_eq!(
            stream_error_failure("authentication_error"),
            Failure::Unauthorized
        );
    }

    #[test]
    fn statuses_decide_failover() {
        assert_eq!(verdict(200), Verdict::Success);
        for status in [500, 502, 503, 529] {
            assert_eq!(verdict(status), Verdict::Failover(Failure::ServerError));
        }
        assert_eq!(verdict(429), Verdict::Failover(Failure::RateLimited));
        assert_eq!(verdict(401), Verdict::Failover(Failure::Unauthorized));
        assert_eq!(verdict(404), Verdict::Failover(Failure::ModelNotFound));
        for status in [301, 302, 307, 308] {
            assert_eq!(verdict(status), Verdict::Failover(Failure::InvalidResponse));
        }
        for status in [400, 413, 422] {
            assert_eq!(verdict(status), Verdict::ReturnToAgent, "{status}");
        }
    }

    #[test]
    fn the_circuit_opens_at_the_threshold_and_admits_one_trial_after() {
        let (s, t0) = (settings(), Instant::now());
        let mut circuit = Circuit::default();
        circuit.failed(t0, &s, Failure::ServerError);
        assert_eq!(circuit.admit(t0, &s), Admission::Closed, "one failure");
        circuit.failed(t0, &s, Failure::ServerError);
        assert_eq!(
            circuit.admit(t0, &s),
            Admission::SkipUntil(t0 + s.open_duration)
        );
        let later = t0 + s.open_duration;
        assert_eq!(circuit.admit(later, &s), Admission::Trial);
        assert!(
            matches!(circuit.admit(later, &s), Admission::SkipUntil(_)),
            "a second request waits for the trial"
        );
        circuit.succeeded();
        assert_eq!(circuit.admit(later, &s), Admission::Closed);
    }

    #[test]
    fn a_skipped_provider_says_what_opened_its_circuit() {
        let (s, t0) = (settings(), Instant::now());
        let mut failing = Circuit::default();
        failing.failed(t0, &s, Failure::Unauthorized);
        failing.failed(t0, &s, Failure::Unauthorized);
        assert_eq!(
            failing.skip_reason(t0),
            Some(SkipReason::CircuitOpen(Failure::Unauthorized))
        );
        let mut limited = Circuit::default();
        limited.failed(t0, &s, Failure::RateLimited);
        limited.failed(t0, &s, Failure::RateLimited);
        assert_eq!(limited.skip_reason(t0), Some(SkipReason::RateLimited));
        let mut held = Circuit::default();
        held.hold(t0 + Duration::from_secs(5));
        assert_eq!(held.skip_reason(t0), Some(SkipReason::RateLimited));
        assert_eq!(Circuit::default().skip_reason(t0), None);
    }

    #[test]
    fn a_failed_trial_opens_the_circuit_again() {
        let (s, t0) = (settings(), Instant::now());
        let mut circuit = Circuit::default();
        circuit.failed(t0, &s, Failure::ServerError);
        circuit.failed(t0, &s, Failure::ServerError);
        let later = t0 + s.open_duration;
        assert_eq!(circuit.admit(later, &s), Admission::Trial);
        circuit.failed(later, &s, Failure::ServerError);
        assert!(circuit.is_open(later));
    }

    #[test]
    fn an_abandoned_trial_lets_another_request_try() {
        let (s, t0) = (settings(), Instant::now());
        let mut circuit = Circuit::default();
        circuit.failed(t0, &s, Failure::ServerError);
        circuit.failed(t0, &s, Failure::ServerError);
        let later = t0 + s.open_duration;
        assert_eq!(circuit.admit(later, &s), Admission::Trial);
        assert_eq!(circuit.admit(later + s.trial_timeout, &s), Admission::Trial);
    }

    #[test]
    fn retry_after_holds_the_provider_without_opening_the_circuit() {
        let (s, t0) = (settings(), Instant::now());
        let mut circuit = Circuit::default();
        circuit.hold(t0 + Duration::from_secs(3));
        assert_eq!(
            circuit.admit(t0, &s),
            Admission::SkipUntil(t0 + Duration::from_secs(3))
        );
        assert!(!circuit.is_open(t0));
        assert_eq!(
            circuit.admit(t0 + Duration::from_secs(3), &s),
            Admission::Closed
        );
    }
}
