//! What a task should do next and the status that says so, decided from what the controller
//! read. Pure: no client, no clock (the time is an argument), so every path has a unit test.
//!
//! The conditions `Complete` and `Failed` are the source of truth; `phase` and `reason` are
//! derived from them for display. Once either is True the task is finished and its status is
//! never recomputed from Jobs again (they may be gone by then).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;

use super::attempts::{Attempt, Failure, Outcome};
use crate::api::agent_task::{
    AgentTaskSpec, AgentTaskStatus, TaskPhase, TaskResult, condition, reason,
};
use crate::api::conditions::{
    ConditionStatus, DesiredCondition, Progress, find_condition, is_condition_true,
    merge_conditions,
};
use crate::resources::job::job_name;

/// Characters of the result kept in `status.result.summary`.
pub const SUMMARY_CHARS: usize = 1024;

/// How often a task with a broken reference looks again.
pub const REFERENCE_RECHECK: Duration = Duration::from_secs(10);

/// The failover chain as far as starting an attempt is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainState {
    /// The worker has no providers: nothing to wait for.
    Empty,
    /// The first Ready provider.
    Ready(String),
    /// No provider is Ready; their names, for the message.
    NoneReady(Vec<String>),
}

/// Whether the agent's `maxConcurrentTasks` lets this task start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    Free,
    Full { agent: String, limit: i32 },
}

/// Everything the decision depends on.
pub struct Inputs<'a> {
    pub name: &'a str,
    pub spec: &'a AgentTaskSpec,
    pub generation: Option<i64>,
    pub attempts: &'a [Attempt],
    /// A reference that does not resolve, as a message naming it and the fix.
    pub broken_reference: Option<String>,
    pub chain: ChainState,
    pub slot: Slot,
    /// When the task was created: a reference applied together with it gets a moment to
    /// appear before the task reads as stalled.
    pub created: Option<Timestamp>,
}

/// How long a task waits for a missing reference, applied together with it, before it reads
/// as stalled (kstatus Failed).
pub const REFERENCE_GRACE: Duration = Duration::from_secs(10);

/// The one thing the reconcile does besides writing status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Create the Job of this attempt.
    StartAttempt {
        number: i32,
        provider: Option<String>,
    },
    /// Delete the running attempt's Job (cancellation).
    StopAttempt {
        job_name: String,
    },
    /// Keep the whole result in the result ConfigMap.
    StoreResult {
        result: String,
    },
    /// The TTL after finishing has passed.
    Cleanup,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: AgentTaskStatus,
    pub step: Step,
    /// When to look again without any watch event (a backoff or TTL ending).
    pub requeue_after: Option<Duration>,
}

/// Nothing announces drift of a running task that nobody changed; look again this often.
const IDLE_REQUEUE: Duration = Duration::from_secs(600);

impl Decision {
    /// When to reconcile again without a watch event. A finished task waits only for its TTL,
    /// if it has one: nothing about it changes unless an object it watches does, and its pods
    /// are released by the sweep. A scheduled look is an entry in kube-runtime's scheduler for
    /// as long as the task exists, and a reconcile every 10 minutes that finds nothing to do;
    /// finished tasks are most of the tasks.
    pub fn next_look(&self) -> Action {
        match self.requeue_after {
            Some(after) => Action::requeue(after),
            None if is_finished(Some(&self.status)) => Action::await_change(),
            None => Action::requeue(IDLE_REQUEUE),
        }
    }
}

/// Whether a status is final: `Complete` or `Failed` is True.
pub fn is_finished(status: Option<&AgentTaskStatus>) -> bool {
    status.is_some_and(|s| {
        is_condition_true(&s.conditions, condition::COMPLETE)
            || is_condition_true(&s.conditions, condition::FAILED)
    })
}

/// Whether `status` is worth a write over `previous`. The worker pod's name alone is not: the
/// pod appears moments after its Job, and writing its name on its own would cost every task a
/// status write more. It goes out with the next change, the end at the latest; until then
/// `status.jobName` names the Job, whose pod carries its `job-name` label.
pub fn worth_writing(previous: Option<&AgentTaskStatus>, status: &AgentTaskStatus) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let but_the_pod = AgentTaskStatus {
        pod_name: previous.pod_name.clone(),
        ..status.clone()
    };
    but_the_pod != *previous
}

