//! The chart's alerts and dashboard as Prometheus reads them: a real Prometheus server (Debian's
//! package, `e2e/tools/prometheus`) scrapes the operator's `/metrics` with the labels the
//! Prometheus Operator gives a target of the chart's ServiceMonitor (its `job` the metrics
//! Service's name, its `namespace` the operator's, and the ServiceMonitor's `honorLabels`), and
//! evaluates the chart's PrometheusRule. Each alert is brought about by the state it describes
//! and must name the object at fault; every dashboard query must evaluate and show series.
//! One exception: `AgentBudgetNearlySpent` needs routers that spend, which only the real node
//! runs, so here it is only evaluated; `tests/pods/budgets.rs` brings about the two series it
//! compares.

use crate::support::net::closed_endpoint;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_operator::api::LLMProvider;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{agent, agent_task, apply, provider};
use crate::support::operator::OperatorProcess;
use crate::support::{self, wait_until};

const CHART: &str = "charts/agent-operator";
const RELEASE: &str = "agent-operator";
/// Where the chart runs the operator; the Prometheus Operator labels its targets with it.
const OPERATOR_NAMESPACE: &str = "agent-operator-system";
const WAIT: Duration = Duration::from_secs(90);

/// The chart's monitoring objects, rendered by Helm.
struct Rendered {
    /// `spec` of the PrometheusRule: Prometheus's own rule-file format.
    rules: Value,
    /// The `job` label of the operator's series: the name of the Service the ServiceMonitor
    /// selects, as the Prometheus Operator sets it.
    job: String,
    honor_labels: bool,
    dashboard: Value,
}

fn render_chart() -> Rendered {
    let output = Command::new(support::tool("helm"))
        .args([
            "template",
            RELEASE,
            CHART,
            "--namespace",
            OPERATOR_NAMESPACE,
        ])
        .args(["--set", "metrics.serviceMonitor.enabled=true"])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|document| serde::Deserialize::deserialize(document).ok())
        .filter(|v: &Value| v.is_object())
        .collect();
    let of_kind =
        |kind: &str| -> Vec<&Value> { objects.iter().filter(|o| o["kind"] == kind).collect() };
    let monitor = of_kind("ServiceMonitor")
        .pop()
        .expect("a ServiceMonitor")
        .clone();
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
        .clone();
    let service = of_kind("Service")
        .into_iter()
        .find(|s| {
            let labels = &s["metadata"]["labels"];
            selector.iter().all(|(k, v)| &labels[k] == v)
                && s["spec"]["ports"].as_array().is_some_and(|ports| {
                    ports
                        .iter()
                        .any(|p| p["name"] == monitor["spec"]["endpoints"][0]["port"])
                })
        })
        .expect("the Service the ServiceMonitor selects");
    let dashboard_map = of_kind("ConfigMap")
        .into_iter()
        .find(|c| {
            c["data"]
                .as_object()
                .is_some_and(|d| d.keys().any(|k| k.ends_with(".json")))
        })
        .expect("the dashboard ConfigMap");
    let dashboard_json = dashboard_map["data"]
        .as_object()
        .and_then(|d| d.values().next())
        .and_then(Value::as_str)
        .expect("dashboard JSON");
    Rendered {
        rules: of_kind("PrometheusRule").pop().expect("a PrometheusRule")["spec"].clone(),
        job: service["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string(),
        honor_labels: monitor["spec"]["endpoints"][0]["honorLabels"] == true,
        dashboard: serde_json::from_str(dashboard_json).expect("dashboard JSON parses"),
    }
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(rendered: &Rendered, metrics_port: u16) -> Self {
        let binary = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/tools/prometheus"))
            .output()
            .expect("e2e/tools/prometheus runs");
        assert!(
            binary.status.success(),
            "no Prometheus: {}",
            String::from_utf8_lossy(&binary.stderr)
        );
        let binary = String::from_utf8_lossy(&binary.stdout).trim().to_string();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus folder");
        write_yaml(&dir.join("rules.yml"), &rendered.rules);
        // What the Prometheus Operator generates for the ServiceMonitor's endpoint, reduced to
        // the labels it leaves on a target: the Service's name as `job`, its namespace, and the
        // endpoint's honorLabels. Scraped and evaluated every second to keep the test short.
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [dir.join("rules.yml")],
            "scrape_configs": [{
                "job_name": "serviceMonitor/agent-operator-system/agent-operator/0",
                "honor_labels": rendered.honor_labels,
                "metrics_path": "/metrics",
                "static_configs": [{
                    "targets": [format!("127.0.0.1:{metrics_port}")],
                    "labels": {
                        "job": rendered.job, "namespace": OPERATOR_NAMESPACE,
                        "service": rendered.job, "pod": "agent-operator-0", "endpoint": "metrics",
                    },
                }],
            }],
        });
        write_yaml(&dir.join("prometheus.yml"), &config);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            http: reqwest::Client::new(),
        };
        wait_until(WAIT, "Prometheus ready", || async {
            let response = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query)
            .expect("a URL");
        let response = self.http.get(url).send().await.expect("Prometheus answers");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The series an instant query returns.
    async fn query(&self, expr: &str) -> Vec<Value> {
        self.api("query", &[("query", expr)]).await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The labels of the alerts named `name` that are pending or firing.
    async fn alerts(&self, name: &str) -> Vec<Value> {
        self.api("alerts", &[]).await["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }

    /// Waits until alert `name` is pending or firing with `labels`, and returns it.
    async fn wait_for_alert(&self, name: &str, labels: Value) -> Value {
        let labels = labels.as_object().expect("labels").clone();
        wait_until(WAIT, &format!("alert {name} {labels:?}"), || async {
            self.alerts(name)
                .await
                .into_iter()
                .find(|a| labels.iter().all(|(k, v)| &a["labels"][k] == v))
        })
        .await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_yaml(path: &Path, value: &Value) {
    std::fs::write(path, serde_yaml::to_string(value).expect("YAML")).expect("write");
}

/// A cluster-scoped admission policy that refuses status updates of the LLMProviders named
/// `refused-*` in `namespace`: a real API error for each of their reconciles.
async fn refuse_status_updates(client: &kube::Client, namespace: &str) -> [Api<DynamicObject>; 2] {
    let resource = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let policies: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("ValidatingAdmissionPolicy"));
    let bindings: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("ValidatingAdmissionPolicyBinding"),
    );
    let name = format!("{namespace}-refuse-status");
    let params = PatchParams::apply("agent-operator-tests").force();
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["agentoperator.dev"], "apiVersions": ["v1alpha1"],
                "operations": ["UPDATE"], "resources": ["llmproviders/status"]}]},
            "validations": [{"expression": "!object.metadata.name.startsWith('refused-')", "message": "refused by the monitoring test"}]
        }
    });
    policies
        .patch(&name, &params, &Patch::Apply(&policy))
        .await
        .expect("the policy");
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        }
    });
    bindings
        .patch(&name, &params, &Patch::Apply(&binding))
        .await
        .expect("the binding");
    policy_in_force(client, namespace).await;
    [policies, bindings]
}

