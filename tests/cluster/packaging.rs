//! The Helm chart and the kustomize bases, as users install them: lint and render, install,
//! upgrade and uninstall on the local cluster, and the operator running with nothing but the
//! ServiceAccount and RBAC they create.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use agent_operator::api::AgentDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::dashboard::Dashboard;
use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{create_samples, wait_for_samples};
use crate::support::operator::OperatorProcess;
use crate::support::{self, kubeconfig_for_service_account, run_tool, wait_until};

const CHART: &str = "charts/agent-operator";
const WAIT: Duration = Duration::from_secs(90);

/// The documents of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|document| Value::deserialize(document).ok())
        .filter(|value| !value.is_null())
        .collect()
}

fn kind_and_name(object: &Value) -> (String, String) {
    (
        object["kind"].as_str().unwrap_or_default().to_string(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| kind_and_name(o) == (kind.to_string(), name.to_string()))
}

fn generated_rules() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rbac/role.yaml"
    ))
    .expect("config/rbac/role.yaml");
    let role: Value = serde_yaml::from_str(&text).expect("YAML");
    role["rules"].clone()
}

#[test]
fn the_chart_lints_and_renders_cluster_and_namespaced_rbac() {
    run_tool("helm", &["lint", CHART]);
    run_tool(
        "helm",
        &["lint", CHART, "--set", "watchNamespaces={team-a,team-b}"],
    );

    let cluster = documents(&run_tool("helm", &["template", "ao", CHART, "-n", "ops"]));
    let role =
        find(&cluster, "ClusterRole", "ao-agent-operator").expect("the controllers' ClusterRole");
    assert_eq!(
        role["rules"],
        generated_rules(),
        "the chart grants exactly the generated rules"
    );
    assert!(find(&cluster, "ClusterRoleBinding", "ao-agent-operator").is_some());
    for crd in cluster
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        let name = crd["metadata"]["name"].as_str().expect("name");
        let file =
            std::fs::read_to_string(format!("{}/crds/{name}.yaml", env!("CARGO_MANIFEST_DIR")))
                .expect("crds/ file");
        let source: Value = serde_yaml::from_str(&file).expect("CRD YAML");
        assert_eq!(
            crd["spec"], source["spec"],
            "{name}: the chart installs crds/ unchanged"
        );
    }
    assert_eq!(
        cluster
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .count(),
        3
    );

    let namespaced = documents(&run_tool(
        "helm",
        &[
            "template",
            "ao",
            CHART,
            "-n",
            "ops",
            "--set",
            "watchNamespaces={team-a,team-b}",
        ],
    ));
    assert!(find(&namespaced, "ClusterRoleBinding", "ao-agent-operator").is_none());
    assert!(find(&namespaced, "ClusterRole", "ao-agent-operator").is_none());
    let roles: BTreeSet<String> = namespaced
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "ao-agent-operator")
        .map(|o| {
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from(["team-a".to_string(), "team-b".to_string()])
    );
    let deployment = find(&namespaced, "Deployment", "ao-agent-operator").expect("Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    assert!(env.contains(&json!({"name": "AGENT_OPERATOR_NAMESPACES", "value": "team-a,team-b"})));

    let without_crds = documents(&run_tool(
        "helm",
        &["template", "ao", CHART, "--set", "crds.install=false"],
    ));
    assert!(
        !without_crds
            .iter()
            .any(|o| o["kind"] == "CustomResourceDefinition")
    );
}

#[test]
fn the_web_dashboard_is_off_by_default_read_only_and_apart_from_the_operator() {
    let is_dashboard =
        |o: &&Value| o["metadata"]["labels"]["app.kubernetes.io/component"] == "web-dashboard";

    let template = |sets: &[&str]| {
        let mut args = vec!["template", "ao", CHART, "-n", "ops"];
        for set in sets {
            args.extend(["--set", set]);
        }
        documents(&run_tool("helm", &args))
    };
    let default = template(&[]);
    assert_eq!(default.iter().filter(is_dashboard).count(), 0);
    let enabled = template(&["webDashboard.enabled=true"]);
    let role =
        find(&enabled, "ClusterRole", "ao-agent-operator-web-dashboard").expect("ClusterRole");
    let rules = agent_operator::runtime::permissions::dashboard_cluster_role().rules;
    assert_eq!(role["rules"], serde_json::to_value(rules).expect("rules"));
    let deployment =
        find(&enabled, "Deployment", "ao-agent-operator-web-dashboard").expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "ao-agent-operator-web-dashboard");
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(["dashboard"]));
    let env = container["env"].as_array().expect("env");
    assert!(
        env.contains(&json!({"name": "AGENT_OPERATOR_DASHBOARD_ADDRESS", "value": "127.0.0.1"}))
    );
    // The operator's selector must not pick the dashboard's pod.
    let operator = find(&enabled, "Deployment", "ao-agent-operator").expect("the operator");
    let selector = operator["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(selector.iter().any(|(key, value)| &labels[key] != value));

    let namespaced = template(&[
        "webDashboard.enabled=true",
        "webDashboard.namespaces={team-a}",
    ]);
    assert!(
        find(
            &namespaced,
            "ClusterRole",
            "ao-agent-operator-web-dashboard"
        )
        .is_none()
    );
    let role = find(&namespaced, "Role", "ao-agent-operator-web-dashboard").expect("a Role");
    assert_eq!(role["metadata"]["namespace"], "team-a");
}

