//! What the operator promises inside a pod, proven on the local cluster's real node: a real
//! kubelet and containerd running the operator's image (the router sidecar) and the reference
//! agent (Python, the official `openai` SDK). `e2e/cluster/up` starts the node and
//! `e2e/images/build` imports the images; each test works in its own namespace, where Pod
//! Security `restricted` is enforced.

#[path = "../support/mod.rs"]
mod support;

mod agents;
mod budgets;
mod image;
mod operator;
mod tasks;

use std::time::Duration;

use agent_operator::api::AgentDeployment;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use support::fake_provider::FakeProvider;
use support::operator::OperatorProcess;
use support::real_node;
use support::{TestNamespace, wait_until};

/// A namespace enforcing Pod Security `restricted`, the operator watching it with the local
/// router image, and a fake provider on the host's bridge address, where pods reach it.
pub struct RealNodeTest {
    pub ns: TestNamespace,
    pub fake: FakeProvider,
    pub operator: OperatorProcess,
}

impl RealNodeTest {
    pub async fn start(test: &str) -> Self {
        let client = support::client().await;
        support::install_crds(&client).await;
        let ns = TestNamespace::with_labels(
            &client,
            test,
            json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        )
        .await;
        let fake = Self::fake_provider().await;
        let operator = OperatorProcess::start_with(&ns.name, "", &real_node::operator_args()).await;
        Self { ns, fake, operator }
    }

    /// Another fake provider on the host's bridge address.
    pub async fn fake_provider() -> FakeProvider {
        real_node::fake_provider().await
    }

    /// The reference agent as an AgentDeployment on the real node, with `extra` merged into
    /// its spec.
    pub async fn agent(&self, name: &str, extra: Value) {
        support::objects::agent(&self.ns, name, real_node::reference_agent_spec(extra)).await;
    }

    /// Waits until the agent `name` is Ready and returns its pods.
    pub async fn ready_pods(&self, name: &str, replicas: usize) -> Vec<Pod> {
        let agents = self.ns.api::<AgentDeployment>();
        wait_until(
            Duration::from_secs(120),
            "the agent to be Ready",
            || async {
                let status = agents.get(name).await.ok()?.status?;
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
        self.running_pods(name, replicas).await
    }

    /// The agent's pods once exactly `replicas` of them are Ready and none is terminating.
    pub async fn running_pods(&self, name: &str, replicas: usize) -> Vec<Pod> {
        real_node::running_pods(&self.ns.api::<Pod>(), name, replicas).await
    }
}

pub use support::real_node::{ask, pod_ip, pod_name, pod_ready};
