//! The operator running with exactly the RBAC in `config/rbac/role.yaml` (generated from the
//! code's permission table), as a ServiceAccount with a minted token: enough for all three
//! controllers, and one rule less is refused at start with a line naming what is missing.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::json;

use crate::support::accounts::{account_with_rules, generated_rules};
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{create_samples, wait_for_samples};
use crate::support::operator::{OperatorProcess, run_until_exit};
use crate::support::{self, kubeconfig_for_service_account, wait_until};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn the_generated_rbac_runs_all_three_controllers() {
    let (client, ns) = support::namespace_with_crds("rbac-enough").await;
    account_with_rules(&ns, "operator", generated_rules()).await;
    let kubeconfig = kubeconfig_for_service_account(&client, &ns.name, "operator").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let operator = OperatorProcess::start_as(&ns.name, "", &[], &kubeconfig).await;

    create_samples(&ns, &fake, json!({"ttlSecondsAfterFinished": 1})).await;
    wait_for_samples(&ns).await;
    // The TTL cleanup deletes the task's Job: the delete rule suffices too.
    let jobs = ns.api::<Job>();
    wait_until(WAIT, "the TTL to delete the task's Job", || async {
        let listed = jobs.list(&Default::default()).await.ok()?;
        listed.items.is_empty().then_some(())
    })
    .await;
    let log = operator.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "{log}"
    );
    let jobs_created = operator
        .metric(
            r#"agent_operator_kubernetes_requests_total{code="201",resource="jobs",verb="create"}"#,
        )
        .await;
    assert_eq!(
        jobs_created,
        Some(1.0),
        "requests are counted by verb, resource and code"
    );
}

#[tokio::test]
async fn one_missing_rule_is_named_at_start() {
    let (client, ns) = support::namespace_with_crds("rbac-missing").await;
    let rules: Vec<PolicyRule> = generated_rules()
        .into_iter()
        .filter(|rule| rule.api_groups.as_deref() != Some(&["batch".to_string()]))
        .collect();
    account_with_rules(&ns, "limited", rules).await;
    let kubeconfig = kubeconfig_for_service_account(&client, &ns.name, "limited").await;

    let output = run_until_exit(&ns.name, &kubeconfig, Duration::from_secs(60)).await;
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {said}");
    let line = lines[0];
    assert!(line.contains("lacks permissions"), "{line}");
    for verb in ["create", "delete", "list", "watch"] {
        assert!(
            line.contains(&format!("{verb} jobs.batch in {}", ns.name)),
            "{line}"
        );
    }
    assert!(
        !line.contains("secrets"),
        "only what is missing is named: {line}"
    );
}

#[tokio::test]
async fn without_the_budget_features_rule_the_operator_runs_and_the_budget_reports_the_refusal() {
    let (client, ns) = support::namespace_with_crds("rbac-feature").await;
    // An older release's RBAC: everything but writing Secrets.
    let rules: Vec<PolicyRule> = generated_rules()
        .into_iter()
        .filter(|rule| {
            !(rule.resources.as_deref() == Some(&["secrets".to_string()])
                && rule.verbs.contains(&"create".to_string()))
        })
        .collect();
    account_with_rules(&ns, "older", rules).await;
    let kubeconfig = kubeconfig_for_service_account(&client, &ns.name, "older").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let operator = OperatorProcess::start_as(&ns.name, "", &[], &kubeconfig).await;
    create_samples(&ns, &fake, json!({})).await;
    wait_for_samples(&ns).await;
    assert!(
        operator.log().contains("may not keep lease Secrets"),
        "the start names what the budget feature lacks: {}",
        operator.log()
    );

    let agents = ns.api::<agent_operator::api::AgentDeployment>();
    agents
        .patch(
            "support",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"budget": {"maxTokens": 1000}}})),
        )
        .await
        .expect("a budget");
    let refused = wait_until(WAIT, "the refusal in the agent's status", || async {
        let status = agents.get("support").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.message.contains("Secret") && c.message.contains("forbidden"))
    })
    .await;
    assert_eq!(refused.status, "False", "{refused:?}");
}