pub fn decide(previous: Option<&AgentTaskStatus>, inputs: &Inputs, now: Timestamp) -> Decision {
    if let Some(finished) = previous.filter(|s| is_finished(Some(s))) {
        return after_finish(finished, inputs, now);
    }
    let base = carried_over(previous, inputs);
    let latest = inputs.attempts.last();
    let failures: Vec<&Failure> = inputs
        .attempts
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Failed { failure, .. } => Some(failure),
            _ => None,
        })
        .collect();
    let counted = i32::try_from(failures.iter().filter(|f| f.counts()).count()).unwrap_or(i32::MAX);
    let base = AgentTaskStatus {
        failed_attempts: base.failed_attempts.max(counted),
        ..base
    };

    match latest.map(|a| &a.outcome) {
        Some(Outcome::Running) => {
            let attempt = latest
                .map(|a| (a.number, a.job_name.clone()))
                .unwrap_or_default();
            if inputs.spec.cancel {
                return finish_cancelled(
                    previous,
                    base,
                    inputs,
                    now,
                    Step::StopAttempt {
                        job_name: attempt.1,
                    },
                );
            }
            let message = format!("attempt {} is running as Job {}", attempt.0, attempt.1);
            return in_progress(previous, base, inputs, now, reason::RUNNING, message);
        }
        Some(Outcome::Succeeded { result, finished }) => {
            let result = result.clone().unwrap_or_default();
            let (summary, truncated) = summarize(&result);
            let step = if truncated {
                Step::StoreResult {
                    result: result.clone(),
                }
            } else {
                Step::Nothing
            };
            let status = AgentTaskStatus {
                result: Some(TaskResult {
                    summary,
                    truncated,
                    config_map_ref: truncated.then(|| {
                        k8s_openapi::api::core::v1::LocalObjectReference {
                            name: crate::resources::task_config::result_config_map_name(
                                inputs.name,
                            ),
                        }
                    }),
                }),
                ..base
            };
            let message = format!("attempt {} succeeded", status.attempts);
            return finished_status(
                previous,
                status,
                inputs,
                finished.as_ref(),
                now,
                (condition::COMPLETE, reason::SUCCEEDED, message),
                step,
            );
        }
        Some(Outcome::Failed { failure, finished }) if !inputs.spec.cancel => {
            let number = latest.map(|a| a.number).unwrap_or_default();
            let described = format!("attempt {number} failed: {}", failure.describe());
            let refused = latest
                .and_then(|a| a.usage.as_ref())
                .is_some_and(|u| u.refused > 0);
            let spent =
                super::budget::exhausted(inputs.spec.budget.as_deref(), base.usage.as_ref());
            // Whether the task ends here, and why: the budget first, since the worker's failure
            // is then only the router's refusal.
            let ending = if refused || spent.is_some() {
                let why = spent.unwrap_or_else(|| {
                    "its router refused a request that did not fit in what is left".into()
                });
                Some((
                    reason::BUDGET_EXCEEDED,
                    format!("{described}; spec.budget is spent: {why}"),
                ))
            } else if matches!(failure, Failure::DoNotRetry { .. }) {
                Some((reason::WORKER_ERROR, described.clone()))
            } else if counted > inputs.spec.backoff_limit {
                let final_reason = if matches!(failure, Failure::Timeout) {
                    reason::TIMEOUT
                } else {
                    reason::BACKOFF_LIMIT_EXCEEDED
                };
                let message = format!(
                    "{described}; {counted} failed attempts exceed spec.backoffLimit {}",
                    inputs.spec.backoff_limit
                );
                Some((final_reason, message))
            } else {
                None
            };
            if let Some((why, message)) = ending {
                return finished_status(
                    previous,
                    base,
                    inputs,
                    finished.as_ref(),
                    now,
                    (condition::FAILED, why, message),
                    Step::Nothing,
                );
            }
            let delay = retry_delay(inputs.spec, failures.len());
            let next = finished
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(now)
                .checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO))
                .unwrap_or(now);
            if now < next {
                let status = AgentTaskStatus {
                    next_attempt_time: Some(Time(next)),
                    ..base
                };
                let message = format!(
                    "{described}; attempt {} starts after {}",
                    number + 1,
                    Time(next).0
                );
                let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
                let mut decision =
                    in_progress(previous, status, inputs, now, reason::BACKING_OFF, message);
                decision.requeue_after = Some(wait);
                return decision;
            }
            let waiting_for_provider = !failure.counts();
            return next_attempt(
                previous,
                base,
                inputs,
                now,
                number + 1,
                waiting_for_provider,
            );
        }
        _ => {}
    }
    if inputs.spec.cancel {
        return finish_cancelled(previous, base, inputs, now, Step::Nothing);
    }
    next_attempt(
        previous,
        base,
        inputs,
        now,
        1 + latest.map_or(0, |a| a.number),
        false,
    )
}

/// The checks before an attempt starts, in the order a person would fix them.
fn next_attempt(
    previous: Option<&AgentTaskStatus>,
    base: AgentTaskStatus,
    inputs: &Inputs,
    now: Timestamp,
    number: i32,
    after_provider_failure: bool,
) -> Decision {
    if let Some(message) = &inputs.broken_reference {
        let mut decision = in_progress(
            previous,
            base,
            inputs,
            now,
            reason::INVALID_REFERENCE,
            message.clone(),
        );
        // A missing input ConfigMap or Secret is not watched: look again now and then.
        decision.requeue_after = Some(REFERENCE_RECHECK);
        return decision;
    }
    let provider = match &inputs.chain {
        ChainState::Empty => None,
        ChainState::Ready(name) => Some(name.clone()),
        ChainState::NoneReady(names) => {
            let message = if after_provider_failure {
                format!(
                    "attempt {} failed because of the provider and no LLMProvider of the failover chain ({}) is Ready; attempt {number} starts when one is",
                    number - 1,
                    names.join(", ")
                )
            } else {
                format!(
                    "no LLMProvider of the failover chain ({}) is Ready; attempt {number} starts when one is",
                    names.join(", ")
                )
            };
            return in_progress(
                previous,
                base,
                inputs,
                now,
                reason::PROVIDER_UNAVAILABLE,
                message,
            );
        }
    };
    if let Slot::Full { agent, limit } = &inputs.slot {
        let message = format!(
            "AgentDeployment {agent} already runs its spec.maxConcurrentTasks ({limit}) tasks; this task starts when one of them finishes, in creation order"
        );
        return in_progress(
            previous,
            base,
            inputs,
            now,
            reason::CONCURRENCY_LIMIT,
            message,
        );
    }
    let job = job_name(inputs.name, number);
    let status = AgentTaskStatus {
        attempts: base.attempts.max(number),
        start_time: base.start_time.clone().or(Some(Time(now))),
        job_name: Some(job.clone()),
        pod_name: None,
        provider: provider.clone(),
        next_attempt_time: None,
        ..base
    };
    let message = format!("attempt {number} is running as Job {job}");
    let mut decision = in_progress(previous, status, inputs, now, reason::RUNNING, message);
    decision.step = Step::StartAttempt { number, provider };
    decision
}

