//! The indexes a task reconcile reads instead of scanning its caches: each agent's unfinished
//! tasks in queue order, each task's Jobs, and each task's worker pods. With them, admitting a
//! queued task costs the same at ten tasks as at ten thousand.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::status::is_finished;
use crate::api::AgentTask;
use crate::controller::compact::{CachedJob, CachedPod};
use crate::controller::index::Index;
use crate::resources::job::TASK_NAME_ANNOTATION;

/// An agent, by namespace and name.
pub type AgentKey = (String, String);

/// A task's place among its agent's unfinished tasks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueuePlace {
    /// False for the tasks the cache shows started: they sort first, and there are at most
    /// about `maxConcurrentTasks` of them, so the holders of slots are read without walking
    /// the queue.
    pub waiting: bool,
    /// Queue order: creation time, then name (creation times have whole seconds).
    pub created: Option<Time>,
    pub name: String,
}

/// Unfinished tasks with an `agentRef`, by agent, started ones first, then in queue order.
pub type TaskQueues = Index<AgentTask, AgentKey, QueuePlace>;
/// Jobs by the UID of the task that owns them.
pub type JobsByTask = Index<CachedJob, String, String>;
/// Worker pods by namespace and task name.
pub type PodsByTask = Index<CachedPod, (String, String), String>;

pub fn task_queues() -> TaskQueues {
    Index::new(queue_place)
}

pub fn jobs_by_task() -> JobsByTask {
    Index::new(|job| {
        let owner = job
            .owner_references()
            .iter()
            .find(|o| o.kind == "AgentTask")?;
        Some((owner.uid.clone(), job.metadata.name.clone()?))
    })
}

pub fn pods_by_task() -> PodsByTask {
    Index::new(|pod| {
        let task = pod.annotation(TASK_NAME_ANNOTATION)?.to_string();
        Some(((pod.namespace()?, task), pod.metadata.name.clone()?))
    })
}

pub fn queue_place(task: &AgentTask) -> Option<(AgentKey, QueuePlace)> {
    let status = task.status.as_ref();
    if is_finished(status) {
        return None;
    }
    let agent = task.spec.agent_ref.as_ref()?.name.clone();
    let place = QueuePlace {
        waiting: status.is_none_or(|s| s.attempts == 0),
        created: task.metadata.creation_timestamp.clone(),
        name: task.metadata.name.clone()?,
    };
    Some(((task.namespace()?, agent), place))
}

/// A task of the agent `support` created at `second`, with `status`.
#[cfg(test)]
pub fn task_created_at(name: &str, second: u32, status: serde_json::Value) -> AgentTask {
    let mut task = crate::api::agent_task::task_for_tests(
        name,
        serde_json::json!({"agentRef": {"name": "support"}, "input": "x"}),
    );
    task.metadata.creation_timestamp = Some(
        serde_json::from_value(serde_json::json!(format!("2026-01-01T00:00:{second:02}Z")))
            .expect("time"),
    );
    // Each its own object, as the API server makes them.
    task.metadata.uid = Some(format!("uid-{name}"));
    task.status = serde_json::from_value(status).expect("status");
    task
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    use super::task_created_at as task;

    #[test]
    fn started_tasks_come_first_then_the_queue_in_creation_order_and_finished_ones_leave() {
        let queues = task_queues();
        let finished = serde_json::json!({"attempts": 1, "conditions": [{"type": "Complete",
            "status": "True", "reason": "Succeeded", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        for task in [
            task("late", 9, serde_json::json!(null)),
            task("running", 5, serde_json::json!({"attempts": 1})),
            task(
                "early",
                1,
                serde_json::json!({"reason": "ConcurrencyLimit"}),
            ),
            task("done", 0, finished),
        ] {
            queues.observe(&Event::Apply(task));
        }
        let order: Vec<(bool, String)> = queues
            .members(&("team".into(), "support".into()))
            .into_iter()
            .map(|p| (p.waiting, p.name))
            .collect();
        assert_eq!(
            order,
            [
                (false, "running".into()),
                (true, "early".into()),
                (true, "late".into())
            ]
        );
    }
}
