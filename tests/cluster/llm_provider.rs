//! The LLMProvider controller against the real API server and the fake provider, with the
//! operator running as its own process.

use std::time::Duration;

use agent_operator::api::LLMProvider;
use agent_operator::controller::llm_provider::reconcile::credential_hash;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::wait_all_ready;
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

const KEY: &str = "sk-test-4f1c2a9b8e7d6c5b";
const WAIT: Duration = Duration::from_secs(45);

async fn create_secret(ns: &TestNamespace, name: &str, key: &str) {
    create_secret_of_type(ns, name, "Opaque", key).await;
}

async fn create_secret_of_type(ns: &TestNamespace, name: &str, type_: &str, key: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": name },
        "type": type_,
        "stringData": { "apiKey": key }
    }))
    .expect("secret");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

async fn create_provider(ns: &TestNamespace, name: &str, spec: Value) {
    let provider: LLMProvider = serde_json::from_value(json!({
        "apiVersion": "agentoperator.dev/v1alpha1",
        "kind": "LLMProvider",
        "metadata": { "name": name },
        "spec": spec
    }))
    .expect("provider");
    ns.api::<LLMProvider>()
        .create(&PostParams::default(), &provider)
        .await
        .expect("create provider");
}

fn openai_spec(fake: &FakeProvider, extra: Value) -> Value {
    let mut spec = json!({
        "type": "OpenAI",
        "endpoint": fake.openai_endpoint(),
        "allowInsecureHTTP": true,
        "credentials": { "name": "key", "key": "apiKey" },
        "models": ["gpt-4o"],
        "healthCheck": { "interval": "1s", "timeout": "1s", "failureThreshold": 1, "successThreshold": 1 }
    });
    support::merge_patch(&mut spec, &extra);
    spec
}

/// The condition (status, reason) of a provider, once its status has one.
async fn condition(api: &Api<LLMProvider>, name: &str, type_: &str) -> Option<(String, String)> {
    let provider = api.get(name).await.ok()?;
    let found = provider
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((found.status, found.reason))
}

async fn wait_for_condition(
    api: &Api<LLMProvider>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) {
    let what = format!("{name} to have {type_}={status} ({reason})");
    wait_until(WAIT, &what, || async {
        let (s, r) = condition(api, name, type_).await?;
        (s == status && r == reason).then_some(())
    })
    .await;
}

#[tokio::test]
async fn healthy_provider_becomes_ready_with_models_and_credential_hash() {
    let (_, ns) = support::namespace_with_crds("provider-healthy").await;
    let fake = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    create_secret(&ns, "key", KEY).await;
    create_provider(&ns, "openai", openai_spec(&fake, json!({}))).await;
    let _operator = OperatorProcess::start(&ns.name).await;

    let api = ns.api::<LLMProvider>();
    wait_for_condition(&api, "openai", "Ready", "True", "Available").await;
    let status = api
        .get("openai")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(status.model_count, Some(2));
    assert_eq!(status.models, ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(
        status.credential_hash.as_deref(),
        Some(credential_hash(KEY).as_str())
    );
    assert_eq!(status.observed_generation, Some(1));
    assert!(status.latency.is_some());
    assert_eq!(
        condition(&api, "openai", "CredentialsValid").await,
        Some(("True".into(), "Accepted".into()))
    );
}

#[tokio::test]
async fn each_failure_class_has_its_own_reason_and_recovery_follows() {
    let (_, ns) = support::namespace_with_crds("provider-failures").await;
    create_secret(&ns, "key", KEY).await;

    type Fault = fn(&mut Behaviour);
    let faults: [(&str, Fault, &str); 6] = [
        (
            "wrong-key",
            |b| b.api_key = Some("sk-another-key-0000000".into()),
            "Unauthorized",
        ),
        ("rate-limited", |b| b.status = Some(429), "RateLimited"),
        ("server-error", |b| b.status = Some(500), "ServerError"),
        ("garbage", |b| b.garbage = true, "InvalidResponse"),
        ("slow", |b| b.delay = Duration::from_secs(3), "Timeout"),
        (
            "model-gone",
            |b| b.models = vec!["gpt-3.5-turbo".into()],
            "ModelNotFound",
        ),
    ];
    let mut fakes = Vec::new();
    for (name, fault, _) in &faults {
        let fake = FakeProvider::start(Behaviour::default()).await;
        fake.set(fault);
        create_provider(&ns, name, openai_spec(&fake, json!({}))).await;
        fakes.push(fake);
    }
    // A port nobody listens on: the listener is bound and dropped at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    create_provider(
        &ns,
        "unreachable",
        json!({
            "type": "Ollama", "endpoint": format!("http://{closed}"), "allowInsecureHTTP": true,
            "healthCheck": { "interval": "1s", "timeout": "1s", "failureThreshold": 1 }
        }),
    )
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;

    let api = ns.api::<LLMProvider>();
    for (name, _, reason) in &faults {
        wait_for_condition(&api, name, "Ready", "False", reason).await;
    }
    wait_for_condition(&api, "unreachable", "Ready", "False", "Unreachable").await;
    assert_eq!(
        condition(&api, "wrong-key", "CredentialsValid").await,
        Some(("False".into(), "Unauthorized".into())),
        "a refused key shows in CredentialsValid"
    );
    assert_eq!(
        condition(&api, "server-error", "CredentialsValid")
            .await
            .map(|c| c.0),
        Some("True".into())
    );

    // Clear the faults: every provider recovers on its own.
    for fake in &fakes {
        fake.set(|b| *b = Behaviour::default());
    }
    for (name, _, _) in &faults {
        wait_for_condition(&api, name, "Ready", "True", "Available").await;
    }
}

