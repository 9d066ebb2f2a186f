//! Maps changes of related objects to the AgentTasks they affect: a provider turning Ready
//! starts waiting tasks, an agent's new limit or chain reaches its tasks, and a worker pod's end
//! reaches its task.

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::indexes::{AgentKey, TaskQueues};
use super::status::is_finished;
use crate::api::agent_task::reason;
use crate::api::llm_provider::LLMProvider;
use crate::api::{AgentDeployment, AgentTask};
use crate::controller::compact::CachedPod;
use crate::resources::job::TASK_NAME_ANNOTATION;

/// The first `limit` tasks of `agent` waiting for their first attempt, in queue order
/// (creation time, then name), passing over those waiting for a broken reference.
pub fn queue_head(
    queues: &TaskQueues,
    tasks: &Store<AgentTask>,
    agent: &AgentKey,
    limit: i32,
) -> Vec<ObjectRef<AgentTask>> {
    let namespace = &agent.0;
    queues.with_members(agent, |places| {
        places
            .filter(|place| place.waiting)
            .map(|place| ObjectRef::new(&place.name).within(namespace))
            .filter(|task| {
                tasks.get(task).is_some_and(|task| {
                    task.status.as_ref().and_then(|s| s.reason.as_deref())
                        != Some(reason::INVALID_REFERENCE)
                })
            })
            .take(usize::try_from(limit).unwrap_or(0))
            .collect()
    })
}

/// Unfinished tasks of `agent`.
pub fn tasks_of_agent(queues: &TaskQueues, agent: &AgentDeployment) -> Vec<ObjectRef<AgentTask>> {
    let Some(namespace) = agent.namespace() else {
        return Vec::new();
    };
    let key = (namespace, agent.name_any());
    queues.with_members(&key, |places| {
        places
            .map(|place| ObjectRef::new(&place.name).within(&key.0))
            .collect()
    })
}

/// Unfinished tasks whose failover chain names this provider, directly or through their agent.
pub fn tasks_using_provider(
    tasks: &Store<AgentTask>,
    agents: &Store<AgentDeployment>,
    provider: &LLMProvider,
) -> Vec<ObjectRef<AgentTask>> {
    let (namespace, name) = (provider.namespace(), provider.name_any());
    let agents_using: Vec<String> = agents
        .state()
        .iter()
        .filter(|a| a.namespace() == namespace)
        .filter(|a| a.spec.workload.providers.iter().any(|p| p.name == name))
        .map(|a| a.name_any())
        .collect();
    tasks
        .state()
        .iter()
        .filter(|task| task.namespace() == namespace && !is_finished(task.status.as_ref()))
        .filter(|task| {
            let by_template = task
                .spec
                .template
                .as_ref()
                .is_some_and(|t| t.workload.providers.iter().any(|p| p.name == name));
            let by_agent = task
                .spec
                .agent_ref
                .as_ref()
                .is_some_and(|r| agents_using.contains(&r.name));
            by_template || by_agent
        })
        .map(|task| ObjectRef::from_obj(task.as_ref()))
        .collect()
}

/// The task a worker pod runs, from the annotation the operator puts on its pods.
pub fn task_of_pod(pod: CachedPod) -> Option<ObjectRef<AgentTask>> {
    let task = pod.annotation(TASK_NAME_ANNOTATION)?;
    Some(ObjectRef::new(task).within(&pod.namespace()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::super::indexes::task_created_at as task;

    #[test]
    fn the_queue_head_is_the_oldest_waiting_tasks_only() {
        let (store, mut writer) = reflector::store::<AgentTask>();
        let queues = super::super::indexes::task_queues();
        let finished = serde_json::json!({"attempts": 1, "conditions": [{"type": "Complete",
            "status": "True", "reason": "Succeeded", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        for task in [
            task("running", 1, serde_json::json!({"attempts": 1})),
            task("done", 0, finished),
            task(
                "broken",
                2,
                serde_json::json!({"reason": "InvalidReference"}),
            ),
            task("third", 5, serde_json::json!(null)),
            task(
                "first",
                3,
                serde_json::json!({"reason": "ConcurrencyLimit"}),
            ),
            task("second", 4, serde_json::json!(null)),
        ] {
            let event = Event::Apply(task);
            writer.apply_watcher_event(&event);
            queues.observe(&event);
        }
        let agent = ("team".to_string(), "support".to_string());
        let names: Vec<String> = queue_head(&queues, &store, &agent, 2)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["first", "second"]);
    }
}
