//! The compact forms in which the caches hold the most numerous kinds: pods and Jobs, one of
//! each per task and a pod per agent replica. k8s-openapi's structs hold every field of the
//! API inline, about 2.5 KiB for a Pod or a Job before a single string is counted, and
//! 0.75 KiB per container status; these keep only what a reconcile reads. Field names and
//! JSON shapes are the API's, so a watch decodes straight into them and skips the rest of each
//! object without allocating it, and code reads them as it would read the full types, but for
//! labels and annotations: those read are kept beside the metadata (`ReadMarks`), the rest
//! dropped.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;

use crate::resources::job::{PROVIDER_ANNOTATION, TASK_NAME_ANNOTATION};
use crate::resources::labels::{AGENT_LABEL, ATTEMPT_LABEL};
use crate::resources::task_config::FILES_HASH_ANNOTATION;

/// Every label and annotation that a reconcile reads of a cached pod or Job; the others are
/// dropped as the object is decoded.
const READ_KEYS: [&str; 5] = [
    AGENT_LABEL,
    ATTEMPT_LABEL,
    TASK_NAME_ANNOTATION,
    PROVIDER_ANNOTATION,
    FILES_HASH_ANNOTATION,
];

/// The labels or annotations of a cached pod or Job that are read: at most a few, keyed by the
/// constants themselves. In the metadata's `BTreeMap` even one entry costs a node of about
/// 0.5 KiB, and each pod and Job had two, with a string per key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadMarks(Box<[(&'static str, String)]>);

impl ReadMarks {
    /// Moves the read entries out of a metadata map, leaving it empty.
    fn taken_from(map: &mut Option<BTreeMap<String, String>>) -> Self {
        let entries = map.take().unwrap_or_default().into_iter();
        Self(
            entries
                .filter_map(|(key, value)| {
                    let known = READ_KEYS.iter().find(|read| **read == key)?;
                    Some((*known, value))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(known, _)| *known == key)
            .map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
impl<const N: usize> From<[(&'static str, &str); N]> for ReadMarks {
    fn from(entries: [(&'static str, &str); N]) -> Self {
        Self(entries.map(|(key, value)| (key, value.to_string())).into())
    }
}

/// A Pod as the caches hold it: metadata, the labels and annotations that are read, and the
/// parts of the status that are read. The metadata's own label and annotation maps are always
/// empty: read them with `label` and `annotation`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "Decoded<CachedPodStatus>")]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    pub kept_labels: ReadMarks,
    pub kept_annotations: ReadMarks,
    pub status: Option<CachedPodStatus>,
}

/// A pod or Job as the API sends it, before its read labels and annotations move out of the
/// metadata.
#[derive(Deserialize)]
struct Decoded<Status> {
    #[serde(default)]
    metadata: ObjectMeta,
    status: Option<Status>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    /// The router sidecar's, among others.
    pub init_container_statuses: Option<Vec<CachedContainerStatus>>,
    pub container_statuses: Option<Vec<CachedContainerStatus>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedContainerStatus {
    pub name: String,
    /// Waiting (and why), running, or terminated (with the exit code and the termination
    /// message: a worker's result, a router's usage report).
    pub state: Option<ContainerState>,
}

/// A Job as the caches hold it, as a pod is (`CachedPod`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "Decoded<CachedJobStatus>")]
pub struct CachedJob {
    pub metadata: ObjectMeta,
    pub kept_labels: ReadMarks,
    pub kept_annotations: ReadMarks,
    pub status: Option<CachedJobStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedJobStatus {
    pub conditions: Option<Vec<JobCondition>>,
    pub completion_time: Option<Time>,
}

/// Makes a compact type a resource of the kind it stands for: the same group, version, kind
/// and URL, so `Api` and the watcher address the real API; and decodes it from the API's JSON.
macro_rules! compact_form_of {
    ($kind:ty, $compact:ty, $status:ty) => {
        impl From<Decoded<$status>> for $compact {
            fn from(mut decoded: Decoded<$status>) -> Self {
                Self {
                    kept_labels: ReadMarks::taken_from(&mut decoded.metadata.labels),
                    kept_annotations: ReadMarks::taken_from(&mut decoded.metadata.annotations),
                    metadata: decoded.metadata,
                    status: decoded.status,
                }
            }
        }

        impl $compact {
            pub fn label(&self, key: &str) -> Option<&str> {
                self.kept_labels.get(key)
            }

            pub fn annotation(&self, key: &str) -> Option<&str> {
                self.kept_annotations.get(key)
            }
        }

        impl k8s_openapi::Resource for $compact {
            const API_VERSION: &'static str = <$kind as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$kind as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$kind as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$kind as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$kind as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$kind as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $compact {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

compact_form_of!(Pod, CachedPod, CachedPodStatus);
compact_form_of!(Job, CachedJob, CachedJobStatus);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_compact_form_addresses_its_kind() {
        assert_eq!(CachedPod::kind(&()), "Pod");
        assert_eq!(CachedPod::plural(&()), "pods");
        assert_eq!(CachedJob::api_version(&()), "batch/v1");
        assert_eq!(CachedJob::plural(&()), "jobs");
    }

    #[test]
    fn a_pod_decodes_into_what_is_read() {
        let pod: CachedPod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {AGENT_LABEL: "a", "app.kubernetes.io/name": "agent"},
                "annotations": {TASK_NAME_ANNOTATION: "t", "kubectl.kubernetes.io/restartedAt": "x"}},
            "spec": {"containers": [{"name": "agent", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7", "qosClass": "Burstable",
                "conditions": [{"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "router", "image": "r", "imageID": "",
                    "ready": true, "restartCount": 0, "state": {"running": {}}}],
                "containerStatuses": [{"name": "agent", "image": "x", "imageID": "sha256:1",
                    "ready": false, "restartCount": 2,
                    "state": {"terminated": {"exitCode": 3, "message": "report"}}}]}
        }))
        .expect("pod");
        assert_eq!(pod.label(AGENT_LABEL), Some("a"));
        assert_eq!(pod.annotation(TASK_NAME_ANNOTATION), Some("t"));
        assert!(pod.metadata.labels.is_none() && pod.metadata.annotations.is_none());
        let status = pod.status.expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        let router = &status.init_container_statuses.expect("init")[0];
        assert!(router.state.as_ref().expect("state").running.is_some());
        let agent = &status.container_statuses.expect("containers")[0];
        let terminated = agent.state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(
            terminated.map(|t| (t.exit_code, t.message.as_deref())),
            Some((3, Some("report")))
        );
    }

    #[test]
    fn a_job_decodes_into_what_is_read() {
        let job: CachedJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"name": "agent"}]}}},
            "status": {"active": 0, "completionTime": "2026-01-01T00:00:05Z",
                "conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .expect("job");
        let status = job.status.expect("status");
        assert!(status.completion_time.is_some());
        assert_eq!(status.conditions.expect("conditions")[0].type_, "Complete");
    }

    #[test]
    fn the_compact_forms_are_a_fraction_of_the_full_ones() {
        use std::mem::size_of;
        assert!(size_of::<CachedPod>() * 3 < size_of::<Pod>());
        assert!(size_of::<CachedJob>() * 3 < size_of::<Job>());
    }
}
