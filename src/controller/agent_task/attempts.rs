//! What happened to each attempt of a task, read from its Jobs and their pods. Pure.
//!
//! The Jobs are the record of the attempts while a task runs: one Job per attempt, never
//! deleted before the task ends, so counting and classifying them after an operator restart
//! gives the same answer as before it.

use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::agent_task::exit_code;
use crate::controller::compact::{CachedContainerStatus, CachedJob, CachedPod};
use crate::resources::job::{PROVIDER_ANNOTATION, USAGE_FINALIZER};
use crate::resources::labels::ATTEMPT_LABEL;
use crate::resources::pod::AGENT_CONTAINER;
use crate::resources::router_sidecar::ROUTER_CONTAINER;
use crate::resources::usage_report::UsageReport;

/// One attempt as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub number: i32,
    pub job_name: String,
    pub pod_name: Option<String>,
    /// The provider the attempt was pointed at first.
    pub provider: Option<String>,
    pub started: Option<Time>,
    pub outcome: Outcome,
    /// What the worker's router spent, once it stopped and the kubelet copied its report
    /// into the pod's status.
    pub usage: Option<UsageReport>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The Job has not finished, or it finished and its pod's final state is not seen yet.
    Running,
    /// The worker exited 0; its termination message, when the pod is still there.
    Succeeded {
        result: Option<String>,
        finished: Option<Time>,
    },
    Failed {
        failure: Failure,
        finished: Option<Time>,
    },
}

/// Why an attempt failed, which decides whether it counts against `backoffLimit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Stopped at `spec.timeout`.
    Timeout,
    /// The worker reported that the LLM provider failed: not counted.
    ProviderUnavailable { message: Option<String> },
    /// The worker asked not to be retried.
    DoNotRetry { message: Option<String> },
    /// Any other failure; `exit_code` is unknown when the pod is gone.
    Error {
        exit_code: Option<i32>,
        message: Option<String>,
    },
}

impl Failure {
    /// Whether this failure uses up one of the `backoffLimit` retries.
    pub fn counts(&self) -> bool {
        !matches!(self, Failure::ProviderUnavailable { .. })
    }

    /// One line for a condition message.
    pub fn describe(&self) -> String {
        let with_message = |text: String, message: &Option<String>| match message {
            Some(message) if !message.is_empty() => format!("{text}: {}", first_line(message)),
            _ => text,
        };
        match self {
            Failure::Timeout => "the attempt ran longer than spec.timeout".into(),
            Failure::ProviderUnavailable { message } => with_message(
                format!(
                    "the worker reported a provider failure (exit code {})",
                    exit_code::PROVIDER_UNAVAILABLE
                ),
                message,
            ),
            Failure::DoNotRetry { message } => with_message(
                format!(
                    "the worker failed and asked not to be retried (exit code {})",
                    exit_code::DO_NOT_RETRY
                ),
                message,
            ),
            Failure::Error {
                exit_code: Some(code),
                message,
            } => with_message(format!("the worker exited with code {code}"), message),
            Failure::Error {
                exit_code: None,
                message,
            } => with_message("the worker failed".into(), message),
        }
    }
}

/// Condition messages stay one line, and a worker's message is bounded.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line.chars().take(256).collect()
}

/// The attempts of a task from its Jobs and their pods, ordered by number. Jobs without a valid
/// attempt label are not ours to count.
pub fn observe_attempts(jobs: &[&CachedJob], pods: &[&CachedPod]) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = jobs
        .iter()
        .filter_map(|job| {
            let number = attempt_number(job.label(ATTEMPT_LABEL))?;
            let job_name = job.metadata.name.clone()?;
            let pod = newest_pod_of(&job_name, pods);
            Some(Attempt {
                number,
                pod_name: pod.and_then(|p| p.metadata.name.clone()),
                provider: job.annotation(PROVIDER_ANNOTATION).map(str::to_string),
                started: job.metadata.creation_timestamp.clone(),
                outcome: outcome_of(job, pod),
                usage: pod.and_then(router_report),
                job_name,
            })
        })
        .collect();
    attempts.sort_by_key(|a| a.number);
    attempts
}

/// The attempt a Job or worker pod belongs to, from its label.
fn attempt_number(label: Option<&str>) -> Option<i32> {
    label?.parse().ok()
}

fn newest_pod_of<'a>(job_name: &str, pods: &[&'a CachedPod]) -> Option<&'a CachedPod> {
    pods.iter()
        .copied()
        .filter(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Job" && o.name == job_name)
        })
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        })
}

