//! One reconcile of an AgentDeployment, as a pipeline: resolve references → build children →
//! apply what changed → remove children no longer wanted → report status.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use tracing::instrument;

use super::AgentController;
use super::events::{budget_events, events_for};
use super::status::{BrokenReference, StatusInputs, desired_status, pod_problems};
use crate::api::AgentDeployment;
use crate::api::conditions::{is_condition_true, now_to_the_second};
use crate::api::llm_provider::{LLMProvider, condition as provider_condition};
use crate::controller::apply::{apply_if_changed, create_if_absent, delete_if_present};
use crate::controller::chain::resolve_chain;
use crate::controller::compact::CachedPod;
use crate::controller::written_status::status_patch;
use crate::resources::budget_lease::{
    LEASE_INTERVAL, LEASE_TOKEN_KEY, lease_secret, lease_secret_name, new_token,
};
use crate::resources::deployment::{DeploymentInputs, SECRETS_HASH_ANNOTATION, deployment};
use crate::resources::labels::selector_string;
use crate::resources::names::{DNS_SUBDOMAIN_MAX, child_name, service_name};
use crate::resources::provider_config::{PROVIDER_CONFIG_ANNOTATION, config_map, provider_config};
use crate::resources::router_sidecar::router_of;
use crate::resources::{hpa, network_policy, pdb, service, service_account, short_hash};

pub const CONTROLLER: &str = "agentdeployment";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("AgentDeployment has no namespace")]
    MissingNamespace,
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("cannot delete {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("cannot update the status: {source}")]
    UpdateStatus { source: kube::Error },
}

impl ReconcileError {
    /// Every value of [`Self::reason`], for the metrics' zero-valued series.
    pub const REASONS: &[&str] = &["MissingNamespace", "Apply", "Delete", "UpdateStatus"];

    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::MissingNamespace => "MissingNamespace",
            ReconcileError::Apply { .. } => "Apply",
            ReconcileError::Delete { .. } => "Delete",
            ReconcileError::UpdateStatus { .. } => "UpdateStatus",
        }
    }
}

/// Names of an agent's children.
pub struct ChildNames {
    pub deployment: String,
    pub service: String,
    pub service_account: String,
    pub config_map: String,
    pub lease_secret: String,
}

pub fn child_names(agent: &str) -> ChildNames {
    ChildNames {
        deployment: child_name(agent, "", DNS_SUBDOMAIN_MAX),
        service: service_name(agent),
        service_account: child_name(agent, "", DNS_SUBDOMAIN_MAX),
        config_map: child_name(agent, "providers", DNS_SUBDOMAIN_MAX),
        lease_secret: lease_secret_name(agent),
    }
}

