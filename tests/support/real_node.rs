//! The real node of the local cluster (`e2e/cluster/node.sh`): where its pods are placed, the
//! address the host has on its bridge, the images built for it (`e2e/images/build`), and
//! `kubectl exec` into its containers.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

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
