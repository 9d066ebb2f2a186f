//! Kubernetes Events for what a person must know about an agent: it became available, it failed
//! over to another provider or back, it is degraded or recovered. Emitted on transitions only,
//! so a stable agent emits nothing.

use crate::api::agent_deployment::{AgentDeploymentStatus, condition};
use crate::resources::provider_config::ResolvedProvider;

/// An event to publish about an AgentDeployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

fn condition_of<'a>(
    status: Option<&'a AgentDeploymentStatus>,
    type_: &str,
) -> Option<(&'a str, &'a str)> {
    let found = status?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((found.status.as_str(), found.message.as_str()))
}

pub fn events_for(
    previous: Option<&AgentDeploymentStatus>,
    next: &AgentDeploymentStatus,
    chain: &[ResolvedProvider],
) -> Vec<AgentEvent> {
    let mut events = Vec::new();
    let was = |type_| condition_of(previous, type_).map(|c| c.0);
    let now = |type_| condition_of(Some(next), type_);

    if let Some(("True", message)) = now(condition::READY)
        && was(condition::READY) != Some("True")
    {
        events.push(AgentEvent {
            warning: false,
            reason: "Available",
            note: message.to_string(),
        });
    }
    let position = |name: &str| chain.iter().position(|p| p.name == name);
    let old_active = previous.and_then(|s| s.active_provider.as_deref());
    match (old_active, next.active_provider.as_deref()) {
        (Some(old), Some(new)) if old != new => {
            let later = position(new) > position(old);
            events.push(AgentEvent {
                warning: later,
                reason: if later {
                    "Failover"
                } else {
                    "ProviderRecovered"
                },
                note: format!("active provider changed from {old} to {new}"),
            });
        }
        (Some(old), None) => events.push(AgentEvent {
            warning: true,
            reason: "NoProviderReady",
            note: format!("{old} is no longer Ready and no other provider of the chain is"),
        }),
        _ => {}
    }
    match (was(condition::DEGRADED), now(condition::DEGRADED)) {
        (previous, Some(("True", message))) if previous != Some("True") => {
            events.push(AgentEvent {
                warning: true,
                reason: "Degraded",
                note: message.to_string(),
            });
        }
        (Some("True"), Some(("False", _))) => {
            events.push(AgentEvent {
                warning: false,
                reason: "Recovered",
                note: "the agent is no longer degraded".into(),
            });
        }
        _ => {}
    }
    events
}

/// Events of an agent's budget: a limit crossing its alert share, the window spent, and the
/// budget back after the window turned or the limit was raised.
pub fn budget_events(
    previous: Option<&AgentDeploymentStatus>,
    next: &AgentDeploymentStatus,
    alert_percent: Option<i32>,
    outcome: Option<&super::lease::Outcome>,
) -> Vec<AgentEvent> {
    let mut events = Vec::new();
    let (Some(alert_percent), Some(outcome)) = (alert_percent, outcome) else {
        return events;
    };
    let was = condition_of(previous, condition::BUDGET_EXCEEDED).map(|c| c.0);
    let now = condition_of(Some(next), condition::BUDGET_EXCEEDED);
    let threshold = f64::from(alert_percent);
    for (limit, percent) in &outcome.used_percent {
        let before = outcome
            .used_percent_before
            .iter()
            .find(|(l, _)| l == limit)
            .map_or(0.0, |(_, p)| *p);
        if before < threshold && *percent >= threshold {
            events.push(AgentEvent {
                warning: true,
                reason: "BudgetAlert",
                note: format!(
                    "{percent:.0}% of the {limit} budget is used (alert at {alert_percent}%)"
                ),
            });
        }
    }
    match (was, now) {
        (was, Some(("True", message))) if was != Some("True") => events.push(AgentEvent {
            warning: true,
            reason: "BudgetExceeded",
            note: message.to_string(),
        }),
        (Some("True"), Some(("False", message))) => events.push(AgentEvent {
            warning: false,
            reason: "BudgetRestored",
            note: message.to_string(),
        }),
        _ => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{ConditionStatus, DesiredCondition, merge_conditions};
    use k8s_openapi::jiff::Timestamp;

    fn status(ready: bool, degraded: bool, active: Option<&str>) -> AgentDeploymentStatus {
        let bool_status = |b| {
            if b {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            }
        };
        let conditions = merge_conditions(
            &[],
            &[
                DesiredCondition::new(
                    condition::READY,
                    bool_status(ready),
                    "X",
                    "1 of 1 pods ready",
                ),
                DesiredCondition::new(
                    condition::DEGRADED,
                    bool_status(degraded),
                    "Y",
                    "pod p is in CrashLoopBackOff",
                ),
            ],
            None,
            Timestamp::from_second(1).expect("ts"),
        );
        AgentDeploymentStatus {
            conditions,
            active_provider: active.map(str::to_string),
            ..Default::default()
        }
    }

    fn chain() -> Vec<ResolvedProvider> {
        ["a", "b"]
            .iter()
            .map(|n| ResolvedProvider {
                name: (*n).into(),
                provider_type: None,
                endpoint: None,
                model: None,
                ready: true,
                reason: None,
                credential: None,
                api: Default::default(),
            })
            .collect()
    }

    fn reasons(
        previous: Option<&AgentDeploymentStatus>,
        next: &AgentDeploymentStatus,
    ) -> Vec<&'static str> {
        events_for(previous, next, &chain())
            .iter()
            .map(|e| e.reason)
            .collect()
    }

    #[test]
    fn unchanged_status_emits_nothing() {
        let s = status(true, false, Some("a"));
        assert!(reasons(Some(&s), &s).is_empty());
    }

    #[test]
    fn transitions_emit_once() {
        assert_eq!(
            reasons(None, &status(true, false, Some("a"))),
            ["Available"]
        );
        assert_eq!(
            reasons(
                Some(&status(true, false, Some("a"))),
                &status(true, false, Some("b"))
            ),
            ["Failover"]
        );
        assert_eq!(
            reasons(
                Some(&status(true, false, Some("b"))),
                &status(true, false, Some("a"))
            ),
            ["ProviderRecovered"]
        );
        assert_eq!(
            reasons(
                Some(&status(true, false, Some("a"))),
                &status(false, true, Some("a"))
            ),
            ["Degraded"]
        );
        assert_eq!(
            reasons(
                Some(&status(false, true, Some("a"))),
                &status(true, false, Some("a"))
            ),
            ["Available", "Recovered"]
        );
        assert_eq!(
            reasons(
                Some(&status(true, false, Some("a"))),
                &status(true, false, None)
            ),
            ["NoProviderReady"]
        );
    }
}
