//! Watches that expire. etcd compacts away the revision a watch would resume from, the API
//! server answers `410 Gone`, and the client must list again and act on what it missed.
//!
//! kube-apiserver runs without its watch cache for this test, so watches read etcd directly
//! and compaction is what expires them (with the cache, a resumed watch is served from the
//! cache's own window instead). The operator reaches the API server through a relay the test
//! cuts: while the operator is cut off, the test makes the changes that matter and compacts
//! etcd behind it, so every watch the operator resumes has expired.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent_operator::api::{AgentDeployment, AgentTask};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use crate::apiserver::{
    assert_tasks_exact, deployment_replicas, restart_apiserver, restart_command, scale,
};
use crate::figures::record;
use crate::kills::owned_by;
use crate::support::api_relay::ApiRelay;
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{agent, agent_task, provider, wait_ready};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

const WAIT: Duration = Duration::from_secs(180);
const AGENT: &str = "support";

/// kube-apiserver without its watch cache while this lives. Every later test shares the
/// cluster, so it is given back as it was: by [`WatchCacheOff::restore`], or when dropped by a
/// failing test.
struct WatchCacheOff {
    restored: bool,
}

impl WatchCacheOff {
    async fn start() -> WatchCacheOff {
        restart_apiserver(1, &["--watch-cache=false"]).await;
        WatchCacheOff { restored: false }
    }

    async fn restore(mut self) {
        restart_apiserver(1, &[]).await;
        self.restored = true;
    }
}

impl Drop for WatchCacheOff {
    fn drop(&mut self) {
        if !self.restored {
            let _ = restart_command(1, &[]).status();
        }
    }
}

/// Runs `e2e/cluster/compact-etcd`; returns the revision etcd was compacted at.
async fn compact_etcd() -> u64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster/compact-etcd");
    let output = tokio::task::spawn_blocking(move || std::process::Command::new(script).output())
        .await
        .expect("the compaction task")
        .expect("the compaction script runs");
    assert!(
        output.status.success(),
        "compact-etcd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("compact-etcd prints the revision")
}

