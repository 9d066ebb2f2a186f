//! AgentDeployment pods on the real node: the router sidecar, the agent's environment and
//! filesystem, restarts, failover and rollouts, as the kubelet and containerd really run them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::DeleteParams;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{RealNodeTest, ask, pod_ip, pod_name};
use crate::support::objects::{KEY, apply, provider};
use crate::support::{real_node, wait_until};

fn container_started_at(pod: &Pod, init: bool, name: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let statuses = if init {
        status.init_container_statuses.as_ref()?
    } else {
        status.container_statuses.as_ref()?
    };
    let container = statuses.iter().find(|c| c.name == name)?;
    let running = container.state.as_ref()?.running.as_ref()?;
    Some(running.started_at.as_ref()?.0.to_string())
}

fn restart_count(pod: &Pod, init: bool, name: &str) -> i32 {
    let status = pod.status.as_ref().expect("status");
    let statuses = if init {
        status.init_container_statuses.clone()
    } else {
        status.container_statuses.clone()
    };
    statuses
        .unwrap_or_default()
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.restart_count)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[tokio::test]
async fn the_agent_reaches_its_provider_through_the_router_started_before_it() {
    let test = RealNodeTest::start("real-router-first").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    let pods = test.ready_pods("support", 1).await;
    let pod = &pods[0];

    let answer = ask(pod, "Is the export button broken?")
        .await
        .expect("the agent answers");
    assert_eq!(answer["answer"], "Hello from the fake provider", "{answer}");
    let chats = test.fake.chats();
    let chat = chats.last().expect("the provider got the request");
    assert_eq!(
        chat.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {KEY}").as_str()),
        "the router sent the provider's key from its mounted Secret"
    );

    // The router's `started` is set only once its exec startup probe passed, and the kubelet
    // starts the agent only after that.
    let sidecar = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|s| s.iter().find(|c| c.name == "llm-router").cloned())
        .expect("the router's status");
    assert_eq!(sidecar.started, Some(true), "{sidecar:?}");
    assert!(sidecar.ready, "the exec liveness and startup probes ran");
    let router_started = container_started_at(pod, true, "llm-router").expect("router running");
    let agent_started = container_started_at(pod, false, "agent").expect("agent running");
    assert!(
        router_started <= agent_started,
        "router {router_started}, agent {agent_started}"
    );
}

#[tokio::test]
async fn the_agent_container_holds_no_credential_and_only_the_contracts_environment() {
    let test = RealNodeTest::start("real-agent-env").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent(
        "agent",
        json!({"env": [{"name": "TEAM", "value": "support"}]}),
    )
    .await;
    let pods = test.ready_pods("agent", 1).await;
    let pod = pod_name(&pods[0]);

    let (code, out) = real_node::python(
        &test.ns.name,
        &pod,
        "agent",
        "import json, os; print(json.dumps(dict(os.environ)))",
    );
    assert_eq!(code, 0, "{out}");
    let env: BTreeMap<String, String> = serde_json::from_str(out.trim()).expect("environment");
    // The kubelet always sets the API server's own KUBERNETES_SERVICE_* variables; no other
    // Service of the namespace may appear.
    for name in env.keys().filter(|n| !n.starts_with("KUBERNETES_")) {
        assert!(
            !name.ends_with("_SERVICE_HOST") && !name.ends_with("_PORT"),
            "a Service link leaked into the agent: {name}"
        );
        assert!(!env[name].contains(KEY), "{name} holds the provider's key");
    }
    assert_eq!(env["OPENAI_BASE_URL"], "http://127.0.0.1:8790/v1");
    assert_eq!(env["OPENAI_API_KEY"], "agent-operator-router");
    assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:8790");
    assert_eq!(env["ANTHROPIC_API_KEY"], "agent-operator-router");
    assert_eq!(env["TEAM"], "support");

    // Anthropic's SDKs call `$ANTHROPIC_BASE_URL/v1/messages`: the router answers in their
    // format from the (OpenAI) provider, with the key the agent never holds. The exec blocks,
    // so it runs off this test's runtime, where the fake provider answers.
    let (namespace, exec_pod) = (test.ns.name.clone(), pod.clone());
    let (code, out) = tokio::task::spawn_blocking(move || {
        real_node::python(
            &namespace,
            &exec_pod,
            "agent",
            r#"
import json, os, urllib.request
body = json.dumps({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}).encode()
request = urllib.request.Request(os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", data=body, headers={
    "content-type": "application/json", "x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"})
print(urllib.request.urlopen(request, timeout=20).read().decode())
"#,
        )
    })
    .await
    .expect("the exec ran");
    assert_eq!(code, 0, "{out}");
    let message: serde_json::Value =
        serde_json::from_str(out.trim()).expect("an Anthropic message");
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["content"][0]["type"], "text", "{message}");

    // The credentials are mounted into the router only; the agent reads its config.
    let (code, out) = real_node::python(
        &test.ns.name,
        &pod,
        "agent",
        "import os; print(os.path.exists('/var/run/agentoperator/credentials')); print(open(os.environ['AGENT_OPERATOR_PROVIDERS_FILE']).read())",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("False"),
        "credentials visible to the agent: {out}"
    );
    assert!(out.contains("\"activeProvider\""), "{out}");
    assert!(!out.contains(KEY), "the config holds the key: {out}");
    let (code, out) = real_node::python(
        &test.ns.name,
        &pod,
        "agent",
        "import subprocess; print(subprocess.run(['grep', '-rl', 'sk-agent-test', '/etc', '/var/run', '/app', '/tmp'], capture_output=True, text=True).stdout)",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.trim().is_empty(), "files with the key: {out}");

    // Pod Security `restricted` as the kernel enforces it: a numeric non-root user, no
    // capabilities, no privilege escalation, seccomp, and a read-only root.
    let (code, out) = real_node::python(
        &test.ns.name,
        &pod,
        "agent",
        r#"
import os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print(os.getuid(), os.getgid(), sorted(os.getgroups()))
print(status["CapEff"].strip(), status["NoNewPrivs"].strip(), status["Seccomp"].strip())
try:
    open("/app/written", "w")
    print("root filesystem writable")
except OSError as error:
    print("errno", error.errno)
open("/tmp/scratch", "w").write("ok")
print("tmp writable")
"#,
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65532 65532 [65532]", "{out}");
    assert_eq!(lines[1], "0000000000000000 1 2", "{out}");
    assert_eq!(lines[2], "errno 30", "EROFS expected: {out}");
    assert_eq!(lines[3], "tmp writable", "{out}");
}

