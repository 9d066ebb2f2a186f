//! Caches of the kinds that more than one controller reads: LLMProviders (all three),
//! AgentDeployments (their own controller and the tasks') and Secrets (the providers' and the
//! agents' controllers). Each kind is watched and stored once per scope, and every controller
//! that reads it gets a stream of its own of the objects each change touched, as a watch of
//! its own would give it. Before, each controller watched these kinds for itself: a copy of
//! every agent in two stores, of every provider in three, and of every Secret in the scope
//! (with cluster scope, every Secret of the cluster, Helm's release Secrets among them) in two.

use std::pin::Pin;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::{Cached, Context, Scope, Touched, reflected_touches};
use crate::api::{AgentDeployment, LLMProvider};

/// Watch caches that `SharedCaches` keeps per scope.
pub const CACHES: usize = 3;

type Touches<K> = Pin<Box<dyn Stream<Item = Result<Touched<K>, watcher::Error>> + Send>>;

/// One watched kind, its store, and the streams handed out to the controllers that read it.
pub struct SharedCache<K: Cached> {
    store: Store<K>,
    touches: Touches<K>,
    subscribers: Vec<mpsc::UnboundedSender<Touched<Arc<K>>>>,
}

impl<K: Cached> SharedCache<K> {
    fn watch(context: &Context, api: kube::Api<K>, config: watcher::Config) -> Self {
        let (store, touches) = reflected_touches(context, api, config, |_| {});
        Self {
            store,
            touches: Box::pin(touches),
            subscribers: Vec::new(),
        }
    }

    /// The store and the changes of the kind, for one controller. Take every subscription
    /// before `run`.
    ///
    /// The changes are unbounded, so that a controller whose reconciles are all busy (and which
    /// then takes no trigger) holds up neither the watch nor the other controllers that read the
    /// kind; what waits for it is a pointer per change, to an object version the store held.
    pub fn subscribe(&mut self) -> Subscription<K> {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers.push(sender);
        Subscription {
            store: self.store.clone(),
            touches: receiver,
        }
    }

    /// Follows the watch and hands each touched object to every subscriber, until `shutdown`
    /// or until every subscriber is gone. A watch error is retried by the watch itself and
    /// reaches no subscriber (see `without_errors`).
    async fn run(self, shutdown: CancellationToken) {
        let Self {
            touches,
            mut subscribers,
            ..
        } = self;
        let mut touches = std::pin::pin!(super::without_errors(touches));
        let forwarding = async move {
            while let Some(Ok(touched)) = touches.next().await {
                let touched = Touched {
                    object: Arc::new(touched.object),
                    deleted: touched.deleted,
                };
                subscribers.retain(|subscriber| subscriber.unbounded_send(touched.clone()).is_ok());
                if subscribers.is_empty() {
                    return;
                }
            }
        };
        tokio::select! {
            () = forwarding => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// One controller's view of a shared cache.
pub struct Subscription<K: Cached> {
    pub store: Store<K>,
    touches: mpsc::UnboundedReceiver<Touched<Arc<K>>>,
}

impl<K: Cached> Subscription<K> {
    /// The objects each change touched, as a watch of the controller's own would yield them;
    /// `on_delete` runs for each object deleted before it is yielded.
    pub fn changes(
        self,
        on_delete: impl Fn(&K) + Send + 'static,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.touches.map(move |touched| {
            if touched.deleted {
                on_delete(&touched.object);
            }
            Ok(K::clone(&touched.object))
        })
    }
}

/// Helm keeps each revision of each release in a Secret of this type: a compressed copy of
/// every manifest it installed, often tens or hundreds of KiB, ten revisions a release by
/// default. No provider key or agent environment variable lives in one.
pub const HELM_RELEASE_SECRET_TYPE: &str = "helm.sh/release.v1";

/// The Secrets the controllers may read: all but Helm's releases, left out by the API server
/// (`type` is a field it selects Secrets by), so they are neither sent nor decoded.
fn secrets_read() -> watcher::Config {
    watcher::Config::default().fields(&format!("type!={HELM_RELEASE_SECRET_TYPE}"))
}

/// The caches of one scope that several controllers share.
pub struct SharedCaches {
    pub providers: SharedCache<LLMProvider>,
    pub agents: SharedCache<AgentDeployment>,
    pub secrets: SharedCache<Secret>,
}

impl SharedCaches {
    pub fn watch(context: &Context, scope: &Scope) -> Self {
        let client = &context.client;
        Self {
            providers: SharedCache::watch(context, scope.api(client), watcher::Config::default()),
            agents: SharedCache::watch(context, scope.api(client), watcher::Config::default()),
            secrets: SharedCache::watch(context, scope.api(client), secrets_read()),
        }
    }

    /// Runs the three watches; call it once every controller has subscribed.
    pub async fn run(self, shutdown: CancellationToken) {
        futures::future::join3(
            self.providers.run(shutdown.clone()),
            self.agents.run(shutdown.clone()),
            self.secrets.run(shutdown),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;

    use super::*;

    fn touched(name: &str, deleted: bool) -> Result<Touched<ConfigMap>, watcher::Error> {
        let object = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("config map");
        Ok(Touched { object, deleted })
    }

    fn names(objects: &[Result<ConfigMap, watcher::Error>]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                o.as_ref()
                    .expect("no errors")
                    .metadata
                    .name
                    .clone()
                    .expect("name")
            })
            .collect()
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_change_and_a_busy_one_holds_up_no_other() {
        let changes = [
            touched("a", false),
            Err(watcher::Error::NoResourceVersion),
            touched("b", false),
            touched("a", true),
        ];
        let mut cache = SharedCache {
            store: reflector::store::<ConfigMap>().0,
            touches: Box::pin(futures::stream::iter(changes)),
            subscribers: Vec::new(),
        };
        let (first, second) = (cache.subscribe(), cache.subscribe());
        // The second subscriber takes nothing until the watch has handed out every change, as a
        // controller whose reconciles are all busy takes no trigger.
        cache.run(CancellationToken::new()).await;
        let deleted = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen_deleted = deleted.clone();
        let first: Vec<_> = first
            .changes(move |object: &ConfigMap| {
                let name = object.metadata.name.clone().expect("name");
                seen_deleted.lock().expect("lock").push(name);
            })
            .collect()
            .await;
        let second: Vec<_> = second.changes(|_| {}).collect().await;
        assert_eq!(names(&first), ["a", "b", "a"], "errors reach no subscriber");
        assert_eq!(names(&second), ["a", "b", "a"]);
        assert_eq!(*deleted.lock().expect("lock"), ["a"]);
    }

    #[tokio::test]
    async fn the_watch_ends_when_no_subscriber_is_left() {
        let mut cache = SharedCache {
            store: reflector::store::<ConfigMap>().0,
            // A watch that never ends by itself.
            touches: Box::pin(
                futures::stream::iter([touched("a", false)]).chain(futures::stream::pending()),
            ),
            subscribers: Vec::new(),
        };
        drop(cache.subscribe());
        cache.run(CancellationToken::new()).await;
    }
}
