//! One reconcile of an AgentTask, as a pipeline: read the task's attempts and references from
//! the caches → decide (pure) → apply the worker files and the one step decided → report status.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use super::attempts::{Attempt, observe_attempts};
use super::indexes::AgentKey;
use super::queue::{Waiter, may_start};
use super::release::TaskState;
use super::status::{ChainState, Decision, Inputs, Slot, Step, decide, is_finished};
use super::waiting_writes::WaitingStatus;
use super::{Starts, TaskController};
use crate::api::agent_task::{AgentTaskStatus, InputSource, TtlDeletes, reason};
use crate::api::conditions::{find_condition, now_to_the_second};
use crate::api::{AgentDeployment, AgentTask};
use crate::controller::apply::apply_if_changed;
use crate::controller::chain::{credential_validated, resolve_chain};
use crate::controller::compact::{CachedJob, CachedPod};
use crate::resources::job::{AttemptInputs, Worker, job};
use crate::resources::provider_config::{ResolvedProvider, provider_config};
use crate::resources::router_sidecar::router_of;
use crate::resources::task_config::{
    FILES_HASH_ANNOTATION, WorkerFiles, result_config_map, task_config_map_name,
};

pub const CONTROLLER: &str = "agenttask";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("AgentTask has no namespace")]
    MissingNamespace,
    #[error("cannot apply ConfigMap {name}: {source}")]
    ApplyConfigMap { name: String, source: kube::Error },
    #[error("cannot create Job {name} for attempt {attempt}: {source}")]
    CreateJob {
        name: String,
        attempt: i32,
        source: kube::Error,
    },
    #[error("cannot delete {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("cannot read AgentDeployment {name} named by spec.agentRef: {source}")]
    ReadAgent { name: String, source: kube::Error },
    #[error("cannot read {kind} {name} for spec.inputFrom: {source}")]
    ReadInput {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("cannot update the status: {source}")]
    UpdateStatus { source: kube::Error },
    #[error("cannot update the files of worker pod {name}: {source}")]
    PatchPod { name: String, source: kube::Error },
}

impl ReconcileError {
    /// Every value of [`Self::reason`], for the metrics' zero-valued series.
    pub const REASONS: &[&str] = &[
        "MissingNamespace",
        "Apply",
        "CreateJob",
        "Delete",
        "ReadAgent",
        "ReadInput",
        "UpdateStatus",
        "PatchPod",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::MissingNamespace => "MissingNamespace",
            ReconcileError::ApplyConfigMap { .. } => "Apply",
            ReconcileError::CreateJob { .. } => "CreateJob",
            ReconcileError::Delete { .. } => "Delete",
            ReconcileError::ReadAgent { .. } => "ReadAgent",
            ReconcileError::ReadInput { .. } => "ReadInput",
            ReconcileError::UpdateStatus { .. } => "UpdateStatus",
            ReconcileError::PatchPod { .. } => "PatchPod",
        }
    }
}

