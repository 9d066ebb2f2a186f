//! A leader stopped without releasing its Lease (SIGSTOP): the follower takes over within the
//! lease duration, and the old leader, resumed, writes nothing: its in-flight reconciles are
//! fenced until it learns it lost the Lease.

use std::time::{Duration, Instant};

use agent_operator::api::AgentDeployment;
use serde_json::json;

use crate::figures::record;
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{agent, provider, wait_ready};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

/// Lease duration of the operator (15 s), plus one retry period (2 s) and slack for the poll.
const TAKEOVER_BOUND: Duration = Duration::from_secs(15 + 2 + 3);

async fn elected(ns: &TestNamespace, tag: &str) -> OperatorProcess {
    crate::support::operator::elected(&ns.name, tag).await
}

async fn holder(ns: &TestNamespace) -> Option<String> {
    crate::support::operator::lease_holder(&ns.client, &ns.name).await
}

/// Write requests the process completed (fenced refusals are not writes), as their metric
/// lines, so that a failure names what was written.
async fn writes(operator: &OperatorProcess) -> Vec<String> {
    operator
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("agent_operator_kubernetes_requests_total{"))
        .filter(|l| !l.contains("resource=\"leases\"") && !l.contains("code=\"fenced\""))
        .filter(|l| {
            ["create", "update", "patch", "delete"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_stopped_leader_is_replaced_and_writes_nothing_when_it_resumes() {
    let (_, ns) = support::namespace_with_crds("faults-leader").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    provider(&ns, "openai", &fake).await;
    let first = elected(&ns, "-a").await;
    let second = elected(&ns, "-b").await;
    let leader_identity = wait_until(Duration::from_secs(30), "a leader", || holder(&ns)).await;
    let (leader, follower) = if leader_identity.ends_with(&format!("-{}", first.pid())) {
        (first, second)
    } else {
        (second, first)
    };
    agent(
        &ns,
        "before",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    wait_ready(
        &ns.api::<AgentDeployment>(),
        "before",
        Duration::from_secs(60),
    )
    .await;

    // Quiet now: what it wrote so far is counted before it stops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes_before = writes(&leader).await;
    leader.signal("STOP");
    let stopped = Instant::now();
    // Work for whoever leads now; the stopped leader's watches queue it for when it resumes.
    agent(
        &ns,
        "during",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    let new_identity = wait_until(TAKEOVER_BOUND, "the follower to take the Lease", || async {
        holder(&ns).await.filter(|h| *h != leader_identity)
    })
    .await;
    let takeover = stopped.elapsed();
    assert!(new_identity.ends_with(&format!("-{}", follower.pid())));
    wait_ready(
        &ns.api::<AgentDeployment>(),
        "during",
        Duration::from_secs(60),
    )
    .await;

    // Resume the old leader; its metrics server answers again once it runs.
    leader.signal("CONT");
    agent(
        &ns,
        "after",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    wait_ready(
        &ns.api::<AgentDeployment>(),
        "after",
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes_after = writes(&leader).await;
    let new_writes: Vec<&String> = writes_after
        .iter()
        .filter(|line| !writes_before.contains(line))
        .collect();
    assert!(
        new_writes.is_empty(),
        "the resumed old leader wrote nothing; these counters moved: {new_writes:#?}"
    );
    assert_eq!(
        holder(&ns).await,
        Some(new_identity),
        "the new leader keeps the Lease"
    );
    let fenced = leader
        .metrics()
        .await
        .lines()
        .filter(|l| l.contains("code=\"fenced\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        .abs();
    record(
        "leader-loss",
        &format!(
            "leader SIGSTOPped: takeover after {:.1} s (lease duration 15 s); resumed old leader: 0 writes, {fenced} writes refused by the fence",
            takeover.as_secs_f64()
        ),
    );
}
