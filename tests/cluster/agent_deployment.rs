//! The AgentDeployment controller against the real API server, kube-controller-manager (which
//! turns Deployments into pods and garbage-collects owned objects) and kwok's simulated pods.

use std::time::Duration;

use agent_operator::api::AgentDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::fake_provider::{Behaviour, FakeProvider};
use crate::support::objects::{KEY, agent, apply, event_reasons, provider};
use crate::support::operator::OperatorProcess;
use crate::support::{self, TestNamespace, wait_until};

const WAIT: Duration = Duration::from_secs(60);

async fn wait_for_ready(
    api: &Api<AgentDeployment>,
    name: &str,
    status: &str,
    reason: &str,
) -> AgentDeployment {
    wait_until(
        WAIT,
        &format!("{name} to be Ready={status} ({reason})"),
        || async {
            let agent = api.get(name).await.ok()?;
            let ready = agent
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (ready.status == status
                && ready.reason == reason
                && agent.status.as_ref()?.observed_generation == agent.metadata.generation)
                .then_some(agent)
        },
    )
    .await
}

fn owned_by(meta: &kube::api::ObjectMeta, owner: &AgentDeployment) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == owner.metadata.uid.as_ref() && o.controller == Some(true))
}

#[tokio::test]
async fn agent_with_two_replicas_becomes_ready_owns_and_restores_its_children_and_deletes_them() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let ns = TestNamespace::with_labels(
        &client,
        "agent-ready",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await;
    let fake = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "support",
        json!({
            "image": "ghcr.io/example/agent:1", "replicas": 2, "providers": [{"name": "openai"}],
            "ports": [{"name": "http", "containerPort": 8080}]
        }),
    )
    .await;
    let operator = OperatorProcess::start(&ns.name).await;

    let agents = ns.api::<AgentDeployment>();
    let ready = wait_for_ready(&agents, "support", "True", "Available").await;
    let status = ready.status.clone().expect("status");
    assert_eq!(
        (status.ready_replicas, status.ready.as_deref()),
        (2, Some("2/2"))
    );
    assert_eq!(status.active_provider.as_deref(), Some("openai"));
    // The pods were admitted although the namespace enforces Pod Security `restricted`.
    let deployment = ns
        .api::<Deployment>()
        .get("support")
        .await
        .expect("deployment");
    assert!(owned_by(&deployment.metadata, &ready));
    assert!(owned_by(
        &ns.api::<Service>()
            .get("support")
            .await
            .expect("service")
            .metadata,
        &ready
    ));
    assert!(owned_by(
        &ns.api::<ServiceAccount>()
            .get("support")
            .await
            .expect("service account")
            .metadata,
        &ready
    ));
    let config = ns
        .api::<ConfigMap>()
        .get("support-providers")
        .await
        .expect("config map");
    assert!(owned_by(&config.metadata, &ready));
    let file = &config.data.expect("data")["providers.json"];
    assert!(file.contains("/var/run/agentoperator/credentials/openai/api-key"));
    assert!(!file.contains(KEY), "no credential value in a ConfigMap");
    let series = format!(
        "agent_operator_agent_ready_replicas{{name=\"support\",namespace=\"{}\"}}",
        ns.name
    );
    assert!(
        operator.metrics().await.contains(&series),
        "the agent has its series"
    );

    // Children deleted by hand come back at once, long before the 10-minute drift requeue:
    // their deletion triggers the owner.
    ns.api::<Service>()
        .delete("support", &DeleteParams::default())
        .await
        .expect("delete the Service");
    ns.api::<ConfigMap>()
        .delete("support-providers", &DeleteParams::default())
        .await
        .expect("delete the provider config");
    wait_until(WAIT, "the deleted children to be created again", || async {
        let service = ns.api::<Service>().get("support").await.ok()?;
        let config = ns.api::<ConfigMap>().get("support-providers").await.ok()?;
        (owned_by(&service.metadata, &ready) && owned_by(&config.metadata, &ready)).then_some(())
    })
    .await;

    agents
        .delete("support", &DeleteParams::foreground())
        .await
        .expect("delete agent");
    wait_until(
        WAIT,
        "the agent's children to be garbage-collected",
        || async {
            let gone = ns
                .api::<Deployment>()
                .get_opt("support")
                .await
                .ok()?
                .is_none()
                && ns.api::<Service>().get_opt("support").await.ok()?.is_none()
                && ns
                    .api::<ConfigMap>()
                    .get_opt("support-providers")
                    .await
                    .ok()?
                    .is_none()
                && ns
                    .api::<ServiceAccount>()
                    .get_opt("support")
                    .await
                    .ok()?
                    .is_none();
            gone.then_some(())
        },
    )
    .await;
    wait_until(WAIT, "the deleted agent's metric series to go", || async {
        (!operator.metrics().await.contains(&series)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn missing_provider_is_a_condition_until_it_is_created() {
    let (_, ns) = support::namespace_with_crds("agent-missing-provider").await;
    agent(
        &ns,
        "support",
        json!({"image": "ghcr.io/example/agent:1", "providers": [{"name": "later"}]}),
    )
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let agents = ns.api::<AgentDeployment>();
    let waiting = wait_for_ready(&agents, "support", "False", "ProviderNotFound").await;
    let message = &waiting
        .status
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready")
        .message
        .clone();
    assert!(
        message.contains("later"),
        "the condition names the missing provider: {message}"
    );

    let fake = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    provider(&ns, "later", &fake).await;
    wait_for_ready(&agents, "support", "True", "Available").await;
}

#[tokio::test]
async fn failover_moves_the_active_provider_without_restarting_pods() {
    let (_, ns) = support::namespace_with_crds("agent-failover").await;
    let first = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    let second = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    provider(&ns, "first", &first).await;
    provider(&ns, "second", &second).await;
    agent(&ns, "support", json!({"image": "ghcr.io/example/agent:1", "providers": [{"name": "first"}, {"name": "second"}]})).await;
    let operator = OperatorProcess::start(&ns.name).await;

    let agents = ns.api::<AgentDeployment>();
    wait_for_ready(&agents, "support", "True", "Available").await;
    let deployments = ns.api::<Deployment>();
    let generation_before = deployments
        .get("support")
        .await
        .expect("deployment")
        .metadata
        .generation;
    let active = |expected: &'static str| {
        let agents = agents.clone();
        let configs = ns.api::<ConfigMap>();
        async move {
            let agent = agents.get("support").await.ok()?;
            let file = configs
                .get("support-providers")
                .await
                .ok()?
                .data?
                .remove("providers.json")?;
            let config: Value = serde_json::from_str(&file).ok()?;
            let first_listed = config["providers"][0]["name"].as_str()?.to_string();
            (agent.status?.active_provider.as_deref() == Some(expected) && first_listed == expected)
                .then_some(())
        }
    };

    // Start-up may briefly activate the second provider; wait for the chain's first choice.
    wait_until(WAIT, "the first provider to be active", || active("first")).await;
    let failovers = format!(
        "agent_operator_failovers_total{{name=\"support\",namespace=\"{}\"}}",
        ns.name
    );
    let failovers_before = operator.metric(&failovers).await.unwrap_or(0.0);
    first.set(|b| b.status = Some(503));
    wait_until(WAIT, "failover to the second provider", || active("second")).await;
    first.set(|b| b.status = None);
    wait_until(WAIT, "the first provider to be active again", || {
        active("first")
    })
    .await;
    let reasons = event_reasons(&ns, "support").await;
    assert!(
        reasons.iter().any(|r| r == "Failover") && reasons.iter().any(|r| r == "ProviderRecovered"),
        "failover and recovery are events: {reasons:?}"
    );
    assert_eq!(
        operator.metric(&failovers).await.unwrap_or(0.0) - failovers_before,
        2.0,
        "both switches are counted, once each"
    );
    let ready = format!(
        "agent_operator_agent_ready_replicas{{name=\"support\",namespace=\"{}\"}}",
        ns.name
    );
    assert_eq!(operator.metric(&ready).await, Some(1.0));
    let generation_after = deployments
        .get("support")
        .await
        .expect("deployment")
        .metadata
        .generation;
    assert_eq!(
        generation_after, generation_before,
        "failover changed the config file, not the pod template"
    );

    // With no provider left the status names none: a merge patch that left the field out
    // would keep the last one there.
    first.set(|b| b.status = Some(503));
    second.set(|b| b.status = Some(503));
    wait_until(WAIT, "no provider to be active", || async {
        let status = agents.get("support").await.ok()?.status?;
        status.active_provider.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn autoscaling_leaves_replicas_to_the_hpa_and_removing_it_restores_them() {
    let (_, ns) = support::namespace_with_crds("agent-autoscaling").await;
    agent(&ns, "support", json!({
        "image": "ghcr.io/example/agent:1",
        "autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}
    }))
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let hpas = ns.api::<HorizontalPodAutoscaler>();
    let hpa = wait_until(WAIT, "the HPA", || async {
        hpas.get_opt("support").await.ok()?
    })
    .await;
    assert_eq!((hpa.spec.min_replicas, hpa.spec.max_replicas), (Some(2), 5));

    // The real HPA controller first raises the Deployment to minReplicas; wait for that so our
    // own scale below does not race with it.
    let deployments = ns.api::<Deployment>();
    wait_until(WAIT, "the HPA to enforce minReplicas", || async {
        (deployments.get("support").await.ok()?.spec.replicas == Some(2)).then_some(())
    })
    .await;
    // Scale the way the HPA does: through the Deployment's scale subresource.
    deployments
        .patch_scale(
            "support",
            &PatchParams::apply("hpa-like").force(),
            &Patch::Apply(json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 4}
            })),
        )
        .await
        .expect("scale");
    // A spec change makes the operator apply the Deployment again.
    let agents = ns.api::<AgentDeployment>();
    agents
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podMetadata": {"labels": {"team": "x"}}}})),
        )
        .await
        .expect("touch agent");
    wait_until(WAIT, "the operator to apply the new pod labels", || async {
        let d = deployments.get("support").await.ok()?;
        (d.spec.template.metadata?.labels?.get("team")? == "x").then_some(())
    })
    .await;
    assert_eq!(
        deployments.get("support").await.expect("get").spec.replicas,
        Some(4),
        "the HPA's replica count survives"
    );
    // Directly: the operator's field manager does not own spec.replicas.
    let applied = deployments.get("support").await.expect("get");
    let ours = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("agent-operator"))
        .map(|m| serde_json::to_string(&m.fields_v1).expect("json"))
        .collect::<String>();
    assert!(!ours.is_empty(), "the operator applied the Deployment");
    assert!(
        !ours.contains("f:replicas"),
        "the operator owns spec.replicas while autoscaling: {ours}"
    );

    agents
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": null, "replicas": 3}})),
        )
        .await
        .expect("turn autoscaling off");
    wait_until(
        WAIT,
        "the HPA to go and replicas to be restored",
        || async {
            let gone = hpas.get_opt("support").await.ok()?.is_none();
            let replicas = deployments.get("support").await.ok()?.spec.replicas;
            (gone && replicas == Some(3)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn secret_change_rolls_pods_and_an_unchanged_agent_writes_nothing() {
    let (_, ns) = support::namespace_with_crds("agent-secrets").await;
    apply(&ns.api::<Secret>(), "tools", json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tools"}, "stringData": {"token": "tok-1"}
    }))
    .await;
    agent(
        &ns,
        "support",
        json!({
            "image": "ghcr.io/example/agent:1", "ports": [{"name": "http", "containerPort": 8080}],
            "secrets": [{"name": "TOOLS_TOKEN", "secretKeyRef": {"name": "tools", "key": "token"}}]
        }),
    )
    .await;
    let operator = OperatorProcess::start(&ns.name).await;
    let agents = ns.api::<AgentDeployment>();
    wait_for_ready(&agents, "support", "True", "Available").await;

    // Steady state: force reconciles by touching an unrelated label, then compare versions.
    let versions = |ns: &TestNamespace| {
        let (d, s, c, a) = (
            ns.api::<Deployment>(),
            ns.api::<Service>(),
            ns.api::<ConfigMap>(),
            ns.api::<ServiceAccount>(),
        );
        async move {
            vec![
                d.get("support").await.expect("d").metadata.resource_version,
                s.get("support").await.expect("s").metadata.resource_version,
                c.get("support-providers")
                    .await
                    .expect("c")
                    .metadata
                    .resource_version,
                a.get("support").await.expect("a").metadata.resource_version,
            ]
        }
    };
    // kube-controller-manager keeps updating the Deployment's status until the rollout has
    // settled; only then is a changed resourceVersion the operator's doing.
    let deployments = ns.api::<Deployment>();
    wait_until(WAIT, "the rollout to settle", || async {
        let d = deployments.get("support").await.ok()?;
        let status = d.status?;
        let settled = status.observed_generation == d.metadata.generation
            && status.conditions.iter().flatten().any(|c| {
                c.type_.as_deref() == Some("Progressing")
                    && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            })
            && status.available_replicas == d.spec.replicas;
        settled.then_some(())
    })
    .await;
    let before = versions(&ns).await;
    let reconciles = r#"agent_operator_reconciles_total{controller="agentdeployment"}"#;
    let count = operator.metric(reconciles).await.unwrap_or(0.0);
    agents
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("touch");
    // A label change is not a spec change; trigger through a Secret the agent does not read.
    apply(
        &ns.api::<Secret>(),
        "unrelated",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}}),
    )
    .await;
    ns.api::<Secret>()
        .patch(
            "tools",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("touch secret metadata");
    wait_until(WAIT, "another reconcile", || async {
        (operator.metric(reconciles).await.unwrap_or(0.0) > count).then_some(())
    })
    .await;
    assert_eq!(
        versions(&ns).await,
        before,
        "reconciling an unchanged agent changed a resourceVersion"
    );

    // A change of the Secret's data rolls the pods.
    let generation = deployments
        .get("support")
        .await
        .expect("d")
        .metadata
        .generation;
    ns.api::<Secret>()
        .patch(
            "tools",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": "tok-2"}})),
        )
        .await
        .expect("rotate");
    wait_until(WAIT, "the pod template to change", || async {
        (deployments.get("support").await.ok()?.metadata.generation > generation).then_some(())
    })
    .await;
    let pods = ns
        .api::<k8s_openapi::api::core::v1::Pod>()
        .list(&ListParams::default())
        .await
        .expect("pods");
    let spec_text = serde_json::to_string(&pods.items).expect("json");
    assert!(
        !spec_text.contains("tok-2") && !spec_text.contains("tok-1"),
        "no secret value in a pod spec"
    );
}

