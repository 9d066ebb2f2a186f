//! An upgrade as a user makes it: the chart and CRDs of the previous release (its chart
//! package, kept in `tests/upgrade/previous`) installed with Helm, objects of every kind Ready
//! under them, then `helm upgrade` to this chart, plain and with `--reuse-values` (and a
//! rollback between), and every object still there, unchanged and Ready.
//!
//! Both releases run the operator image built here on the real node: what is upgraded is the
//! chart, its CRDs and its values, not the binary. The CRDs are the cluster's, so `e2e/test`
//! runs this alone, after every other test: it replaces them with the previous release's.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_operator::api::{AgentDeployment, AgentTask, LLMProvider};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use support::objects::{agent, agent_task, provider};
use support::{TestNamespace, real_node, run_tool, wait_until};

const CHART: &str = "charts/agent-operator";
const WAIT: Duration = Duration::from_secs(180);

/// The previous release's chart package, as its chart repository serves it. It is kept in the
/// tree rather than read from a git tag, because a CI checkout has neither tags nor history.
const PREVIOUS_RELEASES: &str = "tests/upgrade/previous";

/// The previous release's chart, unpacked into `dir`.
fn previous_chart(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let packages: Vec<PathBuf> = std::fs::read_dir(root.join(PREVIOUS_RELEASES))
        .expect("the previous release's folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tgz"))
        .collect();
    let [package] = packages.as_slice() else {
        panic!("exactly one chart package in {PREVIOUS_RELEASES}, found {packages:?}");
    };
    std::fs::create_dir_all(dir).expect("folder");
    let unpacked = Command::new("tar")
        .args(["-xzf"])
        .arg(package)
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar");
    assert!(unpacked.success(), "unpack {}", package.display());
    dir.join("agent-operator")
}

/// What must not change across an upgrade: each object's generation and spec.
async fn snapshot<K>(api: &Api<K>) -> Vec<(String, Option<i64>, Value)>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut items: Vec<_> = api
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|o| {
            let value = serde_json::to_value(&o).expect("json");
            (o.name_any(), o.meta().generation, value["spec"].clone())
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items
}

fn condition_true(status: &Value, type_: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str)
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    wait_until(WAIT, &format!("{name} {type_}"), || async {
        let object = serde_json::to_value(api.get(name).await.ok()?).ok()?;
        condition_true(&object["status"], type_).then_some(())
    })
    .await;
}

struct Objects {
    providers: Api<LLMProvider>,
    agents: Api<AgentDeployment>,
    tasks: Api<AgentTask>,
}

impl Objects {
    async fn wait_healthy(&self) {
        wait_condition(&self.providers, "openai", "Ready").await;
        wait_condition(&self.agents, "support", "Ready").await;
        wait_condition(&self.tasks, "triage", "Complete").await;
    }

    async fn snapshot(&self) -> Value {
        json!({
            "providers": snapshot(&self.providers).await,
            "agents": snapshot(&self.agents).await,
            "tasks": snapshot(&self.tasks).await,
        })
    }

    /// The task ran once: an upgrade must not run it again.
    async fn task_attempts(&self) -> Value {
        let task = self.tasks.get("triage").await.expect("task");
        serde_json::to_value(task.status).expect("json")["attempts"].clone()
    }
}

/// The operator's Deployment of `release` is of the chart `chart` (its `helm.sh/chart` label)
/// and rolled out: every replica updated and Ready.
async fn wait_operator_from(ns: &TestNamespace, release: &str, chart: &str) {
    let deployments = ns.api::<k8s_openapi::api::apps::v1::Deployment>();
    let name = format!("{release}-agent-operator");
    wait_until(
        WAIT,
        &format!("the operator's Deployment of {chart}"),
        || async {
            let deployment = deployments.get(&name).await.ok()?;
            let status = deployment.status.as_ref()?;
            let wanted = deployment.spec.replicas.unwrap_or(1);
            (deployment.labels().get("helm.sh/chart").map(String::as_str) == Some(chart)
                && status.observed_generation == deployment.metadata.generation
                && status.updated_replicas == Some(wanted)
                && status.ready_replicas == Some(wanted)
                && status.replicas == Some(wanted))
            .then_some(())
        },
    )
    .await;
}

