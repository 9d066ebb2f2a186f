//! What the watch caches keep of each object: what a reconcile reads, nothing more. Children
//! are compared by their applied-hash annotation, never field by field, so their specs and
//! data can go; `managedFields` and `kubectl apply`'s last-applied copy are never read at all.
//! At a thousand agents or five thousand tasks this is most of the operator's memory.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::compact::{CachedJob, CachedPod};
use crate::api::{AgentDeployment, AgentTask, LLMProvider};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const OWN_PREFIX: &str = "agentoperator.dev/";

/// Drops what no reconcile reads of a cached object.
pub trait Trim: Resource {
    /// Kind-specific fields to drop.
    fn trim_fields(&mut self) {}

    fn trim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
        self.trim_fields();
    }
}

impl Trim for AgentDeployment {}

/// A finished task's inline input (up to 64 KiB) is never read again: only the attempts it
/// starts carry it, and a finished task starts none. Tasks are kept after they finish unless
/// `ttlSecondsAfterFinished` says otherwise, so these are most of the cached tasks.
impl Trim for AgentTask {
    fn trim_fields(&mut self) {
        if super::agent_task::status::is_finished(self.status.as_ref()) {
            self.spec.input = None;
        }
    }
}
impl Trim for LLMProvider {}
/// Credential values are read (probes, the pod-template hash): kept whole.
impl Trim for Secret {}
impl Trim for ServiceAccount {
    fn trim_fields(&mut self) {
        trim_child_metadata(&mut self.metadata);
    }
}

/// Of a Deployment, the replicas, the generation, the operator's annotations of the pod
/// template (the secrets hash) and the rollout's counts and `Progressing` condition are read;
/// the pod spec, the selector, the strategy and the template's labels are not.
impl Trim for Deployment {
    fn trim_fields(&mut self) {
        trim_child_metadata(&mut self.metadata);
        let spec = &mut self.spec;
        spec.selector = Default::default();
        spec.strategy = None;
        spec.template.spec = None;
        if let Some(template) = spec.template.metadata.as_mut() {
            template.labels = None;
            keep_own(&mut template.annotations);
        }
        if let Some(conditions) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.retain(|c| c.type_.as_deref() == Some("Progressing"));
        }
    }
}

/// Pods and Jobs are cached in compact forms (`compact.rs`) that hold no spec, and of their
/// labels and annotations only those read (the task, the attempt, the agent, the files' hash):
/// the Job controller's, the Deployment's, the recommended `app.kubernetes.io/*` set and the
/// worker's files (up to 128 KiB a pod) are dropped as they are decoded.
impl Trim for CachedPod {
    fn trim_fields(&mut self) {
        self.metadata.generate_name = None;
    }
}

/// Of a Job's conditions, only a true `Complete` or `Failed` is read (`attempts.rs`): the
/// `SuccessCriteriaMet` and `FailureTarget` that precede them are a third of a finished Job.
/// Of those two, the time is read, and of `Failed` its reason and message (a deadline, or why
/// the Job failed without a pod to tell); `Complete`'s reason and message are the same two
/// sentences on every Job, and no probe time is read.
impl Trim for CachedJob {
    fn trim_fields(&mut self) {
        if let Some(conditions) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.retain(|c| c.type_ == "Complete" || c.type_ == "Failed");
            for condition in conditions.iter_mut() {
                condition.last_probe_time = None;
                if condition.type_ == "Complete" {
                    condition.reason = None;
                    condition.message = None;
                }
            }
        }
    }
}

/// An agent's children are found by their owner reference and compared by the applied-hash
/// annotation: their labels are never read (the watch selects by label on the server), nor
/// any annotation but the operator's own. Each map costs a B-tree node of about 0.5 KiB
/// however few entries it holds, so an empty one goes too.
fn trim_child_metadata(metadata: &mut ObjectMeta) {
    metadata.labels = None;
    keep_own(&mut metadata.annotations);
}

