//! Two operator processes with leader election: exactly one reconciles, a killed leader is
//! replaced within the lease duration, and SIGTERM exits 0 and releases the Lease.

use std::time::{Duration, Instant};

use agent_operator::api::LLMProvider;
use kube::api::PostParams;
use serde_json::json;

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

const RECONCILES: &str = r#"agent_operator_reconciles_total{controller="llmprovider"}"#;

async fn elected(ns: &TestNamespace, tag: &str) -> OperatorProcess {
    crate::support::operator::elected(&ns.name, tag).await
}

async fn holder(ns: &TestNamespace) -> Option<String> {
    crate::support::operator::lease_holder(&ns.client, &ns.name).await
}

async fn a_provider(ns: &TestNamespace, fake: &FakeProvider) {
    let provider: LLMProvider = serde_json::from_value(json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "local"},
        "spec": {"type": "Ollama", "endpoint": fake.root_endpoint(), "allowInsecureHTTP": true, "models": [],
                 "healthCheck": {"interval": "1s", "timeout": "1s"}}
    }))
    .expect("provider");
    ns.api::<LLMProvider>()
        .create(&PostParams::default(), &provider)
        .await
        .expect("create provider");
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_killed_leader_is_replaced() {
    let (_, ns) = support::namespace_with_crds("leader-election").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    a_provider(&ns, &fake).await;
    let mut first = elected(&ns, "-a").await;
    let mut second = elected(&ns, "-b").await;

    let lease_holder = wait_until(Duration::from_secs(30), "a leader", || holder(&ns)).await;
    // Several probe intervals pass; only one process may have reconciled.
    wait_until(
        Duration::from_secs(30),
        "reconciles by the leader",
        || async {
            let a = first.metric(RECONCILES).await.unwrap_or(0.0);
            let b = second.metric(RECONCILES).await.unwrap_or(0.0);
            (a + b >= 5.0).then_some(())
        },
    )
    .await;
    let (a, b) = (
        first.metric(RECONCILES).await.unwrap_or(0.0),
        second.metric(RECONCILES).await.unwrap_or(0.0),
    );
    assert!(
        (a == 0.0) != (b == 0.0),
        "exactly one process reconciles: {a} and {b}"
    );
    let (leader, follower) = if a > 0.0 {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    assert!(
        lease_holder.ends_with(&format!("-{}", leader.pid())),
        "the reconciling process holds the Lease"
    );

    let follower_before = follower.metric(RECONCILES).await.unwrap_or(0.0);
    leader.kill();
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(40),
        "the follower to take over",
        || async {
            (follower.metric(RECONCILES).await.unwrap_or(0.0) > follower_before).then_some(())
        },
    )
    .await;
    let takeover = killed.elapsed();
    // Lease duration 15 s, retry period 2 s, plus the new leader's cache sync.
    assert!(
        takeover < Duration::from_secs(25),
        "takeover took {takeover:?}"
    );
    assert!(
        holder(&ns)
            .await
            .is_some_and(|h| h.ends_with(&format!("-{}", follower.pid())))
    );
}

#[tokio::test]
async fn sigterm_exits_zero_and_releases_the_lease() {
    let (_, ns) = support::namespace_with_crds("leader-sigterm").await;
    let mut operator = elected(&ns, "").await;
    let expected = format!("-{}", operator.pid());
    wait_until(Duration::from_secs(30), "the Lease to be held", || async {
        holder(&ns).await.filter(|h| h.ends_with(&expected))
    })
    .await;
    let code = operator.terminate(Duration::from_secs(25)).await;
    assert_eq!(
        code,
        Some(0),
        "SIGTERM ends the operator with exit code 0 within the bound"
    );
    assert_eq!(
        holder(&ns).await,
        None,
        "the Lease is released for the next leader"
    );
}
