//! The scale benchmark: the operator's convergence, API cost and footprint against a plain
//! client doing the same work, on the local cluster. Run by `e2e/bench/run`, which writes the
//! table to docs/benchmarks.md. A measurement, not a test: it asserts nothing.

#[path = "../../tests/support/fake_provider.rs"]
#[allow(dead_code)]
mod fake_provider;
mod queue;
// Shared by the benchmarks; each uses part of it.
#[allow(dead_code)]
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_operator::api::{AgentDeployment, AgentTask, LLMProvider};
use clap::Parser;
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Numbers of AgentDeployments to converge, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    agents: Vec<usize>,
    /// Number of AgentTasks (and of plain Jobs in the baseline).
    #[arg(long, default_value_t = 5000)]
    tasks: usize,
    /// Also run the largest number of agents and the tasks at once, in one operator process
    /// (the memory target is for both together); it has no baseline.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    together: bool,
    /// Run the agents and the tasks on their own, each against its baseline (`false` runs
    /// only the run at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    separate: bool,
    /// Tasks queued on one agent with `maxConcurrentTasks` (0: no queue run).
    #[arg(long, default_value_t = 10_000)]
    queue: usize,
    /// Seconds of steady state observed after each convergence.
    #[arg(long, default_value_t = 300)]
    steady_seconds: u64,
    /// Client QPS of both the operator and the baseline client.
    #[arg(long, default_value_t = 50)]
    qps: u32,
    /// The operator binary (a release build).
    #[arg(long)]
    operator: PathBuf,
    /// Where to write the Markdown results.
    #[arg(long)]
    out: PathBuf,
}

/// One row of results.
#[derive(Default)]
struct Run {
    name: String,
    objects: usize,
    operator_seconds: f64,
    baseline_seconds: f64,
    /// Requests by verb and resource (`patch agenttasks/status`).
    requests: BTreeMap<String, f64>,
    steady_writes: Option<f64>,
    steady_requests: BTreeMap<String, f64>,
    peak_rss_mib: f64,
    cpu_seconds: f64,
    latency: BTreeMap<String, (f64, f64, f64)>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::infer()
        .await
        .expect("a kubeconfig (KUBECONFIG)");
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_requests", "requests of the bench client"),
        &["verb", "resource", "code"],
    )
    .expect("counter");
    let client =
        agent_operator::runtime::api_client::client(config, args.qps, args.qps * 2, counter, None)
            .expect("client");
    let fake = fake_provider::FakeProvider::start(fake_provider::Behaviour::default()).await;
    let mut runs = Vec::new();
    if args.separate {
        for &n in &args.agents {
            runs.push(agents_run(&client, &args, &fake, n).await);
        }
        if args.tasks > 0 {
            runs.push(tasks_run(&client, &args, &fake).await);
        }
    }
    if let Some(&agents) = args.agents.iter().max()
        && args.together
        && args.tasks > 0
    {
        runs.push(together_run(&client, &args, &fake, agents).await);
    }
    if !runs.is_empty() {
        let section = markdown(&args, &runs);
        report::write_section(&args.out, "scale", &section);
        println!("{section}");
    }
    if args.queue > 0 {
        let run = queue::queue_run(&client, &args, &fake).await;
        let section = queue::markdown(&args, &run);
        report::write_section(&args.out, "queue", &section);
        println!("{section}");
    }
}

