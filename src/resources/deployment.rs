//! The Deployment that runs an agent: the restricted security context, the provider config and
//! credentials mounted, and the replica count left to the HPA when autoscaling is on.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

use super::labels::{agent_labels, selector_labels};
use super::pod::{
    AGENT_CONTAINER, CONFIG_VOLUME, agent_env, non_empty, non_empty_map, read_only_mount,
    restricted_container_security, restricted_pod_security, tmp_volume,
};
use super::provider_config::CONFIG_DIR;
use super::router_sidecar::{RouterDefaults, add_budget_lease, provider_wiring};
use crate::api::AgentDeployment;
use crate::api::common::SecretKeyRef;

/// Pod-template annotation whose change rolls the pods when a credential or secret changes.
pub const SECRETS_HASH_ANNOTATION: &str = "agentoperator.dev/secrets-hash";

/// What the Deployment needs besides the AgentDeployment itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentInputs {
    pub config_map: String,
    pub service_account: String,
    /// Provider name and the Secret key of its credential, for every credential to mount.
    pub credentials: Vec<(String, SecretKeyRef)>,
    /// Hash of the validated credentials and extra secrets; changing it rolls the pods.
    pub secrets_hash: String,
    /// Image of the router sidecar: the operator's own.
    pub router: RouterDefaults,
    /// With `spec.budget`: the lease Secret the router serves the budget lease with.
    pub lease_secret: Option<String>,
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

    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: inputs.config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        tmp,
    ];
    let mut mounts = vec![read_only_mount(CONFIG_VOLUME, CONFIG_DIR), tmp_mount];
    let mut wiring = provider_wiring(workload, &inputs.credentials, &inputs.router, &agent_name);
    if let Some(secret) = &inputs.lease_secret {
        add_budget_lease(&mut wiring, secret);
    }
    volumes.extend(wiring.volumes);
    mounts.extend(wiring.agent_mounts);

    let container = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(workload.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| format!("{p:?}")),
        command: non_empty(&workload.command),
        args: non_empty(&workload.args),
        env: Some(agent_env(workload, wiring.agent_env)),
        env_from: non_empty(&workload.env_from),
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
        liveness_probe: spec.liveness_probe.as_deref().cloned(),
        readiness_probe: spec.readiness_probe.as_deref().cloned(),
        startup_probe: spec.startup_probe.as_deref().cloned(),
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
                    init_containers: non_empty(&wiring.init_containers),
                    containers: vec![container],
                    volumes: Some(volumes),
                    service_account_name: Some(inputs.service_account.clone()),
                    automount_service_account_token: Some(false),
                    // The contract gives the agent its listed environment and nothing else: no
                    // `*_SERVICE_HOST`/`*_PORT` for every Service of the namespace, where an
                    // agent named `agent` would set `AGENT_PORT` in every pod.
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security(spec.security.run_as_user)),
                    node_selector: non_empty_map(&workload.node_selector),
                    tolerations: non_empty(&workload.tolerations),
                    affinity: spec.affinity.as_deref().cloned(),
                    image_pull_secrets: non_empty(&workload.image_pull_secrets),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::provider_config::CREDENTIALS_DIR;

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
            router: RouterDefaults {
                image: "operator:1".into(),
                otlp_endpoint: None,
            },
            credentials: vec![(
                "openai".into(),
                SecretKeyRef {
                    name: "openai-key".into(),
                    key: "apiKey".into(),
                },
            )],
            secrets_hash: "abc".into(),
            lease_secret: None,
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
        assert_eq!(
            pod.enable_service_links,
            Some(false),
            "no Service variables"
        );
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
