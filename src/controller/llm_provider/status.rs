//! The LLMProvider status computed from probe results. Pure: no client, no clock.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{ConditionStatus, DesiredCondition, Progress, merge_conditions};
use crate::api::llm_provider::{LLMProviderStatus, condition};
use crate::providers::FailureClass;
use crate::providers::health::Health;

/// Most discovered models kept in status; the count says how many there are.
pub const MAX_STATUS_MODELS: usize = 100;

/// What the reconcile learned, as plain data.
pub struct ProbeReport<'a> {
    pub health: &'a Health,
    pub latency: Duration,
    /// Whether the provider has `spec.credentials` at all.
    pub has_credentials: bool,
    pub credential_hash: Option<String>,
}

/// The status to write. Equal to `previous` whenever nothing a person cares about changed:
/// latency alone never causes a write (it is a metric), it is refreshed when the status changes
/// for another reason.
pub fn desired_status(
    previous: Option<&LLMProviderStatus>,
    generation: Option<i64>,
    report: &ProbeReport<'_>,
    now: Timestamp,
) -> LLMProviderStatus {
    let existing = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = merge_conditions(existing, &desired_conditions(report), generation, now);
    let health = report.health;
    let mut status = LLMProviderStatus {
        conditions,
        observed_generation: generation,
        models: health
            .models
            .iter()
            .take(MAX_STATUS_MODELS)
            .cloned()
            .collect(),
        model_count: Some(i32::try_from(health.models.len()).unwrap_or(i32::MAX)),
        latency: previous.and_then(|s| s.latency.clone()),
        consecutive_failures: i32::try_from(health.consecutive_failures).unwrap_or(i32::MAX),
        credential_hash: report.credential_hash.clone(),
    };
    if previous != Some(&status) {
        status.latency = Some(format_latency(report.latency));
    }
    status
}

fn desired_conditions(report: &ProbeReport<'_>) -> Vec<DesiredCondition> {
    let health = report.health;
    let ready = match (health.ready, &health.last_failure) {
        (Some(true), _) => DesiredCondition::new(
            condition::READY,
            ConditionStatus::True,
            "Available",
            format!(
                "the provider answers and lists {} models",
                health.models.len()
            ),
        ),
        (_, Some(failure)) => DesiredCondition::new(
            condition::READY,
            ConditionStatus::False,
            failure.class.reason(),
            failure.message.clone(),
        ),
        _ => DesiredCondition::new(
            condition::READY,
            ConditionStatus::Unknown,
            "Probing",
            "no probe has finished yet",
        ),
    };
    let credentials = if !report.has_credentials {
        DesiredCondition::new(
            condition::CREDENTIALS_VALID,
            ConditionStatus::True,
            "NotRequired",
            "this provider is used without a credential",
        )
    } else {
        match (health.credentials_valid, &health.last_failure) {
            (Some(true), _) => DesiredCondition::new(
                condition::CREDENTIALS_VALID,
                ConditionStatus::True,
                "Accepted",
                "the provider accepted the API key",
            ),
            (Some(false), Some(failure))
                if matches!(
                    failure.class,
                    FailureClass::Unauthorized | FailureClass::CredentialsNotFound
                ) =>
            {
                DesiredCondition::new(
                    condition::CREDENTIALS_VALID,
                    ConditionStatus::False,
                    failure.class.reason(),
                    failure.message.clone(),
                )
            }
            (Some(false), _) => DesiredCondition::new(
                condition::CREDENTIALS_VALID,
                ConditionStatus::False,
                "Unauthorized",
                "the provider refused the API key at the last probe that reached it",
            ),
            (None, _) => DesiredCondition::new(
                condition::CREDENTIALS_VALID,
                ConditionStatus::Unknown,
                "NotVerified",
                "the provider has not answered a probe yet",
            ),
        }
    };
    let mut conditions = vec![ready, credentials];
    conditions.extend(progress(health).conditions());
    conditions
}

