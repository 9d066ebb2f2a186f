//! The AgentTask kind: one agent run with an input, executed as a worker pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::agent_deployment::PodMetadata;
use super::budget::{Budget, TaskUsage};
use super::common::{AgentWorkload, ConfigMapKeyRef, Duration, SecretKeyRef};

/// Largest inline `input`; larger inputs come from a ConfigMap or Secret through `inputFrom`.
pub const MAX_INLINE_INPUT_BYTES: u32 = 64 * 1024;

/// AgentTask runs an agent once on an input, as a worker pod of a Job the operator owns, with a
/// deadline, retries, queueing behind the agent's `maxConcurrentTasks`, and cleanup. The result
/// is recorded in status.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "agentoperator.dev",
    version = "v1alpha1",
    kind = "AgentTask",
    plural = "agenttasks",
    singular = "agenttask",
    namespaced,
    status = "AgentTaskStatus",
    shortname = "atask",
    category = "agents",
    category = "agentoperator",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agentRef.name"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1
    ),
    printcolumn(
        name = "Tokens",
        type_ = "integer",
        json_path = ".status.usage.totalTokens",
        priority = 1
    ),
    printcolumn(
        name = "Cost",
        type_ = "string",
        json_path = ".status.usage.cost",
        priority = 1
    ),
    printcolumn(
        name = "Result",
        type_ = "string",
        json_path = ".status.result.summary",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.agentRef) != has(self.template)").message("set exactly one of spec.agentRef (run an existing AgentDeployment's agent) or spec.template (describe the worker inline)"))]
#[x_kube(validation = kube::core::Rule::new("has(self.input) != has(self.inputFrom)").message("set exactly one of spec.input (inline text) or spec.inputFrom (a ConfigMap or Secret key)"))]
#[x_kube(validation = kube::core::Rule::new(super::common::rule_on_durations(&["self.retryBackoff.initialDelay", "self.retryBackoff.maxDelay"], "duration(self.retryBackoff.initialDelay) <= duration(self.retryBackoff.maxDelay)")).message("spec.retryBackoff.initialDelay must not exceed spec.retryBackoff.maxDelay").field_path(".retryBackoff"))]
#[x_kube(validation = kube::core::Rule::new("has(self.agentRef) == has(oldSelf.agentRef) && has(self.template) == has(oldSelf.template)").message("spec.agentRef and spec.template cannot be switched after creation: create a new AgentTask"))]
#[x_kube(validation = kube::core::Rule::new("has(self.input) == has(oldSelf.input) && has(self.inputFrom) == has(oldSelf.inputFrom)").message("spec.input and spec.inputFrom cannot be added or removed after creation: create a new AgentTask"))]
#[x_kube(validation = kube::core::Rule::new("!oldSelf.cancel || self.cancel").message("spec.cancel cannot be undone: a cancelled task stays cancelled, create a new AgentTask to run it again").field_path(".cancel"))]
// The optional fields that are large and rarely set (autoscaling, budgets, pod metadata, the
// input source, the policies) are boxed: every cached object would otherwise hold room for
// them inline, unused on most (an AgentTask 1,136 → 944 bytes, an AgentDeployment 1,808 →
// 1,240, each cached once per controller).
pub struct AgentTaskSpec {
    /// Run the agent of this AgentDeployment (same namespace): its image, failover chain,
    /// secrets, env and resources. Its `maxConcurrentTasks` queues this task. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.agentRef is immutable: create a new AgentTask for another agent"))]
    pub agent_ref: Option<AgentRef>,

    /// Describe the worker inline instead of referring to an AgentDeployment. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.template is immutable: create a new AgentTask"))]
    // Boxed: most tasks name an agent, and each cached task would otherwise hold room for a
    // whole workload (about 0.6 KiB).
    pub template: Option<Box<TaskTemplate>>,

    /// The input text, mounted into the worker as a file. At most 64 KiB; use `inputFrom` for
    /// larger inputs. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.input is immutable: create a new AgentTask for a different input"))]
    #[x_kube(validation = kube::core::Rule::new("size(bytes(self)) <= 65536").message("spec.input must be at most 65536 bytes in UTF-8; put a larger input in a ConfigMap or Secret and use spec.inputFrom"))]
    pub input: Option<String>,

    /// Take the input from a ConfigMap or Secret key instead. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.inputFrom is immutable: create a new AgentTask for a different input"))]
    pub input_from: Option<Box<InputSource>>,

    /// Named parameters passed to the worker as a mounted JSON file. Immutable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, size(k) <= 253 && size(self[k]) <= 4096)").message("parameter names must be at most 253 characters and values at most 4096"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.parameters are immutable: create a new AgentTask"))]
    pub parameters: BTreeMap<String, String>,

    /// Deadline of one attempt. An attempt still running then is stopped and counts as failed
    /// with reason Timeout.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = kube::core::Rule::new(super::common::positive_duration("self")).message("must be longer than 0s"))]
    pub timeout: Duration,

    /// Further attempts after a failed one. Failures caused by an unavailable provider do not
    /// count.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 20))]
    pub backoff_limit: i32,

    /// Delay between attempts, doubling after each failure.
    #[serde(default)]
    pub retry_backoff: RetryBackoff,

    /// Seconds after the task finishes at which `ttlDeletes` is deleted. Unset keeps
    /// everything until the AgentTask is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// What `ttlSecondsAfterFinished` deletes. `Children` (the default) deletes the task's Jobs,
    /// pods and ConfigMaps and keeps the AgentTask with its status and result summary, so
    /// `kubectl get agenttasks` still shows what ran; `Task` deletes the AgentTask itself, and
    /// with it everything it owns.
    #[serde(default)]
    pub ttl_deletes: TtlDeletes,

    /// Extra labels and annotations for the worker pods. With `agentRef` they are added to the
    /// AgentDeployment's `podMetadata`, and win on conflict. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.podMetadata is immutable: create a new AgentTask"))]
    pub pod_metadata: Option<Box<PodMetadata>>,

    /// Set to true to stop the task: a running attempt is stopped and the task ends Cancelled.
    /// Cannot be set back to false.
    #[serde(default)]
    pub cancel: bool,

    /// Most tokens and/or cost the task may spend over all its attempts. The router refuses a
    /// request that cannot fit and ends a stream once it is spent; the task then ends Failed
    /// with reason BudgetExceeded and is not retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Box<Budget>>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_backoff_limit() -> i32 {
    2
}

/// What the TTL after a finished task deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TtlDeletes {
    /// The task's Jobs, pods and ConfigMaps; the AgentTask and its status stay.
    #[default]
    Children,
    /// The AgentTask itself, and so everything it owns.
    Task,
}

