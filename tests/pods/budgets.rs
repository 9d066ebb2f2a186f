//! An AgentDeployment's budget on the real node: three replicas under concurrent load spend,
//! together, no more than the window's limit, the operator counts every token the provider
//! served exactly once (a pod scaled away under load included), and the agent reports the
//! window spent.

use std::time::Duration;

use agent_operator::api::AgentDeployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::RealNodeTest;
use crate::support::fake_provider::{COMPLETION_TOKENS, PROMPT_TOKENS};
use crate::support::objects::{event_reasons, provider};
use crate::support::wait_until;

/// The chat requests the provider answered (its probes' requests are not spending).
fn chats(test: &RealNodeTest) -> u64 {
    test.fake.chats().len() as u64
}

/// Small enough to be spent in seconds by three agents asking ten times a second each.
const LIMIT: i64 = 2_500;

#[tokio::test]
async fn three_replicas_under_load_spend_no_more_than_the_window_allows() {
    let test = RealNodeTest::start("real-budget").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent(
        "support",
        json!({
            "replicas": 3,
            "env": [
                {"name": "AGENT_LOAD", "value": "10"},
                {"name": "AGENT_MAX_TOKENS", "value": "20"}
            ],
            "budget": {"maxTokens": LIMIT, "window": {"period": "Day", "timeZone": "Europe/Paris"}}
        }),
    )
    .await;
    test.ready_pods("support", 3).await;

    // Under load, one pod goes: what it spent since its last lease round is read as its
    // router stops.
    let agents = test.ns.api::<AgentDeployment>();
    wait_until(
        Duration::from_secs(60),
        "some usage to be counted",
        || async {
            let budget = agents.get("support").await.ok()?.status?.budget?;
            (budget.usage.total_tokens > 300).then_some(())
        },
    )
    .await;
    agents
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale down");

    let spent = wait_until(
        Duration::from_secs(180),
        "the agent to report its window spent",
        || async {
            let agent = agents.get("support").await.ok()?;
            let status = agent.status?;
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == "BudgetExceeded" && c.status == "True")?
                .clone();
            Some((condition, status.budget?))
        },
    )
    .await;
    let (condition, budget) = spent;
    assert_eq!(condition.reason, "WindowSpent", "{condition:?}");
    assert!(
        budget.window_end.ends_with("T23:00:00Z") || budget.window_end.ends_with("T22:00:00Z"),
        "the window ends at midnight in Paris: {}",
        budget.window_end
    );

    // What the provider served is the truth the budget must hold to.
    let per_request = PROMPT_TOKENS + COMPLETION_TOKENS;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = chats(&test) * per_request;
    assert!(
        served <= LIMIT as u64,
        "three routers together let {served} tokens through a budget of {LIMIT}"
    );
    assert!(
        served > (LIMIT as u64) / 2,
        "the budget was used, not hoarded: {served} of {LIMIT}"
    );
    // No more requests get through once the window is spent.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(chats(&test) * per_request, served, "the routers stopped");
    // And the operator counted each of them once.
    let counted = wait_until(
        Duration::from_secs(30),
        "the usage to be counted",
        || async {
            let budget = agents.get("support").await.ok()?.status?.budget?;
            (budget.usage.total_tokens as u64 == served).then_some(budget)
        },
    )
    .await;
    assert_eq!(counted.usage.requests as u64, chats(&test));
    assert_eq!(counted.leases.len(), 2, "one lease per running pod");

    // People hear of it: the events of the alert share and of the spent window, and the two
    // series the chart's AgentBudgetNearlySpent alert compares.
    let reasons = event_reasons(&test.ns, "support").await;
    for reason in ["BudgetAlert", "BudgetExceeded"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    let metrics = test.operator.metrics().await;
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("namespace=\"{}\"", test.ns.name)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} for the agent in:\n{metrics}"))
    };
    assert_eq!(series("agent_operator_agent_budget_alert_ratio{"), 0.8);
    let used = series("agent_operator_agent_budget_used_ratio{");
    assert!((0.8..=1.0).contains(&used), "used ratio {used}");

    // The lease token is in a Secret the agent never mounts.
    let secret = test
        .ns
        .api::<Secret>()
        .get("support-router-lease")
        .await
        .expect("the lease Secret");
    assert!(secret.data.is_some_and(|d| d.contains_key("token")));
}
