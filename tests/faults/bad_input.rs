//! Input nobody imagined: names at the length limit and with dots or a leading digit, Unicode,
//! a chain naming one provider twice, Secrets that vanish or change type, objects deleted while
//! their children are created, and many objects at once. Each ends in a clear error at
//! admission or a clear condition, never a crash loop or a stuck object.

use std::time::{Duration, Instant};

use agent_operator::api::{AgentDeployment, AgentTask, LLMProvider};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::figures::record;
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{
    KEY, agent, agent_task, apply, provider, ready_reason, wait_all_ready, wait_ready,
};
use crate::support::operator::OperatorProcess;
use crate::support::{self, wait_until};

const WAIT: Duration = Duration::from_secs(120);

/// How many objects of `K` the namespace holds.
async fn count<K>(ns: &crate::support::TestNamespace) -> Option<usize>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Some(
        ns.api::<K>()
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len(),
    )
}

async fn phase(api: &Api<AgentTask>, name: &str) -> Option<String> {
    api.get(name)
        .await
        .ok()?
        .status?
        .phase
        .map(|p| format!("{p:?}"))
}

#[tokio::test]
async fn names_at_the_limit_with_dots_or_a_leading_digit_get_valid_stable_children() {
    let (_client, ns) = support::namespace_with_crds("faults-names").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    // 253 characters, the most a name may have, in DNS labels joined by dots.
    let longest = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(longest.len(), 253);
    let names = [
        longest.clone(),
        "team.support".to_string(),
        "9-lives".to_string(),
    ];
    for name in &names {
        // A port, so each agent gets a Service, the child with the strictest name rules.
        agent(
            &ns,
            name,
            json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}],
                                "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .await;
    }
    for name in &names {
        wait_ready(&ns.api::<AgentDeployment>(), name, WAIT).await;
    }
    let services: Vec<String> = ns
        .api::<Service>()
        .list(&ListParams::default())
        .await
        .expect("services")
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(services.len(), 3, "one Service per agent: {services:?}");
    assert!(
        services.iter().all(|s| s.len() <= 63 && !s.contains('.')),
        "{services:?}"
    );

    // A task with the longest name: its Job names must fit a label.
    agent_task(
        &ns,
        &longest,
        json!({"agentRef": {"name": "team.support"}, "input": "x"}),
    )
    .await;
    wait_until(WAIT, "the long-named task to succeed", || async {
        (phase(&ns.api::<AgentTask>(), &longest).await.as_deref() == Some("Succeeded"))
            .then_some(())
    })
    .await;
    let jobs = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items;
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].name_any().len() <= 63);

    // Stable: another pass of every agent creates nothing new.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployments = ns
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .expect("deployments")
        .items;
    assert_eq!(deployments.len(), 3);
    assert_eq!(operator.metric("agent_operator_reconcile_errors_total{controller=\"agentdeployment\",reason=\"ApplyFailed\"}").await, None);
}

#[tokio::test]
async fn unicode_where_kubernetes_allows_it_passes_through() {
    let (_client, ns) = support::namespace_with_crds("faults-unicode").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    let text = "Résumé — 日本語のテキスト 🚀 \u{202e}reversed\u{202c}";
    agent(
        &ns,
        "unicode",
        json!({
            "image": "registry.example/agent:1", "providers": [{"name": "openai"}],
            "env": [{"name": "GREETING", "value": text}],
            "podMetadata": {"annotations": {"description": text}},
            "tools": [{"name": "search", "url": "http://search.local/api", "description": text}]
        }),
    )
    .await;
    wait_ready(&ns.api::<AgentDeployment>(), "unicode", WAIT).await;
    agent_task(
        &ns,
        "unicode-task",
        json!({
            "agentRef": {"name": "unicode"}, "input": text, "parameters": {"language": "日本語"},
            "podMetadata": {"annotations": {"kwok.agentoperator.dev/message": text}}
        }),
    )
    .await;
    let api = ns.api::<AgentTask>();
    wait_until(WAIT, "the task to succeed", || async {
        (phase(&api, "unicode-task").await.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let summary = api
        .get("unicode-task")
        .await
        .expect("task")
        .status
        .and_then(|s| s.result)
        .map(|r| r.summary);
    assert_eq!(
        summary.as_deref(),
        Some(text),
        "the result keeps every character"
    );
}

#[tokio::test]
async fn a_chain_naming_one_provider_twice_is_refused_at_admission() {
    let (_client, ns) = support::namespace_with_crds("faults-chain").await;
    let object: AgentDeployment = serde_json::from_value(json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentDeployment", "metadata": {"name": "twice"},
        "spec": {"image": "registry.example/agent:1", "providers": [{"name": "openai"}, {"name": "openai", "model": "gpt-4o-mini"}]}
    }))
    .expect("object");
    let error = ns
        .api::<AgentDeployment>()
        .create(&PostParams::default(), &object)
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("names the same LLMProvider twice"),
        "{error}"
    );
}

