//! The real node of the local cluster (`e2e/cluster/node.sh`): where its pods are placed, the
//! address the host has on its bridge, the images built for it (`e2e/images/build`), and
//! `kubectl exec` into its containers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use super::fake_provider::{Behaviour, FakeProvider};

/// The image of the operator and of its router sidecar, as `e2e/images/build` imports it.
pub const OPERATOR_IMAGE: &str = "localhost/agent-operator:dev";
/// The reference agent (Python, the official `openai` SDK), as `e2e/images/build` imports it.
pub const AGENT_IMAGE: &str = "localhost/agent-operator/reference-agent:dev";

/// A variable of `e2e/cluster/node.sh`, as the scripts compute it for this checkout.
fn node_variable(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/cluster");
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}/lib.sh' && source '{}/node.sh' && printf %s \"${name}\"",
            root.display(),
            root.display()
        ))
        .output()
        .expect("bash runs");
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// The host's address on the node's bridge: pods reach the host (a fake provider) there, and
/// the host reaches pods on their own addresses.
pub fn host_address() -> String {
    let address = node_variable("NODE_IP");
    assert!(!address.is_empty(), "e2e/cluster/node.sh names no NODE_IP");
    address
}

/// Where `e2e/images/build` keeps the image archives.
pub fn image_cache_dir() -> PathBuf {
    PathBuf::from(node_variable("IMAGE_CACHE_DIR"))
}

/// The state folder of the node: its kubelet, containerd, pod logs.
pub fn node_dir() -> PathBuf {
    PathBuf::from(node_variable("NODE_DIR"))
}

/// What puts a pod on the real node: its label as node selector and its taint tolerated. Merge
/// it into a workload spec (`nodeSelector`, `tolerations`).
pub fn placement() -> Value {
    json!({
        "nodeSelector": {"agentoperator.dev/node": "real"},
        "tolerations": [{"key": "agentoperator.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}]
    })
}

/// The operator's arguments that make its pods run the locally built router image.
pub fn operator_args() -> [&'static str; 2] {
    ["--router-image", OPERATOR_IMAGE]
}

/// `kubectl exec` in a container; returns its exit code, standard output and error.
pub fn exec(namespace: &str, pod: &str, container: &str, command: &[&str]) -> (i32, String) {
    let output = Command::new(super::tool("kubectl"))
        .args(["exec", "-n", namespace, pod, "-c", container, "--"])
        .args(command)
        .env("KUBECONFIG", super::kubeconfig_path())
        .output()
        .expect("kubectl runs");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A Python snippet run by the reference agent's interpreter inside its container.
pub fn python(namespace: &str, pod: &str, container: &str, code: &str) -> (i32, String) {
    exec(namespace, pod, container, &["/usr/bin/python3", "-c", code])
}

/// A fake provider on the host's bridge address, where pods reach it.
pub async fn fake_provider() -> FakeProvider {
    FakeProvider::start_on(&format!("{}:0", host_address()), Behaviour::default()).await
}

/// The spec of an AgentDeployment of the reference agent on the real node, using the provider
/// `openai`, with `extra` merged in.
pub fn reference_agent_spec(extra: Value) -> Value {
    let mut spec = json!({
        "image": AGENT_IMAGE,
        "imagePullPolicy": "Never",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
        "providers": [{"name": "openai"}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}
    });
    super::merge_patch(&mut spec, &placement());
    super::merge_patch(&mut spec, &extra);
    spec
}

/// The pods of the agent `name` once exactly `replicas` of them are Ready and none is
/// terminating.
pub async fn running_pods(pods: &Api<Pod>, name: &str, replicas: usize) -> Vec<Pod> {
    let selector = format!("agentoperator.dev/agent={name}");
    super::wait_until(
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

/// The request counts (`ok`, `failed`, `errors`) the reference agent in `pod` wrote as its
/// termination message when it stopped; `None` while it runs.
pub fn final_counts(pod: &Pod) -> Option<Value> {
    let message = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "agent")?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()?;
    serde_json::from_str(&message).ok()
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