#[instrument(skip_all, fields(otel.name = "reconcile AgentTask", kind = "AgentTask", namespace = task.namespace(), name = %task.name_any(), reconcile_id = %crate::controller::reconcile_id()))]
pub async fn reconcile(
    task: Arc<AgentTask>,
    controller: Arc<TaskController>,
) -> Result<Action, ReconcileError> {
    // Decisions need whole caches: an attempt decided on a partial view of the Jobs could
    // start one that already ran.
    controller.context.readiness.wait_for_caches().await;
    // Observed when the reconcile ends, on every path, errors included.
    let _timer = controller.context.metrics.reconcile_timer(CONTROLLER);
    // Being deleted: its Jobs and pods go with it; starting another attempt now would race
    // the garbage collector.
    if task.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = task.namespace().ok_or(ReconcileError::MissingNamespace)?;
    let name = task.name_any();
    let uid = task.uid().unwrap_or_default();
    let previous = controller.written.previous(&uid, task.status.as_ref());

    // Read.
    let attempts = if !is_finished(previous.as_ref()) {
        attempts_of(&controller, &task)
    } else if previous.as_ref().and_then(|s| s.reason.as_deref()) == Some(reason::CANCELLED) {
        stopped_after_finish(&controller, &task)
    } else {
        Vec::new()
    };
    let agent = match &task.spec.agent_ref {
        Some(reference) => {
            let cached = controller
                .caches
                .agents
                .get(&ObjectRef::new(&reference.name).within(&namespace));
            match cached {
                Some(agent) => Some(agent),
                // A finished task reads nothing of its agent; a task already reported broken
                // had its miss confirmed, and the agent's watch event brings it back.
                None if is_finished(previous.as_ref()) || reported_broken(previous.as_ref()) => {
                    None
                }
                None => agent_missing_from_cache(&controller, &namespace, &reference.name).await?,
            }
        }
        None => None,
    };
    let worker = worker_of(&task, agent.as_deref());
    let chain = worker
        .as_ref()
        .map(|w| {
            resolve_chain(
                &controller.caches.providers,
                &w.workload.providers,
                &namespace,
                |provider, _| credential_validated(provider),
            )
        })
        .unwrap_or_default();
    let may_start_attempt = !is_finished(previous.as_ref())
        && attempts
            .last()
            .is_none_or(|a| matches!(a.outcome, super::attempts::Outcome::Failed { .. }));
    let broken_reference = match &worker {
        Err(message) => Some(message.clone()),
        Ok(_) if may_start_attempt => missing_input(&controller, &task, &namespace).await?,
        Ok(_) => None,
    };

    // Decide, and claim a slot in the same critical section.
    let decision = {
        let mut starting = controller
            .starting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = match (agent.as_deref(), may_start_attempt) {
            (Some(agent), true) => slot_for(&controller, &task, agent, &mut starting),
            _ => Slot::Free,
        };
        let inputs = Inputs {
            name: &name,
            spec: &task.spec,
            generation: task.meta().generation,
            attempts: &attempts,
            broken_reference,
            chain: chain_state(&chain),
            slot,
            created: task.meta().creation_timestamp.as_ref().map(|t| t.0),
        };
        let decision = decide(previous.as_ref(), &inputs, now_to_the_second());
        if matches!(decision.step, Step::StartAttempt { .. })
            && let Some(agent) = agent.as_deref()
        {
            starting.insert(
                uid.clone(),
                (namespace.clone(), agent.name_any()),
                name.clone(),
            );
        }
        decision
    };

    // Apply.
    let files = (!is_finished(Some(&decision.status))).then(|| {
        let tools = agent
            .as_ref()
            .map(|a| a.spec.tools.clone())
            .unwrap_or_default();
        let router = worker.as_ref().ok().and_then(|w| router_of(&w.workload));
        let mut providers = provider_config(&chain, &tools, router);
        // In the next attempt's files, so its router starts with what is left.
        providers.allowance =
            super::budget::allowance(task.spec.budget.as_deref(), decision.status.usage.as_ref());
        WorkerFiles::of(&task, &providers)
    });
    if let Some(files) = &files {
        keep_files_current(&controller, &task, &namespace, &attempts, files).await?;
    }
    let applied = apply_step(&controller, &task, &decision, worker.ok(), &chain, files).await;
    if applied.is_err() && matches!(decision.step, Step::StartAttempt { .. }) {
        forget_start(&controller, &uid);
    }
    applied?;

    // Report, then let go of the pods whose usage that status records.
    report(&controller, &task, previous.as_ref(), &decision).await?;
    let recorded = TaskState {
        deleting: false,
        status: Some(&decision.status),
    };
    super::release::release_attempts(&controller, &namespace, &attempts, recorded).await;
    tracing::debug!(reason = ?decision.status.reason, step = ?step_name(&decision.step), requeue_after = ?decision.requeue_after, "reconciled");
    Ok(decision.next_look())
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Nothing => "none",
        Step::StartAttempt { .. } => "start attempt",
        Step::StopAttempt { .. } => "stop attempt",
        Step::StoreResult { .. } => "store result",
        Step::Cleanup => "cleanup",
    }
}