async fn agents_run(
    client: &Client,
    args: &Args,
    fake: &fake_provider::FakeProvider,
    n: usize,
) -> Run {
    eprintln!("== {n} AgentDeployments");
    let ns = fresh_namespace(client, &format!("bench-agents-{n}")).await;
    provider(client, &ns, fake).await;
    let mut operator = Operator::start(args, &ns).await;
    provider_ready(client, &ns).await;
    let before = operator.requests().await;
    let started = Instant::now();
    create_all(
        client,
        &ns,
        (0..n).map(agent_object).collect(),
        serde_json::from_value::<AgentDeployment>,
    )
    .await;
    wait_for(
        client,
        &ns,
        &format!("{n} agents Ready"),
        |agents: Vec<AgentDeployment>| {
            agents
                .iter()
                .filter(|a| condition_true(a.status.as_ref().map(|s| &s.conditions[..]), "Ready"))
                .count()
                == n
        },
    )
    .await;
    let operator_seconds = started.elapsed().as_secs_f64();
    let after = operator.requests().await;
    let (peak_rss_mib, cpu_seconds) = operator.footprint();
    let latency = operator.latency().await;
    eprintln!(
        "   converged in {operator_seconds:.1}s; steady state for {}s",
        args.steady_seconds
    );
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady = by_verb(&subtract(&operator.requests().await, &after));
    let steady_writes = ["create", "update", "patch", "delete"]
        .iter()
        .map(|v| steady.get(*v).copied().unwrap_or(0.0))
        .sum();
    operator.stop();
    delete_namespace(client, &ns).await;

    let baseline_seconds = agents_baseline(client, n).await;
    Run {
        name: format!("{n} AgentDeployments to Ready"),
        objects: n,
        operator_seconds,
        baseline_seconds,
        requests: subtract(&after, &before),
        steady_writes: Some(steady_writes),
        steady_requests: steady,
        peak_rss_mib,
        cpu_seconds,
        latency,
    }
}

/// The same children an agent gets (ServiceAccount, provider ConfigMap, Deployment, Service),
/// created by a plain client at the same QPS, to Ready.
async fn agents_baseline(client: &Client, n: usize) -> f64 {
    eprintln!("   baseline: the same children from a plain client");
    let ns = fresh_namespace(client, &format!("bench-baseline-{n}")).await;
    let started = Instant::now();
    let mut objects = Vec::new();
    for i in 0..n {
        let name = format!("agent-{i:04}");
        let labels = json!({"app": name});
        objects.push(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        );
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{name}-providers")},
            "data": {"providers.json": "{}"}}));
        objects.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"serviceAccountName": name,
                "containers": [{"name": "agent", "image": "registry.example/agent:1"}]}}}}));
        objects.push(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"port": 8080}]}}),
        );
    }
    create_any(client, &ns, objects).await;
    wait_for(
        client,
        &ns,
        &format!("{n} Deployments Ready"),
        |deployments: Vec<Deployment>| {
            deployments
                .iter()
                .filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1))
                .count()
                == n
        },
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    delete_namespace(client, &ns).await;
    seconds
}

async fn tasks_run(client: &Client, args: &Args, fake: &fake_provider::FakeProvider) -> Run {
    let n = args.tasks;
    eprintln!("== {n} AgentTasks");
    let ns = fresh_namespace(client, &format!("bench-tasks-{n}")).await;
    let mut operator = task_operator(client, args, fake, &ns, None).await;
    let before = operator.requests().await;
    let started = Instant::now();
    create_all(
        client,
        &ns,
        (0..n).map(task_object).collect(),
        serde_json::from_value::<AgentTask>,
    )
    .await;
    wait_for(
        client,
        &ns,
        &format!("{n} tasks Succeeded"),
        tasks_succeeded(n),
    )
    .await;
    let operator_seconds = started.elapsed().as_secs_f64();
    let readings = operator.readings().await;
    operator.stop();
    delete_namespace(client, &ns).await;

    eprintln!("   baseline: {n} plain Jobs");
    let ns = fresh_namespace(client, &format!("bench-jobs-{n}")).await;
    let started = Instant::now();
    create_any(client, &ns, (0..n).map(|i| json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": format!("job-{i:05}")},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "agent", "image": "registry.example/agent:1"}]}}}
    })).collect()).await;
    wait_for(
        client,
        &ns,
        &format!("{n} Jobs complete"),
        |jobs: Vec<Job>| {
            jobs.iter()
                .filter(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1))
                .count()
                == n
        },
    )
    .await;
    let baseline_seconds = started.elapsed().as_secs_f64();
    delete_namespace(client, &ns).await;
    Run {
        name: format!("{n} AgentTasks to Succeeded"),
        objects: n,
        operator_seconds,
        baseline_seconds,
        requests: subtract(&readings.requests, &before),
        steady_writes: None,
        steady_requests: BTreeMap::new(),
        peak_rss_mib: readings.peak_rss_mib,
        cpu_seconds: readings.cpu_seconds,
        latency: readings.latency,
    }
}