#[test]
fn kustomize_default_renders_what_the_chart_renders_by_default() {
    let chart = documents(&run_tool(
        "helm",
        &[
            "template",
            "agent-operator",
            CHART,
            "-n",
            "agent-operator-system",
        ],
    ));
    let kustomize = documents(&run_tool("kubectl", &["kustomize", "config/default"]));
    let keys = |objects: &[Value], except: (&str, &str)| -> BTreeSet<(String, String)> {
        objects
            .iter()
            .map(kind_and_name)
            .filter(|key| key != &(except.0.to_string(), except.1.to_string()))
            .collect()
    };
    // The dashboard ships with the chart only; the namespace is created by Helm's --create-namespace.
    assert_eq!(
        keys(&chart, ("ConfigMap", "agent-operator-dashboard")),
        keys(&kustomize, ("Namespace", "agent-operator-system")),
    );
    for (kind, name, field) in [
        ("Deployment", "agent-operator", "spec"),
        ("ClusterRole", "agent-operator", "rules"),
        ("ClusterRole", "agent-operator-view", "rules"),
        ("ClusterRole", "agent-operator-edit", "rules"),
        ("Role", "agent-operator-leader-election", "rules"),
        ("Service", "agent-operator-metrics", "spec"),
        ("PodDisruptionBudget", "agent-operator", "spec"),
    ] {
        let from_chart = &find(&chart, kind, name).expect("in the chart")[field];
        let from_kustomize = &find(&kustomize, kind, name).expect("in kustomize")[field];
        assert_eq!(from_chart, from_kustomize, "{kind} {name}: {field}");
    }
}

