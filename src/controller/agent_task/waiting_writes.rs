//! The statuses that say a task waits for a slot of its agent (`ConcurrencyLimit`), written
//! one at a time in the order they were decided, apart from the reconciles.
//!
//! A burst of new tasks behind a full agent costs one such write each, paced by the client's
//! QPS. Written in the reconcile, each write held one of the controller's few reconcile slots
//! while it waited for its turn at the client, and with every slot taken, kube-runtime's
//! scheduler holds the requests that are due in a set it serves in hash order, not in the order
//! they came: a task at the head of the queue, woken when a slot freed, waited until the burst
//! was over (189 s in the queue benchmark) while the tasks behind it were told that they wait.
//! Here, a waiting task's reconcile ends without waiting for its write, so reconcile slots stay
//! free for the tasks that start, and their writes take turns at the client with this one.
//!
//! A reconcile that writes a task's status itself first settles the task here: drops its wait
//! still queued, or waits for the one being written. So a wait decided earlier never lands over
//! a start decided later, and no two writes of one task's status are in flight at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::TaskController;
use super::reconcile::CONTROLLER;
use crate::api::AgentTask;
use crate::api::agent_task::AgentTaskStatus;
use crate::controller::backoff::delay_after;
use crate::controller::written_status::status_patch;

/// A waiting status to write: the task, the status its patch starts from and the one it writes.
#[derive(Clone, Debug, PartialEq)]
pub struct WaitingStatus {
    pub namespace: String,
    pub name: String,
    pub previous: Option<AgentTaskStatus>,
    pub status: AgentTaskStatus,
}

impl WaitingStatus {
    pub fn of(
        task: &AgentTask,
        previous: Option<&AgentTaskStatus>,
        status: &AgentTaskStatus,
    ) -> Self {
        Self {
            namespace: task.namespace().unwrap_or_default(),
            name: task.name_any(),
            previous: previous.cloned(),
            status: status.clone(),
        }
    }
}

/// The writes waiting their turn, by task UID, first decided first written. Pure: the writer
/// below does the IO.
#[derive(Debug, Default)]
struct Queue {
    /// UIDs by the turn each was given: a turn whose write was dropped, or given again after
    /// a drop, no longer matches `queued` and is passed over.
    order: VecDeque<(u64, String)>,
    queued: HashMap<String, (u64, WaitingStatus)>,
    turns: u64,
    /// The task whose write is in flight.
    writing: Option<String>,
}

impl Queue {
    /// A task already queued keeps its turn, with the newer status.
    fn push(&mut self, uid: String, write: WaitingStatus) {
        if let Some((_, queued)) = self.queued.get_mut(&uid) {
            *queued = write;
            return;
        }
        self.turns += 1;
        self.order.push_back((self.turns, uid.clone()));
        self.queued.insert(uid, (self.turns, write));
    }

    /// The next write, now in flight.
    fn pop(&mut self) -> Option<(String, WaitingStatus)> {
        while let Some((turn, uid)) = self.order.pop_front() {
            if self
                .queued
                .get(&uid)
                .is_some_and(|(queued, _)| *queued == turn)
                && let Some((_, write)) = self.queued.remove(&uid)
            {
                self.writing = Some(uid.clone());
                return Some((uid, write));
            }
        }
        None
    }

    /// Drops the task's queued write; true if its write is in flight.
    fn drop_task(&mut self, uid: &str) -> bool {
        self.queued.remove(uid);
        self.writing.as_deref() == Some(uid)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queued.len()
    }
}

#[derive(Default)]
pub struct WaitingWrites {
    queue: Mutex<Queue>,
    pushed: Notify,
    /// Held by the writer from taking a write until its outcome is recorded, so `settle` can
    /// wait for it.
    in_flight: tokio::sync::Mutex<()>,
}

impl WaitingWrites {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues the task's waiting status behind those decided before it.
    pub fn defer(&self, uid: String, write: WaitingStatus) {
        self.queue().push(uid, write);
        self.pushed.notify_one();
    }

    /// Drops a queued write of the task, for a task deleted or finished.
    pub fn forget(&self, uid: &str) {
        self.queue().drop_task(uid);
    }

    /// Before a reconcile writes the task's status itself: drops its queued write, and if one
    /// is in flight, waits until it is done. True if a write may have landed meanwhile, so the
    /// status last written must be read again.
    pub async fn settle(&self, uid: &str) -> bool {
        if !self.queue().drop_task(uid) {
            return false;
        }
        drop(self.in_flight.lock().await);
        true
    }

