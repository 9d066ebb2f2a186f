//! The operator process as production runs it: what `/metrics` exposes after real reconciles,
//! and the start-up check of the CRDs against the real API server's discovery.

use std::time::Duration;

use serde_json::json;

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::create_samples;
use crate::support::operator::OperatorProcess;
use crate::support::{self, wait_until};

#[tokio::test]
async fn metrics_of_every_controller_are_exposed_after_reconciles() {
    let (_client, ns) = support::namespace_with_crds("runtime-metrics").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let operator = OperatorProcess::start(&ns.name).await;
    create_samples(&ns, &fake, json!({})).await;

    let families = [
        "agent_operator_reconciles_total",
        "agent_operator_reconcile_duration_seconds_bucket",
        "agent_operator_status_writes_total",
        "agent_operator_kubernetes_requests_total",
        "agent_operator_objects",
        "agent_operator_tasks",
        "agent_operator_provider_up",
        "agent_operator_provider_probe_duration_seconds_bucket",
        "agent_operator_agent_ready_replicas",
        "agent_operator_task_attempts_total",
        "agent_operator_task_duration_seconds_bucket",
    ];
    let text = wait_until(
        Duration::from_secs(60),
        "every metric family to have a sample",
        || async {
            let text = operator.metrics().await;
            families
                .iter()
                .all(|family| {
                    text.lines()
                        .any(|line| line.starts_with(&format!("{family}{{")))
                })
                .then_some(text)
        },
    )
    .await;
    for controller in ["llmprovider", "agentdeployment", "agenttask"] {
        let sample = format!("agent_operator_reconciles_total{{controller=\"{controller}\"}}");
        assert!(text.contains(&sample), "{controller} reconciled: {sample}");
        let duration = format!(
            "agent_operator_reconcile_duration_seconds_count{{controller=\"{controller}\"}}"
        );
        assert!(
            text.contains(&duration),
            "{controller}'s reconciles are timed"
        );
    }
}

#[tokio::test]
async fn a_version_of_our_group_that_is_not_served_is_reported_with_the_fix() {
    let client = support::client().await;
    support::install_crds(&client).await;
    agent_operator::runtime::startup::check_crds(&client, "agentoperator.dev/v1alpha1")
        .await
        .expect("the installed CRDs are found");
    let error = agent_operator::runtime::startup::check_crds(&client, "agentoperator.dev/v9")
        .await
        .expect_err("v9 is not served");
    let message = error.to_string();
    assert!(
        message.contains("missing: LLMProvider, AgentDeployment, AgentTask")
            && message.contains("agent-operator crds | kubectl apply --server-side -f -"),
        "{message}"
    );
}