/// The largest agent run and the task run at once, in one operator process: the footprint of
/// both caches together. Agents and tasks are created interleaved, so neither waits for the
/// other; converged when every agent is Ready and every task Succeeded.
async fn together_run(
    client: &Client,
    args: &Args,
    fake: &fake_provider::FakeProvider,
    agents: usize,
) -> Run {
    let tasks = args.tasks;
    eprintln!("== {agents} AgentDeployments and {tasks} AgentTasks at once");
    let ns = fresh_namespace(client, &format!("bench-together-{agents}")).await;
    let mut operator = task_operator(client, args, fake, &ns, None).await;
    let before = operator.requests().await;
    let started = Instant::now();
    let agent_objects: Vec<Value> = (0..agents).map(agent_object).collect();
    let task_objects: Vec<Value> = (0..tasks).map(task_object).collect();
    tokio::join!(
        create_all(
            client,
            &ns,
            agent_objects,
            serde_json::from_value::<AgentDeployment>
        ),
        create_all(
            client,
            &ns,
            task_objects,
            serde_json::from_value::<AgentTask>
        ),
    );
    wait_for(
        client,
        &ns,
        &format!("{agents} agents Ready"),
        |all: Vec<AgentDeployment>| {
            all.iter()
                .filter(|a| {
                    a.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("agent-"))
                })
                .filter(|a| condition_true(a.status.as_ref().map(|s| &s.conditions[..]), "Ready"))
                .count()
                == agents
        },
    )
    .await;
    wait_for(
        client,
        &ns,
        &format!("{tasks} tasks Succeeded"),
        tasks_succeeded(tasks),
    )
    .await;
    let operator_seconds = started.elapsed().as_secs_f64();
    let readings = operator.readings().await;
    operator.stop();
    delete_namespace(client, &ns).await;
    Run {
        name: format!("{agents} AgentDeployments and {tasks} AgentTasks at once"),
        objects: agents + tasks,
        operator_seconds,
        baseline_seconds: f64::NAN,
        requests: subtract(&readings.requests, &before),
        steady_writes: None,
        steady_requests: BTreeMap::new(),
        peak_rss_mib: readings.peak_rss_mib,
        cpu_seconds: readings.cpu_seconds,
        latency: readings.latency,
    }
}

/// The operator of a task run, with a Ready provider and the agent the tasks run.
async fn task_operator(
    client: &Client,
    args: &Args,
    fake: &fake_provider::FakeProvider,
    ns: &str,
    max_concurrent_tasks: Option<i32>,
) -> Operator {
    provider(client, ns, fake).await;
    let operator = Operator::start(args, ns).await;
    create_all(
        client,
        ns,
        vec![worker_agent(max_concurrent_tasks)],
        serde_json::from_value::<AgentDeployment>,
    )
    .await;
    provider_ready(client, ns).await;
    operator
}

fn agent_object(i: usize) -> Value {
    json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentDeployment",
        "metadata": {"name": format!("agent-{i:04}")},
        "spec": {"image": "registry.example/agent:1", "replicas": 1, "providers": [{"name": "openai"}],
            "ports": [{"name": "http", "containerPort": 8080}]}
    })
}

/// The agent every benchmark task runs: suspended, so it has no pods of its own.
fn worker_agent(max_concurrent_tasks: Option<i32>) -> Value {
    let mut agent = json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentDeployment", "metadata": {"name": "worker"},
        "spec": {"image": "registry.example/agent:1", "suspend": true, "providers": [{"name": "openai"}]}
    });
    if let Some(limit) = max_concurrent_tasks {
        agent["spec"]["maxConcurrentTasks"] = json!(limit);
    }
    agent
}

