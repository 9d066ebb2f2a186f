//! Objects the cluster tests create again and again: applied by server-side apply, as a person
//! would with `kubectl apply --server-side`.

use agent_operator::api::{AgentDeployment, AgentTask, LLMProvider};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use super::TestNamespace;
use super::fake_provider::FakeProvider;

/// The API key every test provider's Secret holds; tests check it never leaks.
pub const KEY: &str = "sk-agent-test-7c1d9e2f4a6b8c0d";

/// Server-side apply with the tests' field manager; panics naming the object on refusal.
pub async fn apply<K>(api: &Api<K>, name: &str, object: Value)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("agent-operator-tests").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|error| panic!("apply {name}: {error}"));
}

/// An OpenAI-type LLMProvider `name` served by `fake`, probed every 2 s, with its key Secret.
pub async fn provider(ns: &TestNamespace, name: &str, fake: &FakeProvider) {
    apply(&ns.api::<Secret>(), &format!("{name}-key"), json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-key")}, "stringData": {"apiKey": KEY}
    }))
    .await;
    apply(&ns.api::<LLMProvider>(), name, json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": name},
        "spec": {
            "type": "OpenAI", "endpoint": fake.openai_endpoint(), "allowInsecureHTTP": true,
            "credentials": {"name": format!("{name}-key"), "key": "apiKey"}, "defaultModel": "gpt-4o", "models": ["gpt-4o"],
            "healthCheck": {"interval": "2s", "timeout": "2s", "failureThreshold": 2, "successThreshold": 1}
        }
    }))
    .await;
}

/// An AgentDeployment `name` with `spec`.
pub async fn agent(ns: &TestNamespace, name: &str, spec: Value) {
    apply(&ns.api::<AgentDeployment>(), name, json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentDeployment", "metadata": {"name": name}, "spec": spec
    }))
    .await;
}

/// An AgentTask `name` with `spec`.
pub async fn agent_task(ns: &TestNamespace, name: &str, spec: Value) {
    apply(&ns.api::<AgentTask>(), name, json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask", "metadata": {"name": name}, "spec": spec
    }))
    .await;
}

/// The reasons of the Events about the object `name`, oldest first.
pub async fn event_reasons(ns: &TestNamespace, name: &str) -> Vec<String> {
    let events = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&ListParams::default())
        .await
        .expect("events");
    events
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}
