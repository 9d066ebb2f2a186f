//! Browser tests of `agent-operator dashboard`: the real binary against the local control
//! plane, its pages driven in headless Chromium. Run one test at a time (`--test-threads=1`):
//! each starts a browser, and two cores hold one comfortably.

#[path = "../support/mod.rs"]
mod support;

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_operator::api::{AgentDeployment, AgentTask};
use harness::Chromium;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::config::Kubeconfig;
use serde_json::json;
use support::dashboard::Dashboard;
use support::fake_provider::{Behaviour, FakeProvider};
use support::objects::{KEY, agent, agent_task, apply, provider};
use support::operator::OperatorProcess;
use support::{TestNamespace, wait_until};

const WAIT: Duration = Duration::from_secs(90);
/// How soon a change on the cluster must show on an open page, without a reload.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// A value only the task's input Secret holds.
const TASK_INPUT_SECRET: &str = "tinput-secret-5f3a9c1e";

fn admin_kubeconfig() -> PathBuf {
    support::kubeconfig_path()
}

/// Two providers, an agent failing over from the first to the second, and a task with a result,
/// reconciled by the operator; returns the fakes so a test can break one.
async fn populate(ns: &TestNamespace) -> (FakeProvider, FakeProvider, OperatorProcess) {
    let healthy = || Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    };
    let first = FakeProvider::start(healthy()).await;
    let second = FakeProvider::start(healthy()).await;
    provider(ns, "first", &first).await;
    provider(ns, "second", &second).await;
    agent(
        ns,
        "support",
        json!({"image": "registry.example/agent:1", "providers": [{"name": "first"}, {"name": "second"}]}),
    )
    .await;
    agent_task(
        ns,
        "summarise",
        json!({
            "agentRef": {"name": "support"}, "input": "summarise the ticket",
            "podMetadata": {"annotations": {"kwok.agentoperator.dev/message": "three bullet points"}}
        }),
    )
    .await;
    let operator = OperatorProcess::start(&ns.name).await;
    let agents = ns.api::<AgentDeployment>();
    let tasks = ns.api::<AgentTask>();
    wait_until(
        WAIT,
        "the agent Ready on its first provider, the task done",
        || async {
            let agent = agents.get("support").await.ok()?.status?;
            let task = tasks.get("summarise").await.ok()?.status?;
            let ready = agent
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let done = task.phase.map(|p| format!("{p:?}")).as_deref() == Some("Succeeded");
            (ready && done && agent.active_provider.as_deref() == Some("first")).then_some(())
        },
    )
    .await;
    (first, second, operator)
}