/// Deletes Secret `name` and waits until it is gone, so it can be created again.
async fn delete_secret(ns: &crate::support::TestNamespace, name: &str) {
    let secrets = ns.api::<Secret>();
    secrets
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until(WAIT, "the Secret to be gone", || async {
        secrets.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_secret_that_vanishes_or_changes_type_becomes_a_condition_until_fixed() {
    let (_client, ns) = support::namespace_with_crds("faults-secrets").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "uses-it",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    wait_ready(&ns.api::<AgentDeployment>(), "uses-it", WAIT).await;

    delete_secret(&ns, "openai-key").await;
    wait_until(WAIT, "CredentialsNotFound", || async {
        (ready_reason(&ns.api(), "openai").await.as_deref() == Some("CredentialsNotFound"))
            .then_some(())
    })
    .await;
    // Back, but as another type without the key.
    apply(
        &ns.api::<Secret>(),
        "openai-key",
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai-key"},
            "type": "kubernetes.io/basic-auth", "stringData": {"username": "u", "password": "p"}
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        ready_reason(&ns.api(), "openai").await.as_deref(),
        Some("CredentialsNotFound")
    );
    delete_secret(&ns, "openai-key").await;
    apply(&ns.api::<Secret>(), "openai-key", json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai-key"}, "stringData": {"apiKey": KEY}
    }))
    .await;
    wait_ready(&ns.api::<LLMProvider>(), "openai", WAIT).await;
    wait_ready(&ns.api::<AgentDeployment>(), "uses-it", WAIT).await;
    assert!(operator.is_running(), "no crash on the way");
}

#[tokio::test]
async fn objects_deleted_while_their_children_are_created_leave_nothing_behind() {
    let (_client, ns) = support::namespace_with_crds("faults-churn").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    wait_ready(&ns.api::<LLMProvider>(), "openai", WAIT).await;
    for i in 0..10 {
        let name = format!("brief-{i}");
        agent(
            &ns,
            &name,
            json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
        )
        .await;
        agent_task(&ns, &name, json!({"template": {"image": "registry.example/worker:1", "providers": [{"name": "openai"}]}, "input": "x"})).await;
        tokio::time::sleep(Duration::from_millis(50 * i)).await;
        ns.api::<AgentDeployment>()
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete agent");
        ns.api::<AgentTask>()
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete task");
    }
    wait_until(WAIT, "every child to be gone", || async {
        let left = count::<Deployment>(&ns).await?
            + count::<Job>(&ns).await?
            + count::<Service>(&ns).await?;
        (left == 0).then_some(())
    })
    .await;
    assert!(operator.is_running());
    // Nothing keeps failing: no reconcile errors grow once the churn is over.
    let errors = |text: String| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("agent_operator_reconcile_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let settled = errors(operator.metrics().await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(errors(operator.metrics().await), settled, "no error loop");
}

#[tokio::test]
async fn many_objects_applied_at_once_all_converge() {
    let count = crate::scale(200, 1000);
    let (_client, ns) = support::namespace_with_crds("faults-many").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut operator = OperatorProcess::start(&ns.name).await;
    let providers = ns.api::<LLMProvider>();
    let started = Instant::now();
    stream::iter(0..count)
        .for_each_concurrent(50, |i| {
            let (providers, endpoint) = (providers.clone(), fake.root_endpoint());
            async move {
                let object: LLMProvider = serde_json::from_value(json!({
                    "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider",
                    "metadata": {"name": format!("ollama-{i:04}")},
                    "spec": {"type": "Ollama", "endpoint": endpoint, "allowInsecureHTTP": true,
                             "healthCheck": {"interval": "60s", "timeout": "5s"}}
                }))
                .expect("object");
                providers
                    .create(&PostParams::default(), &object)
                    .await
                    .expect("create");
            }
        })
        .await;
    let created = started.elapsed();
    wait_all_ready(&providers, count, Duration::from_secs(600)).await;
    let converged = started.elapsed();
    assert!(operator.is_running());
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", operator.pid())).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    record(
        "many-objects",
        &format!(
            "{count} LLMProviders created at once (50 in parallel, {:.0} s to create): all Ready {:.0} s after the first create; operator peak RSS {peak}",
            created.as_secs_f64(),
            converged.as_secs_f64()
        ),
    );
}