    /// Writes queued waits in order until `shutdown`, one at a time. A failed write goes to the
    /// back of the queue and the writer pauses, longer after each failure in a row, so an API
    /// server that is down is not asked again and again.
    pub async fn run(controller: Arc<TaskController>, shutdown: CancellationToken) {
        let writes = &controller.waiting_writes;
        let mut failures = 0;
        loop {
            let pushed = writes.pushed.notified();
            let guard = writes.in_flight.lock().await;
            let next = writes.queue().pop();
            let Some((uid, write)) = next else {
                drop(guard);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = pushed => continue,
                }
            };
            let written = tokio::select! {
                () = shutdown.cancelled() => return,
                written = patch(&controller, &write) => written,
            };
            let retry = match written {
                Ok(()) => {
                    failures = 0;
                    controller.written.remember(uid.clone(), write.status);
                    controller.context.metrics.status_written(CONTROLLER);
                    None
                }
                // Deleted meanwhile: nothing is left to tell.
                Err(kube::Error::Api(status)) if status.code == 404 => None,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(namespace = %write.namespace, name = %write.name, %error, "cannot record that the task waits for a slot; retrying");
                    Some(write)
                }
            };
            {
                let mut queue = writes.queue();
                queue.writing = None;
                // Unless a reconcile decided anew meanwhile.
                if let Some(write) = retry
                    && !queue.queued.contains_key(&uid)
                {
                    queue.push(uid, write);
                }
            }
            drop(guard);
            if failures > 0 {
                let pause = delay_after(failures, rand::random::<f64>()).min(MAX_PAUSE);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    /// Writes waiting their turn, for tests.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue().len()
    }
}

/// Longest pause of the writer after failed writes.
const MAX_PAUSE: Duration = Duration::from_secs(30);

async fn patch(controller: &TaskController, write: &WaitingStatus) -> Result<(), kube::Error> {
    Api::<AgentTask>::namespaced(controller.context.client.clone(), &write.namespace)
        .patch_status(
            &write.name,
            &PatchParams::default(),
            &Patch::Merge(status_patch(write.previous.as_ref(), &write.status)),
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str) -> WaitingStatus {
        WaitingStatus {
            namespace: "team".into(),
            name: name.into(),
            previous: None,
            status: AgentTaskStatus {
                reason: Some("ConcurrencyLimit".into()),
                ..Default::default()
            },
        }
    }

    fn names(queue: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop().map(|(_, w)| w.name)).collect()
    }

    #[test]
    fn waits_are_written_in_the_order_they_were_decided() {
        let mut queue = Queue::default();
        for name in ["a", "b", "c"] {
            queue.push(format!("u-{name}"), write(name));
        }
        assert_eq!(names(&mut queue), ["a", "b", "c"]);
    }

    #[test]
    fn a_wait_decided_again_keeps_its_place_and_writes_the_newer_status() {
        let mut queue = Queue::default();
        queue.push("u-a".into(), write("a"));
        queue.push("u-b".into(), write("b"));
        let mut newer = write("a");
        newer.status.observed_generation = Some(2);
        queue.push("u-a".into(), newer.clone());
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop().map(|(_, w)| w), Some(newer));
        assert_eq!(names(&mut queue), ["b"]);
    }

    #[test]
    fn a_dropped_wait_is_not_written_and_a_later_one_is_written_once() {
        let mut queue = Queue::default();
        queue.push("u-a".into(), write("a"));
        queue.push("u-b".into(), write("b"));
        assert!(!queue.drop_task("u-a"), "queued, not in flight");
        queue.push("u-c".into(), write("c"));
        queue.push("u-a".into(), write("a"));
        assert_eq!(names(&mut queue), ["b", "c", "a"]);
    }

    #[test]
    fn dropping_the_wait_in_flight_says_so() {
        let mut queue = Queue::default();
        queue.push("u-a".into(), write("a"));
        let (uid, _) = queue.pop().expect("a");
        assert!(queue.drop_task(&uid));
        assert!(!queue.drop_task("u-b"));
        queue.writing = None;
        assert!(!queue.drop_task(&uid));
    }

    #[tokio::test]
    async fn settling_a_queued_wait_drops_it_without_waiting() {
        let writes = WaitingWrites::default();
        writes.defer("u-a".into(), write("a"));
        writes.defer("u-b".into(), write("b"));
        assert!(!writes.settle("u-a").await);
        assert_eq!(writes.queued(), 1);
        writes.forget("u-b");
        assert_eq!(writes.queued(), 0);
    }

    #[tokio::test]
    async fn settling_the_wait_in_flight_waits_for_its_outcome() {
        let writes = Arc::new(WaitingWrites::default());
        writes.defer("u-a".into(), write("a"));
        let guard = writes.in_flight.lock().await;
        writes.queue().pop().expect("a");
        let settling = tokio::spawn({
            let writes = writes.clone();
            async move { writes.settle("u-a").await }
        });
        tokio::task::yield_now().await;
        assert!(
            !settling.is_finished(),
            "waits while the write is in flight"
        );
        writes.queue().writing = None;
        drop(guard);
        assert!(settling.await.expect("settled"));
    }
}