fn outcome_of(job: &CachedJob, pod: Option<&CachedPod>) -> Outcome {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let finished_condition = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if let Some(complete) = finished_condition("Complete") {
        let finished = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .or_else(|| complete.last_transition_time.clone());
        return match pod {
            // The pod's last state may lag behind the Job's in the cache: wait for it.
            Some(pod) if router_running(pod) => Outcome::Running,
            Some(pod) => match terminated_agent(pod) {
                Some(terminated) => Outcome::Succeeded {
                    result: terminated.message.clone(),
                    finished,
                },
                None => Outcome::Running,
            },
            None => Outcome::Succeeded {
                result: None,
                finished,
            },
        };
    }
    if let Some(failed) = finished_condition("Failed") {
        let finished = failed.last_transition_time.clone();
        if failed.reason.as_deref() == Some("DeadlineExceeded") {
            // The Job controller deletes the pod at the deadline; its router reports what the
            // attempt spent as it stops (the usage finalizer keeps the pod until then).
            if pod.is_some_and(|p| router_status(p).is_some() && !stopped(p)) {
                return Outcome::Running;
            }
            return Outcome::Failed {
                failure: Failure::Timeout,
                finished,
            };
        }
        let failure = match pod.map(terminated_agent) {
            // Its router's report comes with its final state: wait for it, as for the agent's.
            Some(Some(_)) if pod.is_some_and(router_running) => return Outcome::Running,
            Some(Some(terminated)) => failure_from_exit(terminated),
            // Not yet seen as terminated: wait for the pod's final state.
            Some(None) => return Outcome::Running,
            None => Failure::Error {
                exit_code: None,
                message: failed.message.clone(),
            },
        };
        return Outcome::Failed { failure, finished };
    }
    Outcome::Running
}

/// The router sidecar's status, when the pod runs one.
fn router_status(pod: &CachedPod) -> Option<&CachedContainerStatus> {
    pod.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == ROUTER_CONTAINER)
}

/// Whether the pod's router has not stopped yet while the pod is still live. The kubelet stops
/// a sidecar after the agent exits, so a cache may see the agent's end before the router's.
fn router_running(pod: &CachedPod) -> bool {
    let phase_final = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    let router_stopped = router_status(pod).map(|status| {
        status
            .state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
    });
    router_stopped == Some(false) && !phase_final
}

/// Whether the pod's usage finalizer still holds it for the operator to read its report.
pub fn holds_usage(pod: &CachedPod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == USAGE_FINALIZER)
}

/// The attempts of a finished task whose pods stopped after it finished (a cancelled one's),
/// with their routers' reports. Their Jobs are gone, deleted by the cancellation; the usage
/// finalizer keeps the pods, which name their task and attempt. A pod older than the task is a
/// deleted namesake's, and is left out.
pub fn stopped_after_finish(task_created: Option<&Time>, pods: &[&CachedPod]) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = pods
        .iter()
        .filter(|pod| holds_usage(pod))
        .filter(
            |pod| match (task_created, &pod.metadata.creation_timestamp) {
                (Some(task), Some(pod)) => pod.0 >= task.0,
                _ => true,
            },
        )
        .filter(|pod| stopped(pod))
        .filter_map(|pod| {
            let number = attempt_number(pod.label(ATTEMPT_LABEL))?;
            Some(Attempt {
                number,
                job_name: String::new(),
                pod_name: pod.metadata.name.clone(),
                provider: None,
                started: None,
                // Ended: only its usage is read, the task's outcome being decided.
                outcome: Outcome::Failed {
                    failure: Failure::Error {
                        exit_code: None,
                        message: None,
                    },
                    finished: None,
                },
                usage: Some(router_report(pod)?),
            })
        })
        .collect();
    attempts.sort_by_key(|a| a.number);
    attempts
}

/// Whether every container of the pod has stopped for good: its phase is final, or it is being
/// deleted and nothing in it runs (the kubelet starts nothing in a pod being deleted).
pub fn stopped(pod: &CachedPod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return pod.metadata.deletion_timestamp.is_some();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return true;
    }
    let running = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten()
        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    pod.metadata.deletion_timestamp.is_some() && !running
}

/// The usage report the router left as its termination message.
pub fn router_report(pod: &CachedPod) -> Option<UsageReport> {
    let status = router_status(pod)?;
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    UsageReport::parse(terminated.message.as_deref()?)
}

fn terminated_agent(pod: &CachedPod) -> Option<&ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == AGENT_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

