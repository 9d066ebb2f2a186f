//! Status conditions shared by all three kinds, and the pure logic that updates them.
//!
//! Conditions follow the Kubernetes API conventions (`metav1.Condition`) so kstatus-based tools
//! (Flux, Argo CD) read our health correctly: `lastTransitionTime` moves only when `status`
//! changes, and every condition carries the generation it was computed from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The three values of a condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// A condition as a controller computes it, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges freshly computed conditions into the existing list.
///
/// Now, to the second. The API keeps a `Time` to the second, so a status holding a finer time
/// never equals the same status read back from the watch, and the controllers would keep their
/// copy of every status they wrote (`written_status`) for the object's life.
pub fn now_to_the_second() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// A condition whose status did not change keeps its `lastTransitionTime`, so a status computed
/// twice from the same facts is byte-for-byte identical and causes no API write. Conditions of
/// types not in `desired` are dropped: each controller owns the whole list of its kind.
pub fn merge_conditions(
    existing: &[Condition],
    desired: &[DesiredCondition],
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|want| {
            let previous = existing.iter().find(|c| c.type_ == want.type_);
            let last_transition_time = match previous {
                Some(prev) if prev.status == want.status.as_str() => {
                    prev.last_transition_time.clone()
                }
                _ => Time(now),
            };
            Condition {
                type_: want.type_.to_string(),
                status: want.status.as_str().to_string(),
                reason: want.reason.to_string(),
                message: want.message.clone(),
                observed_generation,
                last_transition_time,
            }
        })
        .collect()
}

/// `Reconciling`: work toward the spec is in progress. Present only while true.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled`: no progress is possible until a person changes something. Present only while true.
pub const STALLED: &str = "Stalled";

/// Where an object stands, as kstatus (Flux's health checks) and Argo CD read it: `Reconciling`
/// and `Stalled` are "abnormal-true" conditions, present only while they hold, beside `Ready`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing in progress; `Ready` alone tells the state.
    Settled,
    /// Working toward the spec (probing, creating, rolling out, running): kstatus InProgress.
    Working {
        reason: &'static str,
        message: String,
    },
    /// Only a person can fix it: kstatus Failed, so a GitOps sync fails fast with the reason.
    Stalled {
        reason: &'static str,
        message: String,
    },
}

impl Progress {
    /// The conditions that say it: none, `Reconciling=True` or `Stalled=True`.
    pub fn conditions(&self) -> Vec<DesiredCondition> {
        match self {
            Progress::Settled => Vec::new(),
            Progress::Working { reason, message } => vec![DesiredCondition::new(
                RECONCILING,
                ConditionStatus::True,
                reason,
                message.clone(),
            )],
            Progress::Stalled { reason, message } => vec![DesiredCondition::new(
                STALLED,
                ConditionStatus::True,
                reason,
                message.clone(),
            )],
        }
    }
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of that type exists and has status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid timestamp")
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let first = merge_conditions(
            &[],
            &[DesiredCondition::new(
                "Ready",
                ConditionStatus::True,
                "Available",
                "ok",
            )],
            Some(1),
            ts(100),
        );
        let second = merge_conditions(
            &first,
            &[DesiredCondition::new(
                "Ready",
                ConditionStatus::True,
                "Available",
                "still ok",
            )],
            Some(2),
            ts(200),
        );
        assert_eq!(second[0].last_transition_time, Time(ts(100)));
        assert_eq!(second[0].message, "still ok");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = merge_conditions(
            &[],
            &[DesiredCondition::new(
                "Ready",
                ConditionStatus::True,
                "Available",
                "ok",
            )],
            Some(1),
            ts(100),
        );
        let second = merge_conditions(
            &first,
            &[DesiredCondition::new(
                "Ready",
                ConditionStatus::False,
                "ProviderNotFound",
                "gone",
            )],
            Some(1),
            ts(200),
        );
        assert_eq!(second[0].last_transition_time, Time(ts(200)));
        assert_eq!(second[0].reason, "ProviderNotFound");
    }

    #[test]
    fn conditions_not_desired_are_dropped() {
        let first = merge_conditions(
            &[],
            &[
                DesiredCondition::new("Ready", ConditionStatus::True, "Available", "ok"),
                DesiredCondition::new("Degraded", ConditionStatus::False, "AsExpected", "ok"),
            ],
            None,
            ts(1),
        );
        let second = merge_conditions(
            &first,
            &[DesiredCondition::new(
                "Ready",
                ConditionStatus::True,
                "Available",
                "ok",
            )],
            None,
            ts(2),
        );
        assert_eq!(second.len(), 1);
        assert!(is_condition_true(&second, "Ready"));
        assert!(find_condition(&second, "Degraded").is_none());
    }
}