fn task_object(i: usize) -> Value {
    json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask", "metadata": {"name": format!("task-{i:05}")},
        "spec": {"agentRef": {"name": "worker"}, "input": "benchmark input"}
    })
}

fn tasks_succeeded(n: usize) -> impl Fn(Vec<AgentTask>) -> bool {
    move |tasks| {
        tasks
            .iter()
            .filter(|t| condition_true(t.status.as_ref().map(|s| &s.conditions[..]), "Complete"))
            .count()
            == n
    }
}

/// The operator's requests, footprint and reconcile latency at the end of a run.
struct Readings {
    requests: BTreeMap<String, f64>,
    peak_rss_mib: f64,
    cpu_seconds: f64,
    latency: BTreeMap<String, (f64, f64, f64)>,
}

async fn delete_namespace(client: &Client, ns: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::background())
        .await;
}

/// The operator as a child process watching one namespace.
struct Operator {
    child: Child,
    metrics_port: u16,
}

impl Operator {
    async fn start(args: &Args, namespace: &str) -> Self {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let log = std::fs::File::create(format!("target/bench-operator-{namespace}.log"))
            .expect("log file");
        let child = Command::new(&args.operator)
            .args([
                "run",
                "--namespaces",
                namespace,
                "--log-level",
                "warn",
                "--client-qps",
            ])
            .arg(args.qps.to_string())
            .arg("--client-burst")
            .arg((args.qps * 2).to_string())
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the operator");
        let operator = Self {
            child,
            metrics_port,
        };
        for _ in 0..300 {
            if get(&format!("http://127.0.0.1:{metrics_port}/readyz"))
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                return operator;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the operator did not become ready");
    }

    async fn metrics(&self) -> String {
        get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Requests to the API server so far, by verb and resource.
    async fn requests(&self) -> BTreeMap<String, f64> {
        let mut by_verb = BTreeMap::new();
        for line in self
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("agent_operator_kubernetes_requests_total{"))
        {
            let verb = format!("{} {}", label(line, "verb"), label(line, "resource"));
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            *by_verb.entry(verb).or_insert(0.0) += value;
        }
        by_verb
    }

    /// p50, p95 and p99 reconcile latency per controller, from the histogram's buckets (each is
    /// the upper bound of the bucket holding that quantile).
    async fn latency(&self) -> BTreeMap<String, (f64, f64, f64)> {
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for line in self
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("agent_operator_reconcile_duration_seconds_bucket{"))
        {
            let le = label(line, "le");
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            let count: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            buckets
                .entry(label(line, "controller"))
                .or_default()
                .push((bound, count));
        }
        buckets
            .into_iter()
            .map(|(controller, mut buckets)| {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
                let quantile = |q: f64| {
                    buckets
                        .iter()
                        .find(|b| b.1 >= q * total)
                        .map(|b| b.0)
                        .unwrap_or(f64::NAN)
                };
                (controller, (quantile(0.5), quantile(0.95), quantile(0.99)))
            })
            .collect()
    }

    /// What a run reports of the operator at its end.
    async fn readings(&self) -> Readings {
        let (peak_rss_mib, cpu_seconds) = self.footprint();
        Readings {
            requests: self.requests().await,
            peak_rss_mib,
            cpu_seconds,
            latency: self.latency().await,
        }
    }

    /// Peak resident memory (MiB) and CPU seconds of the process so far.
    fn footprint(&self) -> (f64, f64) {
        report::footprint(self.child.id())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn label(line: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    line.split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value.to_string())
        .unwrap_or_default()
}

/// Requests keyed by verb and resource, summed by verb.
fn by_verb(requests: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut summed = BTreeMap::new();
    for (key, count) in requests {
        let verb = key.split(' ').next().unwrap_or_default().to_string();
        *summed.entry(verb).or_insert(0.0) += count;
    }
    summed
}

fn is_write(key: &str) -> bool {
    ["create ", "update ", "patch ", "delete "]
        .iter()
        .any(|verb| key.starts_with(verb))
}

fn subtract(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(verb, value)| {
            (
                verb.clone(),
                value - before.get(verb).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, value)| *value > 0.0)
        .collect()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.ok()?))
}