/// A reference to an AgentDeployment in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRef {
    /// Name of the AgentDeployment.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::DNS_SUBDOMAIN)).message("must be an AgentDeployment name: lower-case letters, digits, '-' and '.'"))]
    pub name: String,
}

/// Where the input comes from: exactly one of a ConfigMap key or a Secret key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.configMapKeyRef) != has(self.secretKeyRef)").message("spec.inputFrom needs exactly one of configMapKeyRef or secretKeyRef"))]
pub struct InputSource {
    /// A ConfigMap key holding the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
    /// A Secret key holding the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// An inline worker description, for tasks that do not run an AgentDeployment's agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskTemplate {
    /// Image, command, env, resources, failover chain and the other fields of the worker.
    #[serde(flatten)]
    pub workload: AgentWorkload,
}

/// Delay between attempts: `initialDelay` after the first failure, doubling up to `maxDelay`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBackoff {
    /// Delay after the first failed attempt.
    #[serde(default = "default_initial_delay")]
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    #[serde(default = "default_max_delay")]
    pub max_delay: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            initial_delay: default_initial_delay(),
            max_delay: default_max_delay(),
        }
    }
}

fn default_initial_delay() -> Duration {
    Duration::from_secs(10)
}

fn default_max_delay() -> Duration {
    Duration::from_secs(5 * 60)
}

/// The phase of a task, for display. Derived from the conditions, which are the source of truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaskPhase {
    /// Accepted, not yet started.
    Pending,
    /// Waiting for a slot under the agent's `maxConcurrentTasks`, for a Ready provider, or for the
    /// backoff delay before the next attempt.
    Queued,
    /// An attempt is running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully; the `Failed` condition's reason says why.
    Failed,
    /// Stopped by `spec.cancel`.
    Cancelled,
}

impl TaskPhase {
    /// The phases a task ends in.
    pub const FINAL: [TaskPhase; 3] = [
        TaskPhase::Succeeded,
        TaskPhase::Failed,
        TaskPhase::Cancelled,
    ];
}

