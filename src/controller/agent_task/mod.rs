//! The AgentTask controller: runs each task as one Job per attempt, with a deadline, retries,
//! queueing behind its agent's `maxConcurrentTasks`, cancellation, a recorded result and
//! cleanup.

pub mod attempts;
pub mod budget;
pub mod indexes;
pub mod queue;
pub mod reconcile;
pub mod release;
pub mod status;
pub mod waiting_writes;
pub mod watches;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, predicates};
use tokio_util::sync::CancellationToken;

use super::shared::Subscription;
use super::trim::Trim;
use super::written_status::WrittenStatus;
use super::{Context, Scope, census_of, reflected, reflected_indexed};
use crate::api::agent_task::AgentTaskStatus;
use crate::api::llm_provider::LLMProvider;
use crate::api::{AgentDeployment, AgentTask};
use crate::controller::compact::{CachedJob, CachedPod};
use crate::resources::labels::TASK_LABEL;
use crate::runtime::census::ObjectFacts;
use indexes::{AgentKey, JobsByTask, PodsByTask, TaskQueues};
use reconcile::{CONTROLLER, ReconcileError, reconcile};
use waiting_writes::WaitingWrites;

/// Watch caches this controller keeps per scope, besides the shared ones (`Shared`).
pub const CACHES: usize = 4;

/// The caches this controller shares with the others (`shared.rs`).
pub struct Shared {
    pub agents: Subscription<AgentDeployment>,
    pub providers: Subscription<LLMProvider>,
}

/// Read-only views of everything a reconcile reads.
pub struct Caches {
    pub tasks: Store<AgentTask>,
    pub agents: Store<AgentDeployment>,
    pub providers: Store<LLMProvider>,
    /// The tasks' Jobs, one per attempt.
    pub jobs: Store<CachedJob>,
    /// The tasks' worker pods, for exit codes and termination messages.
    pub pods: Store<CachedPod>,
    /// The tasks' own ConfigMaps (worker files and results).
    pub config_maps: Store<ConfigMap>,
    pub queues: TaskQueues,
    pub jobs_by_task: JobsByTask,
    pub pods_by_task: PodsByTask,
}

/// Tasks this process is starting whose start the task cache does not show yet: admission
/// counts them among their agent's holders until it does.
#[derive(Default)]
pub struct Starts {
    /// By task UID: the task's agent and name.
    pending: HashMap<String, (AgentKey, String)>,
    seeded: bool,
}

impl Starts {
    pub fn insert(&mut self, uid: String, agent: AgentKey, name: String) {
        self.pending.insert(uid, (agent, name));
    }

    pub fn remove(&mut self, uid: &str) {
        self.pending.remove(uid);
    }

    /// Names of the tasks of `agent` being started.
    pub fn of_agent<'a>(&'a self, agent: &'a AgentKey) -> impl Iterator<Item = &'a str> {
        self.pending
            .values()
            .filter(move |(a, _)| a == agent)
            .map(|(_, name)| name.as_str())
    }

    /// Once the caches are complete, adds the tasks a previous process started whose status
    /// does not say so (it stopped between creating the Job and writing the status): until
    /// their next reconcile, only their Jobs show that they hold a slot.
    pub fn seed_once(&mut self, tasks: &Store<AgentTask>, jobs_by_task: &JobsByTask) {
        if std::mem::replace(&mut self.seeded, true) {
            return;
        }
        for task in tasks.state() {
            let Some((agent, place)) = indexes::queue_place(&task) else {
                continue;
            };
            if let Some(uid) = task.uid()
                && place.waiting
                && jobs_by_task.contains_key(&uid)
            {
                self.insert(uid, agent, place.name);
            }
        }
    }
}

pub struct TaskController {
    pub context: Arc<Context>,
    pub caches: Caches,
    /// The status last written per task; see `written_status`.
    pub written: WrittenStatus<AgentTaskStatus>,
    /// Guarded together with the admission decision, so two reconciles cannot both take the
    /// last slot.
    pub starting: Mutex<Starts>,
    /// Wakes tasks whose state changed because of another task (a slot freed).
    pub wake: mpsc::UnboundedSender<ObjectRef<AgentTask>>,
    /// The waiting statuses not written yet, in the order they were decided.
    pub waiting_writes: WaitingWrites,
}