#[instrument(skip_all, fields(otel.name = "reconcile AgentDeployment", kind = "AgentDeployment", namespace = agent.namespace(), name = %agent.name_any(), reconcile_id = %crate::controller::reconcile_id()))]
pub async fn reconcile(
    agent: Arc<AgentDeployment>,
    controller: Arc<AgentController>,
) -> Result<Action, ReconcileError> {
    // Decisions need whole caches: the first lists may still be arriving.
    controller.context.readiness.wait_for_caches().await;
    // Observed when the reconcile ends, on every path, errors included.
    let _timer = controller.context.metrics.reconcile_timer(CONTROLLER);
    // Being deleted: the garbage collector removes the children; applying them again would
    // only race it, and the agent's metric series must not come back.
    if agent.meta().deletion_timestamp.is_some() {
        super::forget_metrics(&controller.context.metrics, &agent);
        return Ok(Action::await_change());
    }
    let client = &controller.context.client;
    let namespace = agent.namespace().ok_or(ReconcileError::MissingNamespace)?;
    let name = agent.name_any();
    let names = child_names(&name);
    let caches = &controller.caches;

    // Resolve references from the caches.
    // Mount only credentials whose Secret key exists: a missing one would keep every pod from
    // starting, while the provider's status already reports it.
    let chain = resolve_chain(
        &caches.providers,
        &agent.spec.workload.providers,
        &namespace,
        |_, credential| secret_has_key(&controller, &namespace, &credential.name, &credential.key),
    );
    let broken = broken_secret_references(&controller, &agent, &namespace);
    let current_deployment = caches
        .deployments
        .get(&ObjectRef::new(&names.deployment).within(&namespace));

    // With a budget, the routers are leased it with the token of the agent's lease Secret.
    let leased = agent.spec.budget.is_some() && router_of(&agent.spec.workload).is_some();
    let mut lease_token = None;

    // Build the desired children.
    let credentials: Vec<_> = chain
        .iter()
        .filter_map(|p| p.credential.clone().map(|c| (p.name.clone(), c)))
        .collect();
    let inputs = DeploymentInputs {
        config_map: names.config_map.clone(),
        service_account: agent
            .spec
            .workload
            .service_account_name
            .clone()
            .unwrap_or_else(|| names.service_account.clone()),
        credentials,
        secrets_hash: secrets_hash(
            &controller,
            &agent,
            &namespace,
            current_deployment.as_deref(),
        ),
        router: controller.context.router.clone(),
        lease_secret: leased.then(|| names.lease_secret.clone()),
    };
    // A Deployment created before its providers' first probe would hash credentials not yet
    // judged, and roll every pod again once they are: one apply of an agent with its provider
    // would start its pods twice.
    let age = agent
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(|created| Timestamp::now().duration_since(created.0).try_into().ok())
        .unwrap_or(CREDENTIAL_GRACE);
    let unjudged_credentials = if current_deployment.is_none() {
        unjudged_credentials(&controller, &agent, &namespace, age)
    } else {
        Vec::new()
    };
    let provider_endpoints: Vec<String> = chain.iter().filter_map(|p| p.endpoint.clone()).collect();
    let config = provider_config(&chain, &agent.spec.tools, router_of(&agent.spec.workload));

    // Apply. A child the API server refuses is reported in status before the error is
    // returned for a retry: without that, an agent would show nothing while it fails.
    let applied: Result<(), ReconcileError> = async {
        let apply_err = |kind: &'static str, name: &str| {
            let name = name.to_string();
            move |source| ReconcileError::Apply { kind, name, source }
        };
        if agent.spec.workload.service_account_name.is_none() {
            apply_if_changed(
                client,
                &caches.service_accounts,
                service_account::service_account(&agent, &names.service_account),
            )
            .await
            .map_err(apply_err("ServiceAccount", &names.service_account))?;
        } else {
            delete_if_present(
                client,
                &caches.service_accounts,
                &namespace,
                &names.service_account,
            )
            .await
            .map_err(|source| ReconcileError::Delete {
                kind: "ServiceAccount",
                name: names.service_account.clone(),
                source,
            })?;
        }
        if leased {
            let token = ensure_lease_token(client, &controller, &agent, &names.lease_secret)
                .await
                .map_err(apply_err("Secret", &names.lease_secret))?;
            lease_token = Some(token);
        } else {
            delete_if_present(client, &caches.secrets, &namespace, &names.lease_secret)
                .await
                .map_err(|source| ReconcileError::Delete {
                    kind: "Secret",
                    name: names.lease_secret.clone(),
                    source,
                })?;
        }
        let config_map = config_map(&agent, &names.config_map, &config);
        let config_hash = config_hash(&config_map);
        if apply_if_changed(client, &caches.config_maps, config_map)
            .await
            .map_err(apply_err("ConfigMap", &names.config_map))?
        {
            refresh_mounted_config(
                client,
                &running_pods(&controller, &namespace, &name),
                &config_hash,
            )
            .await;
        }
        if unjudged_credentials.is_empty() {
            apply_if_changed(
                client,
                &caches.deployments,
                deployment(&agent, &names.deployment, &inputs),
            )
            .await
            .map_err(apply_err("Deployment", &names.deployment))?;
        }
        apply_or_delete(
            client,
            &caches.services,
            &namespace,
            &names.service,
            service::service(&agent, &names.service),
            "Service",
        )
        .await?;
        apply_or_delete(
            client,
            &caches.hpas,
            &namespace,
            &names.deployment,
            hpa::horizontal_pod_autoscaler(&agent, &names.deployment, &names.deployment),
            "HorizontalPodAutoscaler",
        )
        .await?;
        apply_or_delete(
            client,
            &caches.pdbs,
            &namespace,
            &names.deployment,
            pdb::pod_disruption_budget(&agent, &names.deployment),
            "PodDisruptionBudget",
        )
        .await?;
        apply_or_delete(
            client,
            &caches.network_policies,
            &namespace,
            &names.deployment,
            network_policy::network_policy(&agent, &names.deployment, &provider_endpoints),
            "NetworkPolicy",
        )
        .await?;
        Ok(())
    }
    .await;
    let mut broken = broken;
    if let Err(error) = &applied
        && let Some(refused) = refused_child(error)
    {
        broken.push(refused);
    }

    // Report.
    let pods = running_pods(&controller, &namespace, &name);
    let agent_pods: Vec<&CachedPod> = pods.iter().map(|p| p.as_ref()).collect();
    let problems = pod_problems(&agent_pods);
    // Counting, events and the write decision compare against the status we last wrote.
    let uid = agent.uid().unwrap_or_default();
    let previous = controller.written.previous(&uid, agent.status.as_ref());
    let budget = match (&agent.spec.budget, &lease_token) {
        (Some(budget), Some(token)) => Some(
            super::lease::round(
                &controller.context.http,
                token,
                budget,
                super::lease::LastStatus {
                    budget: previous.as_ref().and_then(|s| s.budget.as_deref()),
                    conditions: previous
                        .as_ref()
                        .map(|s| s.conditions.as_slice())
                        .unwrap_or_default(),
                    generation: agent.meta().generation,
                },
                &leased_pods(&agent_pods),
                Timestamp::now(),
            )
            .await,
        ),
        _ => None,
    };
    let inputs = StatusInputs {
        pod_problems: &problems,
        generation: agent.meta().generation,
        chain: &chain,
        broken: &broken,
        deployment: current_deployment.as_deref(),
        unjudged_credentials: &unjudged_credentials,
        suspended: agent.spec.suspend,
        selector: selector_string(&name),
        budget: budget.as_ref(),
    };
    let status = desired_status(previous.as_ref(), &inputs, now_to_the_second());
    let metrics = &controller.context.metrics;
    let labels = [namespace.as_str(), name.as_str()];
    metrics
        .agent_ready_replicas
        .with_label_values(&labels)
        .set(i64::from(status.ready_replicas));
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    metrics
        .agent_ready
        .with_label_values(&labels)
        .set(i64::from(ready));
    // At zero from the start, so that the first failover shows as an increase.
    metrics.failovers.with_label_values(&labels).inc_by(0);
    let previous_active = previous.as_ref().and_then(|s| s.active_provider.as_ref());
    // A failover is a switch from one provider to another; losing every provider is reported
    // by ProvidersReady and the NoProviderReady event, not counted here.
    let switched = matches!((previous_active, status.active_provider.as_ref()), (Some(old), Some(new)) if old != new);
    if switched {
        metrics
            .failovers
            .with_label_values(&[namespace.as_str(), name.as_str()])
            .inc();
    }
    match (&budget, &agent.spec.budget) {
        (Some(outcome), Some(spec)) => {
            for (limit, percent) in &outcome.used_percent {
                metrics
                    .agent_budget_used
                    .with_label_values(&[namespace.as_str(), name.as_str(), limit])
                    .set(percent / 100.0);
            }
            metrics
                .agent_budget_alert
                .with_label_values(&labels)
                .set(f64::from(spec.alert_at_percent) / 100.0);
        }
        _ => super::forget_budget_metrics(metrics, &labels),
    }
    let alert_percent = agent.spec.budget.as_ref().map(|b| b.alert_at_percent);
    for event in budget_events(previous.as_ref(), &status, alert_percent, budget.as_ref()) {
        controller.context.publish_event(&agent, event).await;
    }
    for event in events_for(previous.as_ref(), &status, &chain) {
        controller.context.publish_event(&agent, event).await;
    }
    if previous.as_ref() != Some(&status) {
        let api: Api<AgentDeployment> = Api::namespaced(client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(status_patch(previous.as_ref(), &status)),
        )
        .await
        .map_err(|source| ReconcileError::UpdateStatus { source })?;
        controller.written.remember(uid, status.clone());
        controller.context.metrics.status_written(CONTROLLER);
    }
    applied?;
    if !unjudged_credentials.is_empty() && age < CREDENTIAL_GRACE {
        // A provider's verdict triggers a reconcile through its watch; the end of the grace
        // does not.
        return Ok(Action::requeue(CREDENTIAL_GRACE - age));
    }
    if budget.is_some() {
        // The next lease round: the routers' usage reaches the operator only by being read.
        return Ok(Action::requeue(LEASE_INTERVAL));
    }
    // Owned objects, providers and Secrets all trigger reconciles through watches; the periodic
    // requeue only repairs drift nobody announced.
    Ok(Action::requeue(std::time::Duration::from_secs(600)))
}

