//! The LLMProvider controller: probes every provider on its interval, and at once when its spec
//! or its credential Secret changes.

pub mod reconcile;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates};
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;
use std::sync::Mutex;

use super::shared::Subscription;
use super::written_status::WrittenStatus;
use super::{Context, Scope, census_of};
use crate::api::llm_provider::LLMProvider;
use crate::api::llm_provider::LLMProviderStatus;
use crate::providers::health::Health;
use crate::runtime::census::ObjectFacts;
use reconcile::{CONTROLLER, ReconcileError, reconcile};

/// The caches this controller shares with the others (`shared.rs`): all it reads.
pub struct Shared {
    pub providers: Subscription<LLMProvider>,
    pub secrets: Subscription<Secret>,
}

pub struct ProviderController {
    pub context: Arc<Context>,
    pub secrets: Store<Secret>,
    /// Health of each LLMProvider between probes, by UID. Lost on restart, when it is rebuilt
    /// from status (readiness and consecutive failures are there).
    pub health: Mutex<HashMap<String, Health>>,
    /// The status last written per provider; see `written_status`.
    pub written: WrittenStatus<LLMProviderStatus>,
}

pub async fn run(
    context: Arc<Context>,
    scope: Scope,
    Shared { providers, secrets }: Shared,
    concurrency: u16,
    shutdown: CancellationToken,
) {
    context
        .metrics
        .start_controller(CONTROLLER, ReconcileError::REASONS);
    let controller = Arc::new(ProviderController {
        context: context.clone(),
        secrets: secrets.store.clone(),
        health: Mutex::new(HashMap::new()),
        written: WrittenStatus::default(),
    });
    let secrets = secrets.changes(|_| {});
    let forget = controller.clone();
    let provider_store = providers.store.clone();
    let providers = providers.changes(move |provider| forget_provider(&forget, provider));
    let _census = census_of(&context, CONTROLLER, &scope, &provider_store, |provider| {
        let conditions = provider.status.as_ref().map(|s| s.conditions.as_slice());
        ObjectFacts::new("LLMProvider", conditions.unwrap_or_default(), None)
    });
    // Status writes do not change the generation, so filtering on it keeps our own status
    // patches from triggering another probe.
    let providers = providers.predicate_filter(predicates::generation, Default::default());

    let lookup = provider_store.clone();
    Controller::for_stream(providers, provider_store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .watches_stream(secrets, move |secret| {
            providers_using_secret(&lookup, &secret)
        })
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, controller)
        .for_each(|result| {
            context.record_reconcile(CONTROLLER, result);
            std::future::ready(())
        })
        .await;
}

/// LLMProviders whose credentials live in this Secret.
fn providers_using_secret(
    providers: &Store<LLMProvider>,
    secret: &Secret,
) -> Vec<ObjectRef<LLMProvider>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    providers
        .state()
        .iter()
        .filter(|provider| provider.namespace() == namespace)
        .filter(|provider| {
            provider
                .spec
                .credentials
                .as_ref()
                .is_some_and(|c| c.name == name)
        })
        .map(|provider| ObjectRef::from_obj(provider.as_ref()))
        .collect()
}

fn forget_provider(controller: &ProviderController, provider: &LLMProvider) {
    let context = &controller.context;
    let (namespace, name) = (
        provider.namespace().unwrap_or_default(),
        provider.name_any(),
    );
    let _ = context
        .metrics
        .provider_up
        .remove_label_values(&[namespace.as_str(), name.as_str()]);
    let _ = context
        .metrics
        .provider_probe_duration
        .remove_label_values(&[namespace.as_str(), name.as_str()]);
    if let Some(uid) = provider.uid() {
        if let Ok(mut health) = controller.health.lock() {
            health.remove(&uid);
        }
        controller.written.forget(&uid);
    }
}

fn error_policy(
    object: Arc<LLMProvider>,
    error: &ReconcileError,
    controller: Arc<ProviderController>,
) -> Action {
    controller
        .context
        .requeue_after_error(CONTROLLER, object.as_ref(), error.reason(), error)
}