fn condition_true(
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    type_: &str,
) -> bool {
    conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", std::process::id());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    name
}

async fn provider(client: &Client, ns: &str, fake: &fake_provider::FakeProvider) {
    create_any(
        client,
        ns,
        vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai-key"},
        "stringData": {"apiKey": "sk-bench"}}),
        ],
    )
    .await;
    create_all(client, ns, vec![json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "openai"},
        "spec": {"type": "OpenAI", "endpoint": fake.openai_endpoint(), "allowInsecureHTTP": true,
            "credentials": {"name": "openai-key", "key": "apiKey"}, "models": ["gpt-4o"], "defaultModel": "gpt-4o"}
    })], serde_json::from_value::<LLMProvider>).await;
}

/// Waits until the namespace's LLMProvider is Ready: no run starts against an unprobed one.
async fn provider_ready(client: &Client, ns: &str) {
    wait_for(
        client,
        ns,
        "the provider to be Ready",
        |providers: Vec<LLMProvider>| {
            !providers.is_empty()
                && providers
                    .iter()
                    .all(|p| condition_true(p.status.as_ref().map(|s| &s.conditions[..]), "Ready"))
        },
    )
    .await;
}

/// Creates objects of one kind, 8 requests in flight (the client's limiter paces them).
async fn create_all<K, F>(client: &Client, ns: &str, objects: Vec<Value>, parse: F)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    F: Fn(Value) -> Result<K, serde_json::Error>,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let objects: Vec<K> = objects
        .into_iter()
        .map(|v| parse(v).expect("a valid object"))
        .collect();
    stream::iter(objects)
        .for_each_concurrent(8, |object| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .expect("create");
            }
        })
        .await;
}

/// Creates the baseline's built-in objects of mixed kinds, in order.
async fn create_any(client: &Client, ns: &str, objects: Vec<Value>) {
    for kind in [
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Job",
    ] {
        let of_kind: Vec<Value> = objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect();
        if of_kind.is_empty() {
            continue;
        }
        match kind {
            "ServiceAccount" => {
                create_all(
                    client,
                    ns,
                    of_kind,
                    serde_json::from_value::<ServiceAccount>,
                )
                .await
            }
            "ConfigMap" => {
                create_all(client, ns, of_kind, serde_json::from_value::<ConfigMap>).await
            }
            "Secret" => create_all(client, ns, of_kind, serde_json::from_value::<Secret>).await,
            "Deployment" => {
                create_all(client, ns, of_kind, serde_json::from_value::<Deployment>).await
            }
            "Service" => create_all(client, ns, of_kind, serde_json::from_value::<Service>).await,
            _ => create_all(client, ns, of_kind, serde_json::from_value::<Job>).await,
        }
    }
}

