//! The router sidecar in real pods: the API server admits them under Pod Security `restricted`,
//! the agent container gets the OpenAI environment and no credential, and a task's Job still
//! completes with its sidecar running.

use std::time::Duration;

use agent_operator::api::{AgentDeployment, AgentTask};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{agent, agent_task, provider, wait_ready};
use crate::support::operator::OperatorProcess;
use crate::support::{TestNamespace, client, install_crds, wait_until};

const WAIT: Duration = Duration::from_secs(90);
const ROUTER_IMAGE: &str = "registry.example/agent-operator:router-test";

async fn restricted_namespace(test: &str) -> TestNamespace {
    let client = client().await;
    install_crds(&client).await;
    TestNamespace::with_labels(
        &client,
        test,
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await
}

async fn pods(ns: &TestNamespace, selector: &str) -> Vec<Pod> {
    wait_until(WAIT, &format!("pods with {selector}"), || async {
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        (!pods.items.is_empty()).then_some(pods.items)
    })
    .await
}

fn env_of(container: &Container) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn mounts_of(container: &Container) -> Vec<String> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.clone())
        .collect()
}

/// The pod runs the router as a native sidecar holding the credentials; the agent has only the
/// router's address.
fn assert_wired_through_the_router(pod: &Pod) {
    let spec = pod.spec.as_ref().expect("spec");
    let router = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "llm-router")
        .expect("the router sidecar");
    assert_eq!(router.restart_policy.as_deref(), Some("Always"));
    assert_eq!(router.image.as_deref(), Some(ROUTER_IMAGE));
    assert!(mounts_of(router).contains(&"credentials".to_string()));
    let agent = spec
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .expect("agent");
    assert!(
        !mounts_of(agent).contains(&"credentials".to_string()),
        "the agent container mounts no credential"
    );
    let env = env_of(agent);
    assert!(env.contains(&("OPENAI_BASE_URL".into(), "http://127.0.0.1:8790/v1".into())));
    assert!(env.contains(&("OPENAI_API_KEY".into(), "agent-operator-router".into())));
}

#[tokio::test]
async fn agent_and_task_pods_run_the_router_under_pod_security_restricted() {
    let ns = restricted_namespace("router-sidecar").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator =
        OperatorProcess::start_with(&ns.name, "router", &["--router-image", ROUTER_IMAGE]).await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "support",
        json!({"image": "registry.example/support-agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;

    wait_ready(&ns.api::<AgentDeployment>(), "support", WAIT).await;
    let agent_pods = pods(&ns, "app.kubernetes.io/instance=support").await;
    assert_wired_through_the_router(&agent_pods[0]);
    let config: ConfigMap = ns
        .api()
        .get("support-providers")
        .await
        .expect("the mounted config");
    let file: Value =
        serde_json::from_str(&config.data.expect("data")["providers.json"]).expect("JSON");
    assert_eq!(
        file["router"]["maxAttempts"], 3,
        "the router's settings are mounted"
    );

    agent_task(
        &ns,
        "summarise",
        json!({"agentRef": {"name": "support"}, "input": "a long text"}),
    )
    .await;
    wait_until(WAIT, "task summarise to succeed", || async {
        let task = ns.api::<AgentTask>().get("summarise").await.ok()?;
        let phase = task.status?.phase.map(|p| format!("{p:?}"));
        (phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let worker = pods(&ns, "agentoperator.dev/task=summarise").await;
    assert_wired_through_the_router(&worker[0]);
}

#[tokio::test]
async fn with_the_router_off_the_agent_mounts_the_credentials_itself() {
    let ns = restricted_namespace("router-off").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "plain",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}],
               "router": {"enabled": false}}),
    )
    .await;
    // The credential is mounted once the probe has validated it.
    let pod = wait_until(WAIT, "a pod mounting the credentials", || async {
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels("app.kubernetes.io/instance=plain"))
            .await
            .ok()?;
        pods.items.into_iter().find(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| mounts_of(&s.containers[0]).contains(&"credentials".into()))
        })
    })
    .await;
    let spec = pod.spec.expect("spec");
    assert!(
        spec.init_containers.unwrap_or_default().is_empty(),
        "no router"
    );
    assert!(
        !env_of(&spec.containers[0])
            .iter()
            .any(|(name, _)| name == "OPENAI_BASE_URL")
    );
}
