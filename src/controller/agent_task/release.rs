//! The usage finalizer of worker pods: a pod whose router reports the attempt's usage is kept,
//! once stopped, until that report is in the task's status, so no way of ending a pod (the
//! Job's deadline, a cancellation, an eviction, a deleted task) loses what the attempt spent.
//!
//! The rule is pure ([`releasable`]). A reconcile releases its attempts' pods right after it
//! writes the status that records them; a sweep over the pod cache releases the rest: pods of
//! tasks that are gone, being deleted or finished, which no reconcile reads.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::TaskController;
use super::attempts::{Attempt, holds_usage, router_report, stopped};
use super::status::is_finished;
use crate::api::AgentTask;
use crate::api::agent_task::{AgentTaskStatus, reason};
use crate::controller::compact::CachedPod;
use crate::resources::job::{TASK_NAME_ANNOTATION, USAGE_FINALIZER};
use crate::resources::labels::ATTEMPT_LABEL;

/// How often the sweep looks for pods to release.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// What the rule reads of a pod's task.
#[derive(Clone, Copy, Debug)]
pub struct TaskState<'a> {
    pub deleting: bool,
    pub status: Option<&'a AgentTaskStatus>,
}

impl<'a> TaskState<'a> {
    pub fn of(task: &'a AgentTask) -> Self {
        Self {
            deleting: task.meta().deletion_timestamp.is_some(),
            status: task.status.as_ref(),
        }
    }
}

/// Whether the usage finalizer may leave `pod`, whose task is `task` (`None`: gone). Only
/// from a pod being deleted (one that ends by itself stays readable until its Job is cleaned
/// up, so releasing it earlier would be a write for nothing), and never while anything in it
/// runs; then once its report is recorded, or can no longer be: the task is gone, being
/// deleted or finished (but for a cancellation, whose report is recorded after it), or the
/// router left no report.
pub fn releasable(pod: &CachedPod, task: Option<TaskState>) -> bool {
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if !holds_usage(pod) || !deleting || !stopped(pod) {
        return false;
    }
    let Some(task) = task else {
        return true;
    };
    // A finished task records no more usage, but for a cancelled attempt's, which arrives
    // after the task finished.
    let cancelled = task.status.and_then(|s| s.reason.as_deref()) == Some(reason::CANCELLED);
    if task.deleting || (is_finished(task.status) && !cancelled) {
        return true;
    }
    let attempt: Option<i32> = pod.label(ATTEMPT_LABEL).and_then(|n| n.parse().ok());
    let recorded = task
        .status
        .and_then(|s| s.usage.as_ref())
        .is_some_and(|u| u.attempts.iter().any(|a| Some(a.attempt) == attempt));
    recorded || router_report(pod).is_none()
}

/// Releases the pods of a task's attempts that [`releasable`] allows, judged by `state`: the
/// task as it is once the reconcile's status is written.
pub async fn release_attempts(
    controller: &TaskController,
    namespace: &str,
    attempts: &[Attempt],
    state: TaskState<'_>,
) {
    for pod_name in attempts.iter().filter_map(|a| a.pod_name.as_deref()) {
        let pod = controller
            .caches
            .pods
            .get(&ObjectRef::new(pod_name).within(namespace));
        if let Some(pod) = pod
            && releasable(&pod, Some(state))
        {
            release(&controller.context.client, &pod).await;
        }
    }
}

/// Every few seconds, releases what no reconcile did: above all the pods of deleted tasks,
/// which nothing reconciles.
pub async fn sweep(controller: Arc<TaskController>, shutdown: CancellationToken) {
    controller.context.readiness.wait_for_caches().await;
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for pod in controller.caches.pods.state() {
            if !holds_usage(&pod) {
                continue;
            }
            let task = pod
                .annotation(TASK_NAME_ANNOTATION)
                .zip(pod.namespace())
                .and_then(|(name, namespace)| {
                    controller
                        .caches
                        .tasks
                        .get(&ObjectRef::new(name).within(&namespace))
                });
            // A newer task of the same name only delays the release: it is never credited
            // with this pod's report, whose Job another task owns.
            if releasable(&pod, task.as_deref().map(TaskState::of)) {
                release(&controller.context.client, &pod).await;
            }
        }
    }
}