/// The pods whose routers are leased the budget: those the kubelet runs, with their
/// addresses; a terminating pod still counts, for its last readings.
fn leased_pods(pods: &[&CachedPod]) -> Vec<super::lease::LeasedPod> {
    pods.iter()
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Running" || phase == "Pending")
        })
        .map(|pod| super::lease::LeasedPod {
            name: pod.name_any(),
            address: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            stopping: pod.metadata.deletion_timestamp.is_some(),
        })
        .collect()
}

/// The token of the agent's lease Secret, made once and kept: a new token would refuse the
/// operator until every pod's mounted copy caught up. The Secret is created, never applied,
/// while the cache lacks it, so two reconciles that both miss it agree on the first token.
async fn ensure_lease_token(
    client: &Client,
    controller: &AgentController,
    agent: &AgentDeployment,
    secret: &str,
) -> Result<String, kube::Error> {
    let cache = &controller.caches.secrets;
    let existing =
        create_if_absent(client, cache, lease_secret(agent, secret, &new_token())).await?;
    let token = token_of(&existing).unwrap_or_else(new_token);
    // Keeps the Secret's labels and owner current, and replaces a token someone emptied.
    apply_if_changed(client, cache, lease_secret(agent, secret, &token)).await?;
    Ok(token)
}

/// The lease token a Secret holds, if it holds one.
fn token_of(secret: &Secret) -> Option<String> {
    let token = secret.data.as_ref()?.get(LEASE_TOKEN_KEY)?;
    String::from_utf8(token.0.clone())
        .ok()
        .filter(|t| !t.is_empty())
}

