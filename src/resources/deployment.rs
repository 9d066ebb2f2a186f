//! The Deployment that runs an agent: the restricted security context, the provider config and
//! credentials mounted, and the replica count left to the HPA when autoscaling is on.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    SeccompProfile, SecretKeySelector, SecretProjection, SecurityContext, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

use super::labels::{agent_labels, selector_labels};
use super::provider_config::{CONFIG_DIR, CONFIG_FILE, CREDENTIAL_FILE, CREDENTIALS_DIR};
use crate::api::AgentDeployment;
use crate::api::common::SecretKeyRef;

/// Name of the agent's container.
pub const AGENT_CONTAINER: &str = "agent";
/// Pod-template annotation whose change rolls the pods when a credential or secret changes.
pub const SECRETS_HASH_ANNOTATION: &str = "agentoperator.dev/secrets-hash";
/// Environment variable pointing the agent at its provider config.
pub const CONFIG_ENV: &str = "AGENT_OPERATOR_PROVIDERS_FILE";

/// What the Deployment needs besides the AgentDeployment itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentInputs {
    pub config_map: String,
    pub service_account: String,
    /// Provider name and the Secret key of its credential, for every credential to mount.
    pub credentials: Vec<(String, SecretKeyRef)>,
    /// Hash of the validated credentials and extra secrets; changing it rolls the pods.
    pub secrets_hash: String,
}

