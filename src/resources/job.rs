//! The Job that runs one attempt of an AgentTask: one pod, never restarted in place, stopped at
//! the task's timeout, with the task's input, parameters and provider wiring mounted.
//!
//! The Job's name is the task's name and the attempt number, so creating the same attempt twice
//! (after an operator restart, or from a stale cache) is refused by the API server instead of
//! running the attempt twice.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIProjection,
    DownwardAPIVolumeFile, DownwardAPIVolumeSource, KeyToPath, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, ProjectedVolumeSource, SecretProjection, Volume, VolumeProjection,
};
use kube::api::ObjectMeta;

use super::labels::{ATTEMPT_LABEL, task_labels};
use super::names::{DNS_LABEL_MAX, child_name};
use super::pod::{
    AGENT_CONTAINER, CONFIG_VOLUME, agent_env, non_empty, non_empty_map, plain_env,
    read_only_mount, restricted_container_security, restricted_pod_security, tmp_volume,
};
use super::provider_config::{CONFIG_DIR, CONFIG_FILE};
use super::router_sidecar::{RouterDefaults, provider_wiring};
use super::task_config::{
    INPUT_KEY, PARAMETERS_KEY, WorkerFiles, file_annotation, task_config_map_name,
};
use crate::api::AgentTask;
use crate::api::agent_deployment::{AgentSecurity, ImagePullPolicy, PodMetadata};
use crate::api::agent_task::InputSource;
use crate::api::common::{AgentWorkload, SecretKeyRef};

/// Where the task's input and parameters are mounted.
pub const TASK_DIR: &str = "/var/run/agentoperator/task";
/// Where the worker writes its result: the kubelet reads this file into the container's
/// termination message (at most 4 KiB) when the container ends.
pub const RESULT_FILE: &str = "/dev/termination-log";
/// Finalizer on a worker pod whose router reports the attempt's usage: the pod, and the
/// report in its status, stay until the operator has recorded it, however the pod ends (the
/// Job's deadline and a cancellation delete it while its router runs).
pub const USAGE_FINALIZER: &str = "agentoperator.dev/usage-report";

/// Annotation on a task's Job and pod naming the task in full (labels hold a shortened form).
pub const TASK_NAME_ANNOTATION: &str = "agentoperator.dev/task-name";
/// Annotation on a task's Job naming the provider the attempt was pointed at first.
pub const PROVIDER_ANNOTATION: &str = "agentoperator.dev/provider";

/// Name of the Job of one attempt. At most 63 characters: the Job controller puts it in a label
/// of the pod.
pub fn job_name(task: &str, attempt: i32) -> String {
    child_name(task, &attempt.to_string(), DNS_LABEL_MAX)
}

/// The worker as resolved from the task's `agentRef` or `template`.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    pub workload: AgentWorkload,
    pub pod_metadata: PodMetadata,
    pub security: AgentSecurity,
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// The ServiceAccount of the pod; `None` uses the namespace's `default`.
    pub service_account: Option<String>,
}

/// What one attempt's Job needs besides the task.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptInputs {
    pub attempt: i32,
    pub worker: Worker,
    /// Provider name and the Secret key of its credential, for every credential to mount.
    pub credentials: Vec<(String, SecretKeyRef)>,
    /// The first Ready provider when the attempt starts.
    pub provider: Option<String>,
    /// Image of the router sidecar: the operator's own.
    pub router: RouterDefaults,
}

