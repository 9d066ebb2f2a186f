//! The real-node benchmark: how long real agent pods take to start, how long an LLMProvider
//! change takes to reach every running router, and how many requests fail while a Secret
//! rotation rolls an agent under load. Run by `e2e/bench/pods`, which writes its section of
//! docs/benchmarks.md. A measurement, not a test: it asserts nothing.

#[allow(dead_code)]
mod report;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_operator::api::LLMProvider;
use clap::Parser;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use support::objects::{agent, apply, provider};
use support::operator::OperatorProcess;
use support::real_node::{self, ask, pod_ip, pod_name, pod_ready};
use support::{TestNamespace, wait_until};

#[derive(Parser, Debug)]
struct Args {
    /// Agents started one after another for the start latency.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Endpoint changes of the provider of a two-replica agent.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Secret rotations of a two-replica agent under load.
    #[arg(long, default_value_t = 3)]
    rotations: usize,
    /// Requests per second each agent pod sends through its router during the rotations.
    #[arg(long, default_value_t = 20)]
    load: u32,
    /// Where to write the Markdown results.
    #[arg(long)]
    out: PathBuf,
    /// Passed by `cargo bench` to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<Duration>) -> (String, String, String) {
    samples.sort();
    (
        seconds(quantile(&samples, 0.5)),
        seconds(*samples.last().unwrap_or(&Duration::ZERO)),
        samples.len().to_string(),
    )
}

/// Times from applying an AgentDeployment to its pod Ready, and from the pod's creation (as
/// first seen) to Ready.
async fn start_latency(ns: &TestNamespace, starts: usize) -> (Vec<Duration>, Vec<Duration>) {
    let pods = ns.api::<Pod>();
    let (mut from_apply, mut from_pod) = (Vec::new(), Vec::new());
    for i in 0..starts {
        let name = format!("start-{i}");
        let applied = Instant::now();
        agent(ns, &name, real_node::reference_agent_spec(json!({}))).await;
        let mut seen = None;
        let selector = format!("agentoperator.dev/agent={name}");
        loop {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            if let Some(pod) = list.first() {
                let seen_at = *seen.get_or_insert_with(Instant::now);
                if pod_ready(pod) {
                    from_apply.push(applied.elapsed());
                    from_pod.push(seen_at.elapsed());
                    break;
                }
            }
            assert!(
                applied.elapsed() < Duration::from_secs(120),
                "{name} never became Ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (from_apply, from_pod)
}

/// Times from patching the provider's endpoint to both routers answering from the new one.
async fn change_latency(ns: &TestNamespace, changes: usize) -> Vec<Duration> {
    let fakes = [
        real_node::fake_provider().await,
        real_node::fake_provider().await,
    ];
    fakes[1].set(|b| b.reply = "second".into());
    provider(ns, "moving", &fakes[0]).await;
    agent(
        ns,
        "changes",
        real_node::reference_agent_spec(json!({"replicas": 2, "providers": [{"name": "moving"}]})),
    )
    .await;
    let pods = real_node::running_pods(&ns.api::<Pod>(), "changes", 2).await;
    let providers = ns.api::<LLMProvider>();
    let mut samples = Vec::new();
    for round in 1..=changes {
        let target = &fakes[round % 2];
        let expected = if round % 2 == 1 {
            "second"
        } else {
            "Hello from the fake provider"
        };
        let changed = Instant::now();
        providers
            .patch(
                "moving",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"endpoint": target.openai_endpoint()}})),
            )
            .await
            .expect("move the provider");
        for pod in &pods {
            wait_until(Duration::from_secs(180), "the new endpoint", || async {
                let answer = ask(pod, "where?").await.ok()?;
                (answer["answer"] == expected).then_some(())
            })
            .await;
        }
        samples.push(changed.elapsed());
    }
    samples
}

