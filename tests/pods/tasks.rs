//! AgentTask workers on the real node: the reference agent reads its input, asks the LLM
//! through the router sidecar and writes its result; the Job completes while the sidecar runs.

use std::time::Duration;

use agent_operator::api::AgentTask;
use agent_operator::api::agent_task::AgentTaskStatus;
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

use super::RealNodeTest;
use crate::support::collector::{Collector, attribute};
use crate::support::fake_provider::{COMPLETION_TOKENS, PROMPT_TOKENS};
use crate::support::objects::{agent_task, provider};
use crate::support::operator::OperatorProcess;
use crate::support::real_node;
use crate::support::wait_until;

async fn finished(test: &RealNodeTest, name: &str) -> AgentTaskStatus {
    let tasks = test.ns.api::<AgentTask>();
    wait_until(Duration::from_secs(180), "the task to finish", || async {
        let status = tasks.get(name).await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .then_some(status)
    })
    .await
}

fn condition_message(status: &AgentTaskStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_worker_writes_its_result_and_its_job_completes_beside_the_router() {
    let test = RealNodeTest::start("real-task-result").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    agent_task(
        &test.ns,
        "triage",
        json!({"agentRef": {"name": "support"}, "input": "Ticket 4711: the export button returns a 500."}),
    )
    .await;
    let status = finished(&test, "triage").await;
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True"),
        "{}",
        condition_message(&status, "Failed")
    );
    let result = status.result.expect("a result");
    assert!(
        result.summary.starts_with("Hello from the fake provider"),
        "{}",
        result.summary
    );
    assert!(
        result.summary.contains("(model: gpt-4o)"),
        "{}",
        result.summary
    );
    let question = test
        .fake
        .chats()
        .into_iter()
        .find_map(|c| {
            c.body["messages"][1]["content"]
                .as_str()
                .map(str::to_string)
        })
        .expect("the provider got the worker's question");
    assert!(question.starts_with("Ticket 4711"), "{question}");

    // The router's report reached the status through its termination message.
    let usage = status.usage.expect("the attempt's usage");
    assert_eq!(usage.total.requests, 1);
    assert_eq!(
        usage.total.total_tokens as u64,
        PROMPT_TOKENS + COMPLETION_TOKENS
    );
    assert_eq!(usage.attempts.len(), 1);
    assert_eq!(usage.attempts[0].models[0].provider, "openai");
    let output = format!(
        r#"agent_operator_task_tokens_total{{kind="output",namespace="{}"}}"#,
        test.ns.name
    );
    assert_eq!(
        test.operator.metric(&output).await,
        Some(COMPLETION_TOKENS as f64),
        "the operator's metric counts the attempt's tokens once"
    );

    // The Job completed although its router sidecar never exits by itself.
    let job = test
        .ns
        .api::<Job>()
        .get(status.job_name.as_deref().expect("job name"))
        .await
        .expect("the Job");
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
}

#[tokio::test]
async fn a_failing_worker_is_retried_with_its_exit_code_and_message_recorded() {
    let test = RealNodeTest::start("real-task-failure").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    agent_task(
        &test.ns,
        "doomed",
        json!({
            "agentRef": {"name": "support"}, "input": "Ticket 4712",
            "parameters": {"exitCode": "3", "message": "the ticket system refused the comment\nmore detail"},
            "backoffLimit": 1, "retryBackoff": {"initialDelay": "1s", "maxDelay": "2s"}
        }),
    )
    .await;
    let status = finished(&test, "doomed").await;
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed");
    assert_eq!(failed.status, "True");
    assert_eq!(failed.reason, "BackoffLimitExceeded", "{}", failed.message);
    assert!(
        failed.message.contains("exited with code 3"),
        "{}",
        failed.message
    );
    assert!(
        failed
            .message
            .contains("the ticket system refused the comment"),
        "{}",
        failed.message
    );
    assert!(
        !failed.message.contains("more detail"),
        "only the first line"
    );
    assert_eq!(status.attempts, 2, "one retry");
    assert_eq!(status.failed_attempts, 2);
    // Each attempt really ran: it asked the provider before failing.
    assert_eq!(test.fake.chats().len(), 2);
    let usage = status.usage.expect("usage");
    let numbers: Vec<i32> = usage.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2], "each attempt's usage, once");
    assert_eq!(usage.total.requests, 2);
}

#[tokio::test]
async fn a_task_whose_budget_cannot_fit_a_request_ends_budget_exceeded_without_a_retry() {
    let test = RealNodeTest::start("real-task-budget").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    // The reference agent sets no max_tokens: the router reserves its default for the answer,
    // which 100 tokens cannot hold.
    agent_task(
        &test.ns,
        "frugal",
        json!({
            "agentRef": {"name": "support"}, "input": "Ticket 4713",
            "budget": {"maxTokens": 100}, "backoffLimit": 3
        }),
    )
    .await;
    let status = finished(&test, "frugal").await;
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed");
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "BudgetExceeded"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("spec.budget is spent"),
        "{}",
        failed.message
    );
    assert_eq!(status.attempts, 1, "not retried");
    assert!(
        test.fake.chats().is_empty(),
        "the refused request never reached the provider"
    );
    let usage = status.usage.expect("the attempt's usage");
    assert!(usage.attempts[0].budget_exceeded);
    assert_eq!(usage.total.requests, 0);
}