/// Reasons of the Events recorded about an object.
#[tokio::test]
async fn crash_looping_pods_show_in_status_and_events() {
    let (_, ns) = support::namespace_with_crds("agent-crashloop").await;
    agent(&ns, "support", json!({
        "image": "ghcr.io/example/agent:1",
        "podMetadata": {"annotations": {"kwok.agentoperator.dev/waiting-reason": "CrashLoopBackOff"}}
    }))
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let agents = ns.api::<AgentDeployment>();
    let degraded = wait_for_ready(&agents, "support", "False", "CrashLoopBackOff").await;
    let condition = degraded
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "CrashLoopBackOff")
    );
    assert!(
        condition.message.contains("support-"),
        "the message names the pod: {}",
        condition.message
    );
    wait_until(WAIT, "a Degraded event", || async {
        event_reasons(&ns, "support")
            .await
            .iter()
            .any(|r| r == "Degraded")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn missing_secret_key_is_a_condition_until_it_exists_and_no_credential_leaks() {
    let (_, ns) = support::namespace_with_crds("agent-missing-key").await;
    let fake = FakeProvider::start(Behaviour {
        api_key: Some(KEY.into()),
        ..Behaviour::default()
    })
    .await;
    provider(&ns, "openai", &fake).await;
    apply(&ns.api::<Secret>(), "tools", json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tools"}, "stringData": {"other": "x"}
    }))
    .await;
    agent(
        &ns,
        "support",
        json!({
            "image": "ghcr.io/example/agent:1", "providers": [{"name": "openai"}],
            "secrets": [{"name": "TOOLS_TOKEN", "secretKeyRef": {"name": "tools", "key": "token"}}]
        }),
    )
    .await;
    let operator = OperatorProcess::start(&ns.name).await;
    let agents = ns.api::<AgentDeployment>();
    let waiting = wait_for_ready(&agents, "support", "False", "SecretKeyNotFound").await;
    let message = waiting
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready")
        .message;
    assert!(
        message.contains("tools") && message.contains("token"),
        "the condition names the Secret and key: {message}"
    );

    ns.api::<Secret>()
        .patch(
            "tools",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": "tool-secret-value"}})),
        )
        .await
        .expect("add the key");
    let ready = wait_for_ready(&agents, "support", "True", "Available").await;

    // Nothing a person or a log pipeline reads holds a credential value.
    let config_maps = ns
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .expect("config maps");
    let events = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&ListParams::default())
        .await
        .expect("events");
    let readable = format!(
        "{}\n{}\n{}\n{}",
        operator.log(),
        serde_json::to_string(&ready.status).expect("json"),
        serde_json::to_string(&config_maps.items).expect("json"),
        serde_json::to_string(&events.items).expect("json"),
    );
    for secret in [KEY, "tool-secret-value"] {
        assert!(
            !readable.contains(secret),
            "a credential value is readable outside its Secret"
        );
    }
}