/// The task's attempts from the Jobs it owns and their pods.
fn attempts_of(controller: &TaskController, task: &AgentTask) -> Vec<Attempt> {
    let caches = &controller.caches;
    let (Some(uid), Some(namespace)) = (task.uid(), task.namespace()) else {
        return Vec::new();
    };
    let jobs: Vec<Arc<CachedJob>> = caches
        .jobs_by_task
        .members(&uid)
        .iter()
        .filter_map(|name| caches.jobs.get(&ObjectRef::new(name).within(&namespace)))
        .collect();
    let job_names: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j.metadata.name.as_deref())
        .collect();
    // A newer task of the same name does not own this one's pods: matched by their Job.
    let pods: Vec<Arc<CachedPod>> = pods_of(controller, task)
        .into_iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Job" && job_names.contains(&o.name.as_str()))
        })
        .collect();
    let jobs: Vec<&CachedJob> = jobs.iter().map(Arc::as_ref).collect();
    let pods: Vec<&CachedPod> = pods.iter().map(Arc::as_ref).collect();
    observe_attempts(&jobs, &pods)
}

/// The worker pods that name the task, whichever of its Jobs made them.
fn pods_of(controller: &TaskController, task: &AgentTask) -> Vec<Arc<CachedPod>> {
    let caches = &controller.caches;
    let Some(namespace) = task.namespace() else {
        return Vec::new();
    };
    let key = (namespace, task.name_any());
    caches
        .pods_by_task
        .members(&key)
        .iter()
        .filter_map(|name| caches.pods.get(&ObjectRef::new(name).within(&key.0)))
        .collect()
}

/// A cancelled task's attempts whose pods stopped after it finished: see
/// [`super::attempts::stopped_after_finish`].
fn stopped_after_finish(controller: &TaskController, task: &AgentTask) -> Vec<Attempt> {
    let pods = pods_of(controller, task);
    let pods: Vec<&CachedPod> = pods.iter().map(Arc::as_ref).collect();
    super::attempts::stopped_after_finish(task.metadata.creation_timestamp.as_ref(), &pods)
}

fn reported_broken(status: Option<&AgentTaskStatus>) -> bool {
    status.and_then(|s| s.reason.as_deref()) == Some(reason::INVALID_REFERENCE)
}