/// The facts that carry over from attempt to attempt, refreshed from the Jobs.
fn carried_over(previous: Option<&AgentTaskStatus>, inputs: &Inputs) -> AgentTaskStatus {
    let previous = previous.cloned().unwrap_or_default();
    let latest = inputs.attempts.last();
    let first_started = inputs.attempts.first().and_then(|a| a.started.clone());
    AgentTaskStatus {
        attempts: previous.attempts.max(latest.map_or(0, |a| a.number)),
        start_time: previous.start_time.clone().or(first_started),
        job_name: latest
            .map(|a| a.job_name.clone())
            .or(previous.job_name.clone()),
        pod_name: latest
            .and_then(|a| a.pod_name.clone())
            .or(previous.pod_name.clone()),
        provider: latest
            .and_then(|a| a.provider.clone())
            .or(previous.provider.clone()),
        next_attempt_time: None,
        usage: super::budget::usage_of(previous.usage.as_ref(), inputs.attempts),
        ..previous
    }
}

fn in_progress(
    previous: Option<&AgentTaskStatus>,
    status: AgentTaskStatus,
    inputs: &Inputs,
    now: Timestamp,
    why: &'static str,
    message: String,
) -> Decision {
    let waited_long_enough = inputs.created.is_none_or(|created| {
        now.duration_since(created)
            >= SignedDuration::try_from(REFERENCE_GRACE).unwrap_or(SignedDuration::ZERO)
    });
    // Everything but a reference that never appeared resolves by itself: a free slot, a
    // provider turning Ready, the end of a backoff, the running attempt.
    let progress = if why == reason::INVALID_REFERENCE && waited_long_enough {
        Progress::Stalled {
            reason: why,
            message: message.clone(),
        }
    } else {
        Progress::Working {
            reason: why,
            message: message.clone(),
        }
    };
    let mut conditions = vec![
        DesiredCondition::new(
            condition::COMPLETE,
            ConditionStatus::False,
            why,
            message.clone(),
        ),
        DesiredCondition::new(
            condition::FAILED,
            ConditionStatus::False,
            why,
            message.clone(),
        ),
        DesiredCondition::new(condition::READY, ConditionStatus::False, why, message),
    ];
    conditions.extend(progress.conditions());
    Decision {
        status: with_conditions(previous, status, inputs, now, &conditions),
        step: Step::Nothing,
        requeue_after: None,
    }
}

fn finished_status(
    previous: Option<&AgentTaskStatus>,
    status: AgentTaskStatus,
    inputs: &Inputs,
    finished: Option<&Time>,
    now: Timestamp,
    (true_type, why, message): (&'static str, &'static str, String),
    step: Step,
) -> Decision {
    let conditions = terminal_conditions(true_type, why, &message);
    let completion = finished.map(|t| t.0).unwrap_or(now);
    let status = AgentTaskStatus {
        completion_time: Some(Time(completion)),
        duration: status
            .start_time
            .as_ref()
            .map(|start| display_duration(start.0, completion)),
        next_attempt_time: None,
        ..status
    };
    let mut decision = Decision {
        status: with_conditions(previous, status, inputs, now, &conditions),
        step,
        requeue_after: None,
    };
    if let Some(ttl) = ttl(inputs.spec) {
        decision.requeue_after = Some(ttl);
    }
    decision
}

fn finish_cancelled(
    previous: Option<&AgentTaskStatus>,
    status: AgentTaskStatus,
    inputs: &Inputs,
    now: Timestamp,
    step: Step,
) -> Decision {
    let message = match &step {
        Step::StopAttempt { job_name } => {
            format!("spec.cancel is set; the running attempt (Job {job_name}) was stopped")
        }
        _ => "spec.cancel is set; no attempt was running".to_string(),
    };
    finished_status(
        previous,
        status,
        inputs,
        None,
        now,
        (condition::FAILED, reason::CANCELLED, message),
        step,
    )
}