pub fn job(task: &AgentTask, inputs: &AttemptInputs, files: &WorkerFiles) -> Job {
    let task_name = task.metadata.name.clone().unwrap_or_default();
    let worker = &inputs.worker;
    let workload = &worker.workload;
    let attempt = inputs.attempt.to_string();

    let mut labels = task_labels(&task_name);
    labels.insert(ATTEMPT_LABEL.into(), attempt.clone());
    let mut pod_labels = worker.pod_metadata.labels.clone();
    pod_labels.extend(labels.clone());
    let mut annotations = BTreeMap::from([(TASK_NAME_ANNOTATION.to_string(), task_name.clone())]);
    let mut pod_annotations = worker.pod_metadata.annotations.clone();
    pod_annotations.extend(annotations.clone());
    if let Some(provider) = &inputs.provider {
        annotations.insert(PROVIDER_ANNOTATION.into(), provider.clone());
    }

    let placement = if files.annotated() {
        pod_annotations.extend(files.annotations());
        FilesIn::Annotations
    } else {
        FilesIn::ConfigMap(task_config_map_name(&task_name))
    };
    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![
        config_volume(&placement),
        task_volume(&placement, files, task),
        tmp,
    ];
    let mut mounts = vec![
        read_only_mount(CONFIG_VOLUME, CONFIG_DIR),
        read_only_mount("task", TASK_DIR),
        tmp_mount,
    ];
    let service = task.metadata.name.as_deref().unwrap_or_default();
    let wiring = provider_wiring(workload, &inputs.credentials, &inputs.router, service);
    volumes.extend(wiring.volumes);
    mounts.extend(wiring.agent_mounts);

    let mut task_env = vec![
        plain_env("AGENT_OPERATOR_TASK_NAME", task_name.clone()),
        plain_env("AGENT_OPERATOR_TASK_ATTEMPT", attempt),
        plain_env(
            "AGENT_OPERATOR_TASK_INPUT_FILE",
            format!("{TASK_DIR}/{INPUT_KEY}"),
        ),
        plain_env(
            "AGENT_OPERATOR_TASK_PARAMETERS_FILE",
            format!("{TASK_DIR}/{PARAMETERS_KEY}"),
        ),
        plain_env("AGENT_OPERATOR_RESULT_FILE", RESULT_FILE),
    ];
    task_env.extend(wiring.agent_env);
    let container = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(workload.image.clone()),
        image_pull_policy: worker.image_pull_policy.map(|p| format!("{p:?}")),
        command: non_empty(&workload.command),
        args: non_empty(&workload.args),
        env: Some(agent_env(workload, task_env)),
        env_from: non_empty(&workload.env_from),
        resources: workload.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container_security(
            worker.security.read_only_root_filesystem,
        )),
        termination_message_path: Some(RESULT_FILE.into()),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    };

    let timeout_seconds = task.spec.timeout.as_std().as_secs().max(1);
    Job {
        metadata: ObjectMeta {
            annotations: Some(annotations),
            ..super::owned_metadata(task, &job_name(&task_name, inputs.attempt), labels)
        },
        spec: Some(JobSpec {
            // One pod per Job: a retry is a new attempt with a new Job, decided by the operator.
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(i64::try_from(timeout_seconds).unwrap_or(i64::MAX)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    finalizers: (!wiring.init_containers.is_empty())
                        .then(|| vec![USAGE_FINALIZER.to_string()]),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: non_empty(&wiring.init_containers),
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    volumes: Some(volumes),
                    service_account_name: worker.service_account.clone(),
                    automount_service_account_token: Some(false),
                    // The contract gives the agent its listed environment and nothing else: no
                    // `*_SERVICE_HOST`/`*_PORT` for every Service of the namespace, where an
                    // agent named `agent` would set `AGENT_PORT` in every pod.
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security(worker.security.run_as_user)),
                    node_selector: non_empty_map(&workload.node_selector),
                    tolerations: non_empty(&workload.tolerations),
                    image_pull_secrets: non_empty(&workload.image_pull_secrets),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Where the worker's own files are: see [`WorkerFiles`].
enum FilesIn {
    Annotations,
    ConfigMap(String),
}

/// The folder of `providers.json`.
fn config_volume(placement: &FilesIn) -> Volume {
    match placement {
        FilesIn::Annotations => Volume {
            name: CONFIG_VOLUME.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![annotated_file(CONFIG_FILE)]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
        FilesIn::ConfigMap(name) => Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                items: Some(vec![key_to_path(CONFIG_FILE, CONFIG_FILE)]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    }
}

/// A file of the pod's own annotation, by the kubelet's downward API.
fn annotated_file(file: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: file.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: format!("metadata.annotations['{}']", file_annotation(file)),
            ..ObjectFieldSelector::default()
        }),
        ..DownwardAPIVolumeFile::default()
    }
}

/// The task folder: the parameters (and an inline input) from the worker's own files, and the
/// input from wherever else the spec says: the user's ConfigMap or Secret.
fn task_volume(placement: &FilesIn, files: &WorkerFiles, task: &AgentTask) -> Volume {
    let own: Vec<&str> = files
        .names()
        .filter(|name| [PARAMETERS_KEY, INPUT_KEY].contains(name))
        .collect();
    let own_source = match placement {
        FilesIn::Annotations => VolumeProjection {
            downward_api: Some(DownwardAPIProjection {
                items: Some(own.iter().map(|name| annotated_file(name)).collect()),
            }),
            ..VolumeProjection::default()
        },
        FilesIn::ConfigMap(name) => VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: name.clone(),
                items: Some(own.iter().map(|name| key_to_path(name, name)).collect()),
                optional: None,
            }),
            ..VolumeProjection::default()
        },
    };
    let mut sources = vec![own_source];
    match task.spec.input_from.as_deref() {
        None => {}
        Some(InputSource {
            config_map_key_ref: Some(reference),
            ..
        }) => sources.push(VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: reference.name.clone(),
                items: Some(vec![key_to_path(&reference.key, INPUT_KEY)]),
                optional: None,
            }),
            ..VolumeProjection::default()
        }),
        Some(InputSource {
            secret_key_ref: Some(reference),
            ..
        }) => sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                name: reference.name.clone(),
                items: Some(vec![key_to_path(&reference.key, INPUT_KEY)]),
                optional: None,
            }),
            ..VolumeProjection::default()
        }),
        // The schema requires one of the two references; nothing to mount otherwise.
        Some(InputSource { .. }) => {}
    }
    Volume {
        name: "task".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn key_to_path(key: &str, path: &str) -> KeyToPath {
    KeyToPath {
        key: key.into(),
        path: path.into(),
        ..KeyToPath::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(spec: serde_json::Value) -> AgentTask {
        crate::api::agent_task::task_for_tests("triage", spec)
    }

    fn job_of(task: &AgentTask, inputs: &AttemptInputs) -> Job {
        let providers = crate::resources::provider_config::provider_config(&[], &[], None);
        job(task, inputs, &WorkerFiles::of(task, &providers))
    }

    fn inputs(attempt: i32) -> AttemptInputs {
        AttemptInputs {
            attempt,
            router: RouterDefaults {
                image: "operator:1".into(),
                otlp_endpoint: None,
            },
            worker: Worker {
                workload: AgentWorkload {
                    image: "agent:1".into(),
                    ..AgentWorkload::default()
                },
                pod_metadata: PodMetadata {
                    annotations: BTreeMap::from([("team".to_string(), "a".to_string())]),
                    ..PodMetadata::default()
                },
                security: AgentSecurity::default(),
                image_pull_policy: None,
                service_account: Some("support".into()),
            },
            credentials: vec![(
                "openai".into(),
                SecretKeyRef {
                    name: "openai-key".into(),
                    key: "apiKey".into(),
                },
            )],
            provider: Some("openai".into()),
        }
    }

    #[test]
    fn one_never_restarted_pod_per_attempt_with_the_timeout_as_deadline() {
        let task =
            task(serde_json::json!({"agentRef": {"name": "s"}, "input": "x", "timeout": "90s"}));
        let job = job_of(&task, &inputs(3));
        assert_eq!(job.metadata.name.as_deref(), Some("triage-3"));
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(90));
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.enable_service_links,
            Some(false),
            "no Service variables"
        );
        let labels = spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        assert_eq!(labels[ATTEMPT_LABEL], "3");
        assert!(
            !labels.contains_key(super::super::labels::AGENT_LABEL),
            "the agent's Service must not select task pods"
        );
    }

    #[test]
    fn job_names_are_stable_and_fit_a_label() {
        let long = "t".repeat(200);
        assert_eq!(job_name(&long, 2), job_name(&long, 2));
        assert_ne!(job_name(&long, 2), job_name(&long, 3));
        assert!(job_name(&long, 12).len() <= DNS_LABEL_MAX);
        assert!(job_name(&long, 12).ends_with("-12"));
    }

    #[test]
    fn input_comes_from_the_referenced_secret_without_copying_it() {
        let task = task(serde_json::json!({
            "agentRef": {"name": "s"}, "inputFrom": {"secretKeyRef": {"name": "in", "key": "text"}}
        }));
        let job = job_of(&task, &inputs(1));
        let pod = job.spec.expect("spec").template.spec.expect("pod");
        let task_volume = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "task")
            .expect("task volume");
        let sources = task_volume
            .projected
            .expect("projected")
            .sources
            .expect("sources");
        let secret = sources[1].secret.as_ref().expect("secret source");
        assert_eq!(secret.name, "in");
        let item = &secret.items.as_ref().expect("items")[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("text", INPUT_KEY));
    }

    #[test]
    fn worker_env_names_its_files_and_result() {
        let job = job_of(
            &task(serde_json::json!({"agentRef": {"name": "s"}, "input": "x"})),
            &inputs(1),
        );
        let container = job
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .containers[0]
            .clone();
        let env: BTreeMap<String, String> = container
            .env
            .expect("env")
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env["AGENT_OPERATOR_TASK_INPUT_FILE"],
            "/var/run/agentoperator/task/input"
        );
        assert_eq!(env["AGENT_OPERATOR_RESULT_FILE"], RESULT_FILE);
        assert_eq!(
            container.termination_message_path.as_deref(),
            Some(RESULT_FILE)
        );
    }

    #[test]
    fn the_worker_files_are_the_pods_own_annotations() {
        let job = job_of(
            &task(serde_json::json!({"agentRef": {"name": "s"}, "input": "x"})),
            &inputs(1),
        );
        let template = job.spec.expect("spec").template;
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations");
        assert_eq!(annotations[&file_annotation(INPUT_KEY)], "x");
        let volumes = template.spec.expect("pod").volumes.expect("volumes");
        let mut projected: Vec<String> = Vec::new();
        for volume in &volumes {
            let items = volume
                .downward_api
                .iter()
                .flat_map(|d| d.items.iter().flatten())
                .chain(volume.projected.iter().flat_map(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .flat_map(|s| s.downward_api.iter().flat_map(|d| d.items.iter().flatten()))
                }));
            for item in items {
                let path = &item.field_ref.as_ref().expect("field").field_path;
                let key = path
                    .strip_prefix("metadata.annotations['")
                    .and_then(|p| p.strip_suffix("']"))
                    .expect("an annotation");
                assert!(annotations.contains_key(key), "{key} is on the pod");
                projected.push(item.path.clone());
            }
            assert!(volume.config_map.is_none(), "no ConfigMap of the task");
        }
        projected.sort();
        assert_eq!(projected, [INPUT_KEY, PARAMETERS_KEY, CONFIG_FILE]);
    }

    #[test]
    fn files_too_large_for_annotations_come_from_the_tasks_config_map() {
        let task = task(serde_json::json!({"agentRef": {"name": "s"}, "input": "x",
            "parameters": crate::resources::task_config::too_large_parameters()}));
        let template = job_of(&task, &inputs(1)).spec.expect("spec").template;
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations");
        assert!(
            !annotations
                .keys()
                .any(|k| k.starts_with(crate::resources::task_config::FILE_ANNOTATION_PREFIX))
        );
        let volumes = template.spec.expect("pod").volumes.expect("volumes");
        let config = volumes
            .iter()
            .find(|v| v.name == CONFIG_VOLUME)
            .and_then(|v| v.config_map.as_ref())
            .expect("providers.json from a ConfigMap");
        assert_eq!(config.name, task_config_map_name("triage"));
    }
}
