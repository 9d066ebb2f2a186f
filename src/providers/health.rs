//! How probe outcomes become health: failure and success thresholds (no flapping on one blip),
//! and the probe schedule, which spaces probes out while a provider keeps failing.

use std::time::Duration;

use super::{FailureClass, ProbeFailure, ProbeOutcome};

/// `healthCheck.failureThreshold` and `successThreshold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub failure: u32,
    pub success: u32,
}

/// What the operator believes about a provider between probes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// `None` until the first probe decides.
    pub ready: Option<bool>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// The failure that made or keeps the provider not Ready.
    pub last_failure: Option<ProbeFailure>,
    /// Whether the provider refused the credential at the last probe that reached it.
    pub credentials_valid: Option<bool>,
    pub models: Vec<String>,
}

/// The health after one more probe.
///
/// A provider never probed takes the first outcome at once, so a new provider with a wrong key
/// reports it immediately; afterwards the thresholds apply. The credential verdict is not
/// thresholded: a 401 is a definite answer, and any answer that is not 401/403 clears it.
pub fn observe(previous: &Health, outcome: &ProbeOutcome, thresholds: Thresholds) -> Health {
    match outcome {
        ProbeOutcome::Healthy { models } => {
            let successes = previous.consecutive_successes.saturating_add(1);
            let ready = match previous.ready {
                None | Some(true) => true,
                Some(false) => successes >= thresholds.success,
            };
            Health {
                ready: Some(ready),
                consecutive_failures: 0,
                consecutive_successes: successes,
                last_failure: if ready {
                    None
                } else {
                    previous.last_failure.clone()
                },
                credentials_valid: Some(true),
                models: models.clone(),
            }
        }
        ProbeOutcome::Failed(failure) => {
            let failures = previous.consecutive_failures.saturating_add(1);
            let ready = match previous.ready {
                None => false,
                Some(false) => false,
                Some(true) => failures < thresholds.failure,
            };
            let credentials_valid = match failure.class {
                FailureClass::Unauthorized => Some(false),
                FailureClass::CredentialsNotFound => Some(false),
                FailureClass::Unreachable | FailureClass::Timeout => previous.credentials_valid,
                _ => Some(true),
            };
            Health {
                ready: Some(ready),
                consecutive_failures: failures,
                consecutive_successes: 0,
                last_failure: Some(failure.clone()),
                credentials_valid,
                // Keep what was last listed: a blip does not make the models disappear.
                models: previous.models.clone(),
            }
        }
    }
}

/// Longest gap between probes of a failing provider.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(300);

/// Delay until the next probe. While failures reach the threshold the circuit is open and the
/// interval doubles per further failure, up to [`MAX_PROBE_INTERVAL`] (or the interval, if
/// longer). `jitter` in [0, 1) spreads probes by ±10% so many providers do not fire together.
pub fn next_probe_delay(
    interval: Duration,
    health: &Health,
    thresholds: Thresholds,
    jitter: f64,
) -> Duration {
    let base = if health.consecutive_failures >= thresholds.failure {
        let doublings = (health.consecutive_failures - thresholds.failure + 1).min(8);
        let cap = MAX_PROBE_INTERVAL.max(interval);
        interval.saturating_mul(1 << doublings).min(cap)
    } else {
        interval
    };
    let factor = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        failure: 3,
        success: 2,
    };

    fn failed(class: FailureClass) -> ProbeOutcome {
        ProbeOutcome::Failed(ProbeFailure {
            class,
            message: "boom".into(),
        })
    }

    fn healthy() -> ProbeOutcome {
        ProbeOutcome::Healthy {
            models: vec!["m".into()],
        }
    }

    fn run(outcomes: &[ProbeOutcome]) -> Vec<Option<bool>> {
        let mut health = Health::default();
        outcomes
            .iter()
            .map(|outcome| {
                health = observe(&health, outcome, THRESHOLDS);
                health.ready
            })
            .collect()
    }

    #[test]
    fn first_outcome_decides_at_once() {
        assert_eq!(run(&[healthy()]), [Some(true)]);
        assert_eq!(run(&[failed(FailureClass::Unauthorized)]), [Some(false)]);
    }

    #[test]
    fn ready_survives_failures_below_the_threshold() {
        let outcomes = [
            healthy(),
            failed(FailureClass::Timeout),
            failed(FailureClass::Timeout),
            healthy(),
        ];
        assert_eq!(run(&outcomes), [Some(true); 4]);
    }

    #[test]
    fn failure_threshold_flips_and_success_threshold_recovers() {
        let outcomes = [
            healthy(),
            failed(FailureClass::ServerError),
            failed(FailureClass::ServerError),
            failed(FailureClass::ServerError),
            healthy(),
            healthy(),
        ];
        assert_eq!(
            run(&outcomes),
            [
                Some(true),
                Some(true),
                Some(true),
                Some(false),
                Some(false),
                Some(true)
            ]
        );
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let outcomes = [
            healthy(),
            failed(FailureClass::ServerError),
            failed(FailureClass::ServerError),
            healthy(),
            failed(FailureClass::ServerError),
            failed(FailureClass::ServerError),
        ];
        assert!(run(&outcomes).iter().all(|r| *r == Some(true)));
    }

    #[test]
    fn credential_verdict_follows_the_last_answer() {
        let mut health = observe(&Health::default(), &healthy(), THRESHOLDS);
        assert_eq!(health.credentials_valid, Some(true));
        health = observe(&health, &failed(FailureClass::Unauthorized), THRESHOLDS);
        assert_eq!(health.credentials_valid, Some(false));
        health = observe(&health, &failed(FailureClass::Timeout), THRESHOLDS);
        assert_eq!(
            health.credentials_valid,
            Some(false),
            "a timeout says nothing about the key"
        );
        health = observe(&health, &failed(FailureClass::ServerError), THRESHOLDS);
        assert_eq!(health.credentials_valid, Some(true));
    }

    #[test]
    fn models_survive_a_failed_probe() {
        let health = observe(&Health::default(), &healthy(), THRESHOLDS);
        let health = observe(&health, &failed(FailureClass::Timeout), THRESHOLDS);
        assert_eq!(health.models, vec!["m".to_string()]);
    }

    #[test]
    fn open_circuit_spaces_probes_out_up_to_a_cap() {
        let interval = Duration::from_secs(10);
        let with_failures = |n| Health {
            consecutive_failures: n,
            ..Health::default()
        };
        let delay = |n| next_probe_delay(interval, &with_failures(n), THRESHOLDS, 0.5);
        assert_eq!(delay(0), interval);
        assert_eq!(delay(2), interval);
        assert_eq!(delay(3), Duration::from_secs(20));
        assert_eq!(delay(4), Duration::from_secs(40));
        assert_eq!(delay(20), MAX_PROBE_INTERVAL);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(100);
        let health = Health::default();
        assert_eq!(
            next_probe_delay(interval, &health, THRESHOLDS, 0.0),
            Duration::from_secs(90)
        );
        assert_eq!(
            next_probe_delay(interval, &health, THRESHOLDS, 1.0),
            Duration::from_secs(110)
        );
    }
}