/// Helm's release Secrets are left out of the operator's watch by the API server: a provider
/// that names one finds no credentials, where the same key in an ordinary Secret is read.
#[tokio::test]
async fn helm_release_secrets_are_not_read() {
    let (_, ns) = support::namespace_with_crds("provider-helm-secret").await;
    let fake = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    let release_type = agent_operator::controller::shared::HELM_RELEASE_SECRET_TYPE;
    create_secret_of_type(&ns, "sh.helm.release.v1.agents.v1", release_type, KEY).await;
    create_secret(&ns, "key", KEY).await;
    let release_credentials = json!({"credentials": {"name": "sh.helm.release.v1.agents.v1"}});
    create_provider(&ns, "from-release", openai_spec(&fake, release_credentials)).await;
    create_provider(&ns, "from-secret", openai_spec(&fake, json!({}))).await;
    let _operator = OperatorProcess::start(&ns.name).await;

    let api = ns.api::<LLMProvider>();
    wait_for_condition(&api, "from-secret", "Ready", "True", "Available").await;
    wait_for_condition(
        &api,
        "from-release",
        "CredentialsValid",
        "False",
        "CredentialsNotFound",
    )
    .await;
}

#[tokio::test]
async fn fixing_the_secret_recovers_without_touching_the_provider() {
    let (_, ns) = support::namespace_with_crds("provider-rotation").await;
    let fake = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    let wrong = "sk-wrong-9a8b7c6d5e4f3a2b";
    create_secret(&ns, "key", wrong).await;
    // A long interval: only the Secret's change can explain a quick recovery.
    create_provider(
        &ns,
        "openai",
        openai_spec(
            &fake,
            json!({"healthCheck": {"interval": "5m", "timeout": "2s"}}),
        ),
    )
    .await;
    let operator = OperatorProcess::start(&ns.name).await;

    let api = ns.api::<LLMProvider>();
    wait_for_condition(&api, "openai", "CredentialsValid", "False", "Unauthorized").await;
    let message = api
        .get("openai")
        .await
        .expect("get")
        .status
        .expect("status")
        .conditions[0]
        .message
        .clone();
    assert!(
        !message.contains(wrong),
        "the refused key is scrubbed from the message: {message}"
    );

    let patch = json!({ "stringData": { "apiKey": KEY } });
    ns.api::<Secret>()
        .patch("key", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("fix secret");
    wait_for_condition(&api, "openai", "Ready", "True", "Available").await;
    let provider = api.get("openai").await.expect("get");
    assert_eq!(
        provider.metadata.generation,
        Some(1),
        "the LLMProvider itself was not changed"
    );
    assert_eq!(
        provider.status.and_then(|s| s.credential_hash),
        Some(credential_hash(KEY))
    );

    // No credential value anywhere a person or a log pipeline can read.
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events");
    let observed = format!(
        "{}\n{}\n{}",
        operator.log(),
        serde_json::to_string(&api.get("openai").await.expect("get")).expect("json"),
        serde_json::to_string(&events.items).expect("json")
    );
    for secret in [KEY, wrong] {
        assert!(
            !observed.contains(secret),
            "a credential value appears in logs, status or events"
        );
    }
}

async fn resource_versions(api: &Api<LLMProvider>) -> Vec<Option<String>> {
    let list = api.list(&ListParams::default()).await.expect("list");
    list.items
        .iter()
        .map(|p| p.metadata.resource_version.clone())
        .collect()
}

#[tokio::test]
async fn steady_state_makes_no_status_writes() {
    let (_, ns) = support::namespace_with_crds("provider-quiet").await;
    create_secret(&ns, "key", KEY).await;
    let mut fakes = Vec::new();
    for i in 0..5 {
        let fake = FakeProvider::start(Behaviour::default()).await;
        create_provider(
            &ns,
            &format!("p{i}"),
            openai_spec(
                &fake,
                // Headroom so that one slow probe on a busy machine is not a real change.
                json!({"healthCheck": {"interval": "2s", "timeout": "2s", "failureThreshold": 3}}),
            ),
        )
        .await;
        fakes.push(fake);
    }
    let operator = OperatorProcess::start(&ns.name).await;
    let api = ns.api::<LLMProvider>();
    for i in 0..5 {
        wait_for_condition(&api, &format!("p{i}"), "Ready", "True", "Available").await;
    }
    let writes = r#"agent_operator_status_writes_total{controller="llmprovider"}"#;
    let before = operator
        .metric(writes)
        .await
        .expect("status writes are counted");
    let versions = resource_versions(&api).await;
    let probes_before: u64 = fakes.iter().map(FakeProvider::requests).sum();

    // Several probe intervals pass: every provider is probed again, nothing is written.
    wait_until(
        WAIT,
        "every provider to be probed three more times",
        || async {
            fakes
                .iter()
                .all(|f| f.requests() >= probes_before / 5 + 3)
                .then_some(())
        },
    )
    .await;
    let after = operator
        .metric(writes)
        .await
        .expect("status writes are counted");
    let versions_after = resource_versions(&api).await;
    assert_eq!(after, before, "no status write while nothing changes");
    assert_eq!(versions_after, versions, "no resourceVersion changed");
}

#[tokio::test]
async fn a_hanging_provider_does_not_delay_the_others() {
    let (_, ns) = support::namespace_with_crds("provider-hang").await;
    create_secret(&ns, "key", KEY).await;
    let hanging = FakeProvider::start(Behaviour {
        delay: Duration::from_secs(600),
        ..Behaviour::default()
    })
    .await;
    create_provider(
        &ns,
        "hanging",
        openai_spec(
            &hanging,
            json!({"healthCheck": {"interval": "10s", "timeout": "10s"}}),
        ),
    )
    .await;
    let healthy = FakeProvider::start(Behaviour::default()).await;
    create_provider(&ns, "healthy", openai_spec(&healthy, json!({}))).await;
    let _operator = OperatorProcess::start(&ns.name).await;

    let api = ns.api::<LLMProvider>();
    wait_for_condition(&api, "healthy", "Ready", "True", "Available").await;
    // While the hanging probe waits out its timeout, the healthy provider keeps being probed on
    // its own 1s interval.
    let seen = healthy.requests();
    wait_until(
        Duration::from_secs(8),
        "the healthy provider to be probed while the other hangs",
        || async { (healthy.requests() >= seen + 3).then_some(()) },
    )
    .await;
    assert!(
        condition(&api, "hanging", "Ready")
            .await
            .is_none_or(|c| c.0 != "True")
    );
    wait_for_condition(&api, "hanging", "Ready", "False", "Timeout").await;
}

#[tokio::test]
async fn two_hundred_healthy_providers_probed_every_five_seconds_write_no_status() {
    let (_, ns) = support::namespace_with_crds("provider-scale").await;
    create_secret(&ns, "key", KEY).await;
    // One fake endpoint serves all of them; each LLMProvider is probed on its own schedule.
    let fake = FakeProvider::start(Behaviour::default()).await;
    let count = 200;
    for i in 0..count {
        create_provider(
            &ns,
            &format!("p{i:03}"),
            openai_spec(
                &fake,
                json!({"healthCheck": {"interval": "5s", "timeout": "3s", "failureThreshold": 3}}),
            ),
        )
        .await;
    }
    let operator = OperatorProcess::start(&ns.name).await;
    let api = ns.api::<LLMProvider>();
    wait_all_ready(&api, count, Duration::from_secs(120)).await;
    let writes = r#"agent_operator_status_writes_total{controller="llmprovider"}"#;
    let before = operator
        .metric(writes)
        .await
        .expect("status writes are counted");
    let probes_before = fake.requests();
    // One minute of probing: 200 providers every 5 s is about 2,400 probes.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let probes = fake.requests() - probes_before;
    let after = operator
        .metric(writes)
        .await
        .expect("status writes are counted");
    assert!(
        probes >= 2000,
        "the providers kept being probed ({probes} probes in a minute)"
    );
    assert_eq!(after, before, "healthy providers caused status writes");
}

#[tokio::test]
async fn a_rotated_key_the_provider_refuses_does_not_roll_the_agents() {
    let (_, ns) = support::namespace_with_crds("provider-bad-rotation").await;
    let fake = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    create_secret(&ns, "key", KEY).await;
    create_provider(&ns, "openai", openai_spec(&fake, json!({}))).await;
    let agent: agent_operator::api::AgentDeployment = serde_json::from_value(json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentDeployment", "metadata": {"name": "support"},
        "spec": {"image": "ghcr.io/example/agent:1", "providers": [{"name": "openai"}]}
    }))
    .expect("agent");
    ns.api::<agent_operator::api::AgentDeployment>()
        .create(&PostParams::default(), &agent)
        .await
        .expect("create agent");
    let _operator = OperatorProcess::start(&ns.name).await;
    let deployments = ns.api::<k8s_openapi::api::apps::v1::Deployment>();
    let api = ns.api::<LLMProvider>();
    wait_for_condition(&api, "openai", "Ready", "True", "Available").await;
    // The agent's first rollout uses the key once the probe validated it: wait until the agent
    // has seen the provider Ready, so the generation read next is the one that must hold.
    let agents = ns.api::<agent_operator::api::AgentDeployment>();
    wait_until(WAIT, "the agent to see its provider Ready", || async {
        let status = agents.get("support").await.ok()?.status?;
        (status.active_provider.as_deref() == Some("openai")).then_some(())
    })
    .await;
    let generation = wait_until(WAIT, "the agent's Deployment", || async {
        deployments
            .get_opt("support")
            .await
            .ok()?
            .and_then(|d| d.metadata.generation)
    })
    .await;

    let rotate = |key: &'static str| {
        let secrets = ns.api::<Secret>();
        async move {
            let patch = json!({ "stringData": { "apiKey": key } });
            secrets
                .patch("key", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("rotate");
        }
    };
    rotate("sk-broken-rotation-00000000").await;
    wait_for_condition(&api, "openai", "CredentialsValid", "False", "Unauthorized").await;
    // Give the agent controller the same events it would roll on; the pods must stay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = deployments
        .get("support")
        .await
        .expect("deployment")
        .metadata
        .generation;
    assert_eq!(
        held,
        Some(generation),
        "the agent rolled to a key its provider refuses"
    );

    let good = "sk-good-rotation-11111111";
    fake.set(|b| b.api_key = Some(good.into()));
    rotate(good).await;
    wait_until(WAIT, "the agent to roll to the accepted key", || async {
        (deployments.get("support").await.ok()?.metadata.generation > Some(generation))
            .then_some(())
    })
    .await;
}