impl TaskController {
    /// A slot of `agent` freed: asks for a reconcile of the tasks at the head of its queue, the
    /// only ones that may start now. Waking every waiting task instead would cost a reconcile
    /// per waiting task for every task that finishes.
    pub fn wake_queue(&self, namespace: Option<&str>, agent: &str) {
        let limit = namespace
            .and_then(|ns| self.caches.agents.get(&ObjectRef::new(agent).within(ns)))
            .and_then(|a| a.spec.max_concurrent_tasks);
        let Some(limit) = limit else {
            // No limit, no queue: nothing waits for a slot.
            return;
        };
        let Some(namespace) = namespace else {
            return;
        };
        let agent = (namespace.to_string(), agent.to_string());
        let head = watches::queue_head(&self.caches.queues, &self.caches.tasks, &agent, limit);
        for task in head {
            let _ = self.wake.unbounded_send(task);
        }
    }

    /// The cache shows the task started or finished: its slot is counted from the cache now.
    fn started_in_cache(&self, uid: &str, task: &AgentTask) {
        let status = task.status.as_ref();
        if (status.is_some_and(|s| s.attempts > 0) || status::is_finished(status))
            && let Ok(mut starting) = self.starting.lock()
        {
            starting.remove(uid);
        }
    }

    fn forget(&self, task: &AgentTask) {
        if let Some(uid) = task.uid() {
            self.written.forget(&uid);
            self.waiting_writes.forget(&uid);
            if let Ok(mut starting) = self.starting.lock() {
                starting.remove(&uid);
            }
        }
    }
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
    let all = watcher::Config::default;
    // Only objects that belong to a task: the caches never hold the cluster's other Jobs and pods.
    let owned = || watcher::Config::default().labels(TASK_LABEL);

    // The agent controller's cache: tasks read an agent's spec (the worker, its tools, the
    // concurrency limit), and the providers of its chain.
    let agents = shared.agents.store.clone();
    let agent_stream = shared.agents.changes(|_| {});
    let providers = shared.providers.store.clone();
    let provider_stream = shared.providers.changes(|_| {});
    let (queues, jobs_by_task, pods_by_task) = (
        indexes::task_queues(),
        indexes::jobs_by_task(),
        indexes::pods_by_task(),
    );
    let (jobs, job_stream) = reflected_indexed(
        &context,
        scope.api::<CachedJob>(client),
        owned(),
        &jobs_by_task,
    );
    let (pods, pod_stream) = reflected_indexed(
        &context,
        scope.api::<CachedPod>(client),
        owned(),
        &pods_by_task,
    );
    let (config_maps, config_map_stream) =
        reflected(&context, scope.api::<ConfigMap>(client), owned());

    let (tasks, task_writer) = reflector::store::<AgentTask>();
    let _census = census_of(&context, CONTROLLER, &scope, &tasks, |task| {
        let status = task.status.as_ref();
        let phase = status
            .and_then(|s| s.phase)
            .map_or_else(|| "Pending".to_string(), |p| format!("{p:?}"));
        ObjectFacts::new(
            "AgentTask",
            status.map(|s| s.conditions.as_slice()).unwrap_or_default(),
            Some(phase),
        )
    });
    let (wake, woken) = mpsc::unbounded();
    let controller = Arc::new(TaskController {
        context: context.clone(),
        caches: Caches {
            tasks: tasks.clone(),
            agents: agents.clone(),
            providers,
            jobs,
            pods,
            config_maps,
            queues,
            jobs_by_task,
            pods_by_task,
        },
        written: WrittenStatus::default(),
        starting: Mutex::new(Starts::default()),
        wake,
        waiting_writes: WaitingWrites::default(),
    });

