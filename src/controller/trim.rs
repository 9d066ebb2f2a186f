//! What the watch caches keep of each object: what a reconcile reads, nothing more. Children
//! are compared by their applied-hash annotation, never field by field, so their specs and
//! data can go; `managedFields` and `kubectl apply`'s last-applied copy are never read at all.
//! At a thousand agents or five thousand tasks this is most of the operator's memory.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;

use crate::api::{AgentDeployment, AgentTask, LLMProvider};
use crate::resources::task_config::FILE_ANNOTATION_PREFIX;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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

/// Labels, owners, container statuses and the hash of a worker's files are read; the spec and
/// the files themselves (up to 128 KiB a pod) are not.
impl Trim for Pod {
    fn trim_fields(&mut self) {
        self.spec = None;
        if let Some(annotations) = self.metadata.annotations.as_mut() {
            annotations.retain(|key, _| !key.starts_with(FILE_ANNOTATION_PREFIX));
        }
    }
}

/// Labels, owners and status are read; the pod template is not.
impl Trim for Job {
    fn trim_fields(&mut self) {
        self.spec = None;
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
    fn cached_children_keep_metadata_and_status_only() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{...}", "agentoperator.dev/applied-hash": "h",
                    "files.agentoperator.dev/input": "a long input"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "agent", "image": "x"}]},
            "status": {"phase": "Running"}
        }))
        .expect("pod");
        pod.trim();
        assert!(pod.spec.is_none());
        assert!(pod.metadata.managed_fields.is_none());
        let annotations = pod.metadata.annotations.expect("annotations");
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(!annotations.contains_key("files.agentoperator.dev/input"));
        assert_eq!(annotations["agentoperator.dev/applied-hash"], "h");
        assert_eq!(pod.metadata.labels.expect("labels")["a"], "b");
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
