//! The PodDisruptionBudget of an agent with `spec.disruptionBudget`.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

use super::labels::{agent_labels, selector_labels};
use crate::api::AgentDeployment;

pub fn pod_disruption_budget(agent: &AgentDeployment, name: &str) -> Option<PodDisruptionBudget> {
    let budget = agent.spec.disruption_budget.as_ref()?;
    let agent_name = agent.metadata.name.clone().unwrap_or_default();
    Some(PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: agent.metadata.namespace.clone(),
            labels: Some(agent_labels(&agent_name)),
            owner_references: super::owner_reference(agent).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
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
