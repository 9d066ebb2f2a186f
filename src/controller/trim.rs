//! What the watch caches keep of each object: what a reconcile reads, nothing more. Children
//! are compared by their applied-hash annotation, never field by field, so their specs and
//! data can go; `managedFields` and `kubectl apply`'s last-applied copy are never read at all.
//! At a thousand agents or five thousand tasks this is most of the operator's memory.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStatus, Pod, PodStatus, Secret, Service, ServiceAccount,
};
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

/// Labels, owners, the hash of a worker's files, the phase, the address and each container's
/// state are read. The spec, the files themselves (up to 128 KiB a pod), the pod's conditions
/// and what the kubelet reports of images, resources and mounts are not: at thousands of
/// worker pods they were most of the cache.
impl Trim for Pod {
    fn trim_fields(&mut self) {
        self.spec = None;
        self.metadata.generate_name = None;
        if let Some(annotations) = self.metadata.annotations.as_mut() {
            annotations.retain(|key, _| !key.starts_with(FILE_ANNOTATION_PREFIX));
        }
        let Some(status) = self.status.take() else {
            return;
        };
        let containers = |statuses: Option<Vec<ContainerStatus>>| {
            statuses.map(|statuses| {
                statuses
                    .into_iter()
                    .map(|c| ContainerStatus {
                        name: c.name,
                        ready: c.ready,
                        restart_count: c.restart_count,
                        started: c.started,
                        state: c.state,
                        ..ContainerStatus::default()
                    })
                    .collect()
            })
        };
        self.status = Some(PodStatus {
            phase: status.phase,
            reason: status.reason,
            message: status.message,
            pod_ip: status.pod_ip,
            init_container_statuses: containers(status.init_container_statuses),
            container_statuses: containers(status.container_statuses),
            ..PodStatus::default()
        });
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
            "status": {"phase": "Running", "podIP": "10.0.0.7", "qosClass": "Burstable",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "agent", "image": "x", "imageID": "sha256:1",
                    "ready": true, "restartCount": 2,
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "state": {"terminated": {"exitCode": 3, "message": "report"}}}]}
        }))
        .expect("pod");
        pod.trim();
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        assert!(status.conditions.is_none() && status.qos_class.is_none());
        let container = &status.container_statuses.as_ref().expect("containers")[0];
        assert_eq!(
            (container.name.as_str(), container.restart_count),
            ("agent", 2)
        );
        assert!(container.image.is_empty() && container.volume_mounts.is_none());
        let terminated = container.state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(
            terminated.map(|t| (t.exit_code, t.message.as_deref())),
            Some((3, Some("report")))
        );
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