/// An agent the cache does not have, read from the API server before the task reports it
/// missing. The cache lags the API by a watch event: a task created in the same second as its
/// agent (as a GitOps sync or a Helm release creates them) is reconciled before that event
/// arrives, and reporting `InvalidReference` then would publish a Warning, and a status, that
/// are false. Only a miss costs the read; the agent's own watch event reconciles the task
/// again when it arrives. A list of the one name, not a GET: it needs no permission beyond
/// the watch's, so an operator upgraded before its RBAC still starts.
async fn agent_missing_from_cache(
    controller: &TaskController,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<AgentDeployment>>, ReconcileError> {
    let only_this = ListParams::default().fields(&format!("metadata.name={name}"));
    let found = Api::<AgentDeployment>::namespaced(controller.context.client.clone(), namespace)
        .list(&only_this)
        .await
        .map_err(|source| ReconcileError::ReadAgent {
            name: name.to_string(),
            source,
        })?;
    Ok(found.items.into_iter().next().map(Arc::new))
}

/// The worker from the referenced AgentDeployment or the inline template, or why there is none.
fn worker_of(task: &AgentTask, agent: Option<&AgentDeployment>) -> Result<Worker, String> {
    let task_metadata = task
        .spec
        .pod_metadata
        .as_deref()
        .cloned()
        .unwrap_or_default();
    if let Some(template) = &task.spec.template {
        return Ok(Worker {
            workload: template.workload.clone(),
            pod_metadata: task_metadata,
            security: crate::api::agent_deployment::AgentSecurity::default(),
            image_pull_policy: None,
            service_account: template.workload.service_account_name.clone(),
        });
    }
    let reference = task
        .spec
        .agent_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .unwrap_or_default();
    let Some(agent) = agent else {
        return Err(format!(
            "AgentDeployment {reference} named by spec.agentRef does not exist; create it, or delete this task and create one for an existing agent"
        ));
    };
    let mut pod_metadata = agent
        .spec
        .pod_metadata
        .as_deref()
        .cloned()
        .unwrap_or_default();
    pod_metadata.labels.extend(task_metadata.labels);
    pod_metadata.annotations.extend(task_metadata.annotations);
    let workload = &agent.spec.workload;
    Ok(Worker {
        workload: workload.clone(),
        pod_metadata,
        security: agent.spec.security.clone(),
        image_pull_policy: agent.spec.image_pull_policy,
        service_account: Some(workload.service_account_name.clone().unwrap_or_else(|| {
            crate::controller::agent_deployment::reconcile::child_names(&agent.name_any())
                .service_account
        })),
    })
}

/// Checks `spec.inputFrom` just before an attempt would start: a missing ConfigMap, Secret or
/// key is a condition naming it, not a pod stuck in ContainerCreating. Read directly, not
/// cached: it is needed once per attempt, and caching every ConfigMap and Secret would cost
/// far more memory.
async fn missing_input(
    controller: &TaskController,
    task: &AgentTask,
    namespace: &str,
) -> Result<Option<String>, ReconcileError> {
    let client = &controller.context.client;
    match task.spec.input_from.as_deref() {
        Some(InputSource {
            config_map_key_ref: Some(reference),
            ..
        }) => {
            let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(&reference.name)
                .await
                .map_err(|source| ReconcileError::ReadInput {
                    kind: "ConfigMap",
                    name: reference.name.clone(),
                    source,
                })?;
            let has_key = found.as_ref().is_some_and(|c| {
                c.data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(&reference.key))
                    || c.binary_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(&reference.key))
            });
            Ok(describe_missing(
                "ConfigMap",
                found.is_some(),
                has_key,
                &reference.name,
                &reference.key,
            ))
        }
        Some(InputSource {
            secret_key_ref: Some(reference),
            ..
        }) => {
            let found = Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(&reference.name)
                .await
                .map_err(|source| ReconcileError::ReadInput {
                    kind: "Secret",
                    name: reference.name.clone(),
                    source,
                })?;
            let has_key = found.as_ref().is_some_and(|s| {
                s.data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(&reference.key))
            });
            Ok(describe_missing(
                "Secret",
                found.is_some(),
                has_key,
                &reference.name,
                &reference.key,
            ))
        }
        _ => Ok(None),
    }
}

fn describe_missing(
    kind: &str,
    exists: bool,
    has_key: bool,
    name: &str,
    key: &str,
) -> Option<String> {
    match (exists, has_key) {
        (false, _) => Some(format!(
            "{kind} {name} named by spec.inputFrom does not exist; create it with key {key}"
        )),
        (true, false) => Some(format!(
            "{kind} {name} named by spec.inputFrom has no key {key}; add the key"
        )),
        (true, true) => None,
    }
}

fn chain_state(chain: &[ResolvedProvider]) -> ChainState {
    if chain.is_empty() {
        return ChainState::Empty;
    }
    match chain.iter().find(|p| p.ready) {
        Some(ready) => ChainState::Ready(ready.name.clone()),
        None => ChainState::NoneReady(chain.iter().map(|p| p.name.clone()).collect()),
    }
}

