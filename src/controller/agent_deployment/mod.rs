//! The AgentDeployment controller: keeps each agent's children as its spec and its providers'
//! health say, and reports truthful status.

mod budget;
pub mod events;
mod lease;
pub mod reconcile;
pub mod status;
pub mod watches;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, predicates};
use tokio_util::sync::CancellationToken;

use super::shared::Subscription;
use super::written_status::WrittenStatus;
use super::{Context, Scope, census_of, reflected};
use crate::api::AgentDeployment;
use crate::api::agent_deployment::AgentDeploymentStatus;
use crate::api::llm_provider::LLMProvider;
use crate::controller::compact::CachedPod;
use crate::resources::labels::AGENT_LABEL;
use crate::runtime::census::ObjectFacts;
use crate::runtime::metrics::Metrics;
use kube::ResourceExt;
use reconcile::{CONTROLLER, ReconcileError, reconcile};

/// Watch caches this controller keeps per scope, besides the shared ones (`Shared`).
pub const CACHES: usize = 8;

/// The caches this controller shares with the others (`shared.rs`).
pub struct Shared {
    pub agents: Subscription<AgentDeployment>,
    pub providers: Subscription<LLMProvider>,
    pub secrets: Subscription<Secret>,
}

/// Read-only views of everything a reconcile reads.
pub struct Caches {
    pub agents: Store<AgentDeployment>,
    pub providers: Store<LLMProvider>,
    pub secrets: Store<Secret>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub service_accounts: Store<ServiceAccount>,
    pub config_maps: Store<ConfigMap>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub network_policies: Store<NetworkPolicy>,
    /// The agents' pods, to see crash loops and image pull errors.
    pub pods: Store<CachedPod>,
}

pub struct AgentController {
    pub context: Arc<Context>,
    pub caches: Caches,
    /// The status last written per agent; see `written_status`.
    pub written: WrittenStatus<AgentDeploymentStatus>,
}

pub async fn run(
    context: Arc<Context>,
    scope: Scope,
    shared: Shared,
    concurrency: u16,
    shutdown: CancellationToken,
) {
    context
        .metrics
        .start_controller(CONTROLLER, ReconcileError::REASONS);
    let client = &context.client;
    // Children carry the agent label; task objects share the managed-by label but not this one,
    // so this controller never caches the tasks' Jobs, pods and ConfigMaps.
    let owned = || watcher::Config::default().labels(AGENT_LABEL);

    let metrics = context.metrics.clone();
    let agents = shared.agents.store.clone();
    let agent_stream = shared
        .agents
        .changes(move |agent| forget_metrics(&metrics, agent));
    let _census = census_of(&context, CONTROLLER, &scope, &agents, |agent| {
        let conditions = agent.status.as_ref().map(|s| s.conditions.as_slice());
        ObjectFacts::new("AgentDeployment", conditions.unwrap_or_default(), None)
    });
    let providers = shared.providers.store.clone();
    let provider_stream = shared.providers.changes(|_| {});
    let secrets = shared.secrets.store.clone();
    let secret_stream = shared.secrets.changes(|_| {});
    let (deployments, deployment_stream) =
        reflected(&context, scope.api::<Deployment>(client), owned());
    let (services, service_stream) = reflected(&context, scope.api::<Service>(client), owned());
    let (service_accounts, service_account_stream) =
        reflected(&context, scope.api::<ServiceAccount>(client), owned());
    let (config_maps, config_map_stream) =
        reflected(&context, scope.api::<ConfigMap>(client), owned());
    let (hpas, hpa_stream) = reflected(
        &context,
        scope.api::<HorizontalPodAutoscaler>(client),
        owned(),
    );
    let (pdbs, pdb_stream) = reflected(&context, scope.api::<PodDisruptionBudget>(client), owned());
    let (network_policies, network_policy_stream) =
        reflected(&context, scope.api::<NetworkPolicy>(client), owned());

    let (pods, pod_stream) = reflected(&context, scope.api::<CachedPod>(client), owned());
    let controller = Arc::new(AgentController {
        context: context.clone(),
        caches: Caches {
            agents: agents.clone(),
            providers: providers.clone(),
            secrets,
            deployments,
            services,
            service_accounts,
            config_maps,
            hpas,
            pdbs,
            network_policies,
            pods: pods.clone(),
        },
        written: WrittenStatus::default(),
    });
    // Our own status writes do not change the generation; only spec changes trigger here.
    let agent_trigger = agent_stream.predicate_filter(predicates::generation, Default::default());
    let (agents_for_providers, agents_for_secrets, providers_for_secrets) =
        (agents.clone(), agents.clone(), providers.clone());

    Controller::for_stream(agent_trigger, agents)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .owns_stream(deployment_stream)
        .owns_stream(service_stream)
        .owns_stream(service_account_stream)
        .owns_stream(config_map_stream)
        .owns_stream(hpa_stream)
        .owns_stream(pdb_stream)
        .owns_stream(network_policy_stream)
        .watches_stream(pod_stream, watches::agent_of_pod)
        .watches_stream(provider_stream, move |provider| {
            watches::agents_using_provider(&agents_for_providers, &provider)
        })
        .watches_stream(secret_stream, move |secret| {
            watches::agents_using_secret(&agents_for_secrets, &providers_for_secrets, &secret)
        })
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, controller)
        .for_each(|result| {
            context.record_reconcile(CONTROLLER, result);
            std::future::ready(())
        })
        .await;
}

/// Drops the metric series of a deleted agent, so dashboards do not show it forever.
pub fn forget_metrics(metrics: &Metrics, agent: &AgentDeployment) {
    let namespace = agent.namespace().unwrap_or_default();
    let name = agent.name_any();
    let labels = [namespace.as_str(), name.as_str()];
    let _ = metrics.agent_ready_replicas.remove_label_values(&labels);
    let _ = metrics.agent_ready.remove_label_values(&labels);
    let _ = metrics.failovers.remove_label_values(&labels);
    forget_budget_metrics(metrics, &labels);
}

/// Removes the budget's series, when the agent or its budget is gone.
pub fn forget_budget_metrics(metrics: &Metrics, labels: &[&str; 2]) {
    let _ = metrics.agent_budget_alert.remove_label_values(labels);
    for limit in ["tokens", "cost"] {
        let _ = metrics
            .agent_budget_used
            .remove_label_values(&[labels[0], labels[1], limit]);
    }
}

fn error_policy(
    object: Arc<AgentDeployment>,
    error: &ReconcileError,
    controller: Arc<AgentController>,
) -> Action {
    controller
        .context
        .requeue_after_error(CONTROLLER, object.as_ref(), error.reason(), error)
}
