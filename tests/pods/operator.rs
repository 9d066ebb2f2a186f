//! The operator in its own pods, as `helm install` runs it: the chart's Deployment with the
//! locally built image on the real node, in-cluster config, probes, metrics and leader election
//! between its two replicas.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use super::{RealNodeTest, ask, pod_ip, pod_name, pod_ready};
use crate::support::objects::provider;
use crate::support::real_node;
use crate::support::{TestNamespace, run_tool, wait_until};

const CHART: &str = "charts/agent-operator";

/// The Lease holder's pod: the identity is the pod's hostname and the process id.
fn holder_pod(lease: &Lease) -> Option<String> {
    let identity = lease.spec.as_ref()?.holder_identity.clone()?;
    identity.rsplit_once('-').map(|(pod, _)| pod.to_string())
}

#[tokio::test]
async fn the_chart_runs_the_operator_in_its_pods_with_in_cluster_config_and_a_leader() {
    let client = crate::support::client().await;
    crate::support::install_crds(&client).await;
    let ns = TestNamespace::with_labels(
        &client,
        "real-operator-pod",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let release = format!("r{}", std::process::id());
    let fullname = format!("{release}-agent-operator");
    let (repository, tag) = real_node::OPERATOR_IMAGE
        .rsplit_once(':')
        .expect("image with a tag");
    let values =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{release}.yaml"));
    let placement = real_node::placement();
    std::fs::write(
        &values,
        serde_json::to_string(&json!({
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "crds": {"install": false},
            "aggregateRoles": false,
            "watchNamespaces": [ns.name],
            "logFormat": "json",
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
        }))
        .expect("values"),
    )
    .expect("write values");
    // The CRDs are shared by every test on this cluster: this release leaves them alone.
    run_tool(
        "helm",
        &[
            "install",
            &release,
            CHART,
            "-n",
            &ns.name,
            "--values",
            &values.display().to_string(),
            "--wait",
            "--timeout",
            "180s",
        ],
    );

    // The operator in its pods reconciles: the reference agent it deploys answers through the
    // router from a fake provider on the host.
    let fake = RealNodeTest::fake_provider().await;
    provider(&ns, "openai", &fake).await;
    crate::support::objects::agent(&ns, "support", real_node::reference_agent_spec(json!({})))
        .await;
    let pods = ns.api::<Pod>();
    let agent_pod = wait_until(
        Duration::from_secs(180),
        "the agent's Ready pod",
        || async {
            pods.list(&ListParams::default().labels("agentoperator.dev/agent=support"))
                .await
                .ok()?
                .items
                .into_iter()
                .find(pod_ready)
        },
    )
    .await;
    let answer = ask(&agent_pod, "hello").await.expect("an answer");
    assert_eq!(answer["answer"], "Hello from the fake provider");

    // One of the two replicas leads, and serves its metrics on its pod's address.
    let operator_pods = pods
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/name=agent-operator,app.kubernetes.io/instance={release}"
        )))
        .await
        .expect("the operator's pods")
        .items;
    assert_eq!(operator_pods.len(), 2, "two replicas");
    assert!(
        operator_pods.iter().all(pod_ready),
        "both pass their probes"
    );
    let leases = ns.api::<Lease>();
    let leader = wait_until(Duration::from_secs(60), "a leader", || async {
        holder_pod(&leases.get(&fullname).await.ok()?)
    })
    .await;
    let leader_pod = operator_pods
        .iter()
        .find(|p| pod_name(p) == leader)
        .unwrap_or_else(|| panic!("the leader {leader} is one of the release's pods"));
    let metrics = reqwest::get(format!("http://{}:8080/metrics", pod_ip(leader_pod)))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("agent_operator_reconciles_total{controller=\"agentdeployment\""),
        "{metrics}"
    );

    // The leader's pod goes away: another replica takes the Lease (the standby, or the
    // replacement pod if it is quicker).
    pods.delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader's pod");
    wait_until(Duration::from_secs(90), "a new leader", || async {
        holder_pod(&leases.get(&fullname).await.ok()?).filter(|p| *p != leader)
    })
    .await;

    run_tool("helm", &["uninstall", &release, "-n", &ns.name, "--wait"]);
    drop(fake);
}