/// The queue of the task's agent, from the caches plus the starts this process has claimed.
/// Reads the holders of slots and the queue ahead of the task only: constant work per
/// reconcile, however many tasks wait behind it.
fn slot_for(
    controller: &TaskController,
    task: &AgentTask,
    agent: &AgentDeployment,
    starting: &mut Starts,
) -> Slot {
    let Some(limit) = agent.spec.max_concurrent_tasks else {
        return Slot::Free;
    };
    let caches = &controller.caches;
    starting.seed_once(&caches.tasks, &caches.jobs_by_task);
    let key: AgentKey = (task.namespace().unwrap_or_default(), agent.name_any());
    let cached = |name: &str| caches.tasks.get(&ObjectRef::new(name).within(&key.0));
    let status_is = |task: &AgentTask, test: fn(Option<&AgentTaskStatus>) -> bool| {
        let uid = task.uid().unwrap_or_default();
        controller
            .written
            .read_previous(&uid, task.status.as_ref(), test)
    };
    let holding = |task: Arc<AgentTask>| {
        (!status_is(&task, is_finished)).then(|| task.uid().unwrap_or_default())
    };
    let mut holders: HashSet<String> = caches.queues.with_members(&key, |places| {
        places
            .take_while(|place| !place.waiting)
            .filter_map(|place| cached(&place.name))
            .filter_map(holding)
            .collect()
    });
    holders.extend(
        starting
            .of_agent(&key)
            .filter_map(cached)
            .filter_map(holding),
    );
    let uid = task.uid().unwrap_or_default();
    let admitted = holders.contains(&uid)
        || caches.queues.with_members(&key, |places| {
            let queue = places
                .filter(|place| place.waiting)
                .filter_map(|place| cached(&place.name))
                .map(|waiting| {
                    let uid = waiting.uid().unwrap_or_default();
                    Waiter {
                        holds_slot: holders.contains(&uid),
                        finished: status_is(&waiting, is_finished),
                        blocked: status_is(&waiting, waits_for_a_reference),
                        uid,
                    }
                });
            may_start(&uid, holders.len(), queue, limit)
        });
    if admitted {
        Slot::Free
    } else {
        Slot::Full {
            agent: key.1,
            limit,
        }
    }
}

/// Waiting for a broken reference to be fixed, not for a slot.
fn waits_for_a_reference(status: Option<&AgentTaskStatus>) -> bool {
    status
        .and_then(|s| find_condition(&s.conditions, crate::api::agent_task::condition::COMPLETE))
        .is_some_and(|c| c.reason == reason::INVALID_REFERENCE)
}

fn forget_start(controller: &TaskController, uid: &str) {
    if let Ok(mut starting) = controller.starting.lock() {
        starting.remove(uid);
    }
}