#[tokio::test]
async fn a_timed_out_attempt_keeps_its_usage_and_its_pod_goes_once_that_is_recorded() {
    let test = RealNodeTest::start("real-task-deadline").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    // The worker asks once, then outlives its timeout: the Job controller deletes its pod
    // while the router runs, and the router reports what was spent as it stops.
    agent_task(
        &test.ns,
        "slow",
        json!({
            "agentRef": {"name": "support"}, "input": "Ticket 4716",
            "timeout": "20s", "backoffLimit": 0,
            "parameters": {"sleepSeconds": "600"}
        }),
    )
    .await;
    let status = finished(&test, "slow").await;
    assert_eq!(
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "Timeout")),
        "{}",
        condition_message(&status, "Failed")
    );
    assert_eq!(test.fake.chats().len(), 1, "the worker asked once");
    let usage = status.usage.expect("the timed-out attempt's usage");
    assert_eq!(usage.attempts.len(), 1);
    assert_eq!(
        (
            usage.total.requests,
            usage.total.input_tokens,
            usage.total.output_tokens
        ),
        (1, PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64)
    );
    // Its finalizer kept the pod only until then.
    let pods = test.ns.api::<k8s_openapi::api::core::v1::Pod>();
    wait_until(Duration::from_secs(60), "the worker pod gone", || async {
        let listed = pods.list(&Default::default()).await.ok()?;
        let workers = listed.items.iter().filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("agentoperator.dev/task"))
        });
        (workers.count() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_attempts_usage_is_recorded_after_the_task_finished() {
    let test = RealNodeTest::start("real-task-cancel").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    agent_task(
        &test.ns,
        "abandoned",
        json!({
            "agentRef": {"name": "support"}, "input": "Ticket 4717",
            "parameters": {"sleepSeconds": "600"}
        }),
    )
    .await;
    wait_until(Duration::from_secs(120), "the worker's request", || async {
        (test.fake.chats().len() == 1).then_some(())
    })
    .await;
    let tasks = test.ns.api::<AgentTask>();
    tasks
        .patch(
            "abandoned",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"cancel": true}})),
        )
        .await
        .expect("cancel");
    let status = finished(&test, "abandoned").await;
    assert_eq!(
        status.reason.as_deref(),
        Some("Cancelled"),
        "{}",
        condition_message(&status, "Failed")
    );
    // The cancellation deleted the Job; the pod's router reports as it stops, after that.
    let usage = wait_until(
        Duration::from_secs(90),
        "the cancelled attempt's usage",
        || async { tasks.get("abandoned").await.ok()?.status?.usage },
    )
    .await;
    assert_eq!(
        (usage.attempts.len(), usage.total.requests),
        (1, 1),
        "{usage:?}"
    );
}

#[tokio::test]
async fn a_workers_router_exports_its_genai_span_named_after_the_task_and_its_pod() {
    let test = RealNodeTest::start("real-task-traced").await;
    let collector = Collector::start_on("real-task", &real_node::host_address()).await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent(
        "support",
        json!({"router": {"otlpEndpoint": collector.endpoint}}),
    )
    .await;
    agent_task(
        &test.ns,
        "traced",
        json!({"agentRef": {"name": "support"}, "input": "Ticket 4714"}),
    )
    .await;
    let status = finished(&test, "traced").await;
    let pod_name = status.pod_name.clone().expect("the worker pod");
    // Exported when the kubelet stopped the router at the end of the attempt.
    let span = collector
        .span("the worker's request span", |span| {
            span["name"]
                .as_str()
                .is_some_and(|name| name.starts_with("chat "))
        })
        .await;
    let resource = |key: &str| attribute(&span["resource"], key);
    assert_eq!(resource("service.name"), Some(json!("traced")), "{span}");
    assert_eq!(resource("k8s.pod.name"), Some(json!(pod_name)));
    assert_eq!(resource("k8s.namespace.name"), Some(json!(test.ns.name)));
    assert_eq!(
        attribute(&span["attributes"], "gen_ai.usage.output_tokens"),
        Some(json!(COMPLETION_TOKENS))
    );
}

#[tokio::test]
async fn usage_is_recorded_once_across_operator_restarts() {
    let mut test = RealNodeTest::start("real-task-restarts").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    agent_task(
        &test.ns,
        "counted",
        json!({"agentRef": {"name": "support"}, "input": "Ticket 4715"}),
    )
    .await;
    // The operator dies as soon as the attempt's Job exists; the attempt ends without it.
    let tasks = test.ns.api::<AgentTask>();
    let job_name = wait_until(Duration::from_secs(120), "the attempt's Job", || async {
        tasks.get("counted").await.ok()?.status?.job_name
    })
    .await;
    test.operator.kill();
    let jobs = test.ns.api::<Job>();
    wait_until(Duration::from_secs(120), "the Job to complete", || async {
        let job = jobs.get(&job_name).await.ok()?;
        (job.status?.succeeded? == 1).then_some(())
    })
    .await;

    test.operator = restarted(&test).await;
    let status = finished(&test, "counted").await;
    let usage = status.usage.expect("usage");
    assert_eq!(usage.attempts.len(), 1);
    assert_eq!(usage.total.requests, 1, "counted once");
    let output = format!(
        r#"agent_operator_task_tokens_total{{kind="output",namespace="{}"}}"#,
        test.ns.name
    );
    let counted = test.operator.metric(&output).await.unwrap_or(0.0);

    // Another restart reads the recorded usage and adds nothing.
    test.operator.kill();
    test.operator = restarted(&test).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = tasks
        .get("counted")
        .await
        .expect("task")
        .status
        .expect("status");
    assert_eq!(again.usage, Some(usage), "the status is not rewritten");
    assert_eq!(
        test.operator.metric(&output).await.unwrap_or(0.0),
        0.0,
        "a restarted operator does not count a recorded attempt again (the first counted {counted})"
    );
}

async fn restarted(test: &RealNodeTest) -> OperatorProcess {
    OperatorProcess::start_with(&test.ns.name, "", &real_node::operator_args()).await
}