/// Probing until the first verdict; stalled when only a person can help: the credential's Secret
/// or key is missing, the key is refused, or a configured model is not offered. Other failures
/// (unreachable, timeouts, 5xx, rate limits) may pass by themselves: `Ready=False` alone says
/// so, which kstatus reads as still in progress.
fn progress(health: &Health) -> Progress {
    match (health.ready, &health.last_failure) {
        (Some(true), _) => Progress::Settled,
        (_, Some(failure))
            if matches!(
                failure.class,
                FailureClass::CredentialsNotFound
                    | FailureClass::Unauthorized
                    | FailureClass::ModelNotFound
            ) =>
        {
            Progress::Stalled {
                reason: failure.class.reason(),
                message: failure.message.clone(),
            }
        }
        (None, _) => Progress::Working {
            reason: "Probing",
            message: "waiting for the probes that decide whether the provider is Ready".into(),
        },
        (Some(false), _) => Progress::Settled,
    }
}

/// Latency for display: milliseconds below a second (`120ms`), else seconds (`1.4s`).
pub fn format_latency(latency: Duration) -> String {
    let millis = latency.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else {
        format!("{:.1}s", latency.as_secs_f64())
    }
}

/// An Event a person should see: the provider became Ready, or stopped being Ready (with the
/// failure's reason). One per transition, never per probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