    // A task that finished or was deleted frees a slot of its agent: wake the tasks queued
    // behind it. This runs after the store has the change, so they see the slot free.
    let synced = Arc::new(context.readiness.sync_marker());
    let failed = synced.clone();
    let on_task_event = controller.clone();
    let mut vanished = super::relist::Vanished::new(tasks.clone());
    let task_stream = watcher::watcher(scope.api::<AgentTask>(client), all())
        .backoff(super::watch_backoff())
        .modify(Trim::trim)
        .reflect(task_writer)
        .inspect_err(move |_| failed.observe_error())
        .inspect_ok(move |event| {
            synced.observe(event);
            on_task_event.caches.queues.observe(event);
            if let Event::Apply(task) | Event::InitApply(task) = event
                && let Some(uid) = task.uid()
            {
                on_task_event.written.caught_up(&uid, task.status.as_ref());
                on_task_event.started_in_cache(&uid, task);
            }
            match event {
                Event::Delete(task) => {
                    on_task_event.forget(task);
                    wake_after(&on_task_event, task);
                }
                // Not on the initial list: every task is reconciled after it anyway.
                Event::Apply(task) if status::is_finished(task.status.as_ref()) => {
                    wake_after(&on_task_event, task);
                }
                _ => {}
            }
            // Deleted during a watch gap: its slot is as free as after a Delete event.
            for task in vanished.observe(event) {
                on_task_event.forget(&task);
                wake_after(&on_task_event, &task);
            }
        })
        .applied_objects()
        // Our own status writes do not change the generation; spec changes (cancel) do.
        .predicate_filter(predicates::generation, Default::default());
    let task_stream = super::without_errors(task_stream);

    // Part of this future, not spawned: they stop with the controller when leadership is lost.
    let sweep = release::sweep(controller.clone(), shutdown.clone());
    let waiting_writes = WaitingWrites::run(controller.clone(), shutdown.clone());

    let (queues_for_agents, tasks_for_providers, agents_for_providers) = (
        controller.caches.queues.clone(),
        tasks.clone(),
        agents.clone(),
    );
    let reconciling = Controller::for_stream(task_stream, tasks)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .owns_stream(job_stream)
        .owns_stream(config_map_stream)
        .watches_stream(pod_stream, watches::task_of_pod)
        .watches_stream(agent_stream, move |agent| {
            watches::tasks_of_agent(&queues_for_agents, &agent)
        })
        .watches_stream(provider_stream, move |provider| {
            watches::tasks_using_provider(&tasks_for_providers, &agents_for_providers, &provider)
        })
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, controller)
        .for_each(|result| {
            context.record_reconcile(CONTROLLER, result);
            std::future::ready(())
        });
    futures::future::join3(reconciling, sweep, waiting_writes).await;
}

fn wake_after(controller: &TaskController, task: &AgentTask) {
    if let Some(agent) = &task.spec.agent_ref {
        controller.wake_queue(task.namespace().as_deref(), &agent.name);
    }
}

fn error_policy(
    object: Arc<AgentTask>,
    error: &ReconcileError,
    controller: Arc<TaskController>,
) -> Action {
    controller
        .context
        .requeue_after_error(CONTROLLER, object.as_ref(), error.reason(), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, uid: &str, status: serde_json::Value) -> AgentTask {
        let mut task = crate::api::agent_task::task_for_tests(
            name,
            serde_json::json!({"agentRef": {"name": "support"}, "input": "x"}),
        );
        task.metadata.uid = Some(uid.into());
        task.status = serde_json::from_value(status).expect("status");
        task
    }

    fn job_of(uid: &str, name: &str) -> CachedJob {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "namespace": "team",
            "ownerReferences": [{"apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask",
                "name": "t", "uid": uid}]}}),
        )
        .expect("job")
    }

    #[test]
    fn a_job_without_a_start_in_the_status_holds_a_slot_after_a_restart() {
        let (tasks, mut writer) = reflector::store::<AgentTask>();
        for task in [
            task("crashed", "u-crashed", serde_json::json!(null)),
            task("recorded", "u-recorded", serde_json::json!({"attempts": 1})),
            task("waiting", "u-waiting", serde_json::json!(null)),
        ] {
            writer.apply_watcher_event(&Event::Apply(task));
        }
        let jobs = indexes::jobs_by_task();
        for (uid, name) in [("u-crashed", "crashed-1"), ("u-recorded", "recorded-1")] {
            jobs.observe(&Event::Apply(job_of(uid, name)));
        }
        let mut starts = Starts::default();
        starts.seed_once(&tasks, &jobs);
        let agent = ("team".to_string(), "support".to_string());
        assert_eq!(
            starts.of_agent(&agent).collect::<Vec<_>>(),
            ["crashed"],
            "the recorded start is the cache's; the waiting task has no Job"
        );
        starts.remove("u-crashed");
        starts.seed_once(&tasks, &jobs);
        assert_eq!(starts.of_agent(&agent).count(), 0, "seeded once only");
    }
}
