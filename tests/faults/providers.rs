//! Providers misbehaving under load: 50 agents over 3 providers while one hangs, one answers
//! 500 and one 429. Probes of one provider never delay another's, and each status settles to
//! the truth within its thresholds; so does each agent's active provider.

use std::time::{Duration, Instant};

use agent_operator::api::{AgentDeployment, LLMProvider};
use serde_json::json;

use crate::figures::record;
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{KEY, agent, apply, ready_reason};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};
use k8s_openapi::api::core::v1::Secret;

const INTERVAL_SECONDS: u64 = 2;
const FAILURE_THRESHOLD: u64 = 2;

async fn fast_provider(ns: &TestNamespace, name: &str, fake: &FakeProvider) {
    apply(&ns.api::<Secret>(), &format!("{name}-key"), json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-key")}, "stringData": {"apiKey": KEY}
    }))
    .await;
    apply(&ns.api::<LLMProvider>(), name, json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": name},
        "spec": {"type": "OpenAI", "endpoint": fake.openai_endpoint(), "allowInsecureHTTP": true,
                 "credentials": {"name": format!("{name}-key"), "key": "apiKey"}, "defaultModel": "gpt-4o",
                 "healthCheck": {"interval": format!("{INTERVAL_SECONDS}s"), "timeout": "1s",
                                 "failureThreshold": FAILURE_THRESHOLD, "successThreshold": 1}}
    }))
    .await;
}

async fn active_providers(ns: &TestNamespace) -> Vec<Option<String>> {
    let agents = ns
        .api::<AgentDeployment>()
        .list(&Default::default())
        .await
        .expect("agents");
    agents
        .items
        .into_iter()
        .map(|a| a.status.and_then(|s| s.active_provider))
        .collect()
}

#[tokio::test]
async fn faulty_providers_never_delay_a_healthy_ones_probes_and_status_settles_to_the_truth() {
    let agents = 50;
    let (_client, ns) = support::namespace_with_crds("faults-providers").await;
    let fakes = [
        FakeProvider::start(Behaviour::default()).await,
        FakeProvider::start(Behaviour::default()).await,
        FakeProvider::start(Behaviour::default()).await,
        FakeProvider::start(Behaviour::default()).await,
    ];
    let names = ["hangs", "fails", "limited", "healthy"];
    let _operator = OperatorProcess::start(&ns.name).await;
    for (name, fake) in names.iter().zip(&fakes) {
        fast_provider(&ns, name, fake).await;
    }
    for i in 0..agents {
        // Chains over the three faulty providers first, the healthy one last.
        let chain: Vec<_> = (0..3)
            .map(|k| json!({"name": names[(i + k) % 3]}))
            .chain([json!({"name": "healthy"})])
            .collect();
        agent(
            &ns,
            &format!("agent-{i:02}"),
            json!({"image": "registry.example/agent:1", "providers": chain}),
        )
        .await;
    }
    let providers = ns.api::<LLMProvider>();
    for name in names {
        wait_until(
            Duration::from_secs(60),
            &format!("{name} Ready"),
            || async {
                (ready_reason(&providers, name).await.as_deref() == Some("Ready")).then_some(())
            },
        )
        .await;
    }

    // The faults, all at once.
    fakes[0].set(|b| b.delay = Duration::from_secs(30));
    fakes[1].set(|b| b.status = Some(500));
    fakes[2].set(|b| {
        b.status = Some(429);
        b.retry_after = Some(1);
    });
    let faulted = Instant::now();
    let healthy_before = fakes[3].requests();
    let expected = [
        ("hangs", "Timeout"),
        ("fails", "ServerError"),
        ("limited", "RateLimited"),
    ];
    let mut settle = Vec::new();
    for (name, wanted) in expected {
        wait_until(
            Duration::from_secs(60),
            &format!("{name} to report {wanted}"),
            || async {
                (ready_reason(&providers, name).await.as_deref() == Some(wanted)).then_some(())
            },
        )
        .await;
        settle.push((name, faulted.elapsed()));
    }
    wait_until(
        Duration::from_secs(60),
        "every agent to use the healthy provider",
        || async {
            active_providers(&ns)
                .await
                .iter()
                .all(|p| p.as_deref() == Some("healthy"))
                .then_some(())
        },
    )
    .await;
    let all_moved = faulted.elapsed();
    // Meanwhile the healthy provider was probed on its own schedule.
    let observed = faulted.elapsed().as_secs_f64();
    let healthy_probes = fakes[3].requests() - healthy_before;
    let expected_probes = (observed / INTERVAL_SECONDS as f64).floor() as u64;
    assert!(
        healthy_probes + 1 >= expected_probes,
        "the healthy provider was probed {healthy_probes} times in {observed:.0} s, expected about {expected_probes}"
    );
    assert_eq!(
        ready_reason(&providers, "healthy").await.as_deref(),
        Some("Ready")
    );
    // The bound: failureThreshold probes, each one interval apart and lasting at most its
    // retries (three attempts of the 1 s timeout with up to 2 s between them), plus slack.
    let bound = Duration::from_secs(FAILURE_THRESHOLD * (INTERVAL_SECONDS + 3 + 4) + 4);
    for (name, took) in &settle {
        assert!(
            *took <= bound,
            "{name} took {took:?} to settle, over {bound:?}"
        );
    }

    // Healing: the first provider of each chain comes back.
    for fake in &fakes[..3] {
        fake.set(|b| *b = Behaviour::default());
    }
    let healed = Instant::now();
    for name in &names[..3] {
        wait_until(
            Duration::from_secs(60),
            &format!("{name} Ready again"),
            || async {
                (ready_reason(&providers, name).await.as_deref() == Some("Ready")).then_some(())
            },
        )
        .await;
    }
    let recovered = healed.elapsed();
    record(
        "provider-faults",
        &format!(
            "{agents} agents over 3 faulty providers and 1 healthy one (probe interval 2 s, timeout 1 s, failureThreshold 2): {} ; every agent on the healthy provider after {:.1} s; the healthy provider probed {healthy_probes} times in {observed:.0} s (on schedule); all Ready again {:.1} s after healing",
            settle
                .iter()
                .map(|(n, t)| format!("{n} reported after {:.1} s", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            all_moved.as_secs_f64(),
            recovered.as_secs_f64()
        ),
    );
}