#[tokio::test]
async fn helm_install_upgrade_uninstall_and_the_charts_account_runs_the_operator() {
    let (client, ns) = support::namespace_with_crds("helm-release").await;
    let release = format!("t{}", std::process::id());
    let fullname = format!("{release}-agent-operator");
    let namespaces = format!("watchNamespaces={{{}}}", ns.name);
    // CRDs are shared by every test on this cluster: this release leaves them alone.
    run_tool(
        "helm",
        &[
            "install",
            &release,
            CHART,
            "-n",
            &ns.name,
            "--set",
            "crds.install=false",
            "--set",
            &namespaces,
            "--set",
            "aggregateRoles=false",
            "--set",
            "webDashboard.enabled=true",
            "--set",
            &format!("webDashboard.namespaces={{{}}}", ns.name),
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    let deployments = ns.api::<Deployment>();
    let installed = deployments
        .get(&fullname)
        .await
        .expect("the operator Deployment");
    assert_eq!(installed.spec.replicas, Some(2));

    let kubeconfig = kubeconfig_for_service_account(&client, &ns.name, &fullname).await;
    let lease = [
        "--leader-election",
        "true",
        "--lease-namespace",
        &ns.name,
        "--lease-name",
        &fullname,
    ];
    let operator = OperatorProcess::start_as(&ns.name, "", &lease, &kubeconfig).await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    create_samples(&ns, &fake, json!({})).await;
    wait_for_samples(&ns).await;
    drop(operator);

    // The dashboard, as its pod runs it: the chart's dashboard account, its namespaces.
    let dashboard_account = format!("{fullname}-web-dashboard");
    let dashboard_kubeconfig =
        kubeconfig_for_service_account(&client, &ns.name, &dashboard_account).await;
    let dashboard = Dashboard::start(
        &dashboard_kubeconfig,
        &dashboard_account,
        &["--namespace", &ns.name],
    );
    let (status, agents_page) = dashboard.get("/agents").await;
    assert_eq!(status, 200);
    assert!(agents_page.contains(&format!("data-agent=\"{}/support\"", ns.name)));
    drop(dashboard);

    run_tool(
        "helm",
        &[
            "upgrade",
            &release,
            CHART,
            "-n",
            &ns.name,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--set",
            "replicaCount=1",
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    let upgraded = deployments
        .get(&fullname)
        .await
        .expect("the operator Deployment");
    let spec = upgraded.spec;
    assert_eq!(spec.replicas, Some(1));
    let env = spec.template.spec.expect("pod").containers[0]
        .env
        .clone()
        .expect("env");
    assert!(
        env.iter()
            .any(|e| e.name == "AGENT_OPERATOR_LOG_LEVEL" && e.value.as_deref() == Some("debug"))
    );

    run_tool("helm", &["uninstall", &release, "-n", &ns.name, "--wait"]);
    wait_until(WAIT, "the release's objects to be gone", || async {
        let gone = deployments.get_opt(&fullname).await.ok()?.is_none()
            && ns
                .api::<ServiceAccount>()
                .get_opt(&fullname)
                .await
                .ok()?
                .is_none()
            && ns.api::<Role>().get_opt(&fullname).await.ok()?.is_none()
            && deployments
                .get_opt(&format!("{fullname}-web-dashboard"))
                .await
                .ok()?
                .is_none();
        gone.then_some(())
    })
    .await;
    // The users' objects are not the release's: they stay.
    assert!(
        ns.api::<AgentDeployment>()
            .get_opt("support")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn kubectl_apply_k_of_the_rbac_and_manager_bases_runs_the_operator() {
    let (client, ns) = support::namespace_with_crds("kustomize-bases").await;
    // The bases of config/default but the CRDs (shared by every test here), moved into this
    // test's namespace and prefixed so their cluster-scoped names are this test's own.
    let overlay = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kustomize-{}", ns.name));
    std::fs::create_dir_all(&overlay).expect("overlay folder");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let depth = overlay
        .strip_prefix(repo)
        .expect("the target folder is in the checkout")
        .components()
        .count();
    let up = "../".repeat(depth);
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\nnamePrefix: {ns}-\n\
             resources:\n- {up}config/rbac\n- {up}config/manager\n\
             patches:\n- target: {{kind: Namespace}}\n  patch: |\n    $patch: delete\n    apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: unused\n",
            ns = ns.name
        ),
    )
    .expect("write the overlay");
    let overlay_path = overlay.display().to_string();
    run_tool("kubectl", &["apply", "-k", &overlay_path]);

    let account = format!("{}-agent-operator", ns.name);
    let kubeconfig = kubeconfig_for_service_account(&client, &ns.name, &account).await;
    let lease = ["--leader-election", "true", "--lease-namespace", &ns.name];
    let operator = OperatorProcess::start_as(&ns.name, "", &lease, &kubeconfig).await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    create_samples(&ns, &fake, json!({})).await;
    wait_for_samples(&ns).await;
    drop(operator);
    run_tool("kubectl", &["delete", "-k", &overlay_path, "--wait=false"]);
}

/// `helm template` with `args`: its output, or its error when it refuses.
fn helm_template(args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(support::tool("helm"))
        .args(["template", "ao", CHART])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("helm runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

#[test]
fn the_chart_refuses_two_reconcilers_and_works_as_a_subchart() {
    let refused = helm_template(&["--set", "leaderElection.enabled=false"])
        .expect_err("two replicas without leader election are refused");
    assert!(
        refused.contains("needs leaderElection.enabled=true"),
        "{refused}"
    );
    helm_template(&[
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=1",
    ])
    .expect("one replica needs no election");
    // A parent chart passes `global` to every subchart.
    helm_template(&["--set", "global.imageRegistry=registry.example"])
        .expect("the values schema accepts global");
    let monitored = helm_template(&["--set", "metrics.serviceMonitor.enabled=true"])
        .expect("renders with a ServiceMonitor");
    assert!(
        monitored.contains("honorLabels: true"),
        "the metrics' own namespace labels survive the scrape"
    );
}

#[tokio::test]
async fn kubectl_apply_f_crds_applies_every_file_there() {
    let _client = support::client().await;
    let out = run_tool(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "crds/",
        ],
    );
    assert_eq!(out.lines().count(), 3, "{out}");
}

/// The release workflow cannot run here (it needs the forge's runners, registry and Sigstore
/// identity): actionlint checks its syntax, expressions, job graph and action inputs.
#[test]
fn the_release_workflow_passes_actionlint() {
    let workflows = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".github/workflows");
    let files: Vec<PathBuf> = std::fs::read_dir(&workflows)
        .expect("workflows")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("release.yml")),
        "{files:?}"
    );
    let output = std::process::Command::new(support::tool("actionlint"))
        .args(&files)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("actionlint runs");
    assert!(
        output.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
