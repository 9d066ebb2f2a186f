//! The controllers and what they share: the Kubernetes client, metrics, readiness and the HTTP
//! client for provider probes. `run_all` starts one controller per kind and watched scope.

pub mod agent_deployment;
pub mod agent_task;
pub mod apply;
pub mod backoff;
pub mod chain;
pub mod compact;
pub mod event_recorder;
pub mod index;
pub mod llm_provider;
pub mod relist;
pub mod shared;
pub mod trim;
pub mod written_status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::join_all;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Client, Resource};
use tokio_util::sync::CancellationToken;

use self::event_recorder::{EventRecorder, Occurrence};
use crate::Error;
use crate::resources::router_sidecar::RouterDefaults;
use crate::runtime::http::Readiness;
use crate::runtime::metrics::Metrics;
use crate::runtime::options::RunOptions;

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Client for provider probes; connections are pooled across probes.
    pub http: reqwest::Client,
    /// Publishes Kubernetes Events; it also counts repeats into series.
    pub events: EventRecorder,
    /// Retry delays of objects whose reconcile failed.
    pub error_backoff: backoff::ErrorBackoff,
    /// The LLM router sidecar's image and default telemetry endpoint.
    pub router: RouterDefaults,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        router: RouterDefaults,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("agent-operator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|source| Error::HttpClient { source })?;
        let events = EventRecorder::new(
            client.clone(),
            "agent-operator",
            std::env::var("POD_NAME").ok(),
        );
        Ok(Self {
            client,
            metrics,
            readiness,
            http,
            events,
            error_backoff: backoff::ErrorBackoff::default(),
            router,
        })
    }

    /// Counts a finished reconcile and resets the error backoff of an object that succeeded.
    pub fn record_reconcile<K, E>(
        &self,
        controller: &str,
        result: Result<
            (ObjectRef<K>, Action),
            kube::runtime::controller::Error<E, kube::runtime::watcher::Error>,
        >,
    ) where
        K: Resource,
        E: std::error::Error,
    {
        self.metrics
            .reconciles
            .with_label_values(&[controller])
            .inc();
        match result {
            Ok((object, _)) => self.error_backoff.reset(&backoff_key(
                controller,
                object.namespace.as_deref(),
                &object.name,
            )),
            Err(error) => tracing::debug!(%error, "reconcile did not complete"),
        }
    }

    /// The requeue of an object whose reconcile failed: counted by reason, backed off per object.
    pub fn requeue_after_error<K: Resource>(
        &self,
        controller: &str,
        object: &K,
        reason: &str,
        error: &dyn std::error::Error,
    ) -> Action {
        self.metrics
            .reconcile_errors
            .with_label_values(&[controller, reason])
            .inc();
        tracing::warn!(%error, "reconcile failed; retrying");
        let meta = object.meta();
        let key = backoff_key(
            controller,
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
        );
        Action::requeue(self.error_backoff.next_delay(&key, rand::random::<f64>()))
    }

    /// Publishes an Event about an AgentDeployment.
    pub async fn publish_event(
        &self,
        agent: &crate::api::AgentDeployment,
        event: agent_deployment::events::AgentEvent,
    ) {
        self.publish(agent, event.warning, event.reason, event.note)
            .await;
    }

    /// Publishes an Event about one of our objects. A failure to publish is logged, never
    /// fatal: events inform people, the status is the source of truth.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let occurrence = Occurrence {
            warning,
            reason,
            action: "Reconcile",
            note,
        };
        if let Err(error) = self
            .events
            .publish(&object.object_ref(&()), occurrence)
            .await
        {
            tracing::warn!(%error, reason, "cannot publish an event");
        }
    }
}

