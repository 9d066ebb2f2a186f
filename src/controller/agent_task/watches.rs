//! Maps changes of related objects to the AgentTasks they affect: a provider turning Ready
//! starts waiting tasks, an agent's new limit or chain reaches its tasks, and a worker pod's end
//! reaches its task.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::status::is_finished;
use crate::api::llm_provider::LLMProvider;
use crate::api::{AgentDeployment, AgentTask};
use crate::resources::job::TASK_NAME_ANNOTATION;

/// Unfinished tasks of `agent` (same namespace).
pub fn unfinished_tasks_of_agent(
    tasks: &Store<AgentTask>,
    namespace: Option<&str>,
    agent: &str,
) -> Vec<ObjectRef<AgentTask>> {
    tasks
        .state()
        .iter()
        .filter(|task| task.namespace().as_deref() == namespace)
        .filter(|task| {
            task.spec
                .agent_ref
                .as_ref()
                .is_some_and(|r| r.name == agent)
        })
        .filter(|task| !is_finished(task.status.as_ref()))
        .map(|task| ObjectRef::from_obj(task.as_ref()))
        .collect()
}

pub fn tasks_of_agent(
    tasks: &Store<AgentTask>,
    agent: &AgentDeployment,
) -> Vec<ObjectRef<AgentTask>> {
    unfinished_tasks_of_agent(tasks, agent.namespace().as_deref(), &agent.name_any())
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
pub fn task_of_pod(pod: Pod) -> Option<ObjectRef<AgentTask>> {
    let task = pod.annotations().get(TASK_NAME_ANNOTATION)?.clone();
    Some(ObjectRef::new(&task).within(&pod.namespace()?))
}