/// The agent's pods in the cache.
fn running_pods(controller: &AgentController, namespace: &str, agent: &str) -> Vec<Arc<CachedPod>> {
    let agent_label = crate::resources::labels::selector_labels(agent);
    controller
        .caches
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            agent_label
                .iter()
                .all(|(key, value)| p.label(key) == Some(value.as_str()))
        })
        .collect()
}

/// The hash of a provider ConfigMap's content, stamped on the pods that mount it.
fn config_hash(config_map: &ConfigMap) -> String {
    short_hash(
        serde_json::to_vec(&config_map.data)
            .unwrap_or_default()
            .as_slice(),
    )
}

/// Stamps `pods` with the new config's hash. The kubelet refreshes a pod's ConfigMap volumes
/// when it syncs the pod, which an update of the pod triggers; otherwise that happens only at
/// its periodic sync, about a minute or more later, and a provider's new endpoint or health
/// would reach the routers that late. One patch per running pod per config change; the
/// template is not touched, so nothing rolls. A failed stamp only delays the refresh to the
/// kubelet's own schedule.
async fn refresh_mounted_config(client: &kube::Client, pods: &[Arc<CachedPod>], config_hash: &str) {
    let patch = serde_json::json!({
        "metadata": {"annotations": {PROVIDER_CONFIG_ANNOTATION: config_hash}}
    });
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::warn!(pod = %name, %error, "cannot stamp the pod with its new provider config; the kubelet refreshes it at its next sync");
            }
        }
    }
}

