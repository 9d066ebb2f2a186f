//! The API server throttles the operator: API Priority and Fairness gives its ServiceAccount a
//! priority level of one seat that rejects the excess with 429, with the client as fast as it
//! goes (and, in the full form, first with a low client QPS). Work slows but completes, nothing
//! is dropped, and the requests, as the API server counts them, stay bounded (no retry storm).

use std::time::{Duration, Instant};

use agent_operator::api::AgentDeployment;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::figures::record;
use crate::support::accounts::{account_with_rules, generated_rules};
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{agent, provider, wait_ready};
use crate::support::operator::OperatorProcess;
use crate::support::{self, kubeconfig_for_service_account};

fn flowcontrol(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flowcontrol.apiserver.k8s.io", "v1", kind),
        plural,
    )
}

/// Deletes the test's flow-control objects however the test ends: a ballast level left behind
/// would shrink every other level of the shared cluster.
struct FlowControlCleanup(Vec<(&'static str, String)>);

impl Drop for FlowControlCleanup {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = std::process::Command::new(support::tool("kubectl"))
                .args(["delete", kind, name, "--ignore-not-found", "--wait=false"])
                .env("KUBECONFIG", support::kubeconfig_path())
                .output();
        }
    }
}

/// The API server's own count of requests of priority level `level` it served and rejected:
/// the ground truth, retries included (kube's client retries a 429 itself, below the operator's
/// request counter, which therefore counts each call once, by its final answer).
async fn apf_counts(client: &kube::Client, level: &str) -> (f64, f64) {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let metrics = client
        .request_text(request)
        .await
        .expect("the API server's metrics");
    let sum = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter(|l| l.contains(&format!("priority_level=\"{level}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (
        sum("apiserver_flowcontrol_dispatched_requests_total{"),
        sum("apiserver_flowcontrol_rejected_requests_total{"),
    )
}

/// Sums the operator's request counter over lines matching `filter`.
fn requests(metrics: &str, filter: impl Fn(&str) -> bool) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("agent_operator_kubernetes_requests_total{") && filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        .abs()
}

#[tokio::test]
async fn under_a_one_seat_apf_level_work_completes_without_a_retry_storm() {
    let agents = crate::scale(15, 40);
    let (client, ns) = support::namespace_with_crds("faults-throttling").await;
    account_with_rules(&ns, "operator", generated_rules()).await;
    let user = format!("system:serviceaccount:{}:operator", ns.name);

    // A priority level of one seat that rejects at once and may not borrow seats from other
    // levels, and a flow schema sending the operator's requests there. Seats are the server's
    // concurrency shared in proportion to the levels' shares: a ballast level of many shares,
    // all of them lent back to the others, brings this level down to a single seat (from 3),
    // so two requests at once are enough for a 429.
    let level_name = format!("{}-tiny", ns.name);
    let ballast_name = format!("{}-ballast", ns.name);
    let _cleanup = FlowControlCleanup(vec![
        ("flowschema", level_name.clone()),
        ("prioritylevelconfiguration", level_name.clone()),
        ("prioritylevelconfiguration", ballast_name.clone()),
    ]);
    let levels: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &flowcontrol("PriorityLevelConfiguration", "prioritylevelconfigurations"),
    );
    for (name, limited) in [
        (
            &level_name,
            json!({"nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
                   "limitResponse": {"type": "Reject"}}),
        ),
        (
            &ballast_name,
            json!({"nominalConcurrencyShares": 1000, "lendablePercent": 100,
                   "limitResponse": {"type": "Reject"}}),
        ),
    ] {
        let level: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name}, "spec": {"type": "Limited", "limited": limited}
        }))
        .expect("level");
        levels
            .create(&PostParams::default(), &level)
            .await
            .expect("create priority level");
    }
    let schemas: Api<DynamicObject> =
        Api::all_with(client.clone(), &flowcontrol("FlowSchema", "flowschemas"));
    let schema: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": {"name": level_name},
        "spec": {"priorityLevelConfiguration": {"name": level_name}, "matchingPrecedence": 100,
                 "distinguisherMethod": {"type": "ByUser"},
                 "rules": [{"subjects": [{"kind": "User", "user": {"name": user}}],
                            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                               "namespaces": ["*"], "clusterScope": true}],
                            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}
    }))
    .expect("schema");
    schemas
        .create(&PostParams::default(), &schema)
        .await
        .expect("create flow schema");

    let fake = FakeProvider::start(Behaviour::default()).await;
    let kubeconfig = kubeconfig_for_service_account(&client, &ns.name, "operator").await;
    provider(&ns, "openai", &fake).await;
    // Runs under the same priority level: a low client QPS, then as fast as the client allows,
    // which is what makes the API server reject.
    let mut figures = Vec::new();
    let mut seen = apf_counts(&client, &level_name).await;
    let mut rejected_in_all_runs = 0.0;
    // The short form keeps the run that the API server rejects; the low-QPS run mostly shows
    // the client's own limit at work and takes minutes.
    let runs: &[(&str, [&str; 2])] = if crate::full() {
        &[("low", ["5", "5"]), ("fast", ["100", "200"])]
    } else {
        &[("fast", ["100", "200"])]
    };
    for &(run, flags) in runs {
        let operator = OperatorProcess::start_as_within(
            &ns.name,
            run,
            &[
                "--client-qps",
                flags[0],
                "--client-burst",
                flags[1],
                "--concurrency",
                "16",
            ],
            &kubeconfig,
            Duration::from_secs(300),
        )
        .await;
        let started = Instant::now();
        for i in 0..agents {
            agent(
                &ns,
                &format!("{run}-{i}"),
                json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
            )
            .await;
        }
        for i in 0..agents {
            wait_ready(
                &ns.api::<AgentDeployment>(),
                &format!("{run}-{i}"),
                Duration::from_secs(300),
            )
            .await;
        }
        let converged = started.elapsed();
        let calls = requests(&operator.metrics().await, |_| true);
        let (dispatched, rejected) = apf_counts(&client, &level_name).await;
        let (dispatched, rejected) = (dispatched - seen.0, rejected - seen.1);
        seen = (seen.0 + dispatched, seen.1 + rejected);
        rejected_in_all_runs += rejected;
        // Bounded, counted by the API server itself (every retry included): a handful of
        // requests per agent (the second run also reconciles the first run's agents once),
        // however many were rejected.
        let served = dispatched + rejected;
        assert!(
            served < (agents as f64) * 40.0 + 100.0,
            "{served} requests reached the API server for {agents} agents: a retry storm"
        );
        figures.push(format!(
            "--client-qps {}: {agents} agents all Ready in {:.0} s; the operator made {calls} calls, the API server served {dispatched} requests and rejected {rejected} with 429",
            flags[0],
            converged.as_secs_f64()
        ));
        drop(operator);
    }

    // Otherwise the test proved nothing about the path under rejection.
    assert!(
        rejected_in_all_runs > 0.0,
        "the API server rejected none of the operator's requests: the one-seat level did not throttle"
    );
    record(
        "throttling",
        &format!(
            "under an APF priority level of one seat that rejects without queuing, concurrency 16: {}; objects dropped 0",
            figures.join("; ")
        ),
    );
}
