//! The LLMProvider status computed from probe results. Pure: no client, no clock.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{ConditionStatus, DesiredCondition, merge_conditions};
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
    vec![ready, credentials]
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
