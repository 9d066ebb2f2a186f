//! Labels of the objects the operator creates: the recommended `app.kubernetes.io/*` set, and
//! the selector that ties an agent's pods to its Deployment, Service and policies.

use std::collections::BTreeMap;

use super::names::label_value;

pub const AGENT_LABEL: &str = "agentoperator.dev/agent";
/// Ties a task's Jobs, pods and ConfigMaps to their AgentTask. Task pods never carry
/// `AGENT_LABEL`: the agent's Service and Deployment select by it.
pub const TASK_LABEL: &str = "agentoperator.dev/task";
/// The attempt number on a task's Job and its pod.
pub const ATTEMPT_LABEL: &str = "agentoperator.dev/attempt";
pub const MANAGED_BY: &str = "agent-operator";

/// Selects the pods of one AgentDeployment. Never changes for an agent: a Deployment's selector
/// is immutable.
pub fn selector_labels(agent: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(AGENT_LABEL.to_string(), label_value(agent))])
}

/// All labels of an agent's objects.
pub fn agent_labels(agent: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(agent);
    labels.insert("app.kubernetes.io/name".into(), "agent".into());
    labels.insert("app.kubernetes.io/instance".into(), label_value(agent));
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// The selector as a string, for the scale subresource's `status.selector`.
pub fn selector_string(agent: &str) -> String {
    selector_labels(agent)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// All labels of a task's objects.
pub fn task_labels(task: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TASK_LABEL.to_string(), label_value(task)),
        ("app.kubernetes.io/name".into(), "agent-task".into()),
        ("app.kubernetes.io/instance".into(), label_value(task)),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
    ])
}