fn failure_from_exit(terminated: &ContainerStateTerminated) -> Failure {
    let message = terminated.message.clone();
    match terminated.exit_code {
        exit_code::PROVIDER_UNAVAILABLE => Failure::ProviderUnavailable { message },
        exit_code::DO_NOT_RETRY => Failure::DoNotRetry { message },
        code => Failure::Error {
            exit_code: Some(code),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(number: i32, condition: Option<(&str, &str)>) -> CachedJob {
        let conditions = condition
            .map(|(type_, reason)| {
                serde_json::json!([{"type": type_, "status": "True", "reason": reason,
                    "lastTransitionTime": "2026-01-01T00:01:00Z"}])
            })
            .unwrap_or(serde_json::json!([]));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("t-{number}"), "labels": {ATTEMPT_LABEL: number.to_string()},
                "annotations": {PROVIDER_ANNOTATION: "openai"},
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": conditions}
        }))
        .expect("job")
    }

    fn pod(job: &str, exit: Option<(i32, &str)>) -> CachedPod {
        let state = match exit {
            Some((code, message)) => {
                serde_json::json!({"terminated": {"exitCode": code, "message": message}})
            }
            None => serde_json::json!({"running": {}}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{job}-abcde"),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "j"}]},
            "status": {"containerStatuses": [{"name": "agent", "image": "a", "imageID": "", "ready": false,
                "restartCount": 0, "state": state}]}
        }))
        .expect("pod")
    }

    /// A worker pod whose agent exited 0 and whose router is in `router_state`.
    fn pod_with_router(phase: &str, router_state: serde_json::Value) -> CachedPod {
        let mut pod = pod("t-1", Some((0, "the answer")));
        let status = pod.status.as_mut().expect("status");
        status.phase = Some(phase.into());
        status.init_container_statuses = Some(vec![
            serde_json::from_value(serde_json::json!({"name": ROUTER_CONTAINER, "image": "r",
                "imageID": "", "ready": false, "restartCount": 0, "state": router_state}))
            .expect("status"),
        ]);
        pod
    }

    #[test]
    fn a_timed_out_attempt_waits_for_its_pod_to_stop_and_reads_its_routers_report() {
        let timed_out = job(1, Some(("Failed", "DeadlineExceeded")));
        let mut stopping = pod_with_router("Running", serde_json::json!({"running": {}}));
        stopping.metadata.deletion_timestamp = Some(Time(Default::default()));
        let attempts = observe_attempts(&[&timed_out], &[&stopping]);
        assert_eq!(attempts[0].outcome, Outcome::Running);

        let report = r#"{"requests":1,"inputTokens":20,"outputTokens":9,"refused":0,"models":[]}"#;
        let mut stopped_pod = pod_with_router(
            "Running",
            serde_json::json!({"terminated": {"exitCode": 0, "message": report}}),
        );
        stopped_pod.metadata.deletion_timestamp = Some(Time(Default::default()));
        let attempts = observe_attempts(&[&timed_out], &[&stopped_pod]);
        assert!(matches!(
            attempts[0].outcome,
            Outcome::Failed {
                failure: Failure::Timeout,
                ..
            }
        ));
        assert_eq!(
            attempts[0].usage.as_ref().map(|u| u.total.requests),
            Some(1)
        );
        // Gone, or never given a router: the deadline decides at once, as before.
        let attempts = observe_attempts(&[&timed_out], &[]);
        assert!(matches!(attempts[0].outcome, Outcome::Failed { .. }));
    }

    #[test]
    fn a_cancelled_attempts_pod_is_read_once_stopped_without_its_job() {
        let report = r#"{"requests":1,"inputTokens":20,"outputTokens":9,"refused":0,"models":[]}"#;
        let mut stopped_pod = pod_with_router(
            "Failed",
            serde_json::json!({"terminated": {"exitCode": 0, "message": report}}),
        );
        stopped_pod.metadata.deletion_timestamp = Some(Time(Default::default()));
        stopped_pod.kept_labels = [(ATTEMPT_LABEL, "2")].into();
        stopped_pod.metadata.creation_timestamp = Some(Time(Default::default()));
        stopped_pod.metadata.finalizers = Some(vec![USAGE_FINALIZER.into()]);
        let attempts = stopped_after_finish(None, &[&stopped_pod]);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].number, 2);
        assert_eq!(
            attempts[0].usage.as_ref().map(|u| u.total.requests),
            Some(1)
        );

        let mut running = stopped_pod.clone();
        running.status.as_mut().expect("status").phase = Some("Running".into());
        running
            .status
            .as_mut()
            .expect("status")
            .init_container_statuses = None;
        running.status.as_mut().expect("status").container_statuses = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "agent", "image": "a",
                "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}))
            .expect("status"),
        ]);
        assert!(
            stopped_after_finish(None, &[&running]).is_empty(),
            "still running"
        );
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1).expect("time"));
        assert!(
            stopped_after_finish(Some(&later), &[&stopped_pod]).is_empty(),
            "older than the task: a namesake's"
        );
    }

    #[test]
    fn a_pod_has_stopped_when_final_or_deleted_with_nothing_running() {
        let running = pod_with_router("Running", serde_json::json!({"running": {}}));
        assert!(!stopped(&running));
        let mut deleting = running.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(!stopped(&deleting), "its router still runs");
        let mut quiet = pod_with_router(
            "Running",
            serde_json::json!({"terminated": {"exitCode": 0}}),
        );
        assert!(!stopped(&quiet), "not being deleted: its phase decides");
        quiet.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(stopped(&quiet));
        assert!(stopped(&pod_with_router(
            "Succeeded",
            serde_json::json!({"running": {}})
        )));
    }

    #[test]
    fn an_ended_attempt_waits_for_its_routers_report_and_reads_it() {
        let complete = job(1, Some(("Complete", "")));
        let stopping = pod_with_router("Running", serde_json::json!({"running": {}}));
        let attempts = observe_attempts(&[&complete], &[&stopping]);
        assert_eq!(
            attempts[0].outcome,
            Outcome::Running,
            "the router has not stopped yet"
        );

        let report = r#"{"requests":2,"inputTokens":20,"outputTokens":9,"refused":0,"models":[]}"#;
        let stopped = pod_with_router(
            "Succeeded",
            serde_json::json!({"terminated": {"exitCode": 0, "message": report}}),
        );
        let attempts = observe_attempts(&[&complete], &[&stopped]);
        assert!(matches!(attempts[0].outcome, Outcome::Succeeded { .. }));
        let usage = attempts[0].usage.as_ref().expect("the router's report");
        assert_eq!((usage.total.requests, usage.total.tokens()), (2, 29));

        // A pod that ended without the router's report (it never started) does not wait.
        let without = pod_with_router("Succeeded", serde_json::json!({"waiting": {}}));
        let attempts = observe_attempts(&[&complete], &[&without]);
        assert!(matches!(attempts[0].outcome, Outcome::Succeeded { .. }));
        assert_eq!(attempts[0].usage, None);
    }

    #[test]
    fn a_finished_job_waits_for_its_pods_final_state() {
        let complete = job(1, Some(("Complete", "")));
        let running = pod("t-1", None);
        let attempts = observe_attempts(&[&complete], &[&running]);
        assert_eq!(attempts[0].outcome, Outcome::Running);

        let done = pod("t-1", Some((0, "the answer")));
        let attempts = observe_attempts(&[&complete], &[&done]);
        assert!(matches!(
            &attempts[0].outcome,
            Outcome::Succeeded { result: Some(r), .. } if r == "the answer"
        ));
        assert_eq!(attempts[0].provider.as_deref(), Some("openai"));
        assert_eq!(attempts[0].pod_name.as_deref(), Some("t-1-abcde"));
    }

    #[test]
    fn failures_are_classified_by_deadline_and_exit_code() {
        let cases = [
            (Some(("Failed", "DeadlineExceeded")), None, Failure::Timeout),
            (
                Some(("Failed", "BackoffLimitExceeded")),
                Some((69, "503 from provider")),
                Failure::ProviderUnavailable {
                    message: Some("503 from provider".into()),
                },
            ),
            (
                Some(("Failed", "BackoffLimitExceeded")),
                Some((65, "bad input")),
                Failure::DoNotRetry {
                    message: Some("bad input".into()),
                },
            ),
            (
                Some(("Failed", "BackoffLimitExceeded")),
                Some((2, "")),
                Failure::Error {
                    exit_code: Some(2),
                    message: Some(String::new()),
                },
            ),
        ];
        for (condition, exit, expected) in cases {
            let failed = job(1, condition);
            let pods: Vec<CachedPod> = exit.map(|e| pod("t-1", Some(e))).into_iter().collect();
            let pod_refs: Vec<&CachedPod> = pods.iter().collect();
            let attempts = observe_attempts(&[&failed], &pod_refs);
            match &attempts[0].outcome {
                Outcome::Failed { failure, .. } => assert_eq!(failure, &expected),
                other => panic!("expected a failure, got {other:?}"),
            }
        }
        assert!(!Failure::ProviderUnavailable { message: None }.counts());
        assert!(Failure::Timeout.counts());
    }

    #[test]
    fn attempts_are_ordered_and_foreign_jobs_ignored() {
        let (two, one) = (job(2, None), job(1, Some(("Complete", ""))));
        let mut foreign = job(3, None);
        foreign.kept_labels = Default::default();
        let numbers: Vec<i32> = observe_attempts(&[&two, &foreign, &one], &[])
            .iter()
            .map(|a| a.number)
            .collect();
        assert_eq!(numbers, [1, 2]);
    }

    #[test]
    fn worker_messages_are_bounded_to_one_line() {
        let failure = Failure::Error {
            exit_code: Some(1),
            message: Some(format!("{}\nsecond line", "x".repeat(500))),
        };
        let text = failure.describe();
        assert!(!text.contains('\n'));
        assert!(text.len() < 300);
    }
}