/// What a watch cache can hold.
pub trait Cached:
    kube::Resource<DynamicType = ()>
    + trim::Trim
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: kube::Resource<DynamicType = ()>
        + trim::Trim
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A reflected watch whose cache counts toward readiness. Children are watched by a label of
/// ours only, so the caches hold the operator's objects, not the whole cluster's; each object
/// is trimmed (`trim.rs`) to what reconciles read before it is cached.
pub fn reflected<K>(
    context: &Context,
    api: kube::Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cached,
{
    reflected_observing(context, api, config, |_| {})
}

/// As `reflected`, keeping `index` in step with the store.
pub fn reflected_indexed<K, Key, Member>(
    context: &Context,
    api: kube::Api<K>,
    config: watcher::Config,
    index: &index::Index<K, Key, Member>,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cached,
    Key: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    Member: Ord + Clone + Send + Sync + 'static,
{
    let index = index.clone();
    reflected_observing(context, api, config, move |event| index.observe(event))
}

fn reflected_observing<K>(
    context: &Context,
    api: kube::Api<K>,
    config: watcher::Config,
    observe: impl FnMut(&WatchEvent<K>) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cached,
{
    let (store, touches) = reflected_touches(context, api, config, observe);
    let stream = touches.map_ok(|touched| touched.object);
    (store, without_errors(stream))
}

/// An object a watch event touched: applied, or deleted (by a `Delete` event, or found missing
/// by a relist).
#[derive(Clone, Debug)]
pub struct Touched<K> {
    pub object: K,
    pub deleted: bool,
}

/// The reflected watch behind every cache: trims each object, keeps the store, reports to
/// readiness, and yields every object a change touched.
///
/// Not only the applied ones: a deleted child must trigger its owner (to create it again) and
/// a deleted Secret the agents that use it (to report it missing). That includes the objects a
/// relist shows only by their absence, deleted during a watch gap with no `Delete` event ever
/// sent (`relist.rs`).
fn reflected_touches<K>(
    context: &Context,
    api: kube::Api<K>,
    config: watcher::Config,
    mut observe: impl FnMut(&WatchEvent<K>) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<Touched<K>, watcher::Error>> + Send + 'static,
)
where
    K: Cached,
{
    let (store, writer) = reflector::store::<K>();
    let synced = Arc::new(context.readiness.sync_marker());
    let failed = synced.clone();
    let mut vanished = relist::Vanished::new(store.clone());
    let stream = watcher::watcher(api, config)
        .backoff(watch_backoff())
        .modify(trim::Trim::trim)
        .reflect(writer)
        .inspect_err(move |_| failed.observe_error())
        .map_ok(move |event: WatchEvent<K>| {
            synced.observe(&event);
            observe(&event);
            let gone = vanished.observe(&event);
            let mut touched = match event {
                WatchEvent::Apply(object) | WatchEvent::InitApply(object) => vec![Touched {
                    object,
                    deleted: false,
                }],
                WatchEvent::Delete(object) => vec![Touched {
                    object,
                    deleted: true,
                }],
                WatchEvent::Init | WatchEvent::InitDone => Vec::new(),
            };
            touched.extend(gone.into_iter().map(|object| Touched {
                object: K::clone(&object),
                deleted: true,
            }));
            futures::stream::iter(touched.into_iter().map(Ok))
        })
        .try_flatten();
    (store, stream)
}

/// Keeps a watch's errors away from the controller. Each watch retries by itself (with
/// `watch_backoff`) and reports to readiness; an error passed on would also pause the
/// controller's merged trigger stream, whose single backoff grows with the errors of every
/// watch at once and stalled all reconciles for minutes after an API-server restart (found by
/// the fault suite).
pub(crate) fn without_errors<K>(
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
{
    futures::StreamExt::filter_map(stream, |item| async move {
        match item {
            Ok(object) => Some(Ok(object)),
            Err(error) => {
                tracing::warn!(%error, "watch failed; retrying");
                None
            }
        }
    })
}

/// Counts the objects of `store` in the operator's census (see `runtime/census.rs`) while the
/// returned guard lives, that is while the controller runs.
pub fn census_of<K>(
    context: &Context,
    controller: &str,
    scope: &Scope,
    store: &Store<K>,
    facts: fn(&K) -> crate::runtime::census::ObjectFacts,
) -> crate::runtime::census::CensusGuard
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    context
        .metrics
        .census
        .register(format!("{controller}/{scope:?}"), move || {
            store.state().iter().map(|object| facts(object)).collect()
        })
}

/// A short random id that tells the log lines of one reconcile apart from the next.
pub fn reconcile_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn backoff_key(controller: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{controller}/{}/{name}", namespace.unwrap_or_default())
}

/// Where a controller watches: all namespaces, or one.
#[derive(Clone, Debug)]
pub enum Scope {
    Cluster,
    Namespace(String),
}

impl Scope {
    pub fn from_options(options: &RunOptions) -> Vec<Scope> {
        if options.namespaces.is_empty() {
            vec![Scope::Cluster]
        } else {
            options
                .namespaces
                .iter()
                .cloned()
                .map(Scope::Namespace)
                .collect()
        }
    }

    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match self {
            Scope::Cluster => Api::all(client.clone()),
            Scope::Namespace(namespace) => Api::namespaced(client.clone(), namespace),
        }
    }
}

/// Runs every controller in every scope until `shutdown`.
pub async fn run_all(context: Arc<Context>, options: RunOptions, shutdown: CancellationToken) {
    let scopes = Scope::from_options(&options);
    // The provider controller's caches are all shared.
    let caches_per_scope = shared::CACHES + agent_deployment::CACHES + agent_task::CACHES;
    context
        .readiness
        .expect_caches(scopes.len() * caches_per_scope);
    let mut controllers: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    for scope in scopes {
        let concurrency = options.concurrency;
        let mut caches = shared::SharedCaches::watch(&context, &scope);
        let for_providers = llm_provider::Shared {
            providers: caches.providers.subscribe(),
            secrets: caches.secrets.subscribe(),
        };
        let for_agents = agent_deployment::Shared {
            agents: caches.agents.subscribe(),
            providers: caches.providers.subscribe(),
            secrets: caches.secrets.subscribe(),
        };
        let for_tasks = agent_task::Shared {
            agents: caches.agents.subscribe(),
            providers: caches.providers.subscribe(),
        };
        controllers.push(Box::pin(llm_provider::run(
            context.clone(),
            scope.clone(),
            for_providers,
            concurrency,
            shutdown.clone(),
        )));
        controllers.push(Box::pin(agent_deployment::run(
            context.clone(),
            scope.clone(),
            for_agents,
            concurrency,
            shutdown.clone(),
        )));
        controllers.push(Box::pin(agent_task::run(
            context.clone(),
            scope,
            for_tasks,
            concurrency,
            shutdown.clone(),
        )));
        controllers.push(Box::pin(caches.run(shutdown.clone())));
    }
    join_all(controllers).await;
}

/// Delays between attempts of a failed watch: client-go's shape (0.8 s doubling, with jitter,
/// reset after 2 min of health), capped at 5 s instead of 30 s. An API-server restart fails
/// every watch for its whole outage; with a 30 s cap the operator then stayed blind for up to
/// a minute after the API was back (found by the fault suite). One operator's watches retrying
/// every 5 s cost the API server nothing.
pub(crate) fn watch_backoff()
-> kube::runtime::utils::ResetTimerBackoff<kube::runtime::watcher::ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(builder.into(), Duration::from_secs(120))
}