/// The conditions of a finished task: `Complete` or `Failed` True, `Ready` True only on
/// success, and `Stalled` on failure, which is how kstatus tells a failed run from a healthy one.
fn terminal_conditions(
    true_type: &'static str,
    why: &'static str,
    message: &str,
) -> Vec<DesiredCondition> {
    let state = |type_: &str| {
        if type_ == true_type {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    };
    let mut conditions: Vec<DesiredCondition> = [condition::COMPLETE, condition::FAILED]
        .map(|type_| DesiredCondition::new(type_, state(type_), why, message))
        .into();
    conditions.push(DesiredCondition::new(
        condition::READY,
        state(condition::COMPLETE),
        why,
        message,
    ));
    if true_type == condition::FAILED {
        conditions.extend(
            Progress::Stalled {
                reason: why,
                message: message.to_string(),
            }
            .conditions(),
        );
    }
    conditions
}

/// The reason of a finished task's deciding condition, as one of the documented constants.
fn terminal_reason(finished: &AgentTaskStatus) -> (&'static str, &'static str, String) {
    let (true_type, found) = match find_condition(&finished.conditions, condition::COMPLETE)
        .filter(|c| c.status == "True")
    {
        Some(c) => (condition::COMPLETE, c),
        None => match find_condition(&finished.conditions, condition::FAILED) {
            Some(c) => (condition::FAILED, c),
            None => return (condition::FAILED, reason::WORKER_ERROR, String::new()),
        },
    };
    let why = reason::ALL
        .iter()
        .copied()
        .find(|r| *r == found.reason)
        .unwrap_or(reason::WORKER_ERROR);
    (true_type, why, found.message.clone())
}

/// A finished task only waits for its TTL. Its status still follows the spec's generation (an
/// edit such as a new `ttlSecondsAfterFinished` must not leave it reading as in progress), and
/// a task finished by an earlier version gains the conditions it lacks.
fn after_finish(finished: &AgentTaskStatus, inputs: &Inputs, now: Timestamp) -> Decision {
    let (true_type, why, message) = terminal_reason(finished);
    let status = AgentTaskStatus {
        conditions: merge_conditions(
            &finished.conditions,
            &terminal_conditions(true_type, why, &message),
            inputs.generation,
            now,
        ),
        observed_generation: inputs.generation,
        // A cancelled attempt's report arrives after the task finished.
        usage: super::budget::usage_of(finished.usage.as_ref(), inputs.attempts),
        ..finished.clone()
    };
    let mut decision = Decision {
        status,
        step: Step::Nothing,
        requeue_after: None,
    };
    let (Some(ttl), Some(completed)) = (ttl(inputs.spec), finished.completion_time.as_ref()) else {
        return decision;
    };
    let due = completed
        .0
        .checked_add(SignedDuration::try_from(ttl).unwrap_or(SignedDuration::ZERO))
        .unwrap_or(completed.0);
    if now >= due {
        decision.step = Step::Cleanup;
    } else {
        decision.requeue_after = Duration::try_from(due.duration_since(now)).ok();
    }
    decision
}

fn ttl(spec: &AgentTaskSpec) -> Option<Duration> {
    spec.ttl_seconds_after_finished
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
}

fn with_conditions(
    previous: Option<&AgentTaskStatus>,
    status: AgentTaskStatus,
    inputs: &Inputs,
    now: Timestamp,
    conditions: &[DesiredCondition],
) -> AgentTaskStatus {
    let existing = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = merge_conditions(existing, conditions, inputs.generation, now);
    let phase = phase_of(&conditions);
    let why = find_condition(&conditions, condition::COMPLETE).map(|c| c.reason.clone());
    AgentTaskStatus {
        phase: Some(phase),
        reason: why,
        observed_generation: inputs.generation,
        conditions,
        ..status
    }
}

/// The display phase, derived from the conditions and nothing else.
pub fn phase_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> TaskPhase {
    if is_condition_true(conditions, condition::COMPLETE) {
        return TaskPhase::Succeeded;
    }
    let why = find_condition(conditions, condition::FAILED).map(|c| c.reason.as_str());
    if is_condition_true(conditions, condition::FAILED) {
        return if why == Some(reason::CANCELLED) {
            TaskPhase::Cancelled
        } else {
            TaskPhase::Failed
        };
    }
    match why {
        Some(reason::RUNNING) => TaskPhase::Running,
        Some(reason::CONCURRENCY_LIMIT | reason::PROVIDER_UNAVAILABLE | reason::BACKING_OFF) => {
            TaskPhase::Queued
        }
        _ => TaskPhase::Pending,
    }
}

/// `spec.retryBackoff.initialDelay` doubled per earlier failure, capped at `maxDelay`.
pub fn retry_delay(spec: &AgentTaskSpec, failures: usize) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    spec.retry_backoff
        .initial_delay
        .as_std()
        .saturating_mul(1 << doublings)
        .min(spec.retry_backoff.max_delay.as_std())
}

/// The first `SUMMARY_CHARS` characters, and whether anything was cut.
pub fn summarize(result: &str) -> (String, bool) {
    let summary: String = result.chars().take(SUMMARY_CHARS).collect();
    let truncated = summary.len() < result.len();
    (summary, truncated)
}

