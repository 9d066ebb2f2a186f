//! Objects the cluster tests create again and again: applied by server-side apply, as a person
//! would with `kubectl apply --server-side`.

use agent_operator::api::{AgentDeployment, AgentTask, LLMProvider};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use super::fake_provider::FakeProvider;
use super::{TestNamespace, wait_until};

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

/// A provider `openai` served by `fake`, an agent `support` using it, and a task `once` of that
/// agent, with `task_extra` merged into the task's spec.
pub async fn create_samples(ns: &TestNamespace, fake: &FakeProvider, task_extra: Value) {
    provider(ns, "openai", fake).await;
    agent(
        ns,
        "support",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    let mut spec = json!({"agentRef": {"name": "support"}, "input": "hello"});
    super::merge_patch(&mut spec, &task_extra);
    agent_task(ns, "once", spec).await;
}

/// Waits until `create_samples`' provider and agent are Ready and its task Complete.
pub async fn wait_for_samples(ns: &TestNamespace) {
    let (providers, agents, tasks) = (
        ns.api::<LLMProvider>(),
        ns.api::<AgentDeployment>(),
        ns.api::<AgentTask>(),
    );
    let is_true = |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
                   type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    wait_until(
        std::time::Duration::from_secs(90),
        "provider Ready, agent Ready and task Complete",
        || async {
            let provider = providers.get("openai").await.ok()?.status?;
            let agent = agents.get("support").await.ok()?.status?;
            let task = tasks.get("once").await.ok()?.status?;
            (is_true(&provider.conditions, "Ready")
                && is_true(&agent.conditions, "Ready")
                && is_true(&task.conditions, "Complete"))
            .then_some(())
        },
    )
    .await;
}

/// Whether `object` reports condition Ready=True; works for every kind of this project.
fn is_ready<K: serde::Serialize>(object: &K) -> bool {
    serde_json::to_value(object).is_ok_and(|value| {
        value
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
}

/// Waits until `count` objects of `api` report Ready=True.
pub async fn wait_all_ready<K>(api: &Api<K>, count: usize, timeout: std::time::Duration)
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    super::wait_until(timeout, &format!("{count} objects Ready"), || async {
        let list = api.list(&kube::api::ListParams::default()).await.ok()?;
        (list.items.iter().filter(|o| is_ready(*o)).count() == count).then_some(())
    })
    .await;
}

/// Waits until `name` reports condition Ready=True; works for every kind of this project.
pub async fn wait_ready<K>(api: &Api<K>, name: &str, timeout: std::time::Duration)
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let ready = tokio::time::timeout(timeout, async {
        loop {
            if let Ok(object) = api.get(name).await
                && is_ready(&object)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
    .await;
    if ready.is_err() {
        let status = api
            .get(name)
            .await
            .ok()
            .and_then(|o| serde_json::to_value(o).ok())
            .and_then(|v| v.get("status").cloned());
        panic!(
            "timed out after {timeout:?} waiting for {name} to be Ready; its status: {status:?}"
        );
    }
}

/// An LLMProvider's Ready reason, or "Ready" while it is.
pub async fn ready_reason(api: &Api<LLMProvider>, name: &str) -> Option<String> {
    let provider = api.get(name).await.ok()?;
    let ready = provider
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some(if ready.status == "True" {
        "Ready".into()
    } else {
        ready.reason
    })
}
