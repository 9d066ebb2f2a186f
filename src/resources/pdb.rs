//! The PodDisruptionBudget of an agent with `spec.disruptionBudget`.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::labels::selector_labels;
use crate::api::AgentDeployment;

pub fn pod_disruption_budget(agent: &AgentDeployment, name: &str) -> Option<PodDisruptionBudget> {
    let budget = agent.spec.disruption_budget.as_ref()?;
    let agent_name = agent.metadata.name.clone().unwrap_or_default();
    Some(PodDisruptionBudget {
        metadata: super::child_metadata(agent, name),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: budget.min_available.clone(),
            max_unavailable: budget.max_unavailable.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&agent_name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