/// Requests made and failed across each rotation's rollout, from the agents' own counts.
async fn rotations(ns: &TestNamespace, rotations: usize, load: u32) -> Vec<(u64, u64, Duration)> {
    let fake = real_node::fake_provider().await;
    provider(ns, "rotating", &fake).await;
    agent(
        ns,
        "rotated",
        real_node::reference_agent_spec(json!({
            "replicas": 2, "providers": [{"name": "rotating"}],
            "env": [{"name": "AGENT_LOAD", "value": load.to_string()}]
        })),
    )
    .await;
    let pods_api = ns.api::<Pod>();
    let mut results = Vec::new();
    for round in 0..rotations {
        let before = real_node::running_pods(&pods_api, "rotated", 2).await;
        let old: Vec<String> = before.iter().map(pod_name).collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rotated = Instant::now();
        apply(
            &ns.api::<Secret>(),
            "rotating-key",
            json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rotating-key"},
                "stringData": {"apiKey": format!("sk-bench-rotation-{round}")}
            }),
        )
        .await;
        // Each old agent's final counts are its termination message, kept in the pod's status
        // until the pod is gone: poll them while the rollout runs.
        let mut finals: BTreeMap<String, Value> = BTreeMap::new();
        let after = loop {
            let pods = pods_api
                .list(&ListParams::default().labels("agentoperator.dev/agent=rotated"))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for pod in &pods {
                if let Some(counts) = real_node::final_counts(pod) {
                    finals.insert(pod_name(pod), counts);
                }
            }
            let fresh: Vec<Pod> = pods
                .into_iter()
                .filter(|p| !old.contains(&pod_name(p)) && pod_ready(p))
                .collect();
            if fresh.len() == 2 && old.iter().all(|p| finals.contains_key(p)) {
                break fresh;
            }
            assert!(
                rotated.elapsed() < Duration::from_secs(300),
                "the rollout did not finish"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let rollout = rotated.elapsed();
        let (mut made, mut failed) = (0, 0);
        for counts in finals.values() {
            made += counts["ok"].as_u64().unwrap_or(0) + counts["failed"].as_u64().unwrap_or(0);
            failed += counts["failed"].as_u64().unwrap_or(0);
        }
        for pod in &after {
            if let Ok(response) = reqwest::get(format!("http://{}:8080/stats", pod_ip(pod))).await
                && let Ok(stats) = response.json::<Value>().await
            {
                made += stats["ok"].as_u64().unwrap_or(0) + stats["failed"].as_u64().unwrap_or(0);
                failed += stats["failed"].as_u64().unwrap_or(0);
            }
        }
        results.push((made, failed, rollout));
    }
    results
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = TestNamespace::with_labels(
        &client,
        "bench-real-node",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let fake = real_node::fake_provider().await;
    provider(&ns, "openai", &fake).await;
    let _operator = OperatorProcess::start_with(&ns.name, "", &real_node::operator_args()).await;

    eprintln!("pod starts ({})", args.starts);
    let (from_apply, from_pod) = start_latency(&ns, args.starts).await;
    eprintln!("provider changes ({})", args.changes);
    let changes = change_latency(&ns, args.changes).await;
    eprintln!("rotations ({})", args.rotations);
    let rotations = rotations(&ns, args.rotations, args.load).await;

    let mut body = String::new();
    body.push_str("## Real node\n\n");
    body.push_str(&format!(
        "Generated by `e2e/bench/pods`. Machine: {}; the local cluster's real node (kubelet \
         1.37.2, containerd 1.6, runc); the operator as a local process (release build), the \
         router from `localhost/agent-operator:dev` and the reference agent (Python 3.11, \
         `openai` SDK) from `e2e/images/build`.\n\n",
        report::machine()
    ));
    body.push_str("| measurement | p50 | max | samples |\n|---|---|---|---|\n");
    let rows = [
        (
            "AgentDeployment applied → its pod Ready (operator, scheduler, kubelet, router startup probe, agent readiness)",
            summary(from_apply),
        ),
        ("agent pod created → Ready", summary(from_pod)),
        (
            "LLMProvider endpoint changed → both routers of a running agent use it",
            summary(changes),
        ),
    ];
    for (what, (p50, max, n)) in rows {
        body.push_str(&format!("| {what} | {p50} | {max} | {n} |\n"));
    }
    body.push_str(&format!(
        "\nSecret rotations of a two-replica agent, each pod asking its router {} times a second \
         throughout (counted by the agents themselves, the old pods' counts read from their \
         termination messages):\n\n| rotation | requests | failed | rollout |\n|---|---|---|---|\n",
        args.load
    ));
    for (i, (made, failed, rollout)) in rotations.iter().enumerate() {
        body.push_str(&format!(
            "| {} | {made} | {failed} | {} |\n",
            i + 1,
            seconds(*rollout)
        ));
    }
    body.push_str(
        "\nRerun: `e2e/bench/pods` (defaults: 10 starts, 5 endpoint changes, 3 rotations at 20 \
         requests per second per pod).\n",
    );
    report::write_section(&args.out, "pods", &body);
    println!("{body}");
}
