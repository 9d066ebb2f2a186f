//! What each page shows, computed from a snapshot of the cache by pure functions: counts and
//! health per namespace, each agent's failover chain as its status reports it, each provider's
//! probe results, and the task queue per agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::agent_deployment::AgentDeploymentStatus;
use crate::api::agent_deployment::condition as agent_condition;
use crate::api::agent_task::TaskPhase;
use crate::api::budget::{AgentBudget, Budget, TaskUsage, UsageTotals};
use crate::api::llm_provider::condition as provider_condition;
use crate::api::{AgentDeployment, AgentTask, LLMProvider};

/// Everything the cache holds at one instant, and the cache's own state.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub agents: Vec<Arc<AgentDeployment>>,
    pub providers: Vec<Arc<LLMProvider>>,
    pub tasks: Vec<Arc<AgentTask>>,
    pub events: Vec<Arc<Event>>,
    pub state: CacheState,
    pub now: Timestamp,
}

/// What the viewer should know about the data itself: its scope, and whether it is complete
/// and current.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheState {
    pub scope: String,
    pub note: Option<String>,
    pub events_visible: bool,
    /// Some watch has not finished its first list: counts may be short.
    pub loading: bool,
    /// Watches failing right now: what is shown may be out of date.
    pub problems: Vec<String>,
}

/// How an object is doing, in four colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Good,
    Progressing,
    Bad,
    Unknown,
}

impl Health {
    pub fn class(self) -> &'static str {
        match self {
            Health::Good => "good",
            Health::Progressing => "progressing",
            Health::Bad => "bad",
            Health::Unknown => "unknown",
        }
    }
}

/// Which objects a list shows; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespace: Option<String>,
    /// An agent's name, for tasks.
    pub agent: Option<String>,
    /// A task phase, as the status spells it.
    pub phase: Option<String>,
}