/// The host's pid of the router process of the pod `uid`: its cgroup names the pod.
fn router_pid(pod_uid: &str) -> Option<u32> {
    let cgroup_uid = pod_uid.replace('-', "_");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.starts_with("/agent-router --listen") {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(pod_uid) || cgroup.contains(&cgroup_uid) {
            return Some(pid);
        }
    }
    None
}

#[tokio::test]
async fn a_killed_router_is_restarted_without_touching_the_agent() {
    let test = RealNodeTest::start("real-router-kill").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    let pods = test.ready_pods("support", 1).await;
    let uid = pods[0].metadata.uid.clone().expect("uid");
    let pid = router_pid(&uid).expect("the router runs on this host");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());

    let pods_api = test.ns.api::<Pod>();
    let name = pod_name(&pods[0]);
    let pod = wait_until(
        Duration::from_secs(60),
        "the router restarted and Ready",
        || async {
            let pod = pods_api.get(&name).await.ok()?;
            (restart_count(&pod, true, "llm-router") >= 1 && super::pod_ready(&pod)).then_some(pod)
        },
    )
    .await;
    assert_eq!(
        restart_count(&pod, false, "agent"),
        0,
        "the agent was not restarted"
    );
    let answer = wait_until(
        Duration::from_secs(30),
        "an answer through the new router",
        || async { ask(&pod, "still there?").await.ok() },
    )
    .await;
    assert_eq!(answer["answer"], "Hello from the fake provider");
}

#[tokio::test]
async fn a_request_fails_over_when_the_first_provider_dies() {
    let test = RealNodeTest::start("real-failover").await;
    let second = RealNodeTest::fake_provider().await;
    second.set(|b| b.reply = "Hello from the second provider".into());
    provider(&test.ns, "openai", &test.fake).await;
    provider(&test.ns, "backup", &second).await;
    test.agent(
        "support",
        json!({"providers": [{"name": "openai"}, {"name": "backup"}]}),
    )
    .await;
    let pods = test.ready_pods("support", 1).await;
    let pod = &pods[0];
    let first = ask(pod, "who answers?").await.expect("an answer");
    assert_eq!(first["answer"], "Hello from the fake provider");

    // The first provider's process goes away: its port refuses connections.
    let RealNodeTest { fake, ns, operator } = test;
    drop(fake);
    let answer = ask(pod, "and now?")
        .await
        .expect("the router failed over within the request");
    assert_eq!(answer["answer"], "Hello from the second provider");
    drop((ns, operator));
}

#[tokio::test]
async fn a_deleted_agent_pod_comes_back_and_serves() {
    let test = RealNodeTest::start("real-pod-deleted").await;
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({})).await;
    let pods = test.ready_pods("support", 1).await;
    let old = pod_name(&pods[0]);
    test.ns
        .api::<Pod>()
        .delete(&old, &DeleteParams::default())
        .await
        .expect("delete the pod");
    let pods = wait_until(Duration::from_secs(90), "a new Ready pod", || async {
        let pods = test.running_pods("support", 1).await;
        (pod_name(&pods[0]) != old).then_some(pods)
    })
    .await;
    let answer = ask(&pods[0], "back?").await.expect("the new pod answers");
    assert_eq!(answer["answer"], "Hello from the fake provider");
}

