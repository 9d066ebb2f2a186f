//! The dashboard's view of the cluster: one reflector per kind and namespace in scope, trimmed
//! of what no page shows, and a counter that moves on every change so open pages re-render.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::model::{CacheState, Snapshot};
use super::scope::Visibility;
use crate::api::{AgentDeployment, AgentTask, GROUP, LLMProvider, VERSION};

/// The annotation `kubectl apply` writes: a copy of the spec, never shown.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub struct Cache {
    agents: Vec<Store<AgentDeployment>>,
    providers: Vec<Store<LLMProvider>>,
    tasks: Vec<Store<AgentTask>>,
    events: Vec<Store<Event>>,
    streams: Vec<Arc<StreamHealth>>,
    changes: watch::Sender<u64>,
    visibility: Visibility,
}

/// Whether one watch stream has listed everything once, and its last error while it fails.
struct StreamHealth {
    what: String,
    synced: Mutex<bool>,
    error: Mutex<Option<String>>,
}

impl Cache {
    /// Starts the reflectors of everything `visibility` allows; they run until the process ends.
    pub fn start(client: Client, visibility: Visibility) -> Arc<Cache> {
        let mut cache = Cache::empty(visibility);
        let everything = watcher::Config::default();
        // Only events about our kinds: a busy cluster's other events would cost memory for nothing.
        let ours = watcher::Config::default()
            .fields(&format!("involvedObject.apiVersion={GROUP}/{VERSION}"));
        for namespace in cache.visibility.scope.watch_namespaces() {
            let ns = namespace.as_deref();
            let store = cache.reflect(api(&client, ns), &everything, "agentdeployments", ns);
            cache.agents.push(store);
            let store = cache.reflect(api(&client, ns), &everything, "llmproviders", ns);
            cache.providers.push(store);
            let store = cache.reflect(api(&client, ns), &everything, "agenttasks", ns);
            cache.tasks.push(store);
        }
        for namespace in cache.visibility.events.clone() {
            let ns = namespace.as_deref();
            let store = cache.reflect(api(&client, ns), &ours, "events", ns);
            cache.events.push(store);
        }
        Arc::new(cache)
    }

    fn empty(visibility: Visibility) -> Cache {
        let (changes, _) = watch::channel(0);
        Cache {
            agents: Vec::new(),
            providers: Vec::new(),
            tasks: Vec::new(),
            events: Vec::new(),
            streams: Vec::new(),
            changes,
            visibility,
        }
    }

    /// Registers one watch stream's health, not yet listed.
    fn track(&mut self, what: String) -> Arc<StreamHealth> {
        let health = Arc::new(StreamHealth {
            what,
            synced: Mutex::new(false),
            error: Mutex::new(None),
        });
        self.streams.push(health.clone());
        health
    }

    /// A receiver that sees the change counter move.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The change counter now: a page rendered after reading it shows every change up to it.
    pub fn version(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Waits, at most `limit`, until every stream has listed once or is failing. The address is
    /// printed before the first lists come back, so without this a page asked for right after
    /// start would show an empty cluster. A failing stream counts as settled: a watch the
    /// account may not make must not hold up every page; the page reports its error instead.
    pub async fn settled(&self, limit: Duration) {
        let mut changes = self.subscribe();
        let settle = async {
            // Subscribed first: a stream settling after the check below still wakes the wait.
            while !self.is_settled() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, settle).await;
    }

    fn is_settled(&self) -> bool {
        self.streams
            .iter()
            .all(|stream| *lock(&stream.synced) || lock(&stream.error).is_some())
    }

    /// Everything the pages show, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let mut problems = Vec::new();
        let mut loading = false;
        for stream in &self.streams {
            if let Some(error) = lock(&stream.error).clone() {
                problems.push(format!("watching {}: {error}", stream.what));
            }
            loading |= !*lock(&stream.synced);
        }
        Snapshot {
            agents: all(&self.agents),
            providers: all(&self.providers),
            tasks: all(&self.tasks),
            events: all(&self.events),
            state: CacheState {
                scope: self.visibility.scope.label(),
                note: self.visibility.note.clone(),
                events_visible: !self.visibility.events.is_empty(),
                loading,
                problems,
            },
            now: Timestamp::now(),
        }
    }

    fn reflect<K>(
        &mut self,
        api: Api<K>,
        config: &watcher::Config,
        resource: &str,
        namespace: Option<&str>,
    ) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
        K: 'static,
    {
        let what = match namespace {
            Some(namespace) => format!("{resource} in {namespace}"),
            None => format!("{resource} in all namespaces"),
        };
        let health = self.track(what);
        let (store, writer) = reflector::store();
        let stream = watcher(api, config.clone())
            .default_backoff()
            .modify(trim)
            .reflect(writer);
        let changes = self.changes.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        *lock(&health.error) = None;
                        if matches!(event, watcher::Event::InitDone) {
                            *lock(&health.synced) = true;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(stream = %health.what, %error, "watch failed; retrying");
                        *lock(&health.error) = Some(error.to_string());
                    }
                }
                changes.send_modify(|count| *count = count.wrapping_add(1));
            }
        });
        store
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Drops what no page shows: managed fields and the last-applied copy of the spec.
fn trim<K: ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove(LAST_APPLIED);
}

fn all<K>(stores: &[Store<K>]) -> Vec<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores.iter().flat_map(Store::state).collect()
}

/// A poisoned lock only means a panic elsewhere; the value is still the last one written.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::scope::Scope;

    /// Long enough that a wait ending by its limit fails the test instead of passing it.
    const NEVER: Duration = Duration::from_secs(3600);

    fn cache_with_streams(count: usize) -> (Arc<Cache>, Vec<Arc<StreamHealth>>) {
        let mut cache = Cache::empty(Visibility {
            scope: Scope::Namespaces(vec!["team-a".into()]),
            events: Vec::new(),
            note: None,
        });
        let streams = (0..count)
            .map(|i| cache.track(format!("stream {i}")))
            .collect();
        (Arc::new(cache), streams)
    }

    fn changed(cache: &Cache) {
        cache.changes.send_modify(|count| *count += 1);
    }

    #[tokio::test]
    async fn settling_waits_until_every_stream_listed_or_failed() {
        let (cache, streams) = cache_with_streams(2);
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.settled(NEVER).await }
        });
        *lock(&streams[0].synced) = true;
        changed(&cache);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one stream has not listed yet");
        *lock(&streams[1].error) = Some("forbidden".into());
        changed(&cache);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("settles once the last stream fails")
            .expect("the wait does not panic");
        assert!(
            cache.snapshot().state.loading,
            "a failing stream is still not listed"
        );
    }

    #[tokio::test]
    async fn settling_gives_up_at_its_limit() {
        let (cache, _streams) = cache_with_streams(1);
        cache.settled(Duration::from_millis(20)).await;
        assert!(cache.snapshot().state.loading);
    }
}
