//! Health as the GitOps tools read it, judged by their own code: kstatus (what Flux's health
//! checks use) and the shipped Argo CD health check run by gopher-lua, Argo CD's interpreter
//! (`e2e/tools/health`). Each kind in each state: healthy, progressing, broken, and for tasks
//! running, succeeded and failed.

use crate::support::net::closed_endpoint;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_operator::api::{AgentDeployment, AgentTask, LLMProvider};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{KEY, agent, agent_task, apply, provider};
use crate::support::operator::OperatorProcess;
use crate::support::{self, wait_until};

/// kstatus's status and Argo CD's health of one object, as the tools say them.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    kstatus: String,
    argocd: String,
}

fn judge(object: &Value) -> Verdict {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/config/argocd/health.lua");
    let mut child = Command::new(support::tool("health"))
        .args(["-argocd", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the health tool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json!([object]).to_string().as_bytes())
        .expect("write the object");
    let output = child.wait_with_output().expect("health output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdict: Value = serde_json::from_slice(&output.stdout).expect("one JSON verdict");
    Verdict {
        kstatus: verdict["kstatus"].as_str().unwrap_or_default().to_string(),
        argocd: verdict["argocd"].as_str().unwrap_or_default().to_string(),
    }
}

fn verdict(kstatus: &str, argocd: &str) -> Verdict {
    Verdict {
        kstatus: kstatus.into(),
        argocd: argocd.into(),
    }
}

/// Waits until the tools read `expected` from the object `name`; fails with what they read last.
async fn wait_for_verdict<K>(api: &Api<K>, name: &str, expected: Verdict, within: Duration)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let object = api
            .get(name)
            .await
            .ok()
            .and_then(|o| serde_json::to_value(o).ok());
        let seen = object.as_ref().map(judge);
        if seen.as_ref() == Some(&expected) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{name}: the tools read {seen:?}, not {expected:?}, from {object:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn providers_read_healthy_probing_and_broken_in_kstatus_and_argo_cd() {
    let (_client, ns) = support::namespace_with_crds("health-providers").await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    // A provider whose first probe takes 20 s: until it ends, only the first status exists.
    let slow = FakeProvider::start(Behaviour {
        delay: Duration::from_secs(20),
        ..Behaviour::default()
    })
    .await;
    provider(&ns, "healthy", &fake).await;
    provider(&ns, "probing", &slow).await;
    let providers = ns.api::<LLMProvider>();
    providers
        .patch(
            "probing",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"healthCheck": {"timeout": "25s", "interval": "30s"}}})),
        )
        .await
        .expect("slow probes");
    apply(&ns.api::<LLMProvider>(), "broken", json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "broken"},
        "spec": {"type": "OpenAI", "endpoint": fake.openai_endpoint(), "allowInsecureHTTP": true,
                 "credentials": {"name": "no-such-secret", "key": "apiKey"}}
    }))
    .await;

    wait_for_verdict(
        &providers,
        "probing",
        verdict("InProgress", "Progressing"),
        WAIT,
    )
    .await;
    wait_for_verdict(&providers, "healthy", verdict("Current", "Healthy"), WAIT).await;
    wait_for_verdict(&providers, "broken", verdict("Failed", "Degraded"), WAIT).await;

    // Down, not stuck: it may come back by itself.
    apply(&ns.api::<LLMProvider>(), "down", json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "down"},
        "spec": {"type": "OpenAICompatible", "endpoint": closed_endpoint(), "allowInsecureHTTP": true,
                 "healthCheck": {"interval": "2s", "timeout": "1s", "failureThreshold": 1}}
    }))
    .await;
    wait_for_verdict(&providers, "down", verdict("InProgress", "Degraded"), WAIT).await;

    // Fixing the cause makes it healthy again, as both tools read it.
    apply(&ns.api::<Secret>(), "no-such-secret", json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "no-such-secret"}, "stringData": {"apiKey": KEY}
    }))
    .await;
    wait_for_verdict(&providers, "broken", verdict("Current", "Healthy"), WAIT).await;
}

