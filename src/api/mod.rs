//! The custom resource types of `agentoperator.dev/v1alpha1`: plain data, with their schemas,
//! validation rules and printer columns.

// kube's `printcolumn(...)`, `shortname` and `category` attributes repeat keys by design, which
// clippy mistakes for copy-paste slips.
#[allow(clippy::duplicated_attributes)]
pub mod agent_deployment;
#[allow(clippy::duplicated_attributes)]
pub mod agent_task;
pub mod budget;
pub mod common;
pub mod conditions;
#[allow(clippy::duplicated_attributes)]
pub mod llm_provider;
pub mod reference;
pub mod rules;

pub use agent_deployment::{AgentDeployment, AgentDeploymentSpec, AgentDeploymentStatus};
pub use agent_task::{AgentTask, AgentTaskSpec, AgentTaskStatus};
pub use llm_provider::{LLMProvider, LLMProviderSpec, LLMProviderStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every kind here.
pub const GROUP: &str = "agentoperator.dev";
/// The version served and stored.
pub const VERSION: &str = "v1alpha1";

/// All CRDs of the operator, in the order they are installed.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [LLMProvider::crd(), AgentDeployment::crd(), AgentTask::crd()]
        .into_iter()
        .map(with_reflowed_descriptions)
        .map(with_bounded_embedded_fields)
        .collect()
}

/// Bounds the strings, lists and maps of embedded Kubernetes types (`k8s-openapi` schemas carry
/// none) that our CEL rules read, by the suffix of their path: the API server estimates a rule's
/// cost from these bounds and refuses the CRD when an estimate exceeds its budget. Each bound is
/// at or above what Kubernetes itself allows there. `[]` is a list item, `{}` a map value.
const EMBEDDED_BOUNDS: &[(&str, &str, u64)] = &[
    ("env[].name", "maxLength", 256),
    ("envFrom[].prefix", "maxLength", 253),
    ("envFrom[].configMapRef.name", "maxLength", 253),
    ("envFrom[].secretRef.name", "maxLength", 253),
    ("imagePullSecrets[].name", "maxLength", 253),
    ("tolerations[].key", "maxLength", 317),
    ("tolerations[].operator", "maxLength", 16),
    ("tolerations[].value", "maxLength", 63),
    ("tolerations[].effect", "maxLength", 32),
    ("nodeSelector{}", "maxLength", 63),
    ("podMetadata.labels{}", "maxLength", 63),
    ("podMetadata.annotations{}", "maxLength", 65536),
    ("azure.deployments{}", "maxLength", 64),
    ("resources.requests", "maxProperties", 16),
    ("resources.limits", "maxProperties", 16),
    ("resources.requests{}", "maxLength", 64),
    ("resources.limits{}", "maxLength", 64),
    ("resources.requests{}", "minimum", 0),
    ("resources.limits{}", "minimum", 0),
];

/// Patterns of embedded Kubernetes types' strings. A quantity's format is a `pattern`, not a CEL
/// rule: Kubernetes 1.33's CEL cost estimator cannot bound an int-or-string and refuses every
/// rule that reads one as too expensive, while a pattern costs nothing and applies to the
/// string form only (`minimum` above takes the integer form).
const EMBEDDED_PATTERNS: &[(&str, &str)] = &[
    ("resources.requests{}", rules::QUANTITY_PATTERN),
    ("resources.limits{}", rules::QUANTITY_PATTERN),
];

fn with_bounded_embedded_fields(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn bound(path: &str, schema: &mut serde_json::Value) {
        for (suffix, pattern) in EMBEDDED_PATTERNS {
            if path.ends_with(&format!(".{suffix}"))
                && let Some(object) = schema.as_object_mut()
            {
                object.entry("pattern").or_insert((*pattern).into());
            }
        }
        for (suffix, keyword, limit) in EMBEDDED_BOUNDS {
            if path.ends_with(&format!(".{suffix}"))
                && let Some(object) = schema.as_object_mut()
            {
                object.entry(*keyword).or_insert((*limit).into());
                // An int-or-string (a Quantity) takes string bounds only beside an explicit
                // choice of the two types.
                if object.contains_key("x-kubernetes-int-or-string")
                    && !object.contains_key("anyOf")
                {
                    object.insert(
                        "anyOf".into(),
                        serde_json::json!([{"type": "integer"}, {"type": "string"}]),
                    );
                }
            }
        }
        if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for (name, child) in properties.iter_mut() {
                bound(&format!("{path}.{name}"), child);
            }
        }
        if let Some(items) = schema.get_mut("items") {
            bound(&format!("{path}[]"), items);
        }
        if let Some(values) = schema
            .get_mut("additionalProperties")
            .filter(|v| v.is_object())
        {
            bound(&format!("{path}{{}}"), values);
        }
    }
    let original = crd.clone();
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return original;
    };
    for version in value["spec"]["versions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        bound("", &mut version["schema"]["openAPIV3Schema"]);
    }
    serde_json::from_value(value).unwrap_or(original)
}

/// Doc comments arrive with the source's line wraps; `kubectl explain` wraps text itself, so
/// single line breaks become spaces and only paragraph breaks stay.
fn with_reflowed_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn reflow(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = reflow_text(text);
                        }
                        _ => reflow(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(reflow),
            _ => {}
        }
    }
    let original = crd.clone();
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return original;
    };
    reflow(&mut value);
    serde_json::from_value(value).unwrap_or(original)
}

fn reflow_text(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The file name under `crds/` of a CRD.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Renders one CRD as YAML, as committed under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// Renders all CRDs as one multi-document YAML stream, as `agent-operator crds` prints it.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflow_joins_lines_and_keeps_paragraphs() {
        assert_eq!(
            reflow_text("one\ntwo\n\nthree  four"),
            "one two\n\nthree four"
        );
    }

    #[test]
    fn every_field_of_every_kind_is_described() {
        fn undescribed(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            for (name, field) in schema["properties"].as_object().into_iter().flatten() {
                let field_path = format!("{path}.{name}");
                if field["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(field_path.clone());
                }
                undescribed(&field_path, field, missing);
                undescribed(&format!("{field_path}[]"), &field["items"], missing);
            }
        }
        let mut missing = Vec::new();
        for crd in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("serialize");
            let root = &schema["openAPIV3Schema"]["properties"];
            for part in ["spec", "status"] {
                undescribed(
                    &format!("{}.{part}", crd.spec.names.kind),
                    &root[part],
                    &mut missing,
                );
            }
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:#?}"
        );
    }
}