#[tokio::test]
async fn disruption_budget_network_policy_and_suspend_follow_the_spec() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let (_, ns) = support::namespace_with_crds("agent-policies").await;
    agent(&ns, "support", json!({
        "image": "ghcr.io/example/agent:1", "replicas": 2,
        "ports": [{"name": "http", "containerPort": 8080}],
        "tools": [{"name": "tickets", "url": "http://tickets.support.svc.cluster.local:8080/api"}],
        "disruptionBudget": {"maxUnavailable": 1},
        "networkPolicy": {"enabled": true, "allowedEgressCidrs": [{"cidr": "203.0.113.0/24", "ports": [443]}]}
    }))
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let agents = ns.api::<AgentDeployment>();
    wait_for_ready(&agents, "support", "True", "Available").await;

    let pdb = ns
        .api::<PodDisruptionBudget>()
        .get("support")
        .await
        .expect("the PodDisruptionBudget exists");
    assert_eq!(
        pdb.spec.and_then(|s| s.max_unavailable),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let policy = ns
        .api::<NetworkPolicy>()
        .get("support")
        .await
        .expect("the NetworkPolicy exists");
    let egress = serde_json::to_string(&policy.spec.expect("spec").egress).expect("json");
    for expected in ["203.0.113.0/24", "\"support\"", "53"] {
        assert!(
            egress.contains(expected),
            "egress allows {expected}: {egress}"
        );
    }

    agents
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "suspend": true, "disruptionBudget": null, "networkPolicy": null
            }})),
        )
        .await
        .expect("suspend");
    wait_for_ready(&agents, "support", "True", "Suspended").await;
    // The condition follows the spec at once; the count follows the Deployment, whose scale-down
    // the next reconcile sees.
    wait_until(
        Duration::from_secs(30),
        "the agent to count 0/0",
        || async {
            let ready = agents.get("support").await.ok()?.status?.ready?;
            (ready == "0/0").then_some(())
        },
    )
    .await;
    assert_eq!(
        ns.api::<Deployment>()
            .get("support")
            .await
            .expect("d")
            .spec
            .replicas,
        Some(0)
    );
    wait_until(WAIT, "the PDB and NetworkPolicy to be removed", || async {
        let pdb = ns
            .api::<PodDisruptionBudget>()
            .get_opt("support")
            .await
            .ok()?;
        let policy = ns.api::<NetworkPolicy>().get_opt("support").await.ok()?;
        (pdb.is_none() && policy.is_none()).then_some(())
    })
    .await;
    assert!(
        ns.api::<Service>()
            .get_opt("support")
            .await
            .expect("get")
            .is_some(),
        "suspend keeps everything else"
    );
}