#[tokio::test]
async fn agents_read_healthy_waiting_and_broken_in_kstatus_and_argo_cd() {
    let (_client, ns) = support::namespace_with_crds("health-agents").await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let slow = FakeProvider::start(Behaviour {
        delay: Duration::from_secs(30),
        ..Behaviour::default()
    })
    .await;
    provider(&ns, "openai", &fake).await;
    provider(&ns, "slow", &slow).await;
    ns.api::<LLMProvider>()
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"healthCheck": {"timeout": "40s", "interval": "60s"}}})),
        )
        .await
        .expect("slow probes");
    let image = "registry.example/agent:1";
    agent(
        &ns,
        "healthy",
        json!({"image": image, "providers": [{"name": "openai"}]}),
    )
    .await;
    agent(
        &ns,
        "waiting",
        json!({"image": image, "providers": [{"name": "slow"}]}),
    )
    .await;
    agent(
        &ns,
        "orphan",
        json!({"image": image, "providers": [{"name": "nowhere"}]}),
    )
    .await;
    agent(
        &ns,
        "paused",
        json!({"image": image, "providers": [{"name": "openai"}], "suspend": true}),
    )
    .await;
    let agents = ns.api::<AgentDeployment>();

    wait_for_verdict(
        &agents,
        "waiting",
        verdict("InProgress", "Progressing"),
        WAIT,
    )
    .await;
    wait_for_verdict(&agents, "healthy", verdict("Current", "Healthy"), WAIT).await;
    wait_for_verdict(&agents, "paused", verdict("Current", "Suspended"), WAIT).await;
    // A provider that never appears: awaited for a moment, then a person must act.
    wait_for_verdict(&agents, "orphan", verdict("Failed", "Degraded"), WAIT).await;
}

#[tokio::test]
async fn tasks_read_running_succeeded_and_failed_in_kstatus_and_argo_cd() {
    let (_client, ns) = support::namespace_with_crds("health-tasks").await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "support",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    let worker = |annotations: Value, extra: Value| {
        let mut spec = json!({
            "agentRef": {"name": "support"}, "input": "hello", "backoffLimit": 0,
            "podMetadata": {"annotations": annotations}
        });
        support::merge_patch(&mut spec, &extra);
        spec
    };
    agent_task(&ns, "succeeds", worker(json!({}), json!({}))).await;
    agent_task(
        &ns,
        "fails",
        worker(json!({"kwok.agentoperator.dev/exit-code": "3"}), json!({})),
    )
    .await;
    agent_task(
        &ns,
        "runs",
        worker(
            json!({"kwok.agentoperator.dev/run-duration": "10m"}),
            json!({}),
        ),
    )
    .await;
    let tasks = ns.api::<AgentTask>();

    wait_for_verdict(&tasks, "runs", verdict("InProgress", "Progressing"), WAIT).await;
    wait_for_verdict(&tasks, "succeeds", verdict("Current", "Healthy"), WAIT).await;
    wait_for_verdict(&tasks, "fails", verdict("Failed", "Degraded"), WAIT).await;

    // Editing a finished task must not make it read as in progress forever.
    tasks
        .patch(
            "succeeds",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ttlSecondsAfterFinished": 3600}})),
        )
        .await
        .expect("edit the finished task");
    let edited = tasks.get("succeeds").await.expect("task");
    assert_eq!(edited.metadata.generation, Some(2));
    wait_until(WAIT, "the new generation observed", || async {
        let task = tasks.get("succeeds").await.ok()?;
        let status = task.status.clone()?;
        (status.observed_generation == Some(2)
            && status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2)))
        .then_some(())
    })
    .await;
    wait_for_verdict(&tasks, "succeeds", verdict("Current", "Healthy"), WAIT).await;
}
