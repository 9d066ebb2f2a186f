//! The operator's image built here is the one the Dockerfile describes: its user, entrypoint,
//! command and port, and binaries (the operator's and the router's) that run on the real node.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{LogParams, PostParams};
use serde_json::{Value, json};

use crate::support::real_node::{self, OPERATOR_IMAGE};
use crate::support::{TestNamespace, wait_until};

/// A file of the OCI archive `e2e/images/build` wrote for the operator.
fn archive_file(path: &str) -> Vec<u8> {
    let archive = real_node::image_cache_dir().join("operator.oci.tar");
    let output = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg(path)
        .output()
        .expect("tar runs");
    assert!(
        output.status.success(),
        "{} has no {path}; build it with e2e/images/build",
        archive.display()
    );
    output.stdout
}

fn blob(digest: &str) -> Value {
    let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&archive_file(&path)).expect("a JSON blob")
}

/// The value of the final stage's `instruction` in the Dockerfile.
fn dockerfile(instruction: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("the Dockerfile");
    let final_stage = text.rsplit("\nFROM ").next().expect("a stage");
    final_stage
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("the final stage has no {instruction}"))
        .to_string()
}

#[tokio::test]
async fn the_local_operator_image_is_what_the_dockerfile_describes_and_runs() {
    let index: Value = serde_json::from_slice(&archive_file("index.json")).expect("index");
    let manifest = blob(index["manifests"][0]["digest"].as_str().expect("manifest"));
    let config = blob(manifest["config"]["digest"].as_str().expect("config"));
    let config = &config["config"];
    assert_eq!(config["User"], dockerfile("USER"));
    let entrypoint: Value = serde_json::from_str(&dockerfile("ENTRYPOINT")).expect("JSON form");
    assert_eq!(config["Entrypoint"], entrypoint);
    let cmd: Value = serde_json::from_str(&dockerfile("CMD")).expect("JSON form");
    assert_eq!(config["Cmd"], cmd);
    assert!(
        config["ExposedPorts"]
            .get(format!("{}/tcp", dockerfile("EXPOSE")))
            .is_some(),
        "{config}"
    );

    // The binary in the image is this build: it runs as the image's user and says so.
    let client = crate::support::client().await;
    let ns = TestNamespace::with_labels(
        &client,
        "real-operator-image",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let mut spec = json!({
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "operator", "image": OPERATOR_IMAGE, "imagePullPolicy": "Never",
            "args": ["version"],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]}}
        }, {
            // The router's binary, at the path agent pods run it from.
            "name": "router", "image": OPERATOR_IMAGE, "imagePullPolicy": "Never",
            "command": [agent_operator::resources::router_sidecar::BINARY_PATH], "args": ["--version"],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]}}
        }]
    });
    crate::support::merge_patch(&mut spec, &real_node::placement());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "version"}, "spec": spec}))
        .expect("pod");
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
    wait_until(Duration::from_secs(60), "the pod to succeed", || async {
        let phase = pods.get("version").await.ok()?.status?.phase?;
        (phase == "Succeeded").then_some(())
    })
    .await;
    for (container, binary, arg) in [
        ("operator", env!("CARGO_BIN_EXE_agent-operator"), "version"),
        ("router", env!("CARGO_BIN_EXE_agent-router"), "--version"),
    ] {
        let logs = pods
            .logs(
                "version",
                &LogParams {
                    container: Some(container.into()),
                    ..LogParams::default()
                },
            )
            .await
            .expect("the pod's log");
        let local = Command::new(binary)
            .arg(arg)
            .output()
            .expect("the binary runs");
        assert_eq!(logs.trim(), String::from_utf8_lossy(&local.stdout).trim());
    }
}