#[tokio::test]
async fn a_request_above_its_limit_is_the_api_servers_refusal_in_a_condition() {
    // Not refused at `kubectl apply`: the rule would need CEL over int-or-string quantities,
    // which Kubernetes 1.33 refuses as too costly. The API server refuses the Deployment, and
    // the agent says so.
    let (_, ns) = support::namespace_with_crds("agent-request-above-limit").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "support",
        json!({
            "image": "registry.example/agent:1", "providers": [{"name": "openai"}],
            "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}
        }),
    )
    .await;
    let agents = ns.api::<AgentDeployment>();
    let refused = wait_for_ready(&agents, "support", "False", "ApplyFailed").await;
    let ready = refused
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(
        ready
            .message
            .contains("must be less than or equal to memory limit"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn a_child_the_api_server_refuses_is_a_condition_until_it_is_allowed() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let (_, ns) = support::namespace_with_crds("agent-refused-child").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    let _operator = OperatorProcess::start(&ns.name).await;
    apply(
        &ns.api::<ResourceQuota>(),
        "no-services",
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"},
            "spec": {"hard": {"services": "0"}}
        }),
    )
    .await;
    provider(&ns, "openai", &fake).await;
    agent(
        &ns,
        "support",
        json!({
            "image": "registry.example/agent:1", "providers": [{"name": "openai"}],
            "ports": [{"name": "http", "containerPort": 8080}]
        }),
    )
    .await;

    let agents = ns.api::<AgentDeployment>();
    let refused = wait_for_ready(&agents, "support", "False", "ApplyFailed").await;
    let ready = refused
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(
        ready.message.contains("Service support") && ready.message.contains("exceeded quota"),
        "{}",
        ready.message
    );

    ns.api::<ResourceQuota>()
        .delete("no-services", &DeleteParams::default())
        .await
        .expect("delete the quota");
    wait_for_ready(&agents, "support", "True", "Available").await;
    assert!(
        ns.api::<Service>()
            .get_opt("support")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn an_agent_applied_with_its_provider_rolls_out_once() {
    let (_client, ns) = support::namespace_with_crds("agent-one-rollout").await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    // Both at once, as `kubectl apply -f dir/` does: the agent's first reconcile may come
    // before the provider's first probe.
    let (_, _) = tokio::join!(
        provider(&ns, "openai", &fake),
        agent(
            &ns,
            "support",
            json!({"image": "registry.example/agent:1", "replicas": 1, "providers": [{"name": "openai"}]}),
        )
    );
    let agents = ns.api::<AgentDeployment>();
    wait_for_ready(&agents, "support", "True", "Available").await;
    let deployment = ns
        .api::<Deployment>()
        .get("support")
        .await
        .expect("the Deployment");
    assert_eq!(
        deployment.metadata.generation,
        Some(1),
        "the pod template was written once, with the validated credential"
    );
    let replica_sets = ns
        .api::<k8s_openapi::api::apps::v1::ReplicaSet>()
        .list(&ListParams::default())
        .await
        .expect("ReplicaSets");
    assert_eq!(replica_sets.items.len(), 1, "one rollout");
}

#[tokio::test]
async fn a_budget_is_a_condition_its_lease_secret_is_owned_and_an_idle_round_writes_nothing() {
    let (_, ns) = support::namespace_with_crds("agent-budget").await;
    let fake = FakeProvider::start(Behaviour::default()).await;
    provider(&ns, "openai", &fake).await;
    // The pattern admits the name; only the time zone database can say it is none.
    agent(&ns, "support", json!({
        "image": "registry.example/agent:1", "providers": [{"name": "openai"}],
        "budget": {"maxTokens": 100000, "window": {"period": "Week", "timeZone": "Mars/Olympus"}}
    }))
    .await;
    let _operator = OperatorProcess::start(&ns.name).await;
    let agents = ns.api::<AgentDeployment>();
    let budget_condition = |reason: &'static str| {
        let agents = agents.clone();
        async move {
            wait_until(WAIT, &format!("BudgetExceeded {reason}"), || async {
                let agent = agents.get("support").await.ok()?;
                let condition = agent
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "BudgetExceeded" && c.reason == reason)?;
                (condition.observed_generation == agent.metadata.generation).then_some(condition)
            })
            .await
        }
    };
    let invalid = budget_condition("InvalidTimeZone").await;
    assert_eq!(invalid.status, "True");
    assert!(
        invalid.message.contains("Mars/Olympus") && invalid.message.contains("IANA"),
        "{}",
        invalid.message
    );
    let secret = ns
        .api::<Secret>()
        .get("support-router-lease")
        .await
        .expect("the lease Secret");
    assert_eq!(
        secret.metadata.owner_references.expect("owned")[0].name,
        "support"
    );
    // The Deployment follows the provider's first probe; the condition does not wait for it.
    let deployment = wait_until(WAIT, "the Deployment", || async {
        ns.api::<Deployment>().get_opt("support").await.ok()?
    })
    .await;
    let router = deployment
        .spec
        .template
        .spec
        .and_then(|s| s.init_containers)
        .and_then(|c| c.into_iter().next())
        .expect("the router");
    assert!(
        router
            .args
            .unwrap_or_default()
            .join(" ")
            .contains("--lease-listen 0.0.0.0:8791")
    );

    agents
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"budget": {"window": {"timeZone": "Asia/Tokyo"}}}})),
        )
        .await
        .expect("fix the zone");
    let within = budget_condition("WithinBudget").await;
    assert_eq!(within.status, "False");
    let status = agents
        .get("support")
        .await
        .expect("a")
        .status
        .expect("status");
    let window = status.budget.expect("the window");
    // Weeks start on Monday at midnight in Tokyo, which is 15:00 UTC on Sunday.
    assert!(window.window_start.ends_with("T15:00:00Z"), "{window:?}");

    // Rounds run every 10 s; with nothing spent they write nothing. Measured from a settled
    // agent: its pod's start is a status change of its own.
    let before = wait_until(WAIT, "the agent Ready", || async {
        let agent = agents.get("support").await.ok()?;
        let ready = agent.status.as_ref()?.conditions.iter().any(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && c.observed_generation == agent.metadata.generation
        });
        ready.then_some(agent)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let after = agents.get("support").await.expect("a");
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "an idle budget's rounds wrote the status: {:#?} became {:#?}",
        before.status, after.status
    );

    // Without a budget, the Secret and the condition go.
    agents
        .patch(
            "support",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"budget": null}})),
        )
        .await
        .expect("remove the budget");
    wait_until(WAIT, "the lease Secret to go", || async {
        ns.api::<Secret>()
            .get_opt("support-router-lease")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_until(WAIT, "the condition to go", || async {
        let status = agents.get("support").await.ok()?.status?;
        (!status
            .conditions
            .iter()
            .any(|c| c.type_ == "BudgetExceeded")
            && status.budget.is_none())
        .then_some(())
    })
    .await;
}