pub fn deployment(agent: &AgentDeployment, name: &str, inputs: &DeploymentInputs) -> Deployment {
    let agent_name = agent.metadata.name.clone().unwrap_or_default();
    let spec = &agent.spec;
    let workload = &spec.workload;

    let mut pod_labels = spec
        .pod_metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    // Our labels win: the selector must keep matching.
    pod_labels.extend(agent_labels(&agent_name));
    let mut pod_annotations = spec
        .pod_metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .unwrap_or_default();
    pod_annotations.insert(
        SECRETS_HASH_ANNOTATION.to_string(),
        inputs.secrets_hash.clone(),
    );

    let mut env = vec![EnvVar {
        name: CONFIG_ENV.to_string(),
        value: Some(format!("{CONFIG_DIR}/{CONFIG_FILE}")),
        ..EnvVar::default()
    }];
    env.extend(workload.secrets.iter().map(|secret| EnvVar {
        name: secret.name.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.secret_key_ref.name.clone(),
                key: secret.secret_key_ref.key.clone(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }));
    env.extend(workload.env.iter().cloned());

    let mut volumes = vec![
        Volume {
            name: "providers".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: inputs.config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    // Mounted as a whole folder (never subPath), so the kubelet refreshes the files in place
    // when the config or a credential changes, without restarting the pod.
    let mut mounts = vec![
        VolumeMount {
            name: "providers".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    if !inputs.credentials.is_empty() {
        let sources = inputs
            .credentials
            .iter()
            .map(|(provider, secret)| VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret.name.clone(),
                    items: Some(vec![KeyToPath {
                        key: secret.key.clone(),
                        path: format!("{provider}/{CREDENTIAL_FILE}"),
                        mode: Some(0o440),
                        ..KeyToPath::default()
                    }]),
                    optional: None,
                }),
                ..VolumeProjection::default()
            })
            .collect();
        volumes.push(Volume {
            name: "credentials".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "credentials".into(),
            mount_path: CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let container = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(workload.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| format!("{p:?}")),
        command: (!workload.command.is_empty()).then(|| workload.command.clone()),
        args: (!workload.args.is_empty()).then(|| workload.args.clone()),
        env: Some(env),
        env_from: (!workload.env_from.is_empty()).then(|| workload.env_from.clone()),
        resources: workload.resources.clone(),
        ports: (!spec.ports.is_empty()).then(|| {
            spec.ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    container_port: p.container_port,
                    protocol: p.protocol.map(|proto| format!("{proto:?}")),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        liveness_probe: spec.liveness_probe.clone(),
        readiness_probe: spec.readiness_probe.clone(),
        startup_probe: spec.startup_probe.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container_security(
            spec.security.read_only_root_filesystem,
        )),
        ..Container::default()
    };

    Deployment {
        metadata: super::child_metadata(agent, name),
        spec: DeploymentSpec {
            replicas: desired_replicas(agent),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&agent_name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    service_account_name: Some(inputs.service_account.clone()),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security(spec.security.run_as_user)),
                    node_selector: non_empty_map(&workload.node_selector),
                    tolerations: (!workload.tolerations.is_empty())
                        .then(|| workload.tolerations.clone()),
                    affinity: spec.affinity.clone(),
                    image_pull_secrets: (!workload.image_pull_secrets.is_empty())
                        .then(|| workload.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The replica count to apply: none while an HPA owns it, zero while suspended.
pub fn desired_replicas(agent: &AgentDeployment) -> Option<i32> {
    if agent.spec.suspend {
        Some(0)
    } else if agent.spec.autoscaling.is_some() {
        None
    } else {
        Some(agent.spec.replicas.unwrap_or(1))
    }
}

/// The pod-level half of Pod Security `restricted`.
pub fn restricted_pod_security(run_as_user: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The container-level half of Pod Security `restricted`.
pub fn restricted_container_security(read_only_root_filesystem: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(read_only_root_filesystem),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(spec: serde_json::Value) -> AgentDeployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "agentoperator.dev/v1alpha1", "kind": "AgentDeployment",
            "metadata": {"name": "support", "namespace": "team", "uid": "u-1"},
            "spec": spec
        }))
        .expect("valid agent")
    }

    fn inputs() -> DeploymentInputs {
        DeploymentInputs {
            config_map: "support-providers".into(),
            service_account: "support".into(),
            credentials: vec![(
                "openai".into(),
                SecretKeyRef {
                    name: "openai-key".into(),
                    key: "apiKey".into(),
                },
            )],
            secrets_hash: "abc".into(),
        }
    }

    #[test]
    fn replicas_follow_spec_suspend_and_autoscaling() {
        assert_eq!(
            desired_replicas(&agent(serde_json::json!({"image": "a"}))),
            Some(1)
        );
        assert_eq!(
            desired_replicas(&agent(serde_json::json!({"image": "a", "replicas": 3}))),
            Some(3)
        );
        let autoscaled = agent(
            serde_json::json!({"image": "a", "autoscaling": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}),
        );
        assert_eq!(desired_replicas(&autoscaled), None, "the HPA owns replicas");
        let suspended = agent(serde_json::json!({"image": "a", "replicas": 3, "suspend": true}));
        assert_eq!(desired_replicas(&suspended), Some(0));
    }

    #[test]
    fn pods_are_restricted_and_get_config_and_credentials() {
        let built = deployment(
            &agent(serde_json::json!({"image": "agent:1"})),
            "support",
            &inputs(),
        );
        let pod = built.spec.template.spec.expect("pod");
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        let security = container
            .security_context
            .as_ref()
            .expect("security context");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, [CONFIG_DIR, "/tmp", CREDENTIALS_DIR]);
        let volumes = pod.volumes.expect("volumes");
        let projected = volumes
            .iter()
            .find(|v| v.name == "credentials")
            .and_then(|v| v.projected.clone())
            .expect("projected");
        let item = &projected.sources.expect("sources")[0]
            .secret
            .clone()
            .expect("secret")
            .items
            .expect("items")[0];
        assert_eq!(item.path, "openai/api-key");
    }

    #[test]
    fn secret_env_is_resolved_by_the_kubelet_never_copied() {
        let built = deployment(
            &agent(
                serde_json::json!({"image": "a", "secrets": [{"name": "TOKEN", "secretKeyRef": {"name": "tools", "key": "t"}}]}),
            ),
            "support",
            &inputs(),
        );
        let container = built.spec.template.spec.expect("pod").containers[0].clone();
        let token = container
            .env
            .expect("env")
            .into_iter()
            .find(|e| e.name == "TOKEN")
            .expect("TOKEN");
        assert_eq!(token.value, None);
        assert_eq!(
            token
                .value_from
                .and_then(|v| v.secret_key_ref)
                .map(|s| s.name),
            Some("tools".into())
        );
    }

    #[test]
    fn operator_labels_win_over_pod_labels() {
        let built = deployment(
            &agent(
                serde_json::json!({"image": "a", "podMetadata": {"labels": {"agentoperator.dev/agent": "other", "team": "x"}}}),
            ),
            "support",
            &inputs(),
        );
        let labels = built
            .spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        assert_eq!(labels["agentoperator.dev/agent"], "support");
        assert_eq!(labels["team"], "x");
    }
}