/// Keeps the worker's files current while an attempt runs, so that its router follows the
/// chain: the running pods' annotations, or the task's ConfigMap where the files live there
/// (too large for annotations, or an attempt started by an operator that used it for all).
async fn keep_files_current(
    controller: &TaskController,
    task: &AgentTask,
    namespace: &str,
    attempts: &[Attempt],
    files: &WorkerFiles,
) -> Result<(), ReconcileError> {
    let config_map = ObjectRef::new(&task_config_map_name(&task.name_any())).within(namespace);
    if !files.annotated() || controller.caches.config_maps.get(&config_map).is_some() {
        apply_config_map(controller, files.config_map(task)).await?;
    }
    if !files.annotated() {
        return Ok(());
    }
    let hash = files.hash();
    let running = attempts
        .iter()
        .filter(|a| matches!(a.outcome, super::attempts::Outcome::Running))
        .filter_map(|a| a.pod_name.as_deref());
    for name in running {
        let Some(pod) = controller
            .caches
            .pods
            .get(&ObjectRef::new(name).within(namespace))
        else {
            continue;
        };
        // A pod without the hash reads its files from the ConfigMap, kept current above.
        let stale = pod
            .annotation(FILES_HASH_ANNOTATION)
            .is_some_and(|current| current != hash);
        if !stale || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"annotations": files.annotations()}});
        match Api::<Pod>::namespaced(controller.context.client.clone(), namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(pod = name, "worker files updated"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ReconcileError::PatchPod {
                    name: name.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

async fn apply_config_map(
    controller: &TaskController,
    config: ConfigMap,
) -> Result<(), ReconcileError> {
    let name = config.name_any();
    apply_if_changed(
        &controller.context.client,
        &controller.caches.config_maps,
        config,
    )
    .await
    .map(|_| ())
    .map_err(|source| ReconcileError::ApplyConfigMap { name, source })
}

async fn apply_step(
    controller: &TaskController,
    task: &AgentTask,
    decision: &Decision,
    worker: Option<Worker>,
    chain: &[ResolvedProvider],
    files: Option<WorkerFiles>,
) -> Result<(), ReconcileError> {
    let client = &controller.context.client;
    let namespace = task.namespace().unwrap_or_default();
    match &decision.step {
        Step::Nothing => Ok(()),
        Step::StartAttempt { number, provider } => {
            let (Some(worker), Some(files)) = (worker, files) else {
                return Ok(());
            };
            let inputs = AttemptInputs {
                attempt: *number,
                worker,
                credentials: chain
                    .iter()
                    .filter_map(|p| p.credential.clone().map(|c| (p.name.clone(), c)))
                    .collect(),
                provider: provider.clone(),
                router: controller.context.router.clone(),
            };
            let job = job(task, &inputs, &files);
            let name = job.name_any();
            // Create, never apply: a Job of this attempt that exists already (a restart, a
            // stale cache) is refused with 409 and the attempt runs once.
            match Api::<Job>::namespaced(client.clone(), &namespace)
                .create(&PostParams::default(), &job)
                .await
            {
                Ok(_) => {
                    let metrics = &controller.context.metrics;
                    metrics.start_task_namespace(&namespace);
                    metrics
                        .task_attempts
                        .with_label_values(&[namespace.as_str()])
                        .inc();
                    tracing::info!(job = %name, attempt = number, "attempt started");
                    Ok(())
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(job = %name, "the attempt's Job exists already");
                    Ok(())
                }
                Err(source) => Err(ReconcileError::CreateJob {
                    name,
                    attempt: *number,
                    source,
                }),
            }
        }
        Step::StopAttempt { job_name } => {
            delete::<Job>(controller, &namespace, job_name, "Job").await
        }
        Step::StoreResult { result } => {
            let config = result_config_map(task, result);
            apply_config_map(controller, config).await
        }
        Step::Cleanup => cleanup(controller, task, &namespace).await,
    }
}

/// After the TTL: the task's Jobs (their pods follow through garbage collection) and
/// ConfigMaps, or the task itself, as `spec.ttlDeletes` says.
async fn cleanup(
    controller: &TaskController,
    task: &AgentTask,
    namespace: &str,
) -> Result<(), ReconcileError> {
    if task.spec.ttl_deletes == TtlDeletes::Task {
        return delete::<AgentTask>(controller, namespace, &task.name_any(), "AgentTask").await;
    }
    let uid = task.uid();
    let owned =
        |owners: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            owners
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == uid.as_ref())
        };
    let jobs = uid
        .as_ref()
        .map(|uid| controller.caches.jobs_by_task.members(uid))
        .unwrap_or_default();
    for name in jobs {
        delete::<Job>(controller, namespace, &name, "Job").await?;
    }
    let config_maps: Vec<String> = controller
        .caches
        .config_maps
        .state()
        .iter()
        .filter(|c| owned(&c.metadata.owner_references))
        .map(|c| c.name_any())
        .collect();
    for name in config_maps {
        delete::<ConfigMap>(controller, namespace, &name, "ConfigMap").await?;
    }
    Ok(())
}

async fn delete<K>(
    controller: &TaskController,
    namespace: &str,
    name: &str,
    kind: &'static str,
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    // Background propagation: the garbage collector removes the Job's pods.
    match Api::<K>::namespaced(controller.context.client.clone(), namespace)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError::Delete {
            kind,
            name: name.to_string(),
            source,
        }),
    }
}