/// The outcome counts each agent container reported as its termination message, by pod.
type Outcomes = BTreeMap<String, Value>;

#[tokio::test]
async fn a_secret_rotation_rolls_the_pods_without_a_failed_request() {
    let test = RealNodeTest::start("real-rotation").await;
    provider(&test.ns, "openai", &test.fake).await;
    // Each agent asks its router ten times a second for the whole test.
    test.agent(
        "support",
        json!({"replicas": 2, "env": [{"name": "AGENT_LOAD", "value": "10"}]}),
    )
    .await;
    let before = test.ready_pods("support", 2).await;
    let old: Vec<String> = before.iter().map(pod_name).collect();

    // Every agent container that ends reports its counts as its termination message.
    let pods_api = test.ns.api::<Pod>();
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Outcomes::new()));
    let collector = {
        let outcomes = outcomes.clone();
        let pods_api = pods_api.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut events = std::pin::pin!(watcher::watcher(
                pods_api,
                watcher::Config::default().labels("agentoperator.dev/agent=support")
            ));
            while let Some(Ok(event)) = events.next().await {
                let pods = match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => vec![pod],
                    _ => continue,
                };
                for pod in pods {
                    if let Some(counts) = real_node::final_counts(&pod) {
                        outcomes
                            .lock()
                            .expect("not poisoned")
                            .insert(pod_name(&pod), counts);
                    }
                }
            }
        })
    };

    // Let the load run, then rotate the key: the provider's probe accepts the new key and the
    // agent's pods roll to it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    apply(
        &test.ns.api::<Secret>(),
        "openai-key",
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai-key"},
            "stringData": {"apiKey": "sk-agent-test-rotated-5e6f"}
        }),
    )
    .await;
    let after = wait_until(Duration::from_secs(180), "two new Ready pods", || async {
        let pods = test.running_pods("support", 2).await;
        pods.iter()
            .all(|p| !old.contains(&pod_name(p)))
            .then_some(pods)
    })
    .await;
    wait_until(
        Duration::from_secs(60),
        "both old pods' final counts",
        || async {
            let outcomes = outcomes.lock().expect("not poisoned");
            old.iter().all(|p| outcomes.contains_key(p)).then_some(())
        },
    )
    .await;
    collector.abort();

    let outcomes = outcomes.lock().expect("not poisoned").clone();
    for pod in &old {
        let counts = &outcomes[pod];
        assert!(counts["ok"].as_u64().unwrap_or(0) > 10, "{pod}: {counts}");
        assert_eq!(counts["failed"], 0, "{pod} had failed requests: {counts}");
    }
    for pod in &after {
        let stats: Value = reqwest::get(format!("http://{}:8080/stats", pod_ip(pod)))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        assert_eq!(stats["failed"], 0, "{}: {stats}", pod_name(pod));
    }
    let rotated = test
        .fake
        .chats()
        .iter()
        .filter(|c| {
            c.headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some("Bearer sk-agent-test-rotated-5e6f")
        })
        .count();
    assert!(rotated > 0, "the new pods use the rotated key");
}

#[tokio::test]
async fn a_providers_new_endpoint_reaches_every_running_router_without_a_rollout() {
    let test = RealNodeTest::start("real-endpoint-change").await;
    let moved_to = RealNodeTest::fake_provider().await;
    moved_to.set(|b| b.reply = "Hello from the new endpoint".into());
    provider(&test.ns, "openai", &test.fake).await;
    test.agent("support", json!({"replicas": 2})).await;
    let pods = test.ready_pods("support", 2).await;
    for pod in &pods {
        let answer = ask(pod, "where are you?").await.expect("an answer");
        assert_eq!(answer["answer"], "Hello from the fake provider");
    }

    let changed = std::time::Instant::now();
    let providers = test.ns.api::<agent_operator::api::LLMProvider>();
    providers
        .patch(
            "openai",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"endpoint": moved_to.openai_endpoint()}})),
        )
        .await
        .expect("move the provider");
    // The kubelet refreshes a mounted ConfigMap on its own only at its periodic pod sync (a
    // minute or more); the operator's stamp on the pods makes it refresh them at once.
    for pod in &pods {
        wait_until(
            Duration::from_secs(45),
            "the router to use the new endpoint",
            || async {
                let answer = ask(pod, "where are you now?").await.ok()?;
                (answer["answer"] == "Hello from the new endpoint").then_some(())
            },
        )
        .await;
    }
    println!(
        "measured: an LLMProvider's new endpoint reached both routers in {:.1} s",
        changed.elapsed().as_secs_f64()
    );
    let now: Vec<String> = test
        .running_pods("support", 2)
        .await
        .iter()
        .map(pod_name)
        .collect();
    let before: Vec<String> = pods.iter().map(pod_name).collect();
    assert_eq!(now, before, "no pod was replaced");
}