impl Filter {
    fn admits_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionView {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub since: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventView {
    pub warning: bool,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last_seen: Option<Timestamp>,
}

/// One provider of an agent's failover chain, as the agent's status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLink {
    pub name: String,
    pub model: Option<String>,
    pub ready: bool,
    pub reason: Option<String>,
    pub active: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
}

impl QueueCounts {
    fn count(&mut self, phase: Option<TaskPhase>) {
        match phase {
            None | Some(TaskPhase::Pending) | Some(TaskPhase::Queued) => self.queued += 1,
            Some(TaskPhase::Running) => self.running += 1,
            Some(TaskPhase::Succeeded) => self.succeeded += 1,
            Some(TaskPhase::Failed) => self.failed += 1,
            Some(TaskPhase::Cancelled) => self.cancelled += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.queued + self.running + self.succeeded + self.failed + self.cancelled
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    pub namespace: String,
    pub name: String,
    pub image: String,
    /// Ready replicas of the wanted ones, as `kubectl get` shows them.
    pub ready: String,
    pub health: Health,
    pub reason: String,
    pub message: String,
    pub active_provider: Option<String>,
    pub chain: Vec<ChainLink>,
    pub tasks: QueueCounts,
    pub max_concurrent_tasks: Option<i32>,
    pub created: Option<Timestamp>,
    pub budget: Option<AgentBudgetView>,
}

/// An agent's budget and what its current window used of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentBudgetView {
    /// `spec.budget` in words (`20000 tokens, 5 USD per Day in Europe/Paris`).
    pub limits: String,
    /// The window's usage in words, once the operator counted it (`1200 tokens, 0.3 USD`).
    pub used: Option<String>,
    pub window_end: Option<String>,
    /// The `BudgetExceeded` condition is True: its message says why.
    pub exceeded: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderView {
    pub namespace: String,
    pub name: String,
    pub provider_type: String,
    pub endpoint: String,
    pub health: Health,
    pub reason: String,
    pub message: String,
    pub latency: Option<String>,
    pub models: Vec<String>,
    pub model_count: Option<i32>,
    pub credentials: Health,
    pub credentials_reason: String,
    pub consecutive_failures: i32,
    /// Agents in the same namespace whose chain names this provider.
    pub used_by: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub namespace: String,
    pub name: String,
    pub agent: Option<String>,
    pub phase: String,
    pub health: Health,
    pub attempts: i32,
    pub failed_attempts: i32,
    pub duration: Option<String>,
    pub reason: String,
    pub message: String,
    pub provider: Option<String>,
    pub result: Option<ResultView>,
    pub created: Option<Timestamp>,
    pub started: Option<Timestamp>,
    pub completed: Option<Timestamp>,
    pub next_attempt: Option<Timestamp>,
    /// Tokens over all attempts, as their routers counted them.
    pub tokens: Option<i64>,
    /// Their cost with its currency (`0.001234 USD`).
    pub cost: Option<String>,
    /// `spec.budget` in words (`20000 tokens, 0.50 USD`).
    pub budget: Option<String>,
    pub usage: Option<TaskUsage>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultView {
    pub summary: String,
    pub truncated: bool,
    pub config_map: Option<String>,
}

/// The tasks of one agent (or of inline templates) in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueView {
    pub namespace: String,
    pub agent: Option<String>,
    pub counts: QueueCounts,
    pub max_concurrent_tasks: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceSummary {
    pub namespace: String,
    pub agents: usize,
    pub agents_ready: usize,
    pub providers: usize,
    pub providers_ready: usize,
    pub tasks: QueueCounts,
}

/// Something that needs a person's eyes, for the overview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attention {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

/// How many failed tasks the overview lists at most.
const FAILED_TASKS_SHOWN: usize = 10;
/// How many events an object's page lists at most, newest first.
pub const EVENTS_SHOWN: usize = 20;

pub fn conditions(conditions: &[Condition]) -> Vec<ConditionView> {
    conditions
        .iter()
        .map(|c| ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            since: c.last_transition_time.0,
        })
        .collect()
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn is_true(conditions: Option<&[Condition]>, type_: &str) -> bool {
    conditions
        .and_then(|c| condition(c, type_))
        .is_some_and(|c| c.status == "True")
}

/// Health, reason and message of a `Ready`-like condition; a missing one is Unknown.
fn condition_health(conditions: &[Condition], type_: &str) -> (Health, String, String) {
    match condition(conditions, type_) {
        Some(c) => {
            let health = match c.status.as_str() {
                "True" => Health::Good,
                "False" => Health::Bad,
                _ => Health::Unknown,
            };
            (health, c.reason.clone(), c.message.clone())
        }
        None => (
            Health::Unknown,
            "NotReported".to_string(),
            "the operator has not reported on this object yet".to_string(),
        ),
    }
}

pub fn agent(agent: &AgentDeployment, tasks: &[Arc<AgentTask>]) -> AgentView {
    let status = agent.status.clone().unwrap_or_default();
    let (mut health, reason, message) =
        condition_health(&status.conditions, agent_condition::READY);
    let progressing = is_true(Some(&status.conditions), agent_condition::PROGRESSING);
    if health == Health::Bad && progressing {
        health = Health::Progressing;
    }
    let ready = status
        .ready
        .clone()
        .unwrap_or_else(|| format!("{}/{}", status.ready_replicas, status.replicas));
    let chain = status
        .providers
        .iter()
        .map(|p| ChainLink {
            name: p.name.clone(),
            model: p.model.clone(),
            ready: p.ready,
            reason: p.reason.clone(),
            active: status.active_provider.as_deref() == Some(p.name.as_str()),
        })
        .collect();
    let namespace = agent.namespace().unwrap_or_default();
    let name = agent.name_any();
    let mut counts = QueueCounts::default();
    for task in tasks.iter().filter(|t| runs_on(t, &namespace, &name)) {
        counts.count(task.status.as_ref().and_then(|s| s.phase));
    }
    AgentView {
        image: agent.spec.workload.image.clone(),
        ready,
        health,
        reason,
        message,
        active_provider: status.active_provider.clone(),
        chain,
        tasks: counts,
        max_concurrent_tasks: agent.spec.max_concurrent_tasks,
        created: agent.creation_timestamp().map(|t| t.0),
        budget: agent
            .spec
            .budget
            .as_ref()
            .map(|budget| agent_budget(budget, &status)),
        namespace,
        name,
    }
}

fn agent_budget(budget: &AgentBudget, status: &AgentDeploymentStatus) -> AgentBudgetView {
    let limits = budget_text(&Budget {
        max_tokens: budget.max_tokens,
        max_cost: budget.max_cost.clone(),
        currency: budget.currency.clone(),
    });
    let window = status.budget.as_ref();
    let exceeded = status
        .conditions
        .iter()
        .find(|c| c.type_ == agent_condition::BUDGET_EXCEEDED && c.status == "True")
        .map(|c| c.message.clone());
    AgentBudgetView {
        limits: format!(
            "{limits} per {:?} in {}",
            budget.window.period, budget.window.time_zone
        ),
        used: window.map(|w| {
            let tokens = format!("{} tokens", w.usage.total_tokens);
            match cost_text(&w.usage) {
                Some(cost) => format!("{tokens}, {cost}"),
                None => tokens,
            }
        }),
        window_end: window.map(|w| w.window_end.clone()),
        exceeded,
    }
}

fn runs_on(task: &AgentTask, namespace: &str, agent: &str) -> bool {
    task.namespace().as_deref() == Some(namespace)
        && task
            .spec
            .agent_ref
            .as_ref()
            .is_some_and(|r| r.name == agent)
}

pub fn agents(snapshot: &Snapshot, filter: &Filter) -> Vec<AgentView> {
    let mut views: Vec<AgentView> = snapshot
        .agents
        .iter()
        .filter(|a| filter.admits_namespace(&a.namespace().unwrap_or_default()))
        .map(|a| agent(a, &snapshot.tasks))
        .collect();
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    views
}

pub fn provider(provider: &LLMProvider, agents: &[Arc<AgentDeployment>]) -> ProviderView {
    let status = provider.status.clone().unwrap_or_default();
    let (health, reason, message) = condition_health(&status.conditions, provider_condition::READY);
    let (credentials, credentials_reason, _) =
        condition_health(&status.conditions, provider_condition::CREDENTIALS_VALID);
    let namespace = provider.namespace().unwrap_or_default();
    let name = provider.name_any();
    let mut used_by: Vec<String> = agents
        .iter()
        .filter(|a| a.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|a| a.spec.workload.providers.iter().any(|p| p.name == name))
        .map(|a| a.name_any())
        .collect();
    used_by.sort();
    ProviderView {
        provider_type: provider.spec.provider_type.as_str().to_string(),
        endpoint: crate::providers::scrub::without_userinfo(&provider.spec.endpoint),
        health,
        reason,
        message,
        latency: status.latency.clone(),
        models: status.models.clone(),
        model_count: status.model_count,
        credentials,
        credentials_reason,
        consecutive_failures: status.consecutive_failures,
        used_by,
        namespace,
        name,
    }
}

pub fn providers(snapshot: &Snapshot, filter: &Filter) -> Vec<ProviderView> {
    let mut views: Vec<ProviderView> = snapshot
        .providers
        .iter()
        .filter(|p| filter.admits_namespace(&p.namespace().unwrap_or_default()))
        .map(|p| provider(p, &snapshot.agents))
        .collect();
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    views
}

pub fn task(task: &AgentTask) -> TaskView {
    let status = task.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or(TaskPhase::Pending);
    let health = match phase {
        TaskPhase::Succeeded => Health::Good,
        TaskPhase::Failed => Health::Bad,
        TaskPhase::Running => Health::Progressing,
        TaskPhase::Pending | TaskPhase::Queued | TaskPhase::Cancelled => Health::Unknown,
    };
    // Both conditions carry the same reason while the task runs; at the end, the True one
    // explains the outcome.
    let deciding = status
        .conditions
        .iter()
        .find(|c| c.status == "True")
        .or_else(|| status.conditions.first());
    TaskView {
        namespace: task.namespace().unwrap_or_default(),
        name: task.name_any(),
        agent: task.spec.agent_ref.as_ref().map(|r| r.name.clone()),
        phase: format!("{phase:?}"),
        health,
        attempts: status.attempts,
        failed_attempts: status.failed_attempts,
        duration: status.duration.clone(),
        reason: status
            .reason
            .clone()
            .or_else(|| deciding.map(|c| c.reason.clone()))
            .unwrap_or_default(),
        message: deciding.map(|c| c.message.clone()).unwrap_or_default(),
        provider: status.provider.clone(),
        result: status.result.as_ref().map(|r| ResultView {
            summary: r.summary.clone(),
            truncated: r.truncated,
            config_map: r.config_map_ref.as_ref().map(|c| c.name.clone()),
        }),
        created: task.creation_timestamp().map(|t| t.0),
        started: status.start_time.map(|t| t.0),
        completed: status.completion_time.map(|t| t.0),
        next_attempt: status.next_attempt_time.map(|t| t.0),
        tokens: status.usage.as_ref().map(|u| u.total.total_tokens),
        cost: status.usage.as_ref().and_then(|u| cost_text(&u.total)),
        budget: task.spec.budget.as_deref().map(budget_text),
        usage: status.usage.clone(),
    }
}

/// A cost with its currency, when priced.
pub fn cost_text(usage: &UsageTotals) -> Option<String> {
    Some(format!(
        "{} {}",
        usage.cost.as_deref()?,
        usage.currency.as_deref()?
    ))
}

fn budget_text(budget: &Budget) -> String {
    let tokens = budget.max_tokens.map(|max| format!("{max} tokens"));
    let cost = budget
        .max_cost
        .as_ref()
        .map(|max| format!("{max} {}", budget.currency));
    [tokens, cost]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tasks a filter admits, newest first, at most `limit` of them, and how many it admits.
pub fn tasks(snapshot: &Snapshot, filter: &Filter, limit: usize) -> (Vec<TaskView>, usize) {
    let mut admitted: Vec<&Arc<AgentTask>> = snapshot
        .tasks
        .iter()
        .filter(|t| filter.admits_namespace(&t.namespace().unwrap_or_default()))
        .filter(|t| {
            filter
                .agent
                .as_deref()
                .is_none_or(|agent| t.spec.agent_ref.as_ref().is_some_and(|r| r.name == agent))
        })
        .filter(|t| {
            filter.phase.as_deref().is_none_or(|phase| {
                let actual = t
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .unwrap_or(TaskPhase::Pending);
                format!("{actual:?}") == phase
            })
        })
        .collect();
    let total = admitted.len();
    admitted.sort_by(|a, b| {
        let key = |t: &AgentTask| (t.creation_timestamp().map(|c| c.0), t.name_any());
        key(b).cmp(&key(a))
    });
    (
        admitted.into_iter().take(limit).map(|t| task(t)).collect(),
        total,
    )
}

/// Task counts per agent and namespace; tasks with an inline template count under `None`.
pub fn queues(snapshot: &Snapshot, filter: &Filter) -> Vec<QueueView> {
    let mut queues: BTreeMap<(String, Option<String>), QueueCounts> = BTreeMap::new();
    for task in &snapshot.tasks {
        let namespace = task.namespace().unwrap_or_default();
        if !filter.admits_namespace(&namespace) {
            continue;
        }
        let agent = task.spec.agent_ref.as_ref().map(|r| r.name.clone());
        queues
            .entry((namespace, agent))
            .or_default()
            .count(task.status.as_ref().and_then(|s| s.phase));
    }
    queues
        .into_iter()
        .map(|((namespace, agent), counts)| {
            let max_concurrent_tasks = agent.as_deref().and_then(|name| {
                snapshot
                    .agents
                    .iter()
                    .find(|a| a.namespace().as_deref() == Some(&namespace) && a.name_any() == name)
                    .and_then(|a| a.spec.max_concurrent_tasks)
            });
            QueueView {
                namespace,
                agent,
                counts,
                max_concurrent_tasks,
            }
        })
        .collect()
}

/// Counts and health per namespace, every namespace that holds one of our objects.
pub fn namespaces(snapshot: &Snapshot) -> Vec<NamespaceSummary> {
    let mut summaries: BTreeMap<String, NamespaceSummary> = BTreeMap::new();
    for agent in &snapshot.agents {
        let summary = summary_of(&mut summaries, agent.namespace());
        summary.agents += 1;
        let conditions = agent.status.as_ref().map(|s| s.conditions.as_slice());
        summary.agents_ready += usize::from(is_true(conditions, agent_condition::READY));
    }
    for provider in &snapshot.providers {
        let summary = summary_of(&mut summaries, provider.namespace());
        summary.providers += 1;
        let conditions = provider.status.as_ref().map(|s| s.conditions.as_slice());
        summary.providers_ready += usize::from(is_true(conditions, provider_condition::READY));
    }
    for task in &snapshot.tasks {
        let summary = summary_of(&mut summaries, task.namespace());
        summary
            .tasks
            .count(task.status.as_ref().and_then(|s| s.phase));
    }
    summaries.into_values().collect()
}

fn summary_of(
    summaries: &mut BTreeMap<String, NamespaceSummary>,
    namespace: Option<String>,
) -> &mut NamespaceSummary {
    let namespace = namespace.unwrap_or_default();
    summaries
        .entry(namespace.clone())
        .or_insert_with(|| NamespaceSummary {
            namespace,
            ..NamespaceSummary::default()
        })
}

/// Agents and providers that are not healthy, then the most recently finished failed tasks.
pub fn attention(snapshot: &Snapshot) -> Vec<Attention> {
    let mut items = Vec::new();
    for view in agents(snapshot, &Filter::default()) {
        if matches!(view.health, Health::Bad | Health::Unknown) {
            items.push(Attention {
                kind: "AgentDeployment",
                namespace: view.namespace,
                name: view.name,
                reason: view.reason,
                message: view.message,
            });
        }
    }
    for view in providers(snapshot, &Filter::default()) {
        if matches!(view.health, Health::Bad | Health::Unknown) {
            items.push(Attention {
                kind: "LLMProvider",
                namespace: view.namespace,
                name: view.name,
                reason: view.reason,
                message: view.message,
            });
        }
    }
    let mut failed: Vec<TaskView> = snapshot
        .tasks
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.phase) == Some(TaskPhase::Failed))
        .map(|t| task(t))
        .collect();
    failed.sort_by_key(|t| std::cmp::Reverse(t.completed));
    items.extend(
        failed
            .into_iter()
            .take(FAILED_TASKS_SHOWN)
            .map(|t| Attention {
                kind: "AgentTask",
                namespace: t.namespace,
                name: t.name,
                reason: t.reason,
                message: t.message,
            }),
    );
    items
}

/// The events about the object with `uid`, newest first, at most [`EVENTS_SHOWN`].
pub fn events_about(snapshot: &Snapshot, uid: &str) -> Vec<EventView> {
    let mut events: Vec<EventView> = snapshot
        .events
        .iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
        .map(|e| EventView {
            warning: e.type_.as_deref() == Some("Warning"),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(e.count)
                .unwrap_or(1),
            last_seen: e
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
                .or(e.last_timestamp.as_ref().map(|t| t.0))
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.first_timestamp.as_ref().map(|t| t.0)),
        })
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
    events.truncate(EVENTS_SHOWN);
    events
}

/// The object as YAML, as the cache holds it (trimmed of managed fields). None of our kinds
/// holds a credential: Secrets are only ever named.
pub fn yaml<K: serde::Serialize>(object: &K) -> String {
    serde_yaml::to_string(object).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
}

pub fn find<'a, K: ResourceExt>(
    objects: &'a [Arc<K>],
    namespace: &str,
    name: &str,
) -> Option<&'a Arc<K>> {
    objects
        .iter()
        .find(|o| o.namespace().as_deref() == Some(namespace) && o.name_any() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(agents: Vec<Value>, providers: Vec<Value>, tasks: Vec<Value>) -> Snapshot {
        fn parse<K: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<Arc<K>> {
            values
                .into_iter()
                .map(|v| Arc::new(serde_json::from_value(v).expect("a valid object")))
                .collect()
        }
        Snapshot {
            agents: parse(agents),
            providers: parse(providers),
            tasks: parse(tasks),
            events: Vec::new(),
            state: CacheState::default(),
            now: "2026-11-25T12:00:00Z".parse().unwrap(),
        }
    }

    type Value = serde_json::Value;

    fn condition(type_: &str, status: &str, reason: &str) -> Value {
        json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} is {status}"),
               "lastTransitionTime": "2026-11-25T11:00:00Z"})
    }

    fn agent(namespace: &str, name: &str, status: Value) -> Value {
        json!({"apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentDeployment",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"image": "registry.example/agent:1", "providers": [{"name": "first"}, {"name": "second"}], "maxConcurrentTasks": 2},
               "status": status})
    }

    fn provider(namespace: &str, name: &str, ready: &str) -> Value {
        json!({"apiVersion": "agentoperator.dev/v1alpha1", "kind": "LLMProvider",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"type": "OpenAI", "endpoint": "https://llm.example/v1"},
               "status": {"conditions": [condition("Ready", ready, if ready == "True" { "Available" } else { "ServerError" })],
                          "models": ["gpt-4o"], "consecutiveFailures": if ready == "True" { 0 } else { 3 }}})
    }

    fn task(namespace: &str, name: &str, agent: &str, phase: &str, created: &str) -> Value {
        json!({"apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask",
               "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
               "spec": {"agentRef": {"name": agent}, "input": "hello"},
               "status": {"phase": phase, "attempts": 1}})
    }

    #[test]
    fn a_task_shows_what_it_spent_and_its_budget_in_words() {
        let mut value = task("team", "t", "support", "Failed", "2026-11-25T10:00:00Z");
        value["spec"]["budget"] = json!({"maxTokens": 1000, "maxCost": "0.50", "currency": "EUR"});
        value["status"]["usage"] = json!({
            "requests": 2, "inputTokens": 700, "outputTokens": 300, "totalTokens": 1000,
            "cost": "0.004000", "currency": "EUR",
            "attempts": [{"attempt": 1, "requests": 2, "inputTokens": 700, "outputTokens": 300,
                          "totalTokens": 1000, "budgetExceeded": true}]
        });
        let task: AgentTask = serde_json::from_value(value).expect("task");
        let view = super::task(&task);
        assert_eq!(view.tokens, Some(1000));
        assert_eq!(view.cost.as_deref(), Some("0.004000 EUR"));
        assert_eq!(view.budget.as_deref(), Some("1000 tokens, 0.50 EUR"));
        assert!(view.usage.expect("usage").attempts[0].budget_exceeded);
        let running = self::task("team", "u", "support", "Running", "2026-11-25T10:00:00Z");
        let unpriced = super::task(&serde_json::from_value(running).expect("task"));
        assert_eq!(
            (unpriced.tokens, unpriced.cost, unpriced.budget),
            (None, None, None)
        );
    }

    #[test]
    fn an_agent_shows_its_chain_its_active_provider_and_its_queue() {
        let failed_over = json!({
            "conditions": [condition("Ready", "True", "Available"), condition("Progressing", "False", "RolloutComplete")],
            "replicas": 2, "readyReplicas": 2, "ready": "2/2", "activeProvider": "second",
            "providers": [{"name": "first", "ready": false, "reason": "ServerError"}, {"name": "second", "model": "gpt-4o", "ready": true}]
        });
        let snapshot = snapshot(
            vec![agent("team-a", "support", failed_over)],
            vec![],
            vec![
                task("team-a", "t1", "support", "Running", "2026-11-25T11:00:00Z"),
                task("team-a", "t2", "support", "Queued", "2026-11-25T11:01:00Z"),
                task("team-b", "t3", "support", "Queued", "2026-11-25T11:02:00Z"),
            ],
        );
        let views = agents(&snapshot, &Filter::default());
        let view = &views[0];
        assert_eq!(view.health, Health::Good);
        assert_eq!(view.ready, "2/2");
        assert_eq!(view.active_provider.as_deref(), Some("second"));
        let chain: Vec<(&str, bool, bool)> = view
            .chain
            .iter()
            .map(|l| (l.name.as_str(), l.ready, l.active))
            .collect();
        assert_eq!(chain, [("first", false, false), ("second", true, true)]);
        // The task in another namespace belongs to another agent of the same name.
        assert_eq!((view.tasks.running, view.tasks.queued), (1, 1));
    }

    #[test]
    fn an_agent_shows_its_budget_what_its_window_used_and_whether_it_is_spent() {
        let mut value = agent(
            "team-a",
            "support",
            json!({
                "conditions": [condition("BudgetExceeded", "True", "WindowSpent")],
                "budget": {"windowStart": "2026-12-01T00:00:00Z", "windowEnd": "2026-12-02T00:00:00Z",
                           "usage": {"requests": 3, "inputTokens": 900, "outputTokens": 100, "totalTokens": 1000,
                                     "cost": "0.010000", "currency": "EUR"},
                           "costNanos": 10000000}
            }),
        );
        value["spec"]["budget"] = json!({"maxTokens": 1000, "maxCost": "5", "currency": "EUR",
                                         "window": {"period": "Month", "timeZone": "Europe/Paris"}});
        let snapshot = snapshot(vec![value], vec![], vec![]);
        let budget = agents(&snapshot, &Filter::default())[0]
            .budget
            .clone()
            .expect("a budget");
        assert_eq!(
            budget.limits,
            "1000 tokens, 5 EUR per Month in Europe/Paris"
        );
        assert_eq!(budget.used.as_deref(), Some("1000 tokens, 0.010000 EUR"));
        assert_eq!(budget.window_end.as_deref(), Some("2026-12-02T00:00:00Z"));
        assert!(budget.exceeded.is_some());
        let plain = snapshot_of_one(agent("team-a", "plain", json!(null)));
        assert_eq!(agents(&plain, &Filter::default())[0].budget, None);
    }

    fn snapshot_of_one(agent: Value) -> Snapshot {
        snapshot(vec![agent], vec![], vec![])
    }

    #[test]
    fn an_agent_without_status_is_unknown_and_a_rollout_is_progressing() {
        let snapshot = snapshot(
            vec![
                agent("team-a", "new", json!(null)),
                agent(
                    "team-a",
                    "rolling",
                    json!({"conditions": [condition("Ready", "False", "Progressing"), condition("Progressing", "True", "RollingOut")]}),
                ),
            ],
            vec![],
            vec![],
        );
        let views = agents(&snapshot, &Filter::default());
        assert_eq!(views[0].name, "new");
        assert_eq!(views[0].health, Health::Unknown);
        assert_eq!(views[0].ready, "0/0");
        assert_eq!(views[1].health, Health::Progressing);
    }

    #[test]
    fn providers_list_their_users_and_failures() {
        let snapshot = snapshot(
            vec![
                agent("team-a", "support", json!(null)),
                agent("team-b", "other", json!(null)),
            ],
            vec![
                provider("team-a", "first", "False"),
                provider("team-a", "spare", "True"),
            ],
            vec![],
        );
        let views = providers(&snapshot, &Filter::default());
        assert_eq!(views[0].name, "first");
        assert_eq!(views[0].health, Health::Bad);
        assert_eq!(views[0].reason, "ServerError");
        assert_eq!(views[0].consecutive_failures, 3);
        assert_eq!(views[0].used_by, ["support"]);
        assert_eq!(views[0].credentials, Health::Unknown);
        assert!(views[1].used_by.is_empty());
    }

    #[test]
    fn tasks_are_newest_first_filtered_and_bounded() {
        let all: Vec<Value> = (0..5)
            .map(|i| {
                let phase = if i % 2 == 0 { "Succeeded" } else { "Failed" };
                task(
                    "team-a",
                    &format!("t{i}"),
                    "support",
                    phase,
                    &format!("2026-11-25T11:0{i}:00Z"),
                )
            })
            .collect();
        let snapshot = snapshot(vec![], vec![], all);
        let (shown, total) = tasks(&snapshot, &Filter::default(), 2);
        assert_eq!(total, 5);
        assert_eq!(
            shown.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["t4", "t3"]
        );
        let failed = Filter {
            phase: Some("Failed".into()),
            ..Filter::default()
        };
        let (shown, total) = tasks(&snapshot, &failed, 10);
        assert_eq!(total, 2);
        assert!(shown.iter().all(|t| t.health == Health::Bad));
        let other_agent = Filter {
            agent: Some("other".into()),
            ..Filter::default()
        };
        assert_eq!(tasks(&snapshot, &other_agent, 10).1, 0);
    }

    #[test]
    fn namespaces_count_health_and_phases_and_attention_lists_what_is_wrong() {
        let snapshot = snapshot(
            vec![agent(
                "team-a",
                "support",
                json!({"conditions": [condition("Ready", "True", "Available")]}),
            )],
            vec![
                provider("team-a", "first", "False"),
                provider("team-b", "spare", "True"),
            ],
            vec![
                task("team-a", "t1", "support", "Failed", "2026-11-25T11:00:00Z"),
                task(
                    "team-a",
                    "t2",
                    "support",
                    "Cancelled",
                    "2026-11-25T11:00:00Z",
                ),
            ],
        );
        let summaries = namespaces(&snapshot);
        assert_eq!(summaries.len(), 2);
        let a = &summaries[0];
        assert_eq!(
            (a.agents, a.agents_ready, a.providers, a.providers_ready),
            (1, 1, 1, 0)
        );
        assert_eq!(
            (a.tasks.failed, a.tasks.cancelled, a.tasks.total()),
            (1, 1, 2)
        );
        let b = &summaries[1];
        assert_eq!((b.namespace.as_str(), b.providers_ready), ("team-b", 1));

        let attention = attention(&snapshot);
        let items: Vec<(&str, &str)> = attention
            .iter()
            .map(|i| (i.kind, i.name.as_str()))
            .collect();
        assert_eq!(items, [("LLMProvider", "first"), ("AgentTask", "t1")]);
    }

    #[test]
    fn events_are_the_objects_own_newest_first() {
        let mut snapshot = snapshot(vec![], vec![], vec![]);
        let event = |uid: &str, reason: &str, last: &str, count: i32| -> Arc<Event> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": format!("{reason}-{uid}")},
                    "involvedObject": {"uid": uid},
                    "type": if reason == "Failed" { "Warning" } else { "Normal" },
                    "reason": reason, "message": reason, "count": count, "lastTimestamp": last
                }))
                .unwrap(),
            )
        };
        snapshot.events = vec![
            event("a", "Created", "2026-11-25T11:00:00Z", 1),
            event("b", "Other", "2026-11-25T11:30:00Z", 1),
            event("a", "Failed", "2026-11-25T11:10:00Z", 4),
        ];
        let events = events_about(&snapshot, "a");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (
                events[0].reason.as_str(),
                events[0].warning,
                events[0].count
            ),
            ("Failed", true, 4)
        );
        assert_eq!(events[1].reason, "Created");
    }
}
