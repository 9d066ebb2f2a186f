//! The CRDs' CEL rules evaluated client-side (no cluster) against the same table of objects the
//! cluster test sends to the API server, and the schema defaults applied to a minimal object.

use agent_operator::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

use support::admission::{AdmissionCase, AdmissionCases, admission_cases};

/// Evaluates the schema's CEL rules like the API server (`old` for transition rules).
fn cel_validate(
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), kube::core::cel::ValidationErrors> {
    kube::core::cel::Validator::new().validate(schema, object, old)
}

fn schema_of(kind: &str) -> Value {
    let crd: CustomResourceDefinition = api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .expect("kind exists");
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .and_then(|s| s.open_api_v3_schema)
        .expect("schema");
    serde_json::to_value(schema).expect("serialize")
}

/// Applies the schema's defaults the way the API server does before validation.
fn with_defaults(kind: &str, object: &Value) -> Value {
    kube::core::cel::apply_defaults(&schema_of(kind), object)
}

fn object_for(cases: &AdmissionCases, case: &AdmissionCase) -> Value {
    with_defaults(&case.kind, &cases.object_for(case))
}

#[test]
fn cel_rules_reject_each_invalid_object_with_its_message() {
    let cases = admission_cases();
    let mut failures = Vec::new();
    for case in cases.invalid.iter().filter(|c| c.is_client_side()) {
        let schema = schema_of(&case.kind);
        let object = object_for(&cases, case);
        let result = match &case.update {
            None => cel_validate(&schema, &object, None),
            Some(update) => {
                let mut new = object.clone();
                support::merge_patch(&mut new, update);
                cel_validate(&schema, &new, Some(&object))
            }
        };
        match result {
            Ok(()) => failures.push(format!("{}: accepted", case.name)),
            Err(errors) => {
                if !errors
                    .as_slice()
                    .iter()
                    .any(|e| e.message.contains(&case.message))
                {
                    failures.push(format!(
                        "{}: expected `{}`, got {errors:?}",
                        case.name, case.message
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cel_rules_accept_the_valid_objects() {
    let cases = admission_cases();
    for case in &cases.valid {
        let object = object_for(&cases, case);
        // A rule this evaluator cannot run (`type()`, the API server's quantity library) is no
        // refusal: the cluster test sends the same object to a real API server.
        let refusals: Vec<_> = match cel_validate(&schema_of(&case.kind), &object, None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .as_slice()
                .iter()
                .filter(|e| !format!("{:?}", e.kind).contains("UnsupportedReference"))
                .cloned()
                .collect(),
        };
        assert!(refusals.is_empty(), "{}: {refusals:?}", case.name);
    }
}

#[test]
fn bases_are_valid_and_deserialize_into_the_types() {
    let cases = admission_cases();
    for kind in cases.bases.keys() {
        let object = with_defaults(kind, &cases.named_base(kind, "base", &Value::Null));
        assert!(
            cel_validate(&schema_of(kind), &object, None).is_ok(),
            "{kind} base is valid"
        );
        let parsed = match kind.as_str() {
            "LLMProvider" => serde_json::from_value::<api::LLMProvider>(object).map(|_| ()),
            "AgentDeployment" => serde_json::from_value::<api::AgentDeployment>(object).map(|_| ()),
            "AgentTask" => serde_json::from_value::<api::AgentTask>(object).map(|_| ()),
            other => panic!("unknown kind {other}"),
        };
        assert!(parsed.is_ok(), "{kind}: {parsed:?}");
    }
}

#[test]
fn schema_defaults_fill_health_check_and_retry_settings() {
    let provider = with_defaults(
        "LLMProvider",
        &json!({
            "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "p"},
            "spec": {"type": "Ollama", "endpoint": "http://ollama:11434", "allowInsecureHTTP": true}
        }),
    );
    assert_eq!(
        provider["spec"]["healthCheck"],
        json!({"interval": "30s", "timeout": "5s", "failureThreshold": 3, "successThreshold": 1})
    );
    let task = with_defaults(
        "AgentTask",
        &json!({
            "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask", "metadata": {"name": "t"},
            "spec": {"agentRef": {"name": "a"}, "input": "x"}
        }),
    );
    assert_eq!(task["spec"]["timeout"], json!("30m0s"));
    assert_eq!(task["spec"]["backoffLimit"], json!(2));
    assert_eq!(
        task["spec"]["retryBackoff"],
        json!({"initialDelay": "10s", "maxDelay": "5m0s"})
    );
    assert_eq!(task["spec"]["cancel"], json!(false));
    let parsed: api::AgentTask = serde_json::from_value(task).expect("defaulted task deserializes");
    assert_eq!(parsed.spec.timeout.as_std().as_secs(), 1800);
}