fn display_duration(start: Timestamp, end: Timestamp) -> String {
    let elapsed = Duration::try_from(end.duration_since(start)).unwrap_or_default();
    crate::api::common::Duration::from(Duration::from_secs(elapsed.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> AgentTaskSpec {
        let mut spec = serde_json::json!({"agentRef": {"name": "support"}, "input": "x",
            "retryBackoff": {"initialDelay": "10s", "maxDelay": "1m"}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        crate::api::agent_task::task_for_tests("t", spec).spec
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("timestamp")
    }

    fn attempt(number: i32, outcome: Outcome) -> Attempt {
        Attempt {
            number,
            job_name: format!("t-{number}"),
            pod_name: Some(format!("t-{number}-abcde")),
            provider: Some("openai".into()),
            started: Some(Time(at(0))),
            outcome,
            usage: None,
        }
    }

    fn failed(failure: Failure, second: i64) -> Outcome {
        Outcome::Failed {
            failure,
            finished: Some(Time(at(second))),
        }
    }

    fn error() -> Failure {
        Failure::Error {
            exit_code: Some(1),
            message: None,
        }
    }

    fn decide_with(
        spec: &AgentTaskSpec,
        previous: Option<&AgentTaskStatus>,
        attempts: &[Attempt],
        chain: ChainState,
        slot: Slot,
        now: i64,
    ) -> Decision {
        decide(previous, &inputs(spec, attempts, chain, slot), at(now))
    }

    fn inputs<'a>(
        spec: &'a AgentTaskSpec,
        attempts: &'a [Attempt],
        chain: ChainState,
        slot: Slot,
    ) -> Inputs<'a> {
        Inputs {
            name: "t",
            spec,
            generation: Some(1),
            attempts,
            broken_reference: None,
            chain,
            slot,
            created: None,
        }
    }

    fn ready() -> ChainState {
        ChainState::Ready("openai".into())
    }

    /// The kstatus-relevant conditions that are True, with their reasons.
    fn health(status: &AgentTaskStatus) -> Vec<(String, String)> {
        status
            .conditions
            .iter()
            .filter(|c| ["Ready", "Reconciling", "Stalled"].contains(&c.type_.as_str()))
            .filter(|c| c.status == "True")
            .map(|c| (c.type_.clone(), c.reason.clone()))
            .collect()
    }

    fn pair(type_: &str, why: &str) -> Vec<(String, String)> {
        vec![(type_.to_string(), why.to_string())]
    }

    #[test]
    fn a_task_reads_as_working_healthy_or_stalled_as_kstatus_expects() {
        let spec = spec(serde_json::json!({"backoffLimit": 0}));
        let running = decide_with(
            &spec,
            None,
            &[attempt(1, Outcome::Running)],
            ready(),
            Slot::Free,
            1,
        );
        assert_eq!(
            health(&running.status),
            pair("Reconciling", reason::RUNNING)
        );
        let queued = decide_with(
            &spec,
            None,
            &[],
            ready(),
            Slot::Full {
                agent: "a".into(),
                limit: 1,
            },
            1,
        );
        assert_eq!(
            health(&queued.status),
            pair("Reconciling", reason::CONCURRENCY_LIMIT)
        );
        let done = Outcome::Succeeded {
            result: Some("ok".into()),
            finished: Some(Time(at(5))),
        };
        let succeeded = decide_with(&spec, None, &[attempt(1, done)], ready(), Slot::Free, 6);
        assert_eq!(health(&succeeded.status), pair("Ready", reason::SUCCEEDED));
        let failed_run = decide_with(
            &spec,
            None,
            &[attempt(1, failed(error(), 5))],
            ready(),
            Slot::Free,
            6,
        );
        assert_eq!(
            health(&failed_run.status),
            pair("Stalled", reason::BACKOFF_LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn a_missing_reference_is_awaited_briefly_then_reads_as_stalled() {
        let spec = spec(serde_json::json!({}));
        let inputs = |created: i64| Inputs {
            name: "t",
            spec: &spec,
            generation: Some(1),
            attempts: &[],
            broken_reference: Some("AgentDeployment support does not exist".into()),
            chain: ready(),
            slot: Slot::Free,
            created: Some(at(created)),
        };
        let fresh = decide(None, &inputs(0), at(2));
        assert_eq!(
            health(&fresh.status),
            pair("Reconciling", reason::INVALID_REFERENCE)
        );
        let later = decide(None, &inputs(0), at(30));
        assert_eq!(
            health(&later.status),
            pair("Stalled", reason::INVALID_REFERENCE)
        );
    }

    #[test]
    fn an_edited_finished_task_reports_the_new_generation() {
        let spec = spec(serde_json::json!({}));
        let done = Outcome::Succeeded {
            result: Some("ok".into()),
            finished: Some(Time(at(5))),
        };
        let attempts = [attempt(1, done)];
        let finished = decide_with(&spec, None, &attempts, ready(), Slot::Free, 6).status;
        let inputs = Inputs {
            name: "t",
            spec: &spec,
            generation: Some(2),
            attempts: &attempts,
            broken_reference: None,
            chain: ready(),
            slot: Slot::Free,
            created: None,
        };
        let edited = decide(Some(&finished), &inputs, at(60)).status;
        assert_eq!(edited.observed_generation, Some(2));
        assert!(
            edited
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2)),
            "{edited:?}"
        );
        assert_eq!(health(&edited), pair("Ready", reason::SUCCEEDED));
        let again = decide(Some(&edited), &inputs, at(120)).status;
        assert_eq!(again, edited, "nothing more to write");
    }

    #[test]
    fn a_status_decided_now_reads_back_from_the_api_unchanged() {
        // The watch returns what the API keeps, times to the second. A finer time would keep
        // the copy of every written status (`written_status`) for the task's life.
        let spec = spec(serde_json::json!({}));
        let inputs = inputs(&spec, &[], ready(), Slot::Free);
        let decided = decide(None, &inputs, crate::api::conditions::now_to_the_second()).status;
        assert!(decided.start_time.is_some() && !decided.conditions.is_empty());
        let read_back: AgentTaskStatus =
            serde_json::from_value(serde_json::to_value(&decided).expect("json")).expect("status");
        assert_eq!(read_back, decided);
    }

    #[test]
    fn a_new_task_starts_attempt_one_at_the_first_ready_provider() {
        let spec = spec(serde_json::json!({}));
        let decision = decide_with(&spec, None, &[], ready(), Slot::Free, 0);
        assert_eq!(
            decision.step,
            Step::StartAttempt {
                number: 1,
                provider: Some("openai".into())
            }
        );
        assert_eq!(decision.status.phase, Some(TaskPhase::Running));
        assert_eq!(decision.status.attempts, 1);
        assert_eq!(decision.status.job_name.as_deref(), Some("t-1"));
        assert_eq!(decision.status.start_time, Some(Time(at(0))));
    }

    #[test]
    fn starting_again_from_a_stale_cache_changes_nothing() {
        let spec = spec(serde_json::json!({}));
        let first = decide_with(&spec, None, &[], ready(), Slot::Free, 0);
        // The Job is not in the cache yet: the same attempt is decided, with the same status.
        let again = decide_with(&spec, Some(&first.status), &[], ready(), Slot::Free, 5);
        assert_eq!(again.step, first.step);
        assert_eq!(again.status, first.status);
        // Once the Job shows, running, nothing but the pod's name is new.
        let running = decide_with(
            &spec,
            Some(&first.status),
            &[attempt(1, Outcome::Running)],
            ready(),
            Slot::Free,
            6,
        );
        assert_eq!(running.step, Step::Nothing);
        assert_eq!(
            AgentTaskStatus {
                pod_name: None,
                ..running.status.clone()
            },
            first.status
        );
    }

    #[test]
    fn the_pod_name_alone_waits_for_the_next_change() {
        let spec = spec(serde_json::json!({}));
        let started = decide_with(&spec, None, &[], ready(), Slot::Free, 0).status;
        let mut running = attempt(1, Outcome::Running);
        running.pod_name = None;
        let written = decide_with(&spec, Some(&started), &[running], ready(), Slot::Free, 1);
        let with_pod = decide_with(
            &spec,
            Some(&written.status),
            &[attempt(1, Outcome::Running)],
            ready(),
            Slot::Free,
            2,
        )
        .status;
        assert_eq!(with_pod.pod_name.as_deref(), Some("t-1-abcde"));
        assert!(!worth_writing(Some(&written.status), &with_pod));
        let ended = decide_with(
            &spec,
            Some(&written.status),
            &[attempt(
                1,
                Outcome::Succeeded {
                    result: Some("done".into()),
                    finished: Some(Time(at(3))),
                },
            )],
            ready(),
            Slot::Free,
            3,
        )
        .status;
        assert!(worth_writing(Some(&written.status), &ended));
        assert_eq!(
            ended.pod_name.as_deref(),
            Some("t-1-abcde"),
            "the end names the pod"
        );
        assert!(worth_writing(None, &started));
    }

    #[test]
    fn success_records_the_result_and_times() {
        let spec = spec(serde_json::json!({}));
        let done = Outcome::Succeeded {
            result: Some("all good".into()),
            finished: Some(Time(at(90))),
        };
        let decision = decide_with(&spec, None, &[attempt(1, done)], ready(), Slot::Free, 95);
        let status = &decision.status;
        assert_eq!(status.phase, Some(TaskPhase::Succeeded));
        assert_eq!(status.reason.as_deref(), Some(reason::SUCCEEDED));
        assert_eq!(status.completion_time, Some(Time(at(90))));
        assert_eq!(status.duration.as_deref(), Some("1m30s"));
        let result = status.result.as_ref().expect("result");
        assert_eq!(
            (result.summary.as_str(), result.truncated),
            ("all good", false)
        );
        assert_eq!(decision.step, Step::Nothing);
        assert!(is_finished(Some(status)));
    }

    #[test]
    fn a_long_result_is_summarised_and_stored_whole() {
        let spec = spec(serde_json::json!({}));
        let long = "é".repeat(3000);
        let done = Outcome::Succeeded {
            result: Some(long.clone()),
            finished: None,
        };
        let decision = decide_with(&spec, None, &[attempt(1, done)], ready(), Slot::Free, 1);
        let result = decision.status.result.expect("result");
        assert!(result.truncated);
        assert_eq!(result.summary.chars().count(), SUMMARY_CHARS);
        assert_eq!(
            result.config_map_ref.map(|r| r.name),
            Some("t-result".to_string())
        );
        assert_eq!(decision.step, Step::StoreResult { result: long });
    }

    #[test]
    fn failures_back_off_exponentially_then_retry() {
        let spec = spec(serde_json::json!({"backoffLimit": 3}));
        let attempts = [
            attempt(1, failed(error(), 0)),
            attempt(2, failed(error(), 100)),
        ];
        // Second failure: 10s doubled once = 20s after it finished.
        let waiting = decide_with(&spec, None, &attempts, ready(), Slot::Free, 105);
        assert_eq!(waiting.status.phase, Some(TaskPhase::Queued));
        assert_eq!(waiting.status.reason.as_deref(), Some(reason::BACKING_OFF));
        assert_eq!(waiting.status.next_attempt_time, Some(Time(at(120))));
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(15)));
        assert_eq!(waiting.status.failed_attempts, 2);
        let retry = decide_with(
            &spec,
            Some(&waiting.status),
            &attempts,
            ready(),
            Slot::Free,
            120,
        );
        assert!(matches!(retry.step, Step::StartAttempt { number: 3, .. }));
        assert_eq!(retry.status.next_attempt_time, None);
    }

    #[test]
    fn the_backoff_limit_ends_the_task() {
        let spec = spec(serde_json::json!({"backoffLimit": 1}));
        let attempts = [
            attempt(1, failed(error(), 0)),
            attempt(2, failed(error(), 30)),
        ];
        let decision = decide_with(&spec, None, &attempts, ready(), Slot::Free, 31);
        assert_eq!(decision.status.phase, Some(TaskPhase::Failed));
        assert_eq!(
            decision.status.reason.as_deref(),
            Some(reason::BACKOFF_LIMIT_EXCEEDED)
        );
        assert_eq!(decision.step, Step::Nothing);
    }

    #[test]
    fn a_last_timeout_is_reported_as_timeout() {
        let spec = spec(serde_json::json!({"backoffLimit": 0}));
        let attempts = [attempt(1, failed(Failure::Timeout, 60))];
        let decision = decide_with(&spec, None, &attempts, ready(), Slot::Free, 61);
        assert_eq!(decision.status.reason.as_deref(), Some(reason::TIMEOUT));
        assert_eq!(decision.status.failed_attempts, 1);
    }

    fn spending(tokens: u64, refused: u64) -> crate::resources::usage_report::UsageReport {
        crate::resources::usage_report::UsageReport {
            total: crate::resources::usage_report::Tally {
                requests: 1,
                input_tokens: tokens,
                ..Default::default()
            },
            refused,
            ..Default::default()
        }
    }

    #[test]
    fn a_request_the_router_refused_for_the_budget_ends_the_task_without_a_retry() {
        // The worker exits 69 when the router refuses it, as for a failed provider: the
        // router's report, not the exit code, says the budget is why.
        let spec = spec(serde_json::json!({"backoffLimit": 5, "budget": {"maxTokens": 1000}}));
        let mut refused = attempt(1, failed(Failure::ProviderUnavailable { message: None }, 0));
        refused.usage = Some(spending(200, 1));
        let decision = decide_with(&spec, None, &[refused], ready(), Slot::Free, 1);
        assert_eq!(
            decision.status.reason.as_deref(),
            Some(reason::BUDGET_EXCEEDED)
        );
        assert_eq!(decision.status.phase, Some(TaskPhase::Failed));
        assert_eq!(decision.step, Step::Nothing, "no further attempt");
        let usage = decision.status.usage.expect("usage recorded");
        assert_eq!(usage.total.total_tokens, 200);
        assert!(usage.attempts[0].budget_exceeded);
    }

    #[test]
    fn a_failure_that_spent_the_whole_budget_is_not_retried() {
        let spec = spec(serde_json::json!({"backoffLimit": 5, "budget": {"maxTokens": 1000}}));
        let mut spent = attempt(1, failed(error(), 0));
        spent.usage = Some(spending(1000, 0));
        let decision = decide_with(&spec, None, &[spent.clone()], ready(), Slot::Free, 60);
        assert_eq!(
            decision.status.reason.as_deref(),
            Some(reason::BUDGET_EXCEEDED)
        );
        spent.usage = Some(spending(999, 0));
        let retried = decide_with(&spec, None, &[spent], ready(), Slot::Free, 60);
        assert!(matches!(retried.step, Step::StartAttempt { number: 2, .. }));
    }

    #[test]
    fn a_succeeded_task_records_the_usage_of_every_attempt() {
        let spec = spec(serde_json::json!({}));
        let mut first = attempt(1, failed(error(), 0));
        first.usage = Some(spending(10, 0));
        let mut second = attempt(
            2,
            Outcome::Succeeded {
                result: Some("done".into()),
                finished: Some(Time(at(30))),
            },
        );
        second.usage = Some(spending(5, 0));
        let decision = decide_with(&spec, None, &[first, second], ready(), Slot::Free, 31);
        assert_eq!(decision.status.phase, Some(TaskPhase::Succeeded));
        let usage = decision.status.usage.expect("usage");
        assert_eq!(usage.total.total_tokens, 15);
        assert_eq!(
            usage.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn do_not_retry_ends_at_once() {
        let spec = spec(serde_json::json!({"backoffLimit": 5}));
        let attempts = [attempt(1, failed(Failure::DoNotRetry { message: None }, 0))];
        let decision = decide_with(&spec, None, &attempts, ready(), Slot::Free, 1);
        assert_eq!(
            decision.status.reason.as_deref(),
            Some(reason::WORKER_ERROR)
        );
    }

    #[test]
    fn provider_failures_wait_for_a_ready_provider_without_using_the_budget() {
        let spec = spec(serde_json::json!({"backoffLimit": 0}));
        let attempts = [attempt(
            1,
            failed(Failure::ProviderUnavailable { message: None }, 0),
        )];
        let down = ChainState::NoneReady(vec!["openai".into()]);
        let waiting = decide_with(&spec, None, &attempts, down, Slot::Free, 60);
        assert_eq!(
            waiting.status.reason.as_deref(),
            Some(reason::PROVIDER_UNAVAILABLE)
        );
        assert_eq!(waiting.status.phase, Some(TaskPhase::Queued));
        assert_eq!(waiting.status.failed_attempts, 0);
        let retry = decide_with(
            &spec,
            Some(&waiting.status),
            &attempts,
            ready(),
            Slot::Free,
            61,
        );
        assert!(matches!(retry.step, Step::StartAttempt { number: 2, .. }));
    }

    #[test]
    fn no_ready_provider_queues_without_an_attempt() {
        let spec = spec(serde_json::json!({}));
        let down = ChainState::NoneReady(vec!["a".into(), "b".into()]);
        let decision = decide_with(&spec, None, &[], down, Slot::Free, 0);
        assert_eq!(decision.step, Step::Nothing);
        assert_eq!(decision.status.attempts, 0);
        assert_eq!(decision.status.phase, Some(TaskPhase::Queued));
        assert!(decision.status.conditions[0].message.contains("(a, b)"));
    }

    #[test]
    fn a_full_agent_queues_the_task() {
        let spec = spec(serde_json::json!({}));
        let full = Slot::Full {
            agent: "support".into(),
            limit: 2,
        };
        let decision = decide_with(&spec, None, &[], ready(), full, 0);
        assert_eq!(decision.step, Step::Nothing);
        assert_eq!(
            decision.status.reason.as_deref(),
            Some(reason::CONCURRENCY_LIMIT)
        );
    }

    #[test]
    fn a_broken_reference_waits_with_its_message() {
        let spec = spec(serde_json::json!({}));
        let inputs = Inputs {
            broken_reference: Some("AgentDeployment support does not exist".into()),
            ..inputs(&spec, &[], ready(), Slot::Free)
        };
        let decision = decide(None, &inputs, at(0));
        assert_eq!(
            decision.status.reason.as_deref(),
            Some(reason::INVALID_REFERENCE)
        );
        assert_eq!(decision.status.phase, Some(TaskPhase::Pending));
        assert_eq!(decision.step, Step::Nothing);
        assert_eq!(decision.requeue_after, Some(REFERENCE_RECHECK));
    }

    #[test]
    fn cancel_stops_the_running_attempt() {
        let spec = spec(serde_json::json!({"cancel": true}));
        let decision = decide_with(
            &spec,
            None,
            &[attempt(1, Outcome::Running)],
            ready(),
            Slot::Free,
            0,
        );
        assert_eq!(
            decision.step,
            Step::StopAttempt {
                job_name: "t-1".into()
            }
        );
        assert_eq!(decision.status.phase, Some(TaskPhase::Cancelled));
        let queued = decide_with(&spec, None, &[], ready(), Slot::Free, 0);
        assert_eq!(queued.status.phase, Some(TaskPhase::Cancelled));
        assert_eq!(queued.step, Step::Nothing);
    }

    #[test]
    fn a_finished_task_without_a_ttl_is_looked_at_again_only_when_something_changes() {
        let done = Outcome::Succeeded {
            result: None,
            finished: Some(Time(at(10))),
        };
        let running = decide_with(
            &spec(serde_json::json!({})),
            None,
            &[attempt(1, Outcome::Running)],
            ready(),
            Slot::Free,
            5,
        );
        assert_eq!(running.next_look(), Action::requeue(IDLE_REQUEUE));
        let kept = decide_with(
            &spec(serde_json::json!({})),
            None,
            &[attempt(1, done.clone())],
            ready(),
            Slot::Free,
            12,
        );
        assert!(is_finished(Some(&kept.status)));
        assert_eq!(kept.next_look(), Action::await_change());
        let with_ttl = spec(serde_json::json!({"ttlSecondsAfterFinished": 30}));
        let expiring = decide_with(
            &with_ttl,
            None,
            &[attempt(1, done)],
            ready(),
            Slot::Free,
            12,
        );
        assert_eq!(
            expiring.next_look(),
            Action::requeue(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_finished_task_waits_for_its_ttl_then_cleans_up() {
        let spec = spec(serde_json::json!({"ttlSecondsAfterFinished": 30}));
        let done = Outcome::Succeeded {
            result: None,
            finished: Some(Time(at(10))),
        };
        let finished = decide_with(&spec, None, &[attempt(1, done)], ready(), Slot::Free, 12);
        assert_eq!(finished.requeue_after, Some(Duration::from_secs(30)));
        // Later reconciles never look at Jobs again: they may be gone.
        let before = decide_with(&spec, Some(&finished.status), &[], ready(), Slot::Free, 20);
        assert_eq!(before.status, finished.status);
        assert_eq!(before.requeue_after, Some(Duration::from_secs(20)));
        let due = decide_with(&spec, Some(&finished.status), &[], ready(), Slot::Free, 40);
        assert_eq!(due.step, Step::Cleanup);
        assert_eq!(due.status, finished.status);
    }

    #[test]
    fn phase_follows_the_conditions() {
        let spec = spec(serde_json::json!({}));
        let decision = decide_with(&spec, None, &[], ready(), Slot::Free, 0);
        assert_eq!(phase_of(&decision.status.conditions), TaskPhase::Running);
        assert_eq!(phase_of(&[]), TaskPhase::Pending);
    }

    #[test]
    fn retry_delays_double_up_to_the_maximum() {
        let spec = spec(serde_json::json!({}));
        let delays: Vec<u64> = (1..=5).map(|n| retry_delay(&spec, n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 60, 60]);
    }
}