/// The condition cause of a failed apply or delete; `None` for errors that are not about a
/// child (the status write itself).
fn refused_child(error: &ReconcileError) -> Option<BrokenReference> {
    let (kind, name, source) = match error {
        ReconcileError::Apply { kind, name, source }
        | ReconcileError::Delete { kind, name, source } => (*kind, name, source),
        _ => return None,
    };
    // The API server's own message, without the client's wrapping.
    let error = match source {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    Some(BrokenReference::ApplyFailed {
        kind,
        name: name.clone(),
        error,
    })
}

async fn apply_or_delete<K>(
    client: &kube::Client,
    cache: &kube::runtime::reflector::Store<K>,
    namespace: &str,
    name: &str,
    desired: Option<K>,
    kind: &'static str,
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    match desired {
        Some(object) => apply_if_changed(client, cache, object)
            .await
            .map(|_| ())
            .map_err(|source| ReconcileError::Apply {
                kind,
                name: name.to_string(),
                source,
            }),
        None => delete_if_present(client, cache, namespace, name)
            .await
            .map(|_| ())
            .map_err(|source| ReconcileError::Delete {
                kind,
                name: name.to_string(),
                source,
            }),
    }
}

fn secret_has_key(controller: &AgentController, namespace: &str, secret: &str, key: &str) -> bool {
    controller
        .caches
        .secrets
        .get(&ObjectRef::new(secret).within(namespace))
        .is_some_and(|s| {
            s.data.as_ref().is_some_and(|d| d.contains_key(key))
                || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
        })
}

fn broken_secret_references(
    controller: &AgentController,
    agent: &AgentDeployment,
    namespace: &str,
) -> Vec<BrokenReference> {
    agent
        .spec
        .workload
        .secrets
        .iter()
        .filter_map(|env| {
            let reference = &env.secret_key_ref;
            match controller
                .caches
                .secrets
                .get(&ObjectRef::<Secret>::new(&reference.name).within(namespace))
            {
                None => Some(BrokenReference::SecretNotFound {
                    secret: reference.name.clone(),
                }),
                Some(_)
                    if !secret_has_key(controller, namespace, &reference.name, &reference.key) =>
                {
                    Some(BrokenReference::SecretKeyNotFound {
                        secret: reference.name.clone(),
                        key: reference.key.clone(),
                    })
                }
                Some(_) => None,
            }
        })
        .collect()
}

/// How long a new agent waits for its providers' credentials to be accepted before it starts
/// its pods without them. Applied together (`kubectl apply -f dir/`), a provider's first probe
/// may run before its Secret reached the cache and report it missing for a moment.
const CREDENTIAL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The providers of the chain whose credential holds the creation of the agent's Deployment:
/// no probe has judged it yet (no `CredentialsValid` condition), or, while the agent is younger
/// than [`CREDENTIAL_GRACE`], it is not accepted yet or the provider is not in the cache yet.
/// A provider that was probed and not reached reports the condition Unknown and holds the agent
/// only during the grace.
fn unjudged_credentials(
    controller: &AgentController,
    agent: &AgentDeployment,
    namespace: &str,
    age: std::time::Duration,
) -> Vec<String> {
    agent
        .spec
        .workload
        .providers
        .iter()
        .filter(|link| {
            controller
                .caches
                .providers
                .get(&ObjectRef::<LLMProvider>::new(&link.name).within(namespace))
                .map_or(age < CREDENTIAL_GRACE, |provider| {
                    let judged = provider.status.as_ref().and_then(|s| {
                        s.conditions
                            .iter()
                            .find(|c| c.type_ == provider_condition::CREDENTIALS_VALID)
                    });
                    provider.spec.credentials.is_some()
                        && match judged {
                            None => true,
                            Some(condition) => condition.status != "True" && age < CREDENTIAL_GRACE,
                        }
                })
        })
        .map(|link| link.name.clone())
        .collect()
}

/// The pod-template hash of every credential and secret the pods use. A provider whose new key
/// its own probe has not accepted holds the rollout: the running pods keep the last good key
/// rather than roll to a broken one.
fn secrets_hash(
    controller: &AgentController,
    agent: &AgentDeployment,
    namespace: &str,
    current: Option<&Deployment>,
) -> String {
    let mut parts = Vec::new();
    for link in &agent.spec.workload.providers {
        let Some(provider) = controller
            .caches
            .providers
            .get(&ObjectRef::<LLMProvider>::new(&link.name).within(namespace))
        else {
            continue;
        };
        if provider.spec.credentials.is_none() {
            continue;
        }
        let status = provider.status.as_ref();
        let validated = status.is_some_and(|s| {
            is_condition_true(&s.conditions, provider_condition::CREDENTIALS_VALID)
        });
        match status.and_then(|s| s.credential_hash.clone()) {
            Some(hash) if validated => parts.push(format!("provider/{}={hash}", link.name)),
            _ => {
                if let Some(held) = current_secrets_hash(current) {
                    return held;
                }
            }
        }
    }
    for env in &agent.spec.workload.secrets {
        let reference = &env.secret_key_ref;
        let value = controller
            .caches
            .secrets
            .get(&ObjectRef::<Secret>::new(&reference.name).within(namespace))
            .and_then(|s| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key).map(|v| short_hash(&v.0)))
            });
        parts.push(format!(
            "secret/{}/{}={}",
            reference.name,
            reference.key,
            value.unwrap_or_default()
        ));
    }
    short_hash(parts.join("\n").as_bytes())
}

fn current_secrets_hash(current: Option<&Deployment>) -> Option<String> {
    current?
        .spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(SECRETS_HASH_ANNOTATION)
        .cloned()
}
