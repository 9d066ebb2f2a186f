//! What the watch caches keep of each object: what a reconcile reads, nothing more. Children
//! are compared by their applied-hash annotation, never field by field, so their specs and
//! data can go; `managedFields` and `kubectl apply`'s last-applied copy are never read at all.
//! At a thousand agents or five thousand tasks this is most of the operator's memory.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::compact::{CachedJob, CachedPod};
use crate::api::{AgentDeployment, AgentTask, LLMProvider};
use crate::resources::task_config::FILE_ANNOTATION_PREFIX;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const OWN_LABEL_PREFIX: &str = "agentoperator.dev/";

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
impl Trim for AgentTask {}
impl Trim for LLMProvider {}
/// Credential values are read (probes, the pod-template hash): kept whole.
impl Trim for Secret {}
impl Trim for ServiceAccount {}

/// Status, replicas, generation and the pod template's annotations are read; the pod spec is not.
impl Trim for Deployment {
    fn trim_fields(&mut self) {
        self.spec.template.spec = None;
    }
}

/// Pods and Jobs are cached in compact forms (`compact.rs`) that hold no spec. Of their labels,
/// only the operator's own are read (the task, the attempt, the agent): the Job controller's,
/// the Deployment's and the recommended `app.kubernetes.io/*` set are a dozen strings a pod.
/// Of a pod's annotations, the worker's files (up to 128 KiB a pod) are never read.
impl Trim for CachedPod {
    fn trim_fields(&mut self) {
        keep_own_labels(&mut self.metadata);
        self.metadata.generate_name = None;
        if let Some(annotations) = self.metadata.annotations.as_mut() {
            annotations.retain(|key, _| !key.starts_with(FILE_ANNOTATION_PREFIX));
        }
    }
}

impl Trim for CachedJob {
    fn trim_fields(&mut self) {
        keep_own_labels(&mut self.metadata);
    }
}

fn keep_own_labels(metadata: &mut ObjectMeta) {
    if let Some(labels) = metadata.labels.as_mut() {
        labels.retain(|key, _| key.starts_with(OWN_LABEL_PREFIX));
    }
}

impl Trim for ConfigMap {
    fn trim_fields(&mut self) {
        self.data = None;
        self.binary_data = None;
    }
}

impl Trim for Service {
    fn trim_fields(&mut self) {
        self.spec = None;
    }
}

/// Small, and rare: kept whole.
impl Trim for HorizontalPodAutoscaler {}

impl Trim for PodDisruptionBudget {
    fn trim_fields(&mut self) {
        self.spec = None;
    }
}

impl Trim for NetworkPolicy {
    fn trim_fields(&mut self) {
        self.spec = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_pod_drops_the_metadata_nobody_reads() {
        let mut pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "generateName": "p-",
                "labels": {"agentoperator.dev/attempt": "2", "job-name": "t-2"},
                "annotations": {LAST_APPLIED: "{...}", "agentoperator.dev/applied-hash": "h",
                    "files.agentoperator.dev/input": "a long input"},
                "managedFields": [{"manager": "kubectl"}]},
            "status": {"phase": "Running"}
        }))
        .expect("pod");
        pod.trim();
        assert!(pod.metadata.managed_fields.is_none() && pod.metadata.generate_name.is_none());
        let annotations = pod.metadata.annotations.expect("annotations");
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(!annotations.contains_key("files.agentoperator.dev/input"));
        assert_eq!(annotations["agentoperator.dev/applied-hash"], "h");
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels["agentoperator.dev/attempt"], "2");
        assert!(!labels.contains_key("job-name"));
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }

    #[test]
    fn a_deployment_keeps_its_template_annotations() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 2, "selector": {},
                "template": {"metadata": {"annotations": {"agentoperator.dev/secrets-hash": "s"}},
                    "spec": {"containers": [{"name": "agent"}]}}}
        }))
        .expect("deployment");
        deployment.trim();
        let spec = deployment.spec;
        assert_eq!(spec.replicas, Some(2));
        assert!(spec.template.spec.is_none());
        assert_eq!(
            spec.template
                .metadata
                .and_then(|m| m.annotations)
                .expect("annotations")["agentoperator.dev/secrets-hash"],
            "s"
        );
    }
}
