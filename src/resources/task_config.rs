//! The worker's files (provider config, parameters and an inline input) and where they travel,
//! and the ConfigMap of the full result when it is longer than the summary kept in status.
//!
//! The files ride in annotations of the worker pod, projected into its folders by a
//! `downwardAPI` volume: no object of their own, so a task costs one write less and the
//! operator caches one object less per task. Files too large for annotations go in a ConfigMap
//! of the task instead, as every task's did before.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::labels::task_labels;
use super::names::{DNS_SUBDOMAIN_MAX, child_name};
use super::provider_config::{CONFIG_FILE, ProviderConfig};
use super::{owned_metadata, short_hash};
use crate::api::AgentTask;

/// Key of the inline input in the task's ConfigMap.
pub const INPUT_KEY: &str = "input";
/// Key of the parameters file in the task's ConfigMap.
pub const PARAMETERS_KEY: &str = "parameters.json";
/// Key of the whole result in the result ConfigMap.
pub const RESULT_KEY: &str = "result";
/// Prefix of the pod annotations that carry the worker's files, one per file.
pub const FILE_ANNOTATION_PREFIX: &str = "files.agentoperator.dev/";
/// Pod annotation with the hash of the files its annotations carry: what the operator compares
/// (its cache drops the files themselves) to keep `providers.json` current.
pub const FILES_HASH_ANNOTATION: &str = "agentoperator.dev/files-hash";
/// Most bytes of files carried in annotations: half of the API server's 256 KiB limit on a
/// pod's annotations, the other half left to the user's. A 64 KiB input always fits.
pub const ANNOTATED_FILES_MAX: usize = 128 * 1024;

/// Name of the ConfigMap holding the worker's files when they are too large for annotations.
pub fn task_config_map_name(task: &str) -> String {
    child_name(task, "task", DNS_SUBDOMAIN_MAX)
}

/// Name of the ConfigMap holding the whole result.
pub fn result_config_map_name(task: &str) -> String {
    child_name(task, "result", DNS_SUBDOMAIN_MAX)
}

/// The worker's files: `providers.json` (kept current while the task runs, so a worker that
/// rereads it follows failover), `parameters.json`, and the input when it is inline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFiles {
    files: BTreeMap<String, String>,
}

impl WorkerFiles {
    pub fn of(task: &AgentTask, providers: &ProviderConfig) -> Self {
        let mut files = BTreeMap::from([
            (
                CONFIG_FILE.to_string(),
                serde_json::to_string(providers).unwrap_or_default(),
            ),
            (
                PARAMETERS_KEY.to_string(),
                serde_json::to_string(&task.spec.parameters).unwrap_or_default(),
            ),
        ]);
        if let Some(input) = &task.spec.input {
            files.insert(INPUT_KEY.to_string(), input.clone());
        }
        Self { files }
    }

    /// Whether the files ride in the pod's annotations; else in the task's ConfigMap.
    pub fn annotated(&self) -> bool {
        self.files.values().map(String::len).sum::<usize>() <= ANNOTATED_FILES_MAX
    }

    /// The file names, for the volumes that project them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    pub fn hash(&self) -> String {
        short_hash(
            serde_json::to_string(&self.files)
                .unwrap_or_default()
                .as_bytes(),
        )
    }

    /// The pod annotations that carry the files, and their hash.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations: BTreeMap<String, String> = self
            .files
            .iter()
            .map(|(name, text)| (file_annotation(name), text.clone()))
            .collect();
        annotations.insert(FILES_HASH_ANNOTATION.to_string(), self.hash());
        annotations
    }

    /// The task's ConfigMap holding the files.
    pub fn config_map(&self, task: &AgentTask) -> ConfigMap {
        let name = task.metadata.name.as_deref().unwrap_or_default();
        ConfigMap {
            metadata: owned_metadata(task, &task_config_map_name(name), task_labels(name)),
            data: Some(self.files.clone()),
            ..ConfigMap::default()
        }
    }
}

/// Parameters of about 200 KiB: more than annotations carry.
#[cfg(test)]
pub fn too_large_parameters() -> serde_json::Value {
    (0..2000)
        .map(|i| {
            (
                format!("key-{i}"),
                serde_json::Value::String("v".repeat(100)),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The annotation carrying one file.
pub fn file_annotation(file: &str) -> String {
    format!("{FILE_ANNOTATION_PREFIX}{file}")
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
        let files = WorkerFiles::of(&task, &provider_config(&[], &[], None));
        assert!(files.annotated());
        let annotations = files.annotations();
        assert_eq!(annotations[&file_annotation(INPUT_KEY)], "ticket 4711");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(
                &annotations[&file_annotation(PARAMETERS_KEY)]
            )
            .expect("json"),
            serde_json::json!({"lang": "en"})
        );
        assert!(annotations.contains_key(&file_annotation(CONFIG_FILE)));
        assert_eq!(annotations[FILES_HASH_ANNOTATION], files.hash());
        let config = files.config_map(&task);
        assert_eq!(config.data.expect("data")[INPUT_KEY], "ticket 4711");
        let owner = &config.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("AgentTask", Some(true))
        );
    }

    #[test]
    fn annotation_keys_are_valid_qualified_names() {
        let task = task(serde_json::json!({"agentRef": {"name": "s"}, "input": "x"}));
        for key in WorkerFiles::of(&task, &provider_config(&[], &[], None))
            .annotations()
            .keys()
        {
            let (prefix, name) = key.split_once('/').expect("a prefix");
            assert!(prefix.len() <= 253 && name.len() <= 63, "{key}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{key}"
            );
        }
    }

    #[test]
    fn files_too_large_for_annotations_go_in_the_config_map() {
        let task = task(serde_json::json!({
            "agentRef": {"name": "s"}, "input": "x", "parameters": too_large_parameters()
        }));
        let files = WorkerFiles::of(&task, &provider_config(&[], &[], None));
        assert!(!files.annotated());
    }

    #[test]
    fn a_changed_chain_changes_the_hash() {
        let task = task(serde_json::json!({"agentRef": {"name": "s"}, "input": "x"}));
        let mut providers = provider_config(&[], &[], None);
        let before = WorkerFiles::of(&task, &providers).hash();
        providers.allowance = Some(crate::resources::provider_config::Allowance {
            max_tokens: Some(10),
            max_cost_nanos: None,
            currency: "USD".into(),
        });
        assert_ne!(WorkerFiles::of(&task, &providers).hash(), before);
    }

    #[test]
    fn input_from_a_reference_is_not_copied() {
        let task = task(serde_json::json!({
            "agentRef": {"name": "support"},
            "inputFrom": {"secretKeyRef": {"name": "in", "key": "text"}}
        }));
        let files = WorkerFiles::of(&task, &provider_config(&[], &[], None));
        assert!(!files.names().any(|n| n == INPUT_KEY));
    }
}
