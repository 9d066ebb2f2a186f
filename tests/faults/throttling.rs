//! The API server throttles the operator: API Priority and Fairness gives its ServiceAccount a
//! one-share priority level that rejects the excess with 429, first with a low client QPS, then
//! with the client as fast as it goes. Work slows but completes, nothing is dropped, and the
//! requests stay bounded (no retry storm).

use std::time::{Duration, Instant};

use agent_operator::api::AgentDeployment;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
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

    // A priority level of one seat that rejects at once, and a flow schema sending the
    // operator's requests there.
    let level_name = format!("{}-tiny", ns.name);
    let levels: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &flowcontrol("PriorityLevelConfiguration", "prioritylevelconfigurations"),
    );
    let level: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": level_name},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1, "lendablePercent": 0,
                 "limitResponse": {"type": "Reject"}}}
    }))
    .expect("level");
    levels
        .create(&PostParams::default(), &level)
        .await
        .expect("create priority level");
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
    // Two runs under the same priority level: a low client QPS, then as fast as the client
    // allows, which is what makes the API server reject.
    let mut figures = Vec::new();
    for (run, flags) in [("low", ["5", "5"]), ("fast", ["100", "200"])] {
        let operator = OperatorProcess::start_as(
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
        let metrics = operator.metrics().await;
        let total = requests(&metrics, |_| true);
        let rejected = requests(&metrics, |l| l.contains("code=\"429\""));
        // Bounded: a handful of requests per agent (the second run also reconciles the first
        // run's agents once), however many were rejected and retried.
        assert!(
            total < (agents as f64) * 40.0 + 100.0,
            "{total} requests for {agents} agents is a retry storm"
        );
        figures.push(format!(
            "--client-qps {}: {agents} agents all Ready in {:.0} s, {total} requests ({rejected} answered 429)",
            flags[0],
            converged.as_secs_f64()
        ));
        drop(operator);
    }
    let _ = schemas.delete(&level_name, &DeleteParams::default()).await;
    let _ = levels.delete(&level_name, &DeleteParams::default()).await;

    record(
        "throttling",
        &format!(
            "under an APF priority level of nominal share 1 that rejects without queuing, concurrency 16: {}; objects dropped 0",
            figures.join("; ")
        ),
    );
}