pub fn event_for(
    previous: Option<&LLMProviderStatus>,
    next: &LLMProviderStatus,
) -> Option<ProviderEvent> {
    let ready = |s: &LLMProviderStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let before = previous.and_then(ready).map(|(status, ..)| status);
    let (status, reason, message) = ready(next)?;
    if before.as_deref() == Some(status.as_str()) {
        return None;
    }
    match status.as_str() {
        "True" => Some(ProviderEvent {
            warning: false,
            reason: "ProviderReady".into(),
            note: message,
        }),
        "False" => Some(ProviderEvent {
            warning: true,
            reason,
            note: message,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProbeFailure;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid")
    }

    fn healthy() -> Health {
        Health {
            ready: Some(true),
            credentials_valid: Some(true),
            consecutive_successes: 1,
            models: vec!["gpt-4o".into()],
            ..Health::default()
        }
    }

    fn report(health: &Health, latency_ms: u64) -> ProbeReport<'_> {
        ProbeReport {
            health,
            latency: Duration::from_millis(latency_ms),
            has_credentials: true,
            credential_hash: Some("abcd".into()),
        }
    }

    #[test]
    fn healthy_provider_is_ready_with_models_and_latency() {
        let health = healthy();
        let status = desired_status(None, Some(1), &report(&health, 120), ts(1));
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].reason, "Available");
        assert_eq!(status.conditions[1].reason, "Accepted");
        assert_eq!(status.model_count, Some(1));
        assert_eq!(status.latency.as_deref(), Some("120ms"));
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn another_probe_with_other_latency_changes_nothing() {
        let health = healthy();
        let first = desired_status(None, Some(1), &report(&health, 120), ts(1));
        let second = desired_status(Some(&first), Some(1), &report(&health, 480), ts(60));
        assert_eq!(second, first, "latency alone must not cause a status write");
    }

    #[test]
    fn a_change_refreshes_latency_too() {
        let health = healthy();
        let first = desired_status(None, Some(1), &report(&health, 120), ts(1));
        let mut more_models = healthy();
        more_models.models.push("gpt-4o-mini".into());
        let second = desired_status(Some(&first), Some(1), &report(&more_models, 1450), ts(60));
        assert_eq!(second.model_count, Some(2));
        assert_eq!(second.latency.as_deref(), Some("1.4s"));
    }

    #[test]
    fn unauthorized_key_shows_in_both_conditions() {
        let health = Health {
            ready: Some(false),
            consecutive_failures: 1,
            credentials_valid: Some(false),
            last_failure: Some(ProbeFailure {
                class: FailureClass::Unauthorized,
                message: "HTTP 401".into(),
            }),
            ..Health::default()
        };
        let status = desired_status(None, Some(1), &report(&health, 30), ts(1));
        assert_eq!(status.conditions[0].reason, "Unauthorized");
        assert_eq!(status.conditions[1].status, "False");
        assert_eq!(status.conditions[1].reason, "Unauthorized");
        assert_eq!(status.consecutive_failures, 1);
    }

    fn condition_types(status: &LLMProviderStatus) -> Vec<(String, String, String)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    #[test]
    fn a_provider_reads_as_working_stalled_or_settled_as_kstatus_expects() {
        let failing = |class: FailureClass, ready: Option<bool>| Health {
            ready,
            consecutive_failures: 1,
            last_failure: Some(ProbeFailure {
                class,
                message: "why".into(),
            }),
            ..Health::default()
        };
        let has = |status: &LLMProviderStatus, type_: &str, reason: &str| {
            condition_types(status)
                .iter()
                .any(|(t, s, r)| t == type_ && s == "True" && r == reason)
        };
        let unprobed = desired_status(None, Some(1), &report(&Health::default(), 0), ts(1));
        assert!(has(&unprobed, "Reconciling", "Probing"), "{unprobed:?}");
        let missing = failing(FailureClass::CredentialsNotFound, Some(false));
        let stalled = desired_status(None, Some(1), &report(&missing, 0), ts(1));
        assert!(
            has(&stalled, "Stalled", "CredentialsNotFound"),
            "{stalled:?}"
        );
        for class in [FailureClass::Unauthorized, FailureClass::ModelNotFound] {
            let status = desired_status(
                None,
                Some(1),
                &report(&failing(class, Some(false)), 0),
                ts(1),
            );
            assert!(has(&status, "Stalled", class.reason()), "{status:?}");
        }
        let down = failing(FailureClass::Unreachable, Some(false));
        let transient = desired_status(None, Some(1), &report(&down, 0), ts(1));
        assert!(
            !condition_types(&transient)
                .iter()
                .any(|(t, _, _)| t == "Stalled" || t == "Reconciling"),
            "an unreachable provider may recover by itself: Ready=False alone"
        );
        let first_failure = failing(FailureClass::Timeout, None);
        let probing = desired_status(None, Some(1), &report(&first_failure, 0), ts(1));
        assert!(
            has(&probing, "Reconciling", "Probing"),
            "below the failure threshold"
        );
        let ready = desired_status(None, Some(1), &report(&healthy(), 0), ts(1));
        assert_eq!(
            condition_types(&ready).len(),
            2,
            "Ready and CredentialsValid only"
        );
    }

    #[test]
    fn events_mark_readiness_transitions_only() {
        let ready = desired_status(None, Some(1), &report(&healthy(), 1), ts(1));
        let event = event_for(None, &ready).expect("became Ready");
        assert_eq!(
            (event.warning, event.reason.as_str()),
            (false, "ProviderReady")
        );
        assert_eq!(event_for(Some(&ready), &ready), None, "no event per probe");
        let down = Health {
            ready: Some(false),
            consecutive_failures: 3,
            last_failure: Some(ProbeFailure {
                class: FailureClass::Unreachable,
                message: "connection refused".into(),
            }),
            ..Health::default()
        };
        let failed = desired_status(Some(&ready), Some(1), &report(&down, 1), ts(2));
        let event = event_for(Some(&ready), &failed).expect("stopped being Ready");
        assert_eq!(
            (event.warning, event.reason.as_str()),
            (true, "Unreachable")
        );
        let probing = desired_status(None, Some(1), &report(&Health::default(), 0), ts(0));
        assert_eq!(event_for(None, &probing), None, "probing is no news");
    }

    #[test]
    fn provider_without_credentials_needs_none() {
        let health = healthy();
        let report = ProbeReport {
            has_credentials: false,
            credential_hash: None,
            ..report(&health, 5)
        };
        let status = desired_status(None, None, &report, ts(1));
        assert_eq!(status.conditions[1].reason, "NotRequired");
        assert_eq!(status.credential_hash, None);
    }

    #[test]
    fn status_keeps_at_most_a_hundred_models() {
        let mut health = healthy();
        health.models = (0..250).map(|i| format!("m{i}")).collect();
        let status = desired_status(None, None, &report(&health, 5), ts(1));
        assert_eq!(status.models.len(), MAX_STATUS_MODELS);
        assert_eq!(status.model_count, Some(250));
    }
}