fn chart_label(chart_dir: &Path) -> String {
    let text = std::fs::read_to_string(chart_dir.join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_yaml::from_str(&text).expect("YAML");
    format!(
        "{}-{}",
        chart["name"].as_str().expect("name"),
        chart["version"].as_str().expect("version")
    )
}

/// Deletes the project's CRDs and waits until they are gone. This test starts right after the
/// fault suite, whose last test restarts the API server, so first every kind must list: the
/// CRD's cleanup lists the objects to delete them, and one refused with "storage is
/// (re)initializing" is retried on a backoff that soon outgrows this test's wait. The delete is
/// also sent again while a CRD is not yet being deleted, in case the API server refused it.
async fn delete_our_crds(client: &kube::Client, crds: &Api<CustomResourceDefinition>) {
    let lists = |client: kube::Client| async move {
        // From the watch cache (resourceVersion 0), which is what answers "(re)initializing".
        let probe = kube::api::ListParams::default().match_any();
        Api::<LLMProvider>::all(client.clone())
            .list(&probe)
            .await
            .ok()?;
        Api::<AgentDeployment>::all(client.clone())
            .list(&probe)
            .await
            .ok()?;
        Api::<AgentTask>::all(client).list(&probe).await.ok()
    };
    wait_until(
        Duration::from_secs(300),
        "every kind of ours to list after the fault suite",
        || lists(client.clone()),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left: Vec<CustomResourceDefinition> = match crds.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|c| c.name_any().ends_with(".agentoperator.dev"))
                .collect(),
            Err(error) => {
                eprintln!("listing CRDs: {error}");
                vec![CustomResourceDefinition::default()]
            }
        };
        if left.is_empty() {
            return;
        }
        for crd in left
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
        {
            if let Some(name) = &crd.metadata.name
                && let Err(error) = crds.delete(name, &DeleteParams::default()).await
            {
                eprintln!("deleting CRD {name}: {error}");
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let states: Vec<Value> = left
                .iter()
                .map(|c| {
                    json!({
                        "name": c.metadata.name,
                        "deletionTimestamp": c.metadata.deletion_timestamp,
                        "finalizers": c.metadata.finalizers,
                        "conditions": c.status.as_ref().and_then(|s| s.conditions.clone()),
                    })
                })
                .collect();
            panic!("timed out after {WAIT:?} waiting for the CRDs deleted; left: {states:#?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn the_previous_release_upgrades_to_this_one_with_every_object_kept_and_ready() {
    let client = support::client().await;
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("upgrade");
    let _ = std::fs::remove_dir_all(&work);
    let old_chart = previous_chart(&work);
    let new_chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CHART);
    let (old_label, new_label) = (chart_label(&old_chart), chart_label(&new_chart));
    assert_ne!(
        old_label, new_label,
        "the chart's version changed since the previous release"
    );

    // Helm manages the CRDs of a release it installs; the ones other tests applied go first.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    delete_our_crds(&client, &crds).await;

    let ns = TestNamespace::with_labels(
        &client,
        "upgrade",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let release = format!("u{}", std::process::id());
    let (repository, image_tag) = real_node::OPERATOR_IMAGE.rsplit_once(':').expect("tag");
    let placement = real_node::placement();
    let values = work.join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_string(&json!({
            "image": {"repository": repository, "tag": image_tag, "pullPolicy": "Never"},
            "aggregateRoles": false,
            "watchNamespaces": [ns.name],
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
        }))
        .expect("values"),
    )
    .expect("write values");
    let helm = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", &ns.name, "--wait", "--timeout", "180s"]);
        run_tool("helm", &all);
    };
    let values_arg = values.display().to_string();
    let old_chart_arg = old_chart.display().to_string();
    let new_chart_arg = new_chart.display().to_string();

    helm(&["install", &release, &old_chart_arg, "--values", &values_arg]);
    wait_operator_from(&ns, &release, &old_label).await;
    let fake = real_node::fake_provider().await;
    provider(&ns, "openai", &fake).await;
    agent(&ns, "support", real_node::reference_agent_spec(json!({}))).await;
    agent_task(
        &ns,
        "triage",
        json!({"agentRef": {"name": "support"}, "input": "Ticket 4711"}),
    )
    .await;
    let objects = Objects {
        providers: ns.api(),
        agents: ns.api(),
        tasks: ns.api(),
    };
    objects.wait_healthy().await;
    let before = objects.snapshot().await;
    let attempts = objects.task_attempts().await;

    // A plain upgrade with the same values file.
    helm(&["upgrade", &release, &new_chart_arg, "--values", &values_arg]);
    wait_operator_from(&ns, &release, &new_label).await;
    objects.wait_healthy().await;
    assert_eq!(
        objects.snapshot().await,
        before,
        "a plain upgrade changed no object"
    );
    assert_eq!(
        objects.task_attempts().await,
        attempts,
        "the finished task did not run again"
    );

    // Back to the previous release, then the upgrade most GitOps and CLI users make:
    // `--reuse-values`, where the new chart meets only the old release's values.
    helm(&["rollback", &release, "1"]);
    wait_operator_from(&ns, &release, &old_label).await;
    objects.wait_healthy().await;
    helm(&["upgrade", &release, &new_chart_arg, "--reuse-values"]);
    wait_operator_from(&ns, &release, &new_label).await;
    objects.wait_healthy().await;
    assert_eq!(
        objects.snapshot().await,
        before,
        "--reuse-values changed no object"
    );
    assert_eq!(objects.task_attempts().await, attempts);

    // The agent still answers through its router.
    let pods = ns.api::<k8s_openapi::api::core::v1::Pod>();
    let agent_pod = real_node::running_pods(&pods, "support", 1).await.remove(0);
    let answer = real_node::ask(&agent_pod, "hello")
        .await
        .expect("an answer");
    assert_eq!(answer["answer"], "Hello from the fake provider");

    run_tool("helm", &["uninstall", &release, "-n", &ns.name, "--wait"]);
    // The CRDs stay (crds.keep), as the chart promises, with every object.
    assert!(crds.get("agenttasks.agentoperator.dev").await.is_ok());
    assert!(objects.tasks.get("triage").await.is_ok());
}
