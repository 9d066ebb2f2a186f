//! kube-apiserver stopped and started three times while agents change and tasks run: the
//! operator never exits, reports not-ready while the API is gone, relists its watches (the
//! restarted API server's watch cache starts afresh, so every resumed watch gets 410 Gone) and
//! converges, with exactly one Job per task attempt.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agent_operator::api::{AgentDeployment, AgentTask};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::figures::record;
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{agent, agent_task, provider, wait_ready};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

const WAIT: Duration = Duration::from_secs(180);

/// Runs `e2e/cluster/restart-apiserver` with the API down for `seconds` and `flags` added to
/// kube-apiserver's command line until the next restart.
pub async fn restart_apiserver(seconds: u64, flags: &[&str]) {
    let mut command = restart_command(seconds, flags);
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .expect("the restart task")
        .expect("the restart script runs");
    assert!(status.success(), "restart-apiserver failed");
}

pub fn restart_command(seconds: u64, flags: &[&str]) -> std::process::Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster/restart-apiserver");
    let mut command = std::process::Command::new(script);
    command.arg(seconds.to_string()).args(flags);
    command
}

pub async fn scale(ns: &TestNamespace, name: &str, replicas: i32) {
    ns.api::<AgentDeployment>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("patch replicas");
}

pub async fn deployment_replicas(ns: &TestNamespace, agent: &str) -> Option<i32> {
    let deployments = ns
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .ok()?;
    deployments
        .items
        .into_iter()
        .find(|d| d.name_any().starts_with(agent))
        .and_then(|d| d.spec.replicas)
}

/// Every task Succeeded with one Job per attempt, numbered 1..=attempts.
pub async fn assert_tasks_exact(ns: &TestNamespace, tasks: &[String]) {
    let api = ns.api::<AgentTask>();
    let mut expected = BTreeSet::new();
    for name in tasks {
        let task = wait_until(WAIT, &format!("task {name} to succeed"), || async {
            let task = api.get(name).await.ok()?;
            let phase = task.status.as_ref()?.phase.map(|p| format!("{p:?}"));
            (phase.as_deref() == Some("Succeeded")).then_some(task)
        })
        .await;
        let attempts = task.status.expect("status").attempts;
        for attempt in 1..=attempts {
            expected.insert(format!("{name}-{attempt}"));
        }
    }
    let jobs: BTreeSet<String> = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert_eq!(jobs, expected, "exactly one Job per attempt, none lost");
}

#[tokio::test]
async fn the_operator_rides_out_three_api_server_restarts() {
    let (_client, ns) = support::namespace_with_crds("faults-apiserver").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let mut operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    let agents: Vec<String> = (0..4).map(|i| format!("agent-{i}")).collect();
    for name in &agents {
        let spec = json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}], "replicas": 1});
        agent(&ns, name, spec).await;
    }
    let tasks: Vec<String> = (0..8).map(|i| format!("task-{i}")).collect();
    for (i, name) in tasks.iter().enumerate() {
        let mut pod = json!({"kwok.agentoperator.dev/run-duration": "3s"});
        if i % 2 == 0 {
            pod["kwok.agentoperator.dev/exit-code-attempt-1"] = json!("1");
        }
        agent_task(
            &ns,
            name,
            json!({
                "agentRef": {"name": "agent-0"}, "input": "x", "backoffLimit": 3,
                "retryBackoff": {"initialDelay": "1s", "maxDelay": "2s"},
                "podMetadata": {"annotations": pod}
            }),
        )
        .await;
    }

    let mut unready_seen = 0;
    let mut recoveries = Vec::new();
    for round in 0..3 {
        // A change made just before the API goes away, and one made right after it is back.
        scale(&ns, &agents[round], 2).await;
        let restart = tokio::spawn(restart_apiserver(5, &[]));
        let mut saw_unready = false;
        while !restart.is_finished() {
            if operator.readyz().await == Some(503) {
                saw_unready = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        restart.await.expect("restart");
        unready_seen += usize::from(saw_unready);
        let back = Instant::now();
        scale(&ns, &agents[round + 1], 3).await;
        wait_until(
            WAIT,
            "the change after the restart to reach the Deployment",
            || async {
                (deployment_replicas(&ns, &agents[round + 1]).await == Some(3)).then_some(())
            },
        )
        .await;
        recoveries.push(back.elapsed());
        assert!(operator.is_running(), "the operator never exits");
    }

    for name in &agents {
        wait_ready(&ns.api::<AgentDeployment>(), name, WAIT).await;
    }
    // Each round scaled agent r to 2 before its restart and agent r+1 to 3 after it; the last
    // change of each agent wins.
    for (i, name) in agents.iter().enumerate() {
        let wanted = if i < 3 { 2 } else { 3 };
        assert_eq!(deployment_replicas(&ns, name).await, Some(wanted), "{name}");
    }
    assert_tasks_exact(&ns, &tasks).await;
    assert!(operator.is_running(), "the operator never exits");
    assert_eq!(
        unready_seen, 3,
        "/readyz said not-ready during every outage"
    );
    let lists: f64 = operator.requests_by_resource("list").await.values().sum();
    record(
        "apiserver-restart",
        &format!(
            "3 restarts (5 s down each): operator exited 0 times, /readyz not-ready in 3 of 3 outages, recovery after each restart (a change reaching its Deployment) {}, {lists} list requests (relists after 410 Gone included), tasks lost 0, attempts duplicated 0",
            recoveries
                .iter()
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    );
    drop(fake);
}