/// Resources the operator listed more often in `after` than in `before`.
fn relisted(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<String> {
    after
        .iter()
        .filter(|(resource, count)| **count > before.get(*resource).copied().unwrap_or(0.0))
        .map(|(resource, _)| resource.clone())
        .collect()
}

async fn service_exists(ns: &TestNamespace) -> bool {
    owned_by::<Service>(ns).await.contains_key(AGENT)
}

async fn job_of_task_exists(ns: &TestNamespace, task: &str) -> bool {
    let jobs = ns.api::<Job>().list(&ListParams::default()).await;
    jobs.is_ok_and(|jobs| {
        jobs.items
            .iter()
            .any(|job| kube::ResourceExt::name_any(job).starts_with(&format!("{task}-")))
    })
}

async fn phase(ns: &TestNamespace, task: &str) -> Option<String> {
    let task = ns.api::<AgentTask>().get(task).await.ok()?;
    task.status?.phase.map(|phase| format!("{phase:?}"))
}

#[tokio::test]
async fn expired_watches_relist_and_miss_no_change() {
    let cache_off = WatchCacheOff::start().await;
    let (_client, ns) = support::namespace_with_crds("faults-expiry").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let relay = ApiRelay::start().await;
    let mut operator =
        OperatorProcess::start_as(&ns.name, "-relayed", &[], &relay.kubeconfig(&ns.name)).await;
    provider(&ns, "openai", &fake).await;
    let spec = json!({
        "image": "registry.example/agent:1", "providers": [{"name": "openai"}],
        "replicas": 1, "maxConcurrentTasks": 1,
        "ports": [{"name": "http", "containerPort": 8080}]
    });
    agent(&ns, AGENT, spec).await;
    wait_ready(&ns.api::<AgentDeployment>(), AGENT, WAIT).await;
    // One task holds the agent's only slot; the next waits behind it.
    let long_run = json!({"kwok.agentoperator.dev/run-duration": "600s"});
    agent_task(
        &ns,
        "long",
        json!({"agentRef": {"name": AGENT}, "input": "x", "podMetadata": {"annotations": long_run}}),
    )
    .await;
    wait_until(WAIT, "task long to run", || async {
        (phase(&ns, "long").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    agent_task(
        &ns,
        "next",
        json!({"agentRef": {"name": AGENT}, "input": "x"}),
    )
    .await;
    wait_until(WAIT, "task next to queue behind long", || async {
        (phase(&ns, "next").await.as_deref() == Some("Queued")).then_some(())
    })
    .await;

    // The control: a cut etcd does not compact behind. Each watch resumes where it was.
    let before = operator.requests_by_resource("list").await;
    relay.cut().await;
    scale(&ns, AGENT, 2).await;
    relay.restore();
    wait_until(WAIT, "the scale made while cut off to apply", || async {
        (deployment_replicas(&ns, AGENT).await == Some(2)).then_some(())
    })
    .await;
    let after_control = operator.requests_by_resource("list").await;
    assert_eq!(
        relisted(&before, &after_control),
        Vec::<String>::new(),
        "without compaction no watch expires, so nothing is listed again"
    );

    // Cut off again; meanwhile the spec changes, a child and the running task are deleted (a
    // relist shows no Delete, only absence), a task is created, and etcd forgets it all.
    let watched = operator.requests_by_resource("watch").await;
    relay.cut().await;
    scale(&ns, AGENT, 3).await;
    let service = owned_by::<Service>(&ns).await[AGENT][0].clone();
    ns.api::<Service>()
        .delete(&service, &DeleteParams::default())
        .await
        .expect("delete the agent's Service");
    ns.api::<AgentTask>()
        .delete("long", &DeleteParams::default())
        .await
        .expect("delete the running task");
    agent_task(
        &ns,
        "fresh",
        json!({"agentRef": {"name": AGENT}, "input": "x"}),
    )
    .await;
    let revision = compact_etcd().await;
    relay.restore();
    let back = Instant::now();

    wait_until(WAIT, "the scale made while cut off to apply", || async {
        (deployment_replicas(&ns, AGENT).await == Some(3)).then_some(())
    })
    .await;
    wait_until(WAIT, "the deleted Service to be created again", || async {
        service_exists(&ns).await.then_some(())
    })
    .await;
    wait_until(WAIT, "the deleted task's Job to be collected", || async {
        (!job_of_task_exists(&ns, "long").await).then_some(())
    })
    .await;
    // The slot the deleted task held is free: the queued task runs, then the new one.
    assert_tasks_exact(&ns, &["next".into(), "fresh".into()]).await;
    let recovered = back.elapsed();

    // Each watch resumes on its own backoff, so some list again later than the ones the
    // changes above needed.
    let after = wait_until(WAIT, "every expired watch to list again", || async {
        let after = operator.requests_by_resource("list").await;
        let relists = relisted(&after_control, &after);
        watched
            .keys()
            .all(|resource| relists.contains(resource))
            .then_some(after)
    })
    .await;
    // The API server's words for 410 Gone on a watch, as the operator logs each watch error.
    let expired = operator
        .log()
        .matches("resourceVersion for the provided watch is too old")
        .count();
    assert!(
        expired >= watched.len(),
        "each of the {} watches was answered 410 Gone; the log shows {expired}",
        watched.len()
    );
    assert!(operator.is_running(), "the operator never exits");
    let list_requests: f64 = after.values().sum::<f64>() - after_control.values().sum::<f64>();
    record(
        "watch-expiry",
        &format!(
            "etcd compacted at revision {revision} behind the operator (watch cache off): {expired} watches answered 410 Gone, and all {} watched resources were listed again ({list_requests} list requests); the changes made meanwhile (a scale, a deleted Service, a deleted running task, a new task) all took effect within {:.1} s, each task ran once; a cut without compaction: 0 lists",
            watched.len(),
            recovered.as_secs_f64()
        ),
    );
    drop(operator);
    cache_off.restore().await;
    drop(fake);
}
