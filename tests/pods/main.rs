//! What the operator promises inside a pod, proven on the local cluster's real node: a real
//! kubelet and containerd running the operator's image (the router sidecar) and the reference
//! agent (Python, the official `openai` SDK). `e2e/cluster/up` starts the node and
//! `e2e/images/build` imports the images; each test works in its own namespace, where Pod
//! Security `restricted` is enforced.

#[path = "../support/mod.rs"]
mod support;

mod agents;
mod image;
mod operator;
mod tasks;

use std::time::Duration;

use agent_operator::api::AgentDeployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::{Value, json};

use support::fake_provider::{Behaviour, FakeProvider};
use support::operator::OperatorProcess;
use support::real_node::{self, AGENT_IMAGE};
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
        FakeProvider::start_on(
            &format!("{}:0", real_node::host_address()),
            Behaviour::default(),
        )
        .await
    }

    /// The reference agent as an AgentDeployment on the real node, with `extra` merged into
    /// its spec.
    pub async fn agent(&self, name: &str, extra: Value) {
        let mut spec = json!({
            "image": AGENT_IMAGE,
            "imagePullPolicy": "Never",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
            "providers": [{"name": "openai"}],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}
        });
        support::merge_patch(&mut spec, &real_node::placement());
        support::merge_patch(&mut spec, &extra);
        support::objects::agent(&self.ns, name, spec).await;
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
        let pods = self.ns.api::<Pod>();
        let selector = format!("agentoperator.dev/agent={name}");
        wait_until(
            Duration::from_secs(120),
            &format!("{replicas} Ready pods of {name}"),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                let ready: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                    .collect();
                (ready.len() == replicas).then_some(ready)
            },
        )
        .await
    }
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a running pod has an address")
}

pub fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("pods have names")
}

/// Asks the reference agent in `pod` a question over HTTP, from the host to the pod's address;
/// the agent asks its router, which asks the provider.
pub async fn ask(pod: &Pod, question: &str) -> Result<Value, String> {
    let response = reqwest::Client::new()
        .post(format!("http://{}:8080/v1/ask", pod_ip(pod)))
        .json(&json!({"input": question}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}
