//! The operator's HTTP server: `/healthz` (the process serves), `/readyz` (caches synced and
//! their watches connected) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::Error;

/// Whether every controller's caches have synced and their watches are connected: until then a
/// reconcile would act on a partial or stale view of the cluster, so `/readyz` says not ready.
#[derive(Default)]
pub struct Readiness {
    expected: AtomicUsize,
    synced: AtomicUsize,
    /// Watch streams whose last event was an error (the API server is gone or refuses them).
    disconnected: AtomicUsize,
    /// A follower of a leader election is ready (to lead) without caches.
    following: AtomicBool,
    /// Woken when a cache finishes its first list.
    synced_changed: tokio::sync::Notify,
}

impl Readiness {
    /// Declares how many caches must sync before the process is ready.
    pub fn expect_caches(&self, count: usize) {
        self.expected.fetch_add(count, Ordering::SeqCst);
    }

    /// A marker for one watch stream, which counts its cache as synced at the stream's first
    /// `InitDone` (the initial list is complete).
    pub fn sync_marker(self: &Arc<Self>) -> SyncMarker {
        SyncMarker {
            readiness: self.clone(),
            done: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    pub fn is_ready(&self) -> bool {
        if self.following.load(Ordering::SeqCst) {
            return true;
        }
        self.caches_synced() && self.disconnected.load(Ordering::SeqCst) == 0
    }

    /// Whether every expected cache has finished its first list.
    pub fn caches_synced(&self) -> bool {
        let expected = self.expected.load(Ordering::SeqCst);
        expected > 0 && self.synced.load(Ordering::SeqCst) >= expected
    }

    /// Waits until every expected cache has finished its first list. Reconciles wait here: a
    /// decision taken on a partial cache would lie (a Secret not listed yet reported missing)
    /// or overshoot (a task queue admitting past its limit on an empty Job cache). Found when
    /// API Priority and Fairness delayed some lists by many seconds.
    pub async fn wait_for_caches(&self) {
        loop {
            // Registered before the check, so a sync in between still wakes it.
            let synced = self.synced_changed.notified();
            if self.caches_synced() {
                return;
            }
            synced.await;
        }
    }

    /// Marks the process as a follower (ready to lead) or as about to lead: a new leader starts
    /// its caches afresh and is ready once they have synced.
    pub fn set_following(&self, following: bool) {
        if !following {
            self.expected.store(0, Ordering::SeqCst);
            self.synced.store(0, Ordering::SeqCst);
            self.disconnected.store(0, Ordering::SeqCst);
        }
        self.following.store(following, Ordering::SeqCst);
    }
}

pub struct SyncMarker {
    readiness: Arc<Readiness>,
    done: AtomicBool,
    failing: AtomicBool,
}

impl SyncMarker {
    pub fn observe<K>(&self, event: &kube::runtime::watcher::Event<K>) {
        if self.failing.swap(false, Ordering::SeqCst) {
            // Saturating: a new leadership term resets the count while old streams wind down.
            let _ =
                self.readiness
                    .disconnected
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        Some(n.saturating_sub(1))
                    });
        }
        if matches!(event, kube::runtime::watcher::Event::InitDone)
            && !self.done.swap(true, Ordering::SeqCst)
        {
            self.readiness.synced.fetch_add(1, Ordering::SeqCst);
            self.readiness.synced_changed.notify_waiters();
        }
    }

    /// The watch failed (it retries with backoff); the process is not ready until it delivers
    /// an event again.
    pub fn observe_error(&self) {
        if !self.failing.swap(true, Ordering::SeqCst) {
            self.readiness.disconnected.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Binds the address (so a port in use is reported at start) and serves until `shutdown`.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind { address, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ServerState { metrics, readiness });
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the HTTP server stopped");
        }
    }))
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics_text(
    State(state): State<ServerState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Whether the server at `address` answers `GET /healthz` with 200 within two seconds: the exec
/// probe of processes that serve on loopback only, which the kubelet cannot reach.
pub async fn healthz_ok(address: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let head = String::from_utf8_lossy(&answer);
        head.lines()
            .next()
            .is_some_and(|line| line.contains(" 200 "))
            .then_some(())
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), probe).await,
        Ok(Some(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    #[test]
    fn ready_only_when_every_expected_cache_synced_once() {
        let readiness = Arc::new(Readiness::default());
        assert!(!readiness.is_ready(), "nothing expected yet is not ready");
        readiness.expect_caches(2);
        let (first, second) = (readiness.sync_marker(), readiness.sync_marker());
        first.observe(&Event::<()>::Init);
        first.observe(&Event::<()>::InitDone);
        first.observe(&Event::<()>::InitDone);
        assert!(
            !readiness.is_ready(),
            "a relist of one stream does not count twice"
        );
        second.observe(&Event::<()>::InitDone);
        assert!(readiness.is_ready());
    }

    #[tokio::test]
    async fn reconciles_wait_until_every_cache_listed_once() {
        let readiness = Arc::new(Readiness::default());
        readiness.expect_caches(2);
        let (first, second) = (readiness.sync_marker(), readiness.sync_marker());
        let waiting = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.wait_for_caches().await }
        });
        first.observe(&Event::<()>::InitDone);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one cache has not listed yet");
        second.observe_error();
        second.observe(&Event::<()>::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends once both listed")
            .expect("no panic");
        // A failing watch later does not stop reconciles: the caches hold the last state.
        first.observe_error();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            readiness.wait_for_caches(),
        )
        .await
        .expect("no wait once synced");
    }

    #[test]
    fn a_failing_watch_makes_the_process_unready_until_it_delivers_again() {
        let readiness = Arc::new(Readiness::default());
        readiness.expect_caches(2);
        let (first, second) = (readiness.sync_marker(), readiness.sync_marker());
        first.observe(&Event::<()>::InitDone);
        second.observe(&Event::<()>::InitDone);
        assert!(readiness.is_ready());
        first.observe_error();
        second.observe_error();
        first.observe_error();
        assert!(!readiness.is_ready(), "the API server is gone");
        first.observe(&Event::<()>::Init);
        assert!(!readiness.is_ready(), "one watch is still failing");
        second.observe(&Event::<()>::InitDone);
        assert!(readiness.is_ready(), "both watches deliver again");
    }

    #[tokio::test]
    async fn readyz_answers_503_until_the_caches_synced_then_200() {
        let readiness = Arc::new(Readiness::default());
        let state = ServerState {
            metrics: Arc::new(Metrics::new().expect("metrics")),
            readiness: readiness.clone(),
        };
        readiness.expect_caches(1);
        let marker = readiness.sync_marker();
        let (code, _) = readyz(State(state.clone())).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        marker.observe(&Event::<()>::InitDone);
        let (code, _) = readyz(State(state.clone())).await;
        assert_eq!(code, StatusCode::OK);
        // A new leader starts its caches afresh: not ready until they synced again.
        readiness.set_following(false);
        readiness.expect_caches(1);
        let (code, _) = readyz(State(state)).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    }
}