#[tokio::test]
async fn the_pages_list_what_the_cluster_holds_and_follow_a_failover_live() {
    let (_, ns) = support::namespace_with_crds("dashboard-live").await;
    let (first, _second, _operator) = populate(&ns).await;
    let dashboard = Dashboard::start(&admin_kubeconfig(), &ns.name, &["--namespace", &ns.name]);
    let chromium = Chromium::start().await;
    let agent_row = format!("tr[data-agent=\"{}/support\"]", ns.name);

    chromium.open(&format!("{}/", dashboard.url)).await;
    chromium.wait_live().await;
    let namespace_row = format!("tr[data-namespace=\"{}\"]", ns.name);
    let counts = chromium
        .text(&namespace_row)
        .await
        .expect("the namespace's row");
    assert!(counts.contains("1/1") && counts.contains("2/2"), "{counts}");
    chromium.screenshot("overview").await;

    chromium.open(&format!("{}/providers", dashboard.url)).await;
    for name in ["first", "second"] {
        let row = format!("tr[data-provider=\"{}/{name}\"]", ns.name);
        let text = chromium.text(&row).await.expect("the provider's row");
        assert!(text.contains("OpenAI") && text.contains("gpt-4o"), "{text}");
        let health = chromium.text(&format!("{row} td.health")).await;
        assert_eq!(health.as_deref(), Some("Available"), "{name}");
    }

    chromium.open(&format!("{}/tasks", dashboard.url)).await;
    let task_row = format!("tr[data-task=\"{}/summarise\"]", ns.name);
    let text = chromium.text(&task_row).await.expect("the task's row");
    assert!(
        text.contains("Succeeded") && text.contains("three bullet points"),
        "{text}"
    );
    let queue = chromium
        .text("table.queues tbody tr")
        .await
        .expect("the queue row");
    assert!(queue.contains("support"), "{queue}");
    chromium
        .open(&format!("{}/tasks/{}/summarise", dashboard.url, ns.name))
        .await;
    assert_eq!(
        chromium.text("pre.result").await.as_deref(),
        Some("three bullet points")
    );

    chromium.open(&format!("{}/agents", dashboard.url)).await;
    chromium.wait_live().await;
    let active = format!("{agent_row} td.active-provider");
    assert_eq!(chromium.text(&active).await.as_deref(), Some("first"));
    // A marker that a reload would wipe out.
    chromium.eval("window.notReloaded = true").await;

    first.set(|b| b.status = Some(503));
    let agents = ns.api::<AgentDeployment>();
    wait_until(
        WAIT,
        "the operator to fail over to the second provider",
        || async {
            let status = agents.get("support").await.ok()?.status?;
            (status.active_provider.as_deref() == Some("second")).then_some(())
        },
    )
    .await;
    let changed_on_cluster = tokio::time::Instant::now();
    let first_link = format!("{agent_row} li[data-provider=\"first\"]");
    loop {
        let shown = chromium.text(&active).await;
        let first_state = chromium.attribute(&first_link, "class").await;
        if shown.as_deref() == Some("second") && first_state.is_some_and(|c| c.contains("bad")) {
            break;
        }
        assert!(
            changed_on_cluster.elapsed() < LIVE_WITHIN,
            "the page still shows {shown:?} as active {LIVE_WITHIN:?} after the cluster changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        chromium.eval("return window.notReloaded === true").await,
        json!(true)
    );
    chromium.screenshot("agents-after-failover").await;

    // On a phone's width the page does not scroll sideways: wide tables scroll in their box.
    chromium
        .browser
        .set_window_size(390, 844)
        .await
        .expect("a phone-sized window");
    // More pages than a browser opens connections to one server: each page's stream must end
    // when the page is left.
    for page in [
        "/",
        "/agents",
        "/providers",
        "/tasks",
        "/",
        "/agents",
        "/providers",
        "/tasks",
    ] {
        chromium.open(&format!("{}{page}", dashboard.url)).await;
        chromium.wait_live().await;
        let fits = chromium
            .eval("return document.documentElement.scrollWidth <= window.innerWidth")
            .await;
        assert_eq!(fits, json!(true), "{page} is wider than a phone's screen");
    }
    chromium.screenshot("agents-phone").await;
}

/// A kubeconfig like `kubeconfig` whose context's namespace is `namespace`.
fn with_context_namespace(kubeconfig: &Path, namespace: &str) -> PathBuf {
    let mut config = Kubeconfig::read_from(kubeconfig).expect("a kubeconfig");
    for context in &mut config.contexts {
        if let Some(context) = context.context.as_mut() {
            context.namespace = Some(namespace.to_string());
        }
    }
    let path = kubeconfig.with_extension(format!("{namespace}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("renders")).expect("write");
    path
}

#[tokio::test]
async fn a_reader_of_one_namespace_sees_that_namespace_only() {
    let (client, readable) = support::namespace_with_crds("dashboard-readable").await;
    let hidden = TestNamespace::new(&client, "dashboard-hidden").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    for ns in [&readable, &hidden] {
        provider(ns, "openai", &fake).await;
        agent(
            ns,
            &format!("agent-of-{}", ns.name),
            json!({"image": "registry.example/agent:1", "providers": [{"name": "openai"}]}),
        )
        .await;
    }
    let rules = agent_operator::runtime::permissions::dashboard_cluster_role()
        .rules
        .expect("rules");
    support::accounts::account_with_rules(&readable, "viewer", rules).await;
    let kubeconfig =
        support::kubeconfig_for_service_account(&client, &readable.name, "viewer").await;

    // Asked for the namespace it may read: that namespace, and nothing of the other.
    let dashboard = Dashboard::start(&kubeconfig, "viewer", &["--namespace", &readable.name]);
    // The in-cluster probe asks the same server.
    let port = dashboard.url.rsplit(':').next().expect("a port");
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_agent-operator"))
        .args(["dashboard", "--check", "--port", port])
        .status()
        .expect("the probe runs");
    assert!(probe.success(), "the probe finds the dashboard healthy");
    for path in ["/", "/agents", "/providers", "/tasks"] {
        let (status, html) = dashboard.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !html.contains(&hidden.name),
            "{path} shows the unreadable namespace"
        );
        assert!(
            html.contains(&readable.name) || path == "/tasks",
            "{path}: {html}"
        );
    }
    let chromium = Chromium::start().await;
    chromium.open(&format!("{}/agents", dashboard.url)).await;
    chromium.wait_live().await;
    let text = chromium.eval("return document.body.innerText").await;
    let text = text.as_str().expect("text");
    assert!(
        text.contains(&format!("agent-of-{}", readable.name)),
        "{text}"
    );
    assert!(!text.contains(&hidden.name), "{text}");
    drop(dashboard);

    // Without --namespace: the context's namespace, when the account may not read them all.
    let in_context = with_context_namespace(&kubeconfig, &readable.name);
    let dashboard = Dashboard::start(&in_context, "viewer-context", &[]);
    let (_, html) = dashboard.get("/agents").await;
    assert!(html.contains(&format!("agent-of-{}", readable.name)));
    assert!(!html.contains(&hidden.name));
    assert!(
        html.contains("cannot read these kinds in every namespace"),
        "{html}"
    );
    drop(dashboard);

    // Asked for a namespace it may not read: a refusal naming it and the fix.
    let refusal = Dashboard::refusal(
        &kubeconfig,
        "viewer-refused",
        &["--namespace", &hidden.name],
    );
    assert!(
        refusal.contains(&hidden.name) && refusal.contains("--namespace"),
        "{refusal}"
    );
}

#[tokio::test]
async fn no_secret_value_is_served_in_any_page_or_stream() {
    let (_, ns) = support::namespace_with_crds("dashboard-secrets").await;
    apply(
        &ns.api::<Secret>(),
        "task-input",
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "task-input"},
            "stringData": {"input": TASK_INPUT_SECRET}
        }),
    )
    .await;
    let (_first, _second, _operator) = populate(&ns).await;
    agent_task(
        &ns,
        "from-secret",
        json!({"agentRef": {"name": "support"}, "inputFrom": {"secretKeyRef": {"name": "task-input", "key": "input"}}}),
    )
    .await;
    let dashboard = Dashboard::start(&admin_kubeconfig(), &ns.name, &["--namespace", &ns.name]);
    let tasks = ns.api::<AgentTask>();
    wait_until(WAIT, "the task reading a Secret to start", || async {
        tasks
            .get("from-secret")
            .await
            .ok()?
            .status?
            .phase
            .map(|_| ())
    })
    .await;

    let secrets: Vec<String> = [KEY, TASK_INPUT_SECRET]
        .iter()
        .flat_map(|value| {
            let encoded =
                serde_json::to_string(&ByteString(value.as_bytes().to_vec())).expect("base64");
            [value.to_string(), encoded.trim_matches('"').to_string()]
        })
        .collect();
    let pages = [
        "/".to_string(),
        "/agents".into(),
        "/providers".into(),
        "/tasks".into(),
        format!("/agents/{}/support", ns.name),
        format!("/providers/{}/first", ns.name),
        format!("/providers/{}/second", ns.name),
        format!("/tasks/{}/summarise", ns.name),
        format!("/tasks/{}/from-secret", ns.name),
    ];
    for page in &pages {
        let (status, html) = dashboard.get(page).await;
        assert_eq!(status, 200, "{page}");
        let live = dashboard.first_live_update(page).await;
        for served in [&html, &live] {
            for secret in &secrets {
                assert!(
                    !served.contains(secret.as_str()),
                    "{page} serves a Secret's value"
                );
            }
        }
    }
    // The detail pages do show the objects whole: the references to the Secrets, not values.
    let (_, provider) = dashboard
        .get(&format!("/providers/{}/first", ns.name))
        .await;
    assert!(
        provider.contains("first-key"),
        "the YAML names the credential's Secret"
    );
    let (_, task) = dashboard
        .get(&format!("/tasks/{}/from-secret", ns.name))
        .await;
    assert!(
        task.contains("task-input"),
        "the YAML names the input's Secret"
    );

    let chromium = Chromium::start().await;
    chromium
        .open(&format!("{}/providers/{}/first", dashboard.url, ns.name))
        .await;
    chromium.wait_live().await;
    chromium
        .eval("document.getElementById('yaml').open = true")
        .await;
    let source = chromium.browser.source().await.expect("the page source");
    assert!(source.contains("first-key"));
    for secret in &secrets {
        assert!(
            !source.contains(secret.as_str()),
            "the browser's page holds a Secret's value"
        );
    }
}