/// What the operator observed of the task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentTaskStatus {
    /// Pending, Queued, Running, Succeeded, Failed or Cancelled, derived from the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,
    /// `Complete` and `Failed`, the source of truth of the task's state. While the task runs
    /// both are False with the same reason: Pending, InvalidReference, ConcurrencyLimit,
    /// ProviderUnavailable, BackingOff or Running. At the end, `Complete` is True with reason
    /// Succeeded, or `Failed` is True with reason Timeout, BackoffLimitExceeded, WorkerError
    /// (the worker asked not to be retried), BudgetExceeded or Cancelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the task is in its phase, in one word (the reason of the deciding condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attempts started so far, including the running one.
    #[serde(default)]
    pub attempts: i32,
    /// Attempts that failed and count against `backoffLimit`. Attempts that failed because of
    /// the LLM provider are not counted.
    #[serde(default)]
    pub failed_attempts: i32,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the task finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// From first start to completion, for display (`1m30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Earliest time of the next attempt while backing off after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// The LLMProvider the current or last attempt was pointed at first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The Job of the current or last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The worker pod of the current or last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The result of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// Requests, tokens and cost over all attempts and per attempt, as the worker's router
    /// counted them. An attempt's usage is added once, when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TaskUsage>,
}

/// The result of a task: a bounded summary here, the full result where `configMapRef` points.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// The first 1024 characters of the result (the worker's termination message).
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub summary: String,
    /// Whether `summary` is shorter than the full result.
    #[serde(default)]
    pub truncated: bool,
    /// When the result is longer than the summary: a ConfigMap owned by the task whose key
    /// `result` holds the whole result (at most 4 KiB, the termination message limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectReference>,
}

/// Condition types of an AgentTask.
pub mod condition {
    pub const COMPLETE: &str = "Complete";
    pub const FAILED: &str = "Failed";
    /// True once the task succeeded; False while it runs or waits, and after it failed.
    pub const READY: &str = "Ready";
}

/// The reasons of the `Complete` and `Failed` conditions: a closed, documented set.
pub mod reason {
    /// Accepted; the first attempt is about to start.
    pub const PENDING: &str = "Pending";
    /// The AgentDeployment, an LLMProvider or the input that the task refers to does not exist.
    pub const INVALID_REFERENCE: &str = "InvalidReference";
    /// The agent's `maxConcurrentTasks` is reached; the task starts when a slot frees.
    pub const CONCURRENCY_LIMIT: &str = "ConcurrencyLimit";
    /// No provider of the failover chain is Ready, or the last attempt failed because of the
    /// provider; the task starts when one is Ready, without using up an attempt.
    pub const PROVIDER_UNAVAILABLE: &str = "ProviderUnavailable";
    /// Waiting for `status.nextAttemptTime` before the next attempt.
    pub const BACKING_OFF: &str = "BackingOff";
    /// An attempt is running.
    pub const RUNNING: &str = "Running";
    /// The task finished successfully.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The last attempt ran longer than `spec.timeout`, and no retry is left.
    pub const TIMEOUT: &str = "Timeout";
    /// Attempts failed more than `spec.backoffLimit` times.
    pub const BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
    /// The worker exited with the code that asks not to be retried.
    pub const WORKER_ERROR: &str = "WorkerError";
    /// `spec.cancel` stopped the task.
    pub const CANCELLED: &str = "Cancelled";
    /// The task spent `spec.budget`: its router refused or cut a request, or nothing is left
    /// for another attempt.
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";

    /// Every reason above.
    pub const ALL: [&str; 12] = [
        PENDING,
        INVALID_REFERENCE,
        CONCURRENCY_LIMIT,
        PROVIDER_UNAVAILABLE,
        BACKING_OFF,
        RUNNING,
        SUCCEEDED,
        TIMEOUT,
        BACKOFF_LIMIT_EXCEEDED,
        WORKER_ERROR,
        CANCELLED,
        BUDGET_EXCEEDED,
    ];
}

/// Exit codes with a meaning to the operator (see `docs/agent-contract.md`); any other non-zero
/// code is a failed attempt that is retried up to `backoffLimit`.
pub mod exit_code {
    /// The input cannot be processed: retrying would fail again (sysexits `EX_DATAERR`).
    pub const DO_NOT_RETRY: i32 = 65;
    /// The LLM provider failed: the attempt is not counted and the task waits for a Ready
    /// provider (sysexits `EX_UNAVAILABLE`).
    pub const PROVIDER_UNAVAILABLE: i32 = 69;
}

/// An AgentTask for unit tests elsewhere: built from a spec as JSON, the way the API
/// server would hand it over.
#[cfg(test)]
pub fn task_for_tests(name: &str, spec: serde_json::Value) -> AgentTask {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": name, "namespace": "team", "uid": "u-1"},
        "spec": spec
    }))
    .expect("a valid AgentTask")
}
