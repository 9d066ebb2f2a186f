//! The pages as HTML, rendered from a snapshot by pure functions. maud escapes every value, so
//! nothing from the cluster (names, messages, task results) can become markup.
//!
//! Each page is a layout around one `<main>`; the live stream sends only a new `<main>`.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use maud::{DOCTYPE, Markup, html};

use super::model::{
    self, AgentView, Attention, CacheState, ConditionView, EventView, Filter, Health,
    NamespaceSummary, ProviderView, QueueCounts, QueueView, Snapshot, TaskView,
};
use crate::api::budget::TaskUsage;
use crate::api::{AgentDeployment, AgentTask, LLMProvider};

/// Tasks listed on one page at most; the filters narrow the rest down.
pub const TASKS_SHOWN: usize = 200;

/// The task phases the filter offers, in the order a task passes them.
const PHASES: [&str; 6] = [
    "Pending",
    "Queued",
    "Running",
    "Succeeded",
    "Failed",
    "Cancelled",
];

/// What a URL asks to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    Overview,
    Agents(Filter),
    Agent { namespace: String, name: String },
    Providers(Filter),
    Provider { namespace: String, name: String },
    Tasks(Filter),
    Task { namespace: String, name: String },
}

impl View {
    /// The view at `path` (without the query), with the query's filter; `None` for no page.
    pub fn parse(path: &str, filter: Filter) -> Option<View> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let view = match segments.as_slice() {
            [""] => View::Overview,
            ["agents"] => View::Agents(filter),
            ["providers"] => View::Providers(filter),
            ["tasks"] => View::Tasks(filter),
            [kind, namespace, name] if !namespace.is_empty() && !name.is_empty() => {
                let (namespace, name) = (namespace.to_string(), name.to_string());
                match *kind {
                    "agents" => View::Agent { namespace, name },
                    "providers" => View::Provider { namespace, name },
                    "tasks" => View::Task { namespace, name },
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(view)
    }

    /// The section of the navigation this view belongs to.
    fn section(&self) -> &'static str {
        match self {
            View::Overview => "/",
            View::Agents(_) | View::Agent { .. } => "/agents",
            View::Providers(_) | View::Provider { .. } => "/providers",
            View::Tasks(_) | View::Task { .. } => "/tasks",
        }
    }
}

/// One rendered page: its title, whether its object exists, and its `<main>` content.
pub struct Page {
    pub title: String,
    pub found: bool,
    pub main: Markup,
}

pub fn render(view: &View, snapshot: &Snapshot) -> Page {
    let (title, found, content) = match view {
        View::Overview => ("Overview".to_string(), true, overview(snapshot)),
        View::Agents(filter) => ("Agents".to_string(), true, agents(snapshot, filter)),
        View::Providers(filter) => ("Providers".to_string(), true, providers(snapshot, filter)),
        View::Tasks(filter) => ("Tasks".to_string(), true, tasks(snapshot, filter)),
        View::Agent { namespace, name } => detail(
            "AgentDeployment",
            model::find(&snapshot.agents, namespace, name),
            (namespace, name),
            snapshot,
            agent_page,
        ),
        View::Provider { namespace, name } => detail(
            "LLMProvider",
            model::find(&snapshot.providers, namespace, name),
            (namespace, name),
            snapshot,
            provider_page,
        ),
        View::Task { namespace, name } => detail(
            "AgentTask",
            model::find(&snapshot.tasks, namespace, name),
            (namespace, name),
            snapshot,
            task_page,
        ),
    };
    let main = html! {
        (banners(&snapshot.state))
        (content)
    };
    Page { title, found, main }
}

/// The title, whether the object exists, and the content of one object's page.
fn detail<K>(
    kind: &str,
    found: Option<&Arc<K>>,
    (namespace, name): (&str, &str),
    snapshot: &Snapshot,
    page: fn(&Snapshot, &Arc<K>) -> Markup,
) -> (String, bool, Markup) {
    let content = match found {
        Some(object) => page(snapshot, object),
        None => not_found(kind, namespace, name, snapshot),
    };
    (format!("{namespace}/{name}"), found.is_some(), content)
}

/// The whole document around a page's `<main>`. `version` is the cache's change counter when
/// the page was rendered: its live stream sends nothing until the cache moves past it.
pub fn document(view: &View, page: &Page, state: &CacheState, version: u64) -> Markup {
    let sections = [
        ("/", "Overview"),
        ("/agents", "Agents"),
        ("/providers", "Providers"),
        ("/tasks", "Tasks"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (page.title) " · agent-operator" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "agent-operator" }
                    nav aria-label="Sections" {
                        @for (href, label) in sections {
                            @if view.section() == href {
                                a href=(href) aria-current="page" { (label) }
                            } @else {
                                a href=(href) { (label) }
                            }
                        }
                    }
                    span.scope { "Showing " (state.scope) }
                    span #live role="status" data-state="connecting" { "connecting" }
                }
                main #view data-version=(version) { (page.main) }
            }
        }
    }
}

