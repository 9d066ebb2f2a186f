//! The custom resources against the real API server: CRDs are accepted, every admission rule
//! rejects its invalid object with its own message, valid edge cases and the samples are
//! accepted, and the kubectl experience (columns, explain, scale, categories) works.

use std::time::Duration;

use agent_operator::api::{AgentDeployment, GROUP, VERSION};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, Discovery};
use serde_json::{Value, json};

use crate::support::admission::{AdmissionCase, AdmissionCases, admission_cases};
use crate::support::{self, TEST_MANAGER};

fn api_for(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn object_for(cases: &AdmissionCases, case: &AdmissionCase) -> DynamicObject {
    serde_json::from_value(cases.object_for(case)).expect("case builds an object")
}

#[tokio::test]
async fn every_invalid_object_is_rejected_with_its_own_message() {
    let (client, ns) = support::namespace_with_crds("admission-invalid").await;
    let cases = admission_cases();
    assert!(
        cases.invalid.len() >= 25,
        "the table holds at least 25 invalid objects"
    );

    let mut failures = Vec::new();
    for case in &cases.invalid {
        let api = api_for(&client, &ns.name, &case.kind);
        let object = object_for(&cases, case);
        let outcome = match &case.update {
            None => api
                .create(&PostParams::default(), &object)
                .await
                .map(|_| ()),
            Some(update) => {
                api.create(&PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|error| {
                        panic!(
                            "{}: the object before the update was rejected: {error}",
                            case.name
                        )
                    });
                let name = object.metadata.name.clone().expect("named");
                api.patch(&name, &PatchParams::default(), &Patch::Merge(update))
                    .await
                    .map(|_| ())
            }
        };
        match outcome {
            Ok(()) => failures.push(format!("{}: accepted, expected rejection", case.name)),
            Err(kube::Error::Api(status)) => {
                let said = status.message.clone();
                // A rule that fails to evaluate (e.g. "no such key") also quotes its message; only a
                // rule that evaluated to false counts.
                let evaluation_error = said.contains("evaluating rule");
                if status.code != 422
                    || evaluation_error
                    || !said.contains(&case.field)
                    || !said.contains(&case.message)
                {
                    failures.push(format!(
                        "{}: expected 422 naming `{}` with `{}`, got {}: {said}",
                        case.name, case.field, case.message, status.code
                    ));
                }
            }
            Err(other) => failures.push(format!("{}: unexpected error {other}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "admission cases that failed:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn valid_edge_cases_are_accepted() {
    let (client, ns) = support::namespace_with_crds("admission-valid").await;
    let cases = admission_cases();
    let mut failures = Vec::new();
    for case in &cases.valid {
        let api = api_for(&client, &ns.name, &case.kind);
        if let Err(error) = api
            .create(&PostParams::default(), &object_for(&cases, case))
            .await
        {
            failures.push(format!("{}: {error}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "valid objects that were rejected:\n{}",
        failures.join("\n")
    );
}

/// True when every field of `expected` is in `actual` with the same value; `actual` may have
/// more (schema defaults).
fn contains_all(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected.iter().all(|(key, value)| {
            actual
                .get(key)
                .is_some_and(|found| contains_all(found, value))
        }),
        (Value::Array(actual), Value::Array(expected)) => {
            actual.len() == expected.len()
                && actual.iter().zip(expected).all(|(a, e)| contains_all(a, e))
        }
        _ => actual == expected,
    }
}

fn samples() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("config/samples exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "yaml")
                && !path.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("sample is readable");
            serde_yaml::Deserializer::from_str(&text)
                .map(|doc| Value::deserialize(doc).expect("sample is YAML"))
                .filter(|doc| !doc.is_null())
                .collect::<Vec<_>>()
        })
        .collect()
}

use serde::Deserialize;

#[tokio::test]
async fn samples_apply_and_read_back_unchanged() {
    let (client, ns) = support::namespace_with_crds("samples").await;
    let samples = samples();
    let kinds: Vec<&str> = samples.iter().filter_map(|s| s["kind"].as_str()).collect();
    for kind in ["LLMProvider", "AgentDeployment", "AgentTask"] {
        assert!(
            kinds.contains(&kind),
            "config/samples has an example of {kind}"
        );
    }
    for sample in samples {
        let kind = sample["kind"]
            .as_str()
            .expect("sample has a kind")
            .to_string();
        let name = sample["metadata"]["name"]
            .as_str()
            .expect("sample has a name")
            .to_string();
        let api: Api<DynamicObject> = match sample["apiVersion"].as_str() {
            Some("v1") => {
                let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", &kind));
                Api::namespaced_with(client.clone(), &ns.name, &resource)
            }
            _ => api_for(&client, &ns.name, &kind),
        };
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(TEST_MANAGER),
                &Patch::Apply(&sample),
            )
            .await
            .unwrap_or_else(|error| panic!("sample {kind}/{name} was rejected: {error}"));
        let read_back = serde_json::to_value(&applied).expect("serialize");
        for part in ["spec", "data", "stringData"] {
            if !sample[part].is_null() && part != "stringData" {
                assert!(
                    contains_all(&read_back[part], &sample[part]),
                    "sample {kind}/{name} read back changed:\nsent {}\ngot  {}",
                    sample[part],
                    read_back[part]
                );
            }
        }
    }
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let (client, ns) = support::namespace_with_crds("printer-columns").await;
    let cases = admission_cases();
    for kind in ["LLMProvider", "AgentDeployment", "AgentTask"] {
        let object: DynamicObject =
            serde_json::from_value(cases.named_base(kind, "shown", &Value::Null)).expect("object");
        api_for(&client, &ns.name, kind)
            .create(&PostParams::default(), &object)
            .await
            .expect("create");
    }
    let expected = [
        (
            "llmproviders",
            vec!["Name", "Type", "Models", "Ready", "Latency", "Age"],
        ),
        (
            "agentdeployments",
            vec!["Name", "Ready", "Provider", "Status", "Age"],
        ),
        (
            "agenttasks",
            vec!["Name", "Phase", "Agent", "Attempts", "Duration", "Age"],
        ),
    ];
    for (plural, columns) in expected {
        // The Table form is what `kubectl get` requests and prints.
        let request = http::Request::get(format!(
            "/apis/{GROUP}/{VERSION}/namespaces/{}/{plural}",
            ns.name
        ))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("request");
        let table: Value = client.request(request).await.expect("table");
        let shown: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(shown, columns, "columns of kubectl get {plural}");
        assert_eq!(table["rows"].as_array().map(Vec::len), Some(1));
    }
}

#[tokio::test]
async fn kubectl_explain_shows_field_descriptions() {
    let client = support::client().await;
    support::install_crds(&client).await;
    // `kubectl explain` reads the OpenAPI v3 document of the group version.
    let request = http::Request::get(format!("/openapi/v3/apis/{GROUP}/{VERSION}"))
        .body(Vec::new())
        .expect("request");
    let wait = Duration::from_secs(30);
    let document: Value =
        support::wait_until(wait, "the OpenAPI document to include our kinds", || {
            let client = client.clone();
            let request = request.clone();
            async move {
                let doc: Value = client.request(request).await.ok()?;
                doc["components"]["schemas"]["dev.agentoperator.v1alpha1.AgentDeployment"]
                    .is_object()
                    .then_some(doc)
            }
        })
        .await;
    let autoscaling = &document["components"]["schemas"]["dev.agentoperator.v1alpha1.AgentDeployment"]
        ["properties"]["spec"]["properties"]["autoscaling"];
    let description = autoscaling["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("HorizontalPodAutoscaler"),
        "spec.autoscaling is explained: {description:?}"
    );
    let max = autoscaling["properties"]["maxReplicas"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(!max.is_empty(), "spec.autoscaling.maxReplicas is explained");
}

#[tokio::test]
async fn kubectl_scale_changes_spec_replicas() {
    let (_, ns) = support::namespace_with_crds("scale").await;
    let agents: Api<AgentDeployment> = ns.api();
    let agent: AgentDeployment = serde_json::from_value(json!({
        "apiVersion": "agentoperator.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": { "name": "scaled" },
        "spec": { "image": "ghcr.io/example/agent:1.0.0", "replicas": 1 }
    }))
    .expect("agent");
    agents
        .create(&PostParams::default(), &agent)
        .await
        .expect("create");
    // `kubectl scale agentdeployment/scaled --replicas=3` patches the scale subresource.
    agents
        .patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .expect("the scale subresource accepts the change");
    let scaled = agents.get("scaled").await.expect("get");
    assert_eq!(scaled.spec.replicas, Some(3));
}

#[tokio::test]
async fn kubectl_get_agents_lists_all_three_kinds() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let discovery = Discovery::new(client.clone())
        .filter(&[GROUP])
        .run()
        .await
        .expect("discovery");
    let mut in_category: Vec<String> = Vec::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            let _ = capabilities;
            in_category.push(resource.kind.clone());
        }
    }
    in_category.sort();
    assert_eq!(in_category, ["AgentDeployment", "AgentTask", "LLMProvider"]);
    // Discovery of kube does not expose categories; read them from the raw discovery document.
    let request = http::Request::get(format!("/apis/{GROUP}/{VERSION}"))
        .body(Vec::new())
        .expect("request");
    let resources: Value = client.request(request).await.expect("discovery document");
    for resource in resources["resources"].as_array().expect("resources") {
        if resource["name"].as_str().is_some_and(|n| n.contains('/')) {
            continue;
        }
        let categories: Vec<&str> = resource["categories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            categories.contains(&"agents"),
            "{} is in category agents",
            resource["name"]
        );
    }
}