/// Lists the namespace's objects of `K` every 2 s until `done` holds.
async fn wait_for<K>(client: &Client, ns: &str, what: &str, done: impl Fn(Vec<K>) -> bool)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await
            && done(list.items)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(7200),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn markdown(args: &Args, runs: &[Run]) -> String {
    let mut out = String::from(
        "## Operator at scale\n\nGenerated by `e2e/bench/run` (see the end of this section to rerun).\n\n",
    );
    out.push_str(&format!(
        "Machine: {}; the local control plane of `e2e/cluster` (Kubernetes {}, kwok {}), kube-controller-manager with its default client limits (20 QPS, burst 30), which bounds how fast Deployments and Jobs become pods for the operator and the baseline alike. Operator and baseline client: {} QPS, burst {}. Release build.\n\n",
        report::machine(), env_version("K8S_VERSION"), env_version("KWOK_VERSION"), args.qps, args.qps * 2
    ));
    out.push_str("### Convergence\n\n| run | operator | plain client | ratio | throughput |\n|---|---|---|---|---|\n");
    for run in runs {
        let (baseline, ratio) = if run.baseline_seconds.is_nan() {
            ("—".to_string(), "—".to_string())
        } else {
            (
                format!("{:.1} s", run.baseline_seconds),
                format!("{:.2}", run.operator_seconds / run.baseline_seconds),
            )
        };
        out.push_str(&format!(
            "| {} | {:.1} s | {baseline} | {ratio} | {:.1} objects/s |\n",
            run.name,
            run.operator_seconds,
            run.objects as f64 / run.operator_seconds
        ));
    }
    out.push_str("\n### API cost and footprint\n\n| run | requests by verb (per object) | steady state | peak RSS | CPU |\n|---|---|---|---|---|\n");
    for run in runs {
        let requests: Vec<String> = by_verb(&run.requests)
            .iter()
            .map(|(verb, count)| format!("{verb} {count:.0} ({:.2})", count / run.objects as f64))
            .collect();
        let steady = match run.steady_writes {
            Some(writes) => {
                let all: Vec<String> = run
                    .steady_requests
                    .iter()
                    .map(|(verb, count)| format!("{verb} {count:.0}"))
                    .collect();
                format!(
                    "{writes:.0} writes in {} s{}",
                    args.steady_seconds,
                    if all.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", all.join(", "))
                    }
                )
            }
            None => "—".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {steady} | {:.1} MiB | {:.1} s |\n",
            run.name,
            requests.join(", "),
            run.peak_rss_mib,
            run.cpu_seconds
        ));
    }
    out.push_str("\n### Writes by resource (per object)\n\n| run | writes |\n|---|---|\n");
    for run in runs {
        let writes: Vec<String> = run
            .requests
            .iter()
            .filter(|(key, _)| is_write(key))
            .map(|(key, count)| format!("`{key}` {count:.0} ({:.2})", count / run.objects as f64))
            .collect();
        out.push_str(&format!("| {} | {} |\n", run.name, writes.join(", ")));
    }
    out.push_str("\n### Reconcile latency (from `agent_operator_reconcile_duration_seconds`)\n\n| run | controller | p50 ≤ | p95 ≤ | p99 ≤ |\n|---|---|---|---|---|\n");
    for run in runs {
        for (controller, (p50, p95, p99)) in &run.latency {
            out.push_str(&format!(
                "| {} | {controller} | {p50} s | {p95} s | {p99} s |\n",
                run.name
            ));
        }
    }
    out.push_str(&format!(
        "\n### How it is measured\n\n- Convergence: from the first create to the last object Ready (AgentDeployments: `Ready=True`; AgentTasks: `Complete=True`), listed every 2 s. The baseline creates the same child objects (ServiceAccount, ConfigMap, Deployment, Service per agent; one Job per task) with a plain client at the same QPS, to Ready Deployments and complete Jobs.\n- Requests: the operator's own `agent_operator_kubernetes_requests_total`, from the first create to convergence; steady state: the same counter over the following {} s with nothing changing (writes = create, update, patch, delete).\n- Memory and CPU: the operator process's `VmHWM` and `utime + stime` from `/proc`, one fresh process per run. The run \"at once\" creates the agents and the tasks interleaved in one namespace, for one operator process, and has no baseline.\n- Latency: quantiles read from the histogram's buckets (upper bounds).\n\nRerun: `e2e/bench/run` (defaults: 100 and 1000 agents, 5000 tasks, then the largest agent run and the tasks at once, 300 s of steady state; `e2e/bench/run --agents 100 --tasks 500 --steady-seconds 60` for a quick look).\n",
        args.steady_seconds
    ));
    out
}

fn env_version(name: &str) -> String {
    std::fs::read_to_string("e2e/cluster/versions.env")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
        })
        .unwrap_or_default()
}