fn banners(state: &CacheState) -> Markup {
    html! {
        @if state.loading {
            p.banner.progressing role="status" { "Loading: the first list of some objects is still arriving, so counts may be short." }
        }
        @for problem in &state.problems {
            p.banner.bad role="alert" { "Out of date: " (problem) ". Showing the last known state; the dashboard keeps retrying." }
        }
        @if let Some(note) = &state.note {
            p.banner.unknown { "Note: " (note) "." }
        }
    }
}

fn overview(snapshot: &Snapshot) -> Markup {
    let summaries = model::namespaces(snapshot);
    let mut total = NamespaceSummary::default();
    for s in &summaries {
        total.agents += s.agents;
        total.agents_ready += s.agents_ready;
        total.providers += s.providers;
        total.providers_ready += s.providers_ready;
        total.tasks.queued += s.tasks.queued;
        total.tasks.running += s.tasks.running;
        total.tasks.succeeded += s.tasks.succeeded;
        total.tasks.failed += s.tasks.failed;
        total.tasks.cancelled += s.tasks.cancelled;
    }
    let attention = model::attention(snapshot);
    html! {
        h1 { "Overview" }
        div.cards {
            (card("Agents ready", &format!("{}/{}", total.agents_ready, total.agents), "/agents", ratio_health(total.agents_ready, total.agents)))
            (card("Providers ready", &format!("{}/{}", total.providers_ready, total.providers), "/providers", ratio_health(total.providers_ready, total.providers)))
            (card("Tasks queued", &total.tasks.queued.to_string(), "/tasks?phase=Queued", Health::Unknown))
            (card("Tasks running", &total.tasks.running.to_string(), "/tasks?phase=Running", Health::Progressing))
            (card("Tasks failed", &total.tasks.failed.to_string(), "/tasks?phase=Failed", if total.tasks.failed > 0 { Health::Bad } else { Health::Good }))
        }
        section aria-labelledby="namespaces" {
            h2 #namespaces { "Namespaces" }
            @if summaries.is_empty() {
                p.empty { "No LLMProviders, AgentDeployments or AgentTasks in " (snapshot.state.scope) "." }
            } @else {
                div.table {
                    table {
                        thead { tr { th { "Namespace" } th { "Agents ready" } th { "Providers ready" } th.num { "Queued" } th.num { "Running" } th.num { "Succeeded" } th.num { "Failed" } th.num { "Cancelled" } } }
                        tbody {
                            @for s in &summaries {
                                tr data-namespace=(s.namespace) {
                                    td { a href={ "/agents?namespace=" (s.namespace) } { (s.namespace) } }
                                    td { (ratio(s.agents_ready, s.agents)) }
                                    td { (ratio(s.providers_ready, s.providers)) }
                                    (queue_cells(&s.tasks))
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="attention" {
            h2 #attention { "Needs attention" }
            @if attention.is_empty() {
                p.empty { "Nothing: every agent and provider is Ready and no task failed." }
            } @else {
                ul.attention {
                    @for item in &attention { (attention_item(item)) }
                }
            }
        }
    }
}

fn card(label: &str, value: &str, href: &str, health: Health) -> Markup {
    html! {
        a class={ "card " (health.class()) } href=(href) {
            span.value { (value) }
            span.label { (label) }
        }
    }
}

fn ratio_health(ready: usize, total: usize) -> Health {
    match (ready, total) {
        (_, 0) => Health::Unknown,
        (r, t) if r == t => Health::Good,
        _ => Health::Bad,
    }
}

fn ratio(ready: usize, total: usize) -> Markup {
    html! { span class={ "badge " (ratio_health(ready, total).class()) } { (ready) "/" (total) } }
}

fn attention_item(item: &Attention) -> Markup {
    let href = match item.kind {
        "AgentDeployment" => "agents",
        "LLMProvider" => "providers",
        _ => "tasks",
    };
    html! {
        li {
            span.kind { (item.kind) }
            " "
            a href={ "/" (href) "/" (item.namespace) "/" (item.name) } { (item.namespace) "/" (item.name) }
            " "
            span.badge.bad { (item.reason) }
            @if !item.message.is_empty() { " " span.message { (item.message) } }
        }
    }
}

fn agents(snapshot: &Snapshot, filter: &Filter) -> Markup {
    let views = model::agents(snapshot, filter);
    html! {
        h1 { "Agents" }
        (namespace_filter(filter, "/agents"))
        @if views.is_empty() {
            p.empty { "No AgentDeployments." }
        } @else {
            div.table {
                table.agents {
                    thead { tr { th { "Agent" } th { "Namespace" } th { "Ready" } th { "Active provider" } th { "Failover chain" } th { "Status" } th { "Tasks queued / running" } th { "Age" } } }
                    tbody {
                        @for view in &views { (agent_row(view, snapshot.now)) }
                    }
                }
            }
        }
    }
}

fn agent_row(view: &AgentView, now: Timestamp) -> Markup {
    html! {
        tr data-agent={ (view.namespace) "/" (view.name) } {
            td { a href={ "/agents/" (view.namespace) "/" (view.name) } { (view.name) } }
            td { (view.namespace) }
            td { span class={ "badge " (view.health.class()) } { (view.ready) } }
            td.active-provider { (active_provider(view)) }
            td { (chain(view)) }
            td { (status_cell(view.health, &view.reason, &view.message)) }
            td { (view.tasks.queued) " / " (view.tasks.running) }
            td { (age(view.created, now)) }
        }
    }
}

fn active_provider(view: &AgentView) -> Markup {
    html! {
        @match &view.active_provider {
            Some(name) => a href={ "/providers/" (view.namespace) "/" (name) } { (name) },
            None => span.none { "none" },
        }
    }
}

fn chain(view: &AgentView) -> Markup {
    html! {
        ol.chain {
            @for link in &view.chain {
                li class={ (if link.ready { "good" } else { "bad" }) @if link.active { " active" } } data-provider=(link.name) {
                    a href={ "/providers/" (view.namespace) "/" (link.name) } { (link.name) }
                    @if let Some(model) = &link.model { " " span.model { (model) } }
                    " "
                    span.state { @if link.ready { "Ready" } @else { (link.reason.as_deref().unwrap_or("NotReady")) } }
                }
            }
        }
    }
}

fn status_cell(health: Health, reason: &str, message: &str) -> Markup {
    html! {
        span class={ "badge " (health.class()) } title=(message) { (reason) }
    }
}

fn agent_page(snapshot: &Snapshot, agent: &Arc<AgentDeployment>) -> Markup {
    let view = model::agent(agent, &snapshot.tasks);
    let uid = agent.uid().unwrap_or_default();
    let conditions = agent
        .status
        .as_ref()
        .map(|s| model::conditions(&s.conditions))
        .unwrap_or_default();
    html! {
        h1 { span.kind { "AgentDeployment" } " " (view.namespace) "/" (view.name) }
        dl.facts data-agent={ (view.namespace) "/" (view.name) } {
            dt { "Status" } dd { (status_cell(view.health, &view.reason, &view.message)) " " span.message { (view.message) } }
            dt { "Ready replicas" } dd { (view.ready) }
            dt { "Image" } dd { code { (view.image) } }
            dt { "Active provider" } dd.active-provider { (active_provider(&view)) }
            dt { "Tasks" } dd {
                a href={ "/tasks?namespace=" (view.namespace) "&agent=" (view.name) } {
                    (view.tasks.queued) " queued, " (view.tasks.running) " running, " (view.tasks.succeeded) " succeeded, " (view.tasks.failed) " failed"
                }
                @if let Some(limit) = view.max_concurrent_tasks { " (at most " (limit) " at once)" }
            }
            @if let Some(budget) = &view.budget {
                dt { "Budget" } dd.budget { (budget.limits) }
                dt { "Used this window" } dd.budget-used {
                    @if let Some(exceeded) = &budget.exceeded {
                        span.badge.bad { "Spent" } " " span.message { (exceeded) }
                    } @else if let Some(used) = &budget.used {
                        (used)
                        @if let Some(end) = &budget.window_end { " until " (end) }
                    } @else {
                        "not counted yet"
                    }
                }
            }
            dt { "Created" } dd { (age(view.created, snapshot.now)) " ago" }
        }
        section aria-labelledby="chain" {
            h2 #chain { "Failover chain" }
            @if view.chain.is_empty() {
                p.empty { "No providers reported yet." }
            } @else {
                div.table {
                    table {
                        thead { tr { th.num { "#" } th { "Provider" } th { "Model" } th { "State" } th { "In use" } } }
                        tbody {
                            @for (index, link) in view.chain.iter().enumerate() {
                                tr data-provider=(link.name) {
                                    td.num { (index + 1) }
                                    td { a href={ "/providers/" (view.namespace) "/" (link.name) } { (link.name) } }
                                    td { (link.model.as_deref().unwrap_or("provider default")) }
                                    td {
                                        @if link.ready { span.badge.good { "Ready" } }
                                        @else { span.badge.bad { (link.reason.as_deref().unwrap_or("NotReady")) } }
                                    }
                                    td { @if link.active { "active" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        (conditions_section(&conditions, snapshot.now))
        (events_section(snapshot, &uid))
        (yaml_section(&model::yaml(agent.as_ref())))
    }
}

fn providers(snapshot: &Snapshot, filter: &Filter) -> Markup {
    let views = model::providers(snapshot, filter);
    html! {
        h1 { "Providers" }
        (namespace_filter(filter, "/providers"))
        @if views.is_empty() {
            p.empty { "No LLMProviders." }
        } @else {
            div.table {
                table.providers {
                    thead { tr { th { "Provider" } th { "Namespace" } th { "Type" } th { "Health" } th { "Latency" } th { "Models" } th { "Credentials" } th.num { "Failures in a row" } th { "Used by" } } }
                    tbody {
                        @for view in &views { (provider_row(view)) }
                    }
                }
            }
        }
    }
}

fn provider_row(view: &ProviderView) -> Markup {
    html! {
        tr data-provider={ (view.namespace) "/" (view.name) } {
            td { a href={ "/providers/" (view.namespace) "/" (view.name) } { (view.name) } }
            td { (view.namespace) }
            td { (view.provider_type) }
            td.health { (status_cell(view.health, &view.reason, &view.message)) }
            td { (view.latency.as_deref().unwrap_or("–")) }
            td { (models(view)) }
            td { span class={ "badge " (view.credentials.class()) } { (view.credentials_reason) } }
            td.num { (view.consecutive_failures) }
            td { (view.used_by.join(", ")) }
        }
    }
}

fn models(view: &ProviderView) -> Markup {
    let count = view
        .model_count
        .map_or(view.models.len(), |n| usize::try_from(n).unwrap_or(0));
    html! {
        @if view.models.is_empty() { "–" }
        @else {
            (view.models.iter().take(3).cloned().collect::<Vec<_>>().join(", "))
            @if count > 3 { " and " (count - 3) " more" }
        }
    }
}

fn provider_page(snapshot: &Snapshot, provider: &Arc<LLMProvider>) -> Markup {
    let view = model::provider(provider, &snapshot.agents);
    let uid = provider.uid().unwrap_or_default();
    let conditions = provider
        .status
        .as_ref()
        .map(|s| model::conditions(&s.conditions))
        .unwrap_or_default();
    html! {
        h1 { span.kind { "LLMProvider" } " " (view.namespace) "/" (view.name) }
        dl.facts data-provider={ (view.namespace) "/" (view.name) } {
            dt { "Health" } dd.health { (status_cell(view.health, &view.reason, &view.message)) " " span.message { (view.message) } }
            dt { "Type" } dd { (view.provider_type) }
            dt { "Endpoint" } dd { code { (view.endpoint) } }
            dt { "Latency" } dd { (view.latency.as_deref().unwrap_or("not measured yet")) }
            dt { "Credentials" } dd { span class={ "badge " (view.credentials.class()) } { (view.credentials_reason) } }
            dt { "Failures in a row" } dd { (view.consecutive_failures) }
            dt { "Used by" } dd {
                @if view.used_by.is_empty() { "no agent" }
                @for (index, agent) in view.used_by.iter().enumerate() {
                    @if index > 0 { ", " }
                    a href={ "/agents/" (view.namespace) "/" (agent) } { (agent) }
                }
            }
        }
        section aria-labelledby="models" {
            h2 #models { "Models" }
            @if view.models.is_empty() { p.empty { "None listed." } }
            @else { ul.models { @for model in &view.models { li { code { (model) } } } } }
        }
        (conditions_section(&conditions, snapshot.now))
        (events_section(snapshot, &uid))
        (yaml_section(&model::yaml(provider.as_ref())))
    }
}

fn tasks(snapshot: &Snapshot, filter: &Filter) -> Markup {
    let queues = model::queues(
        snapshot,
        &Filter {
            namespace: filter.namespace.clone(),
            ..Filter::default()
        },
    );
    let (views, total) = model::tasks(snapshot, filter, TASKS_SHOWN);
    html! {
        h1 { "Tasks" }
        section aria-labelledby="queues" {
            h2 #queues { "Queue per agent" }
            @if queues.is_empty() {
                p.empty { "No AgentTasks." }
            } @else {
                div.table {
                    table.queues {
                        thead { tr { th { "Agent" } th { "Namespace" } th.num { "Limit" } th.num { "Queued" } th.num { "Running" } th.num { "Succeeded" } th.num { "Failed" } th.num { "Cancelled" } } }
                        tbody { @for queue in &queues { (queue_row(queue)) } }
                    }
                }
            }
        }
        section aria-labelledby="list" {
            h2 #list { "Tasks" }
            (task_filter(filter))
            @if views.is_empty() {
                p.empty { "No tasks match." }
            } @else {
                @if total > views.len() {
                    p.count { "The newest " (views.len()) " of " (total) "; filter to see others." }
                }
                div.table {
                    table.tasks {
                        thead { tr { th { "Task" } th { "Namespace" } th { "Agent" } th { "Phase" } th.num { "Attempts" } th { "Duration" } th.num { "Tokens" } th.num { "Cost" } th { "Reason" } th { "Result" } th { "Age" } } }
                        tbody { @for view in &views { (task_row(view, snapshot.now)) } }
                    }
                }
            }
        }
    }
}

fn queue_row(queue: &QueueView) -> Markup {
    html! {
        tr {
            td {
                @match &queue.agent {
                    Some(agent) => a href={ "/tasks?namespace=" (queue.namespace) "&agent=" (agent) } { (agent) },
                    None => span.none { "inline template" },
                }
            }
            td { (queue.namespace) }
            td.num { @match queue.max_concurrent_tasks { Some(limit) => (limit), None => "none" } }
            (queue_cells(&queue.counts))
        }
    }
}

fn queue_cells(counts: &QueueCounts) -> Markup {
    html! {
        td.num { (counts.queued) }
        td.num { (counts.running) }
        td.num { (counts.succeeded) }
        td.num { @if counts.failed > 0 { span.badge.bad { (counts.failed) } } @else { "0" } }
        td.num { (counts.cancelled) }
    }
}

fn task_row(view: &TaskView, now: Timestamp) -> Markup {
    html! {
        tr data-task={ (view.namespace) "/" (view.name) } {
            td { a href={ "/tasks/" (view.namespace) "/" (view.name) } { (view.name) } }
            td { (view.namespace) }
            td { (task_agent(view)) }
            td { span class={ "badge " (view.health.class()) } { (view.phase) } }
            td.num { (view.attempts) }
            td { (view.duration.as_deref().unwrap_or("–")) }
            td.num { @match view.tokens { Some(tokens) => (tokens), None => "–" } }
            td.num { (view.cost.as_deref().unwrap_or("–")) }
            td { span title=(view.message) { (view.reason) } }
            td.result { @if let Some(result) = &view.result { (shorten(&result.summary, 120)) } }
            td { (age(view.created, now)) }
        }
    }
}

fn task_agent(view: &TaskView) -> Markup {
    html! {
        @match &view.agent {
            Some(agent) => a href={ "/agents/" (view.namespace) "/" (agent) } { (agent) },
            None => span.none { "inline template" },
        }
    }
}

fn task_page(snapshot: &Snapshot, task: &Arc<AgentTask>) -> Markup {
    let view = model::task(task);
    let uid = task.uid().unwrap_or_default();
    let conditions = task
        .status
        .as_ref()
        .map(|s| model::conditions(&s.conditions))
        .unwrap_or_default();
    let status = task.status.clone().unwrap_or_default();
    html! {
        h1 { span.kind { "AgentTask" } " " (view.namespace) "/" (view.name) }
        dl.facts data-task={ (view.namespace) "/" (view.name) } {
            dt { "Phase" } dd.phase { span class={ "badge " (view.health.class()) } { (view.phase) } }
            dt { "Reason" } dd { (view.reason) @if !view.message.is_empty() { ": " span.message { (view.message) } } }
            dt { "Agent" } dd { (task_agent(&view)) }
            dt { "Attempts" } dd { (view.attempts) @if view.failed_attempts > 0 { " (" (view.failed_attempts) " failed)" } }
            dt { "Provider" } dd { (view.provider.as_deref().unwrap_or("–")) }
            dt { "Started" } dd { (moment(view.started, snapshot.now)) }
            dt { "Finished" } dd { (moment(view.completed, snapshot.now)) }
            dt { "Duration" } dd { (view.duration.as_deref().unwrap_or("–")) }
            dt { "Tokens" } dd.tokens { @match view.tokens { Some(tokens) => (tokens), None => "–" } }
            dt { "Cost" } dd.cost { (view.cost.as_deref().unwrap_or("–")) }
            @if let Some(budget) = &view.budget { dt { "Budget" } dd.budget { (budget) } }
            @if let Some(next) = view.next_attempt { dt { "Next attempt" } dd { (moment(Some(next), snapshot.now)) } }
            @if let Some(job) = &status.job_name { dt { "Job" } dd { code { (job) } } }
            @if let Some(pod) = &status.pod_name { dt { "Pod" } dd { code { (pod) } } }
        }
        section aria-labelledby="result" {
            h2 #result { "Result" }
            @match &view.result {
                Some(result) if result.summary.is_empty() => p.empty { "The worker ended without a result." },
                Some(result) => {
                    pre.result { (result.summary) }
                    @if result.truncated {
                        p.count {
                            "The summary is the start of a longer result"
                            @if let Some(config_map) = &result.config_map { ", whole in ConfigMap " code { (config_map) } }
                            "."
                        }
                    }
                },
                None => p.empty { "No result yet." },
            }
        }
        (usage_section(view.usage.as_ref()))
        (conditions_section(&conditions, snapshot.now))
        (events_section(snapshot, &uid))
        (yaml_section(&model::yaml(task.as_ref())))
    }
}

/// What each attempt spent, per provider and model, as its router counted it.
fn usage_section(usage: Option<&TaskUsage>) -> Markup {
    html! {
        section aria-labelledby="usage" {
            h2 #usage { "Usage per attempt" }
            @match usage {
                None => p.empty { "No attempt has ended with a usage report yet." },
                Some(usage) => div.table {
                    table.usage {
                        thead { tr { th.num { "Attempt" } th { "Provider / model" } th.num { "Requests" } th.num { "Input" } th.num { "Cached" } th.num { "Output" } th.num { "Cost" } th { "Budget" } } }
                        tbody {
                            @for attempt in &usage.attempts {
                                tr {
                                    td.num { (attempt.attempt) }
                                    td { (attempt.models.iter().map(|m| format!("{}/{}", m.provider, m.model)).collect::<Vec<_>>().join(", ")) }
                                    td.num { (attempt.usage.requests) }
                                    td.num { (attempt.usage.input_tokens) }
                                    td.num { (attempt.usage.cached_input_tokens) }
                                    td.num { (attempt.usage.output_tokens) }
                                    td.num { (model::cost_text(&attempt.usage).unwrap_or_else(|| "–".into())) }
                                    td { @if attempt.budget_exceeded { span.badge.bad { "exceeded" } } }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

fn namespace_filter(filter: &Filter, base: &str) -> Markup {
    html! {
        @if let Some(namespace) = &filter.namespace {
            p.filter { "Namespace " strong { (namespace) } " · " a href=(base) { "all" } }
        }
    }
}

fn task_filter(filter: &Filter) -> Markup {
    let keep = |phase: Option<&str>| {
        let mut query = Vec::new();
        if let Some(namespace) = &filter.namespace {
            query.push(format!("namespace={namespace}"));
        }
        if let Some(agent) = &filter.agent {
            query.push(format!("agent={agent}"));
        }
        if let Some(phase) = phase {
            query.push(format!("phase={phase}"));
        }
        if query.is_empty() {
            "/tasks".to_string()
        } else {
            format!("/tasks?{}", query.join("&"))
        }
    };
    html! {
        nav.filter aria-label="Filter tasks by phase" {
            @if filter.namespace.is_some() || filter.agent.is_some() {
                span {
                    @if let Some(agent) = &filter.agent { "Agent " strong { (agent) } " " }
                    @if let Some(namespace) = &filter.namespace { "in " strong { (namespace) } " " }
                    "· " a href="/tasks" { "all agents" } " · "
                }
            }
            @if filter.phase.is_none() { a href=(keep(None)) aria-current="true" { "any phase" } }
            @else { a href=(keep(None)) { "any phase" } }
            @for phase in PHASES {
                " "
                @if filter.phase.as_deref() == Some(phase) { a href=(keep(Some(phase))) aria-current="true" { (phase) } }
                @else { a href=(keep(Some(phase))) { (phase) } }
            }
        }
    }
}

fn conditions_section(conditions: &[ConditionView], now: Timestamp) -> Markup {
    html! {
        section aria-labelledby="conditions" {
            h2 #conditions { "Conditions" }
            @if conditions.is_empty() {
                p.empty { "None reported yet." }
            } @else {
                div.table {
                    table.conditions {
                        thead { tr { th { "Type" } th { "Status" } th { "Reason" } th { "Message" } th { "Since" } } }
                        tbody {
                            @for c in conditions {
                                tr data-condition=(c.type_) {
                                    td { (c.type_) }
                                    td { (c.status) }
                                    td { (c.reason) }
                                    td.message { (c.message) }
                                    td { (age(Some(c.since), now)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn events_section(snapshot: &Snapshot, uid: &str) -> Markup {
    let events: Vec<EventView> = model::events_about(snapshot, uid);
    html! {
        section aria-labelledby="events" {
            h2 #events { "Recent events" }
            @if !snapshot.state.events_visible {
                p.empty { "Hidden: your account cannot list events here." }
            } @else if events.is_empty() {
                p.empty { "None in the last hour." }
            } @else {
                div.table {
                    table.events {
                        thead { tr { th { "Type" } th { "Reason" } th { "Message" } th.num { "Count" } th { "Last seen" } } }
                        tbody {
                            @for event in &events {
                                tr {
                                    td { @if event.warning { span.badge.bad { "Warning" } } @else { "Normal" } }
                                    td { (event.reason) }
                                    td.message { (event.message) }
                                    td.num { (event.count) }
                                    td { (age(event.last_seen, snapshot.now)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn yaml_section(yaml: &str) -> Markup {
    html! {
        details #yaml {
            summary { "YAML" }
            pre.yaml { code { (yaml) } }
        }
    }
}

fn not_found(kind: &str, namespace: &str, name: &str, snapshot: &Snapshot) -> Markup {
    html! {
        h1 { span.kind { (kind) } " " (namespace) "/" (name) }
        p.empty {
            "Not found in " (snapshot.state.scope) ". It may have been deleted, or not created yet; this page shows it as soon as it exists."
        }
    }
}

/// `<time>` with the age as text; the page's script keeps the text current between updates.
fn age(since: Option<Timestamp>, now: Timestamp) -> Markup {
    html! {
        @match since {
            Some(since) => time datetime=(since) title=(since) { (age_text(since, now)) },
            None => "–",
        }
    }
}

/// A moment as an age relative to now, in the past or the future.
fn moment(at: Option<Timestamp>, now: Timestamp) -> Markup {
    html! {
        @match at {
            Some(at) if at > now => time datetime=(at) data-future="" title=(at) { "in " (age_text(now, at)) },
            Some(at) => time datetime=(at) title=(at) { (age_text(at, now)) " ago" },
            None => "–",
        }
    }
}

/// Like `kubectl get`'s AGE column: the largest unit, `45s`, `12m`, `3h`, `5d`.
pub fn age_text(since: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(since.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// At most `limit` characters, with an ellipsis when cut.
fn shorten(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot_with_task(summary: &str) -> Snapshot {
        let task: AgentTask = serde_json::from_value(json!({
            "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "t1", "namespace": "team-a", "uid": "u1"},
            "spec": {"agentRef": {"name": "support"}, "input": "hello"},
            "status": {"phase": "Succeeded", "attempts": 1, "result": {"summary": summary}}
        }))
        .expect("a task");
        Snapshot {
            agents: Vec::new(),
            providers: Vec::new(),
            tasks: vec![Arc::new(task)],
            events: Vec::new(),
            state: CacheState {
                scope: "team-a".into(),
                events_visible: true,
                ..CacheState::default()
            },
            now: "2026-11-25T12:00:00Z".parse().expect("a time"),
        }
    }

    #[test]
    fn urls_name_views() {
        let filter = Filter {
            phase: Some("Failed".into()),
            ..Filter::default()
        };
        assert_eq!(View::parse("/", Filter::default()), Some(View::Overview));
        assert_eq!(
            View::parse("/tasks", filter.clone()),
            Some(View::Tasks(filter))
        );
        assert_eq!(
            View::parse("/agents/team-a/support.v2", Filter::default()),
            Some(View::Agent {
                namespace: "team-a".into(),
                name: "support.v2".into()
            })
        );
        for missing in [
            "/secrets",
            "/agents/team-a",
            "/agents/team-a/x/y",
            "/agents//x",
        ] {
            assert_eq!(View::parse(missing, Filter::default()), None, "{missing}");
        }
    }

    #[test]
    fn what_the_cluster_says_is_text_never_markup() {
        let snapshot = snapshot_with_task("<script>alert(1)</script> & done");
        let view = View::Task {
            namespace: "team-a".into(),
            name: "t1".into(),
        };
        let page = render(&view, &snapshot);
        assert!(page.found);
        let html = document(&view, &page, &snapshot.state, 7).into_string();
        assert!(html.contains(r#"<main id="view" data-version="7">"#));
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; done"));
        // The only script is the page's own.
        assert_eq!(html.matches("<script").count(), 1);
    }

    #[test]
    fn a_missing_object_is_a_not_found_page_that_waits_for_it() {
        let snapshot = snapshot_with_task("done");
        let page = render(
            &View::Agent {
                namespace: "team-a".into(),
                name: "gone".into(),
            },
            &snapshot,
        );
        assert!(!page.found);
        assert!(page.main.into_string().contains("Not found in team-a"));
    }

    #[test]
    fn an_empty_result_says_so() {
        let snapshot = snapshot_with_task("");
        let view = View::Task {
            namespace: "team-a".into(),
            name: "t1".into(),
        };
        let html = render(&view, &snapshot).main.into_string();
        assert!(html.contains("ended without a result"));
    }

    #[test]
    fn problems_with_the_watches_are_shown_on_every_page() {
        let mut snapshot = snapshot_with_task("done");
        snapshot.state.problems = vec!["watching agenttasks in team-a: connection refused".into()];
        let html = render(&View::Overview, &snapshot).main.into_string();
        assert!(html.contains("Out of date: watching agenttasks in team-a: connection refused"));
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let ago = |seconds: i64| Timestamp::from_second(now.as_second() - seconds).unwrap();
        assert_eq!(age_text(ago(5), now), "5s");
        assert_eq!(age_text(ago(119), now), "119s");
        assert_eq!(age_text(ago(600), now), "10m");
        assert_eq!(age_text(ago(3 * 3600), now), "3h");
        assert_eq!(age_text(ago(3 * 86_400), now), "3d");
        assert_eq!(age_text(ago(-30), now), "0s");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(shorten("héllo wörld", 4), "héll…");
        assert_eq!(shorten("short", 10), "short");
    }
}