/// Waits until the API server enforces the policy: it loads policies and bindings from a watch,
/// so for a while after they are created a status update still passes. A refused provider whose
/// first status write passed would have nothing more to write, and raise no error at all.
async fn policy_in_force(client: &kube::Client, namespace: &str) {
    let providers: Api<LLMProvider> = Api::namespaced(client.clone(), namespace);
    let name = "refused-probe";
    apply(&providers, name, json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": name},
        "spec": {"type": "OpenAICompatible", "endpoint": closed_endpoint(), "allowInsecureHTTP": true}
    }))
    .await;
    let mut generation = 0;
    wait_until(WAIT, "the policy refusing status updates", || {
        generation += 1;
        let status = json!({"status": {"observedGeneration": generation}});
        let providers = providers.clone();
        async move {
            match providers
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Err(kube::Error::Api(e))
                    if e.message.contains("refused by the monitoring test") =>
                {
                    Some(())
                }
                _ => None,
            }
        }
    })
    .await;
    providers
        .delete(name, &DeleteParams::default())
        .await
        .expect("the probe goes");
}

/// Every dashboard query with the dashboard's `job` variable set to the operator's job.
fn dashboard_queries(dashboard: &Value, job: &str) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .map(move |expr| (title.clone(), expr.replace("$job", job)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn every_alert_and_dashboard_query_names_the_right_object_in_a_real_prometheus() {
    let rendered = render_chart();
    assert!(
        rendered.honor_labels,
        "the ServiceMonitor keeps the series' own namespace"
    );
    let (client, ns) = support::namespace_with_crds("monitoring").await;
    let admission = refuse_status_updates(&client, &ns.name).await;
    let operator = OperatorProcess::start(&ns.name).await;
    let prometheus = Prometheus::start(&rendered, operator.metrics_port).await;

    let fake = FakeProvider::start(Behaviour::default()).await;
    provider(&ns, "openai", &fake).await;
    apply(&ns.api::<LLMProvider>(), "down", json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "down"},
        "spec": {"type": "OpenAICompatible", "endpoint": closed_endpoint(), "allowInsecureHTTP": true,
                 "healthCheck": {"interval": "2s", "timeout": "1s", "failureThreshold": 1}}
    }))
    .await;
    // Enough failing reconciles to be more than one in ten of the controller's, whose healthy
    // providers reconcile at each probe.
    for i in 0..6 {
        let name = format!("refused-{i}");
        apply(&ns.api::<LLMProvider>(), &name, json!({
            "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": name},
            "spec": {"type": "OpenAICompatible", "endpoint": fake.openai_endpoint(), "allowInsecureHTTP": true}
        }))
        .await;
    }
    agent(
        &ns,
        "support",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
    )
    .await;
    agent(
        &ns,
        "waiting",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "no-such-provider"}]}),
    )
    .await;
    // Tasks that end after Prometheus has seen their namespace's series at zero.
    let worker = |exit_code: &str| {
        json!({"agentRef": {"name": "support"}, "input": "hello", "backoffLimit": 0,
               "podMetadata": {"annotations": {
                   "kwok.agentoperator.dev/run-duration": "5s",
                   "kwok.agentoperator.dev/exit-code": exit_code}}})
    };
    agent_task(&ns, "fails", worker("3")).await;
    agent_task(&ns, "succeeds", worker("0")).await;

    let namespace = ns.name.as_str();
    let down = prometheus
        .wait_for_alert(
            "LLMProviderDown",
            json!({"namespace": namespace, "name": "down"}),
        )
        .await;
    assert_eq!(
        down["annotations"]["summary"],
        format!("LLMProvider {namespace}/down is not Ready")
    );
    let not_ready = prometheus
        .wait_for_alert(
            "AgentDeploymentNotReady",
            json!({"namespace": namespace, "name": "waiting"}),
        )
        .await;
    assert!(
        not_ready["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("-n {namespace}"))),
        "{not_ready}"
    );
    prometheus
        .wait_for_alert("AgentTasksFailing", json!({"namespace": namespace}))
        .await;
    let errors = prometheus
        .wait_for_alert(
            "AgentOperatorReconcileErrors",
            json!({"controller": "llmprovider"}),
        )
        .await;
    // The description speaks of a share of reconciles: the expression's value is one.
    let share: f64 = errors["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("the alert's value");
    assert!(
        share > 0.1 && share <= 1.0,
        "a share of the reconciles: {share}"
    );

    // Only what is at fault: the healthy provider and agent raise nothing.
    let named = |alerts: Vec<Value>| -> Vec<String> {
        alerts
            .iter()
            .filter_map(|a| a["labels"]["name"].as_str().map(str::to_string))
            .collect()
    };
    assert!(!named(prometheus.alerts("LLMProviderDown").await).contains(&"openai".to_string()));
    assert!(
        !named(prometheus.alerts("AgentDeploymentNotReady").await).contains(&"support".to_string())
    );
    assert!(prometheus.alerts("AgentOperatorDown").await.is_empty());
    let rules = prometheus.api("rules", &[]).await;
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            assert_eq!(
                rule["health"], "ok",
                "rule {} fails to evaluate: {rule}",
                rule["name"]
            );
        }
    }

    // Every dashboard panel shows data, and its series name objects of the test's namespace
    // (the operator watches nothing else), not the operator's own namespace.
    for (title, expr) in dashboard_queries(&rendered.dashboard, &rendered.job) {
        let series = prometheus.query(&expr).await;
        assert!(
            !series.is_empty(),
            "panel '{title}' shows No data: {expr}\n{}",
            prometheus.log()
        );
        for labels in series.iter().map(|s| &s["metric"]) {
            if let Some(of) = labels.get("namespace") {
                assert_eq!(of, namespace, "panel '{title}' names {labels}");
            }
        }
    }
    let ready = prometheus
        .query(&format!(
            "agent_operator_agent_ready{{job=\"{}\"}}",
            rendered.job
        ))
        .await;
    let mut readiness: Vec<(String, String)> = ready
        .iter()
        .map(|s| {
            (
                s["metric"]["name"].as_str().unwrap_or_default().to_string(),
                s["value"][1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    readiness.sort();
    assert_eq!(
        readiness,
        [
            ("support".to_string(), "1".to_string()),
            ("waiting".to_string(), "0".to_string())
        ]
    );

    // With no operator left to scrape, the operator itself is down.
    drop(operator);
    prometheus
        .wait_for_alert("AgentOperatorDown", json!({}))
        .await;

    let [policies, bindings] = admission;
    let name = format!("{namespace}-refuse-status");
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
}