/// Writes the status when it changed, with the Event and metrics of the transition.
async fn report(
    controller: &TaskController,
    task: &AgentTask,
    previous: Option<&AgentTaskStatus>,
    decision: &Decision,
) -> Result<(), ReconcileError> {
    let status = &decision.status;
    let uid = task.uid().unwrap_or_default();
    // No other write of this task's status is queued or in flight past this point.
    let reread;
    let previous = if controller.waiting_writes.settle(&uid).await {
        reread = controller.written.previous(&uid, task.status.as_ref());
        reread.as_ref()
    } else {
        previous
    };
    if !super::status::worth_writing(previous, status) {
        return Ok(());
    }
    // Waiting for a slot has no Event, usage or metric to go with it: the write takes its turn
    // behind the others (`waiting_writes`) and this reconcile ends now.
    if status.reason.as_deref() == Some(reason::CONCURRENCY_LIMIT) {
        controller
            .waiting_writes
            .defer(uid, WaitingStatus::of(task, previous, status));
        return Ok(());
    }
    let namespace = task.namespace().unwrap_or_default();
    let name = task.name_any();
    let written = Api::<AgentTask>::namespaced(controller.context.client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(crate::controller::written_status::status_patch(
                previous, status,
            )),
        )
        .await;
    match written {
        Ok(_) => {}
        // Deleted since the cache last saw it (during a watch gap the cache lags): nothing is
        // left to report or to retry. A Job this reconcile started for it has the deleted task
        // as owner, so the garbage collector removes it.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            controller.forget(task);
            return Ok(());
        }
        Err(source) => return Err(ReconcileError::UpdateStatus { source }),
    }
    controller.written.remember(uid.clone(), status.clone());
    let metrics = &controller.context.metrics;
    metrics.status_written(CONTROLLER);
    // Counted once: an attempt's usage enters the status once, in the write that adds it.
    let recorded = |s: Option<&AgentTaskStatus>| {
        s.and_then(|s| s.usage.as_ref())
            .map(|u| u.attempts.clone())
            .unwrap_or_default()
    };
    let before = recorded(previous);
    for attempt in recorded(Some(status))
        .iter()
        .filter(|a| !before.iter().any(|b| b.attempt == a.attempt))
    {
        metrics.record_task_usage(&namespace, &attempt.usage);
    }

    // A Warning Event for what a person must act on: a failed attempt, a wait on a provider or
    // a broken reference, a failed or cancelled end. Starts, queueing and success are in
    // status only: at thousands of tasks, an Event each would add a write to every task.
    let reason_of = |s: Option<&AgentTaskStatus>| s.and_then(|s| s.reason.clone());
    if reason_of(previous) != reason_of(Some(status))
        && let Some(condition) = status.conditions.first()
        && !matches!(
            condition.reason.as_str(),
            reason::PENDING | reason::RUNNING | reason::CONCURRENCY_LIMIT | reason::SUCCEEDED
        )
    {
        controller
            .context
            .publish(task, true, &condition.reason, condition.message.clone())
            .await;
    }
    if is_finished(Some(status)) && !is_finished(previous) {
        forget_start(controller, &uid);
        let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
        if let (Some(start), Some(end)) = (&status.start_time, &status.completion_time) {
            let seconds = end.0.duration_since(start.0).as_secs_f64();
            metrics
                .task_duration
                .with_label_values(&[namespace.as_str(), phase.as_str()])
                .observe(seconds.max(0.0));
        }
        // The slot this task held is free: wake the tasks waiting behind it, which compare
        // against the status just written.
        if let Some(agent) = &task.spec.agent_ref {
            controller.wake_queue(Some(&namespace), &agent.name);
        }
    }
    Ok(())
}