/// Keeps the operator's own entries (`agentoperator.dev/*`) of a label or annotation map.
fn keep_own(map: &mut Option<BTreeMap<String, String>>) {
    if let Some(entries) = map.as_mut() {
        entries.retain(|key, _| key.starts_with(OWN_PREFIX));
        if entries.is_empty() {
            *map = None;
        }
    }
}

impl Trim for ConfigMap {
    fn trim_fields(&mut self) {
        trim_child_metadata(&mut self.metadata);
        self.data = None;
        self.binary_data = None;
    }
}

impl Trim for Service {
    fn trim_fields(&mut self) {
        trim_child_metadata(&mut self.metadata);
        self.spec = None;
    }
}

/// Small, and rare: kept whole but for its metadata.
impl Trim for HorizontalPodAutoscaler {
    fn trim_fields(&mut self) {
        trim_child_metadata(&mut self.metadata);
    }
}

impl Trim for PodDisruptionBudget {
    fn trim_fields(&mut self) {
        trim_child_metadata(&mut self.metadata);
        self.spec = None;
    }
}

impl Trim for NetworkPolicy {
    fn trim_fields(&mut self) {
        trim_child_metadata(&mut self.metadata);
        self.spec = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_task_drops_its_input_and_one_in_progress_keeps_it() {
        let task = |conditions: serde_json::Value| -> AgentTask {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": "summarise", "namespace": "team"},
                "spec": {"agentRef": {"name": "support"}, "input": "the long input"},
                "status": {"conditions": conditions}
            }))
            .expect("task")
        };
        let condition = |type_: &str, status: &str| {
            serde_json::json!({"type": type_, "status": status, "reason": "R", "message": "",
                "lastTransitionTime": "2026-12-04T00:00:00Z"})
        };
        for conditions in [
            serde_json::json!([]),
            serde_json::json!([condition("Complete", "False"), condition("Failed", "False")]),
        ] {
            let mut running = task(conditions);
            running.trim();
            assert_eq!(running.spec.input.as_deref(), Some("the long input"));
        }
        for finished in [condition("Complete", "True"), condition("Failed", "True")] {
            let mut task = task(serde_json::json!([finished]));
            task.trim();
            assert_eq!(task.spec.input, None);
            assert_eq!(
                task.spec.agent_ref.map(|r| r.name).as_deref(),
                Some("support")
            );
        }
    }

    #[test]
    fn a_cached_pod_keeps_only_the_labels_and_annotations_read() {
        let mut pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "generateName": "p-",
                "labels": {"agentoperator.dev/attempt": "2", "job-name": "t-2"},
                "annotations": {LAST_APPLIED: "{...}", "agentoperator.dev/files-hash": "h",
                    "files.agentoperator.dev/input": "a long input"},
                "managedFields": [{"manager": "kubectl"}]},
            "status": {"phase": "Running"}
        }))
        .expect("pod");
        pod.trim();
        let metadata = &pod.metadata;
        assert!(metadata.managed_fields.is_none() && metadata.generate_name.is_none());
        assert!(metadata.labels.is_none() && metadata.annotations.is_none());
        assert_eq!(pod.kept_labels, [("agentoperator.dev/attempt", "2")].into());
        assert_eq!(
            pod.kept_annotations,
            [("agentoperator.dev/files-hash", "h")].into()
        );
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }

    #[test]
    fn a_deployment_keeps_what_status_and_apply_read() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "generation": 3,
                "labels": {"agentoperator.dev/agent": "a", "app.kubernetes.io/name": "a"},
                "annotations": {"agentoperator.dev/applied-hash": "h", "deployment.kubernetes.io/revision": "4"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"agentoperator.dev/agent": "a"}},
                "strategy": {"type": "RollingUpdate"},
                "template": {"metadata": {"labels": {"agentoperator.dev/agent": "a"},
                    "annotations": {"agentoperator.dev/secrets-hash": "s", "team.example/owner": "x"}},
                    "spec": {"containers": [{"name": "agent"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1, "conditions": [
                {"type": "Available", "status": "True", "message": "has minimum availability"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
        }))
        .expect("deployment");
        deployment.trim();
        let (metadata, spec) = (&deployment.metadata, &deployment.spec);
        assert_eq!(metadata.generation, Some(3));
        assert!(metadata.labels.is_none());
        let annotations = metadata.annotations.as_ref().expect("annotations");
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["agentoperator.dev/applied-hash"]
        );
        assert_eq!(spec.replicas, Some(2));
        assert!(spec.selector.match_labels.is_none() && spec.strategy.is_none());
        let template = spec.template.metadata.as_ref().expect("template metadata");
        assert!(spec.template.spec.is_none() && template.labels.is_none());
        let template_annotations = template.annotations.as_ref().expect("template annotations");
        assert_eq!(
            template_annotations.keys().collect::<Vec<_>>(),
            ["agentoperator.dev/secrets-hash"]
        );
        let status = deployment.status.expect("status");
        assert_eq!(status.ready_replicas, Some(1));
        let conditions = status.conditions.expect("conditions");
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].reason.as_deref(),
            Some("ProgressDeadlineExceeded")
        );
    }

    #[test]
    fn a_job_keeps_its_labels_annotations_and_final_conditions_only() {
        let mut job: CachedJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j",
                "labels": {"agentoperator.dev/attempt": "1", "batch.kubernetes.io/job-name": "j"},
                "annotations": {"agentoperator.dev/provider": "p", "batch.kubernetes.io/job-tracking": ""},
                "ownerReferences": [{"apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentTask",
                    "name": "t", "uid": "u"}]},
            "status": {"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                    "message": "Reached expected number of succeeded pods",
                    "lastProbeTime": "2026-12-04T00:00:01Z",
                    "lastTransitionTime": "2026-12-04T00:00:01Z"}]}
        }))
        .expect("job");
        job.trim();
        assert_eq!(job.kept_labels, [("agentoperator.dev/attempt", "1")].into());
        assert_eq!(
            job.kept_annotations,
            [("agentoperator.dev/provider", "p")].into()
        );
        assert_eq!(
            job.metadata.owner_references.as_ref().expect("owner").len(),
            1
        );
        let conditions = job.status.and_then(|s| s.conditions).expect("conditions");
        assert_eq!(conditions.len(), 1);
        let complete = &conditions[0];
        assert_eq!(
            (complete.type_.as_str(), complete.status.as_str()),
            ("Complete", "True")
        );
        assert!(
            complete.last_transition_time.is_some(),
            "the end of the attempt"
        );
        assert!(complete.reason.is_none() && complete.message.is_none());
        assert!(complete.last_probe_time.is_none());
    }

    #[test]
    fn a_failed_job_keeps_why_it_failed() {
        let mut job: CachedJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "status": {"conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                    "lastProbeTime": "2026-12-04T00:00:01Z",
                    "lastTransitionTime": "2026-12-04T00:00:01Z"}]}
        }))
        .expect("job");
        job.trim();
        let conditions = job.status.and_then(|s| s.conditions).expect("conditions");
        assert_eq!(conditions.len(), 1);
        let failed = &conditions[0];
        assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(
            failed.message.as_deref(),
            Some("Job was active longer than specified deadline")
        );
        assert!(failed.last_transition_time.is_some() && failed.last_probe_time.is_none());
    }

    #[test]
    fn a_child_without_annotations_of_ours_keeps_no_maps() {
        let mut account: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "labels": {"agentoperator.dev/agent": "a"},
                "annotations": {"team.example/owner": "x"},
                "ownerReferences": [{"apiVersion": "agentoperator.dev/v1alpha1",
                    "kind": "AgentDeployment", "name": "a", "uid": "u"}]}
        }))
        .expect("service account");
        account.trim();
        assert!(account.metadata.labels.is_none() && account.metadata.annotations.is_none());
        assert!(account.metadata.owner_references.is_some());
    }
}