/// Removes the usage finalizer, if the pod is still as the cache saw it (its
/// `resourceVersion` in the patch): a pod another writer changed meanwhile, such as the Job
/// controller releasing its own finalizer, is left for the next look.
async fn release(client: &Client, pod: &CachedPod) {
    let (Some(namespace), Some(name)) = (pod.namespace(), pod.metadata.name.clone()) else {
        return;
    };
    let kept: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != USAGE_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "finalizers": kept,
    }});
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::debug!(pod = %name, %namespace, "released the usage finalizer"),
        // Gone, or changed since the cache saw it: the next look decides again.
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {}
        Err(error) => {
            tracing::warn!(pod = %name, %namespace, %error, "cannot release the usage finalizer")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::router_sidecar::ROUTER_CONTAINER;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn worker(router: serde_json::Value, deleting: bool) -> CachedPod {
        let mut pod: CachedPod = serde_json::from_value(json!({
            "metadata": {"name": "t-1-abcde", "namespace": "team", "finalizers": [USAGE_FINALIZER],
                "labels": {ATTEMPT_LABEL: "1"}, "annotations": {TASK_NAME_ANNOTATION: "t"}},
            "status": {"phase": "Running", "initContainerStatuses": [{"name": ROUTER_CONTAINER,
                "image": "r", "imageID": "", "ready": false, "restartCount": 0, "state": router}]}
        }))
        .expect("pod");
        if deleting {
            pod.metadata.deletion_timestamp = Some(Time(Default::default()));
        }
        pod
    }

    fn reported() -> serde_json::Value {
        json!({"terminated": {"exitCode": 0,
            "message": r#"{"requests":1,"inputTokens":20,"outputTokens":9,"refused":0,"models":[]}"#}})
    }

    fn task(status: serde_json::Value) -> AgentTask {
        let mut task = crate::api::agent_task::task_for_tests(
            "t",
            json!({"agentRef": {"name": "support"}, "input": "x"}),
        );
        task.status = serde_json::from_value(status).expect("status");
        task
    }

    #[test]
    fn a_pod_is_kept_while_it_runs_and_until_its_report_is_recorded() {
        let running = task(json!({"attempts": 1}));
        assert!(!releasable(
            &worker(json!({"running": {}}), true),
            Some(TaskState::of(&running))
        ));
        let stopped_pod = worker(reported(), true);
        assert!(
            !releasable(&stopped_pod, Some(TaskState::of(&running))),
            "not recorded"
        );
        let recorded = task(json!({"attempts": 1, "usage": {
            "total": {"requests": 1, "inputTokens": 20, "outputTokens": 9, "totalTokens": 29},
            "attempts": [{"attempt": 1, "usage": {"requests": 1}}]}}));
        assert!(releasable(&stopped_pod, Some(TaskState::of(&recorded))));
    }

    #[test]
    fn a_pod_without_a_report_or_a_live_task_is_released_once_stopped() {
        let running = task(json!({"attempts": 1}));
        let killed = worker(json!({"terminated": {"exitCode": 137}}), true);
        assert!(
            releasable(&killed, Some(TaskState::of(&running))),
            "no report to wait for"
        );
        let mut ended = worker(reported(), false);
        ended.status.as_mut().expect("status").phase = Some("Succeeded".into());
        assert!(
            !releasable(&ended, None),
            "not being deleted: nothing to release"
        );
        assert!(
            releasable(&worker(reported(), true), None),
            "the task is gone"
        );
        let finished = |reason: &str| {
            task(
                json!({"attempts": 1, "reason": reason, "conditions": [{"type": "Failed",
                "status": "True", "reason": reason, "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
            )
        };
        let timed_out = finished("Timeout");
        assert!(releasable(
            &worker(reported(), true),
            Some(TaskState::of(&timed_out))
        ));
        // A cancelled attempt's report is recorded after the task finished: it is waited for.
        let cancelled = finished("Cancelled");
        assert!(!releasable(
            &worker(reported(), true),
            Some(TaskState::of(&cancelled))
        ));
        let mut without = worker(reported(), true);
        without.metadata.finalizers = None;
        assert!(!releasable(&without, None), "nothing to release");
    }
}
