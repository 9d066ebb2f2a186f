//! The ConfigMaps of an AgentTask: the worker's files (provider config, parameters and an inline
//! input), and the full result when it is longer than the summary kept in status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::labels::task_labels;
use super::names::{DNS_SUBDOMAIN_MAX, child_name};
use super::owned_metadata;
use super::provider_config::{CONFIG_FILE, ProviderConfig};
use crate::api::AgentTask;

/// Key of the inline input in the task's ConfigMap.
pub const INPUT_KEY: &str = "input";
/// Key of the parameters file in the task's ConfigMap.
pub const PARAMETERS_KEY: &str = "parameters.json";
/// Key of the whole result in the result ConfigMap.
pub const RESULT_KEY: &str = "result";

/// Name of the ConfigMap holding the worker's files.
pub fn task_config_map_name(task: &str) -> String {
    child_name(task, "task", DNS_SUBDOMAIN_MAX)
}

/// Name of the ConfigMap holding the whole result.
pub fn result_config_map_name(task: &str) -> String {
    child_name(task, "result", DNS_SUBDOMAIN_MAX)
}

/// The worker's files: `providers.json` (kept current while the task runs, so a worker that
/// rereads it follows failover), `parameters.json`, and the input when it is inline.
pub fn task_config_map(task: &AgentTask, providers: &ProviderConfig) -> ConfigMap {
    let name = task.metadata.name.as_deref().unwrap_or_default();
    let mut data = BTreeMap::from([
        (
            CONFIG_FILE.to_string(),
            serde_json::to_string_pretty(providers).unwrap_or_default(),
        ),
        (
            PARAMETERS_KEY.to_string(),
            serde_json::to_string_pretty(&task.spec.parameters).unwrap_or_default(),
        ),
    ]);
    if let Some(input) = &task.spec.input {
        data.insert(INPUT_KEY.to_string(), input.clone());
    }
    ConfigMap {
        metadata: owned_metadata(task, &task_config_map_name(name), task_labels(name)),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The whole result, written once when the task succeeds. Immutable, so nothing rewrites it.
pub fn result_config_map(task: &AgentTask, result: &str) -> ConfigMap {
    let name = task.metadata.name.as_deref().unwrap_or_default();
    ConfigMap {
        metadata: owned_metadata(task, &result_config_map_name(name), task_labels(name)),
        data: Some(BTreeMap::from([(
            RESULT_KEY.to_string(),
            result.to_string(),
        )])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::provider_config::provider_config;

    fn task(spec: serde_json::Value) -> AgentTask {
        crate::api::agent_task::task_for_tests("triage", spec)
    }

    #[test]
    fn inline_input_and_parameters_are_files() {
        let task = task(serde_json::json!({
            "agentRef": {"name": "support"}, "input": "ticket 4711", "parameters": {"lang": "en"}
        }));
        let config = task_config_map(&task, &provider_config(&[], &[], None));
        let data = config.data.expect("data");
        assert_eq!(data[INPUT_KEY], "ticket 4711");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&data[PARAMETERS_KEY]).expect("json"),
            serde_json::json!({"lang": "en"})
        );
        assert!(data.contains_key(CONFIG_FILE));
        let owner = &config.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("AgentTask", Some(true))
        );
    }

    #[test]
    fn input_from_a_reference_is_not_copied() {
        let task = task(serde_json::json!({
            "agentRef": {"name": "support"},
            "inputFrom": {"secretKeyRef": {"name": "in", "key": "text"}}
        }));
        let data = task_config_map(&task, &provider_config(&[], &[], None))
            .data
            .expect("data");
        assert!(!data.contains_key(INPUT_KEY));
    }
}
