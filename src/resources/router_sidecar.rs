//! How an agent pod reaches its LLM providers: through the router sidecar (the default), or by
//! reading the mounted config and credentials itself. One function wires both kinds of pod, so
//! an AgentDeployment's pods and a task's worker are wired the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, KeyToPath,
    ObjectFieldSelector, Probe, ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::budget_lease::{LEASE_PORT, LEASE_TOKEN_DIR, LEASE_TOKEN_KEY, LEASE_VOLUME};
use super::pod::{
    CONFIG_VOLUME, credentials_volume, plain_env, read_only_mount, restricted_container_security,
};
use super::provider_config::{CONFIG_DIR, CONFIG_FILE};
use super::usage_report::{TERMINATION_LOG, USAGE_DIR, USAGE_FILE};
use crate::api::common::{AgentWorkload, RouterSpec, SecretKeyRef};

/// Name of the router's container.
pub const ROUTER_CONTAINER: &str = "llm-router";
/// The volume the router keeps its usage report on.
pub const USAGE_VOLUME: &str = "llm-usage";
/// The loopback port the router listens on inside the pod.
pub const ROUTER_PORT: u16 = 8790;
/// The key the agent's SDK sends to the router. SDKs refuse to start without one; the router
/// ignores it and never forwards it.
pub const PLACEHOLDER_API_KEY: &str = "agent-operator-router";
/// Where the router's binary sits in the operator's image (beside `/agent-operator`).
pub const BINARY_PATH: &str = "/agent-router";

/// The router settings when the pod runs the router: it is enabled and there is a provider.
pub fn router_of(workload: &AgentWorkload) -> Option<&RouterSpec> {
    Some(&workload.router).filter(|r| r.enabled && !workload.providers.is_empty())
}

/// What the operator's settings give every router: its image (this operator's own), and where
/// routers export their telemetry unless a workload says otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterDefaults {
    pub image: String,
    pub otlp_endpoint: Option<String>,
}

/// What the provider wiring adds to a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderWiring {
    pub volumes: Vec<Volume>,
    /// Mounts of the agent container.
    pub agent_mounts: Vec<VolumeMount>,
    /// Environment of the agent container.
    pub agent_env: Vec<EnvVar>,
    /// The router, as a native sidecar: an init container that keeps running.
    pub init_containers: Vec<Container>,
}

/// Wires the config volume (named `config_volume`, already in the pod) and the credentials.
/// With the router, only the router mounts the credentials and the agent gets the OpenAI SDK's
/// environment; without it, the agent mounts them.
/// `service` names the pod's workload in its telemetry (`service.name`).
pub fn provider_wiring(
    workload: &AgentWorkload,
    credentials: &[(String, SecretKeyRef)],
    defaults: &RouterDefaults,
    service: &str,
) -> ProviderWiring {
    let credentials = credentials_volume(credentials);
    let mut wiring = ProviderWiring::default();
    match router_of(workload) {
        None => {
            if let Some((volume, mount)) = credentials {
                wiring.volumes.push(volume);
                wiring.agent_mounts.push(mount);
            }
        }
        Some(router) => {
            let mut router_mounts = vec![
                read_only_mount(CONFIG_VOLUME, CONFIG_DIR),
                VolumeMount {
                    name: USAGE_VOLUME.into(),
                    mount_path: USAGE_DIR.into(),
                    ..VolumeMount::default()
                },
            ];
            // Outlives the router's restarts, not the pod: a restarted router continues from
            // the report on it, and the kubelet hands the last one to the operator.
            wiring.volumes.push(Volume {
                name: USAGE_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("1Mi".into())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            });
            if let Some((volume, mount)) = credentials {
                wiring.volumes.push(volume);
                router_mounts.push(mount);
            }
            wiring.agent_env = router_env();
            let endpoint = router
                .otlp_endpoint
                .as_deref()
                .or(defaults.otlp_endpoint.as_deref());
            let mut container = router_container(&defaults.image, router, router_mounts);
            if let Some(endpoint) = endpoint {
                container.env = Some(telemetry_env(endpoint, service));
            }
            wiring.init_containers = vec![container];
        }
    }
    wiring
}

/// Has the router serve the agent's budget lease on the pod's address, with the token of the
/// lease Secret `secret`, which only the router mounts. A pod without the router is left as
/// it is (the API refuses a budget without the router).
pub fn add_budget_lease(wiring: &mut ProviderWiring, secret: &str) {
    let Some(router) = wiring
        .init_containers
        .iter_mut()
        .find(|c| c.name == ROUTER_CONTAINER)
    else {
        return;
    };
    wiring.volumes.push(Volume {
        name: LEASE_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items: Some(vec![KeyToPath {
                key: LEASE_TOKEN_KEY.into(),
                path: LEASE_TOKEN_KEY.into(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    router
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(read_only_mount(LEASE_VOLUME, LEASE_TOKEN_DIR));
    router.args.get_or_insert_with(Vec::new).extend([
        "--lease-listen".to_string(),
        format!("0.0.0.0:{LEASE_PORT}"),
        "--lease-token-file".to_string(),
        format!("{LEASE_TOKEN_DIR}/{LEASE_TOKEN_KEY}"),
    ]);
    router.ports = Some(vec![ContainerPort {
        name: Some("budget-lease".into()),
        container_port: i32::from(LEASE_PORT),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }]);
}

/// The OpenAI and Anthropic SDKs' environment, pointing at the router. `OPENAI_API_BASE` is the
/// name older SDKs and LangChain read; Anthropic's SDKs (and the Claude Agent SDK) add
/// `/v1/messages` to `ANTHROPIC_BASE_URL` themselves. The keys are placeholders the SDKs insist
/// on and the router ignores.
pub fn router_env() -> Vec<EnvVar> {
    let root = format!("http://127.0.0.1:{ROUTER_PORT}");
    let base = format!("{root}/v1");
    vec![
        plain_env("OPENAI_BASE_URL", base.clone()),
        plain_env("OPENAI_API_BASE", base),
        plain_env("OPENAI_API_KEY", PLACEHOLDER_API_KEY),
        plain_env("ANTHROPIC_BASE_URL", root),
        plain_env("ANTHROPIC_API_KEY", PLACEHOLDER_API_KEY),
    ]
}

/// The OpenTelemetry SDK's standard environment: where to export, and what the spans are of.
fn telemetry_env(endpoint: &str, service: &str) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    vec![
        plain_env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        plain_env("OTEL_SERVICE_NAME", service.to_string()),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        // The kubelet expands $(NAME) from the variables above.
        plain_env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)".to_string(),
        ),
    ]
}

fn router_container(image: &str, spec: &RouterSpec, mounts: Vec<VolumeMount>) -> Container {
    let listen = format!("127.0.0.1:{ROUTER_PORT}");
    // The router listens on loopback only, which the kubelet's HTTP probes cannot reach: the
    // binary checks its own /healthz from inside the pod instead.
    let probe = |period: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                BINARY_PATH.into(),
                "--check".into(),
                "--listen".into(),
                listen.clone(),
            ]),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    Container {
        name: ROUTER_CONTAINER.into(),
        image: Some(image.to_string()),
        // The image's entrypoint is the operator; the router is the binary beside it.
        command: Some(vec![BINARY_PATH.into()]),
        args: Some(vec![
            "--listen".into(),
            listen.clone(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            "--usage-file".into(),
            format!("{USAGE_DIR}/{USAGE_FILE}"),
            "--termination-log".into(),
            TERMINATION_LOG.into(),
        ]),
        termination_message_path: Some(TERMINATION_LOG.into()),
        // A native sidecar: started before the agent and kept running beside it, and it does not
        // keep a task's Job from completing.
        restart_policy: Some("Always".into()),
        volume_mounts: Some(mounts),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        startup_probe: Some(probe(1, 30)),
        liveness_probe: Some(probe(10, 3)),
        security_context: Some(restricted_container_security(true)),
        ..Container::default()
    }
}

fn default_resources() -> ResourceRequirements {
    let quantity = |q: &str| Quantity(q.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity("10m")),
            ("memory".to_string(), quantity("16Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), quantity("64Mi"))])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::ProviderRef;

    fn workload(router_enabled: bool) -> AgentWorkload {
        AgentWorkload {
            image: "agent".into(),
            providers: vec![ProviderRef {
                name: "openai".into(),
                model: None,
            }],
            router: RouterSpec {
                enabled: router_enabled,
                ..RouterSpec::default()
            },
            ..AgentWorkload::default()
        }
    }

    fn defaults() -> RouterDefaults {
        RouterDefaults {
            image: "operator:1".into(),
            otlp_endpoint: None,
        }
    }

    fn credentials() -> Vec<(String, SecretKeyRef)> {
        vec![(
            "openai".into(),
            SecretKeyRef {
                name: "openai-key".into(),
                key: "apiKey".into(),
            },
        )]
    }

    #[test]
    fn with_the_router_only_the_sidecar_mounts_credentials() {
        let wiring = provider_wiring(&workload(true), &credentials(), &defaults(), "support");
        assert!(
            wiring.agent_mounts.is_empty(),
            "the agent mounts no credential"
        );
        let router = &wiring.init_containers[0];
        assert_eq!(router.restart_policy.as_deref(), Some("Always"));
        let mounts: Vec<&str> = router
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounts, [CONFIG_VOLUME, USAGE_VOLUME, "credentials"]);
        let args = router.args.clone().unwrap_or_default().join(" ");
        assert!(
            args.contains("--usage-file /var/run/agentoperator/usage/usage.json")
                && args.contains("--termination-log /dev/termination-log"),
            "the router keeps its report where a restart and the kubelet find it: {args}"
        );
        // The image's entrypoint is the operator: the container and its probes name the
        // router's own binary.
        let command = router.command.clone().unwrap_or_default();
        assert_eq!(command, [BINARY_PATH]);
        for probe in [&router.startup_probe, &router.liveness_probe] {
            let exec = probe.as_ref().and_then(|p| p.exec.as_ref());
            let probe_command = exec.and_then(|e| e.command.clone()).unwrap_or_default();
            assert_eq!(probe_command[..2], [BINARY_PATH, "--check"]);
        }
        let env: Vec<(String, String)> = wiring
            .agent_env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert!(env.contains(&("OPENAI_BASE_URL".into(), "http://127.0.0.1:8790/v1".into())));
        assert!(env.contains(&("OPENAI_API_KEY".into(), PLACEHOLDER_API_KEY.into())));
        assert!(env.contains(&("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:8790".into())));
        assert!(env.contains(&("ANTHROPIC_API_KEY".into(), PLACEHOLDER_API_KEY.into())));
    }

    #[test]
    fn without_the_router_the_agent_mounts_credentials_and_gets_no_openai_env() {
        let wiring = provider_wiring(&workload(false), &credentials(), &defaults(), "support");
        assert!(wiring.init_containers.is_empty());
        assert!(wiring.agent_env.is_empty());
        assert_eq!(wiring.agent_mounts[0].name, "credentials");
    }

    #[test]
    fn only_the_router_mounts_the_lease_token_and_serves_the_lease() {
        let mut wiring = provider_wiring(&workload(true), &credentials(), &defaults(), "support");
        add_budget_lease(&mut wiring, "agent-router-lease");
        let router = &wiring.init_containers[0];
        let args = router.args.clone().unwrap_or_default().join(" ");
        assert!(args.contains("--lease-listen 0.0.0.0:8791"), "{args}");
        assert!(
            router
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == LEASE_VOLUME && m.read_only == Some(true))
        );
        assert!(
            !wiring.agent_mounts.iter().any(|m| m.name == LEASE_VOLUME),
            "the agent container never sees the token"
        );
        assert!(wiring.agent_env.iter().all(|e| e.value_from.is_none()));
        let mut without_router =
            provider_wiring(&workload(false), &credentials(), &defaults(), "support");
        add_budget_lease(&mut without_router, "agent-router-lease");
        assert!(
            !without_router
                .volumes
                .iter()
                .any(|v| v.name == LEASE_VOLUME)
        );
    }

    #[test]
    fn the_crd_keeps_the_routers_port_free() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&crate::api::AgentDeployment::crd()).expect("json");
        assert!(crd.contains(&format!("p.containerPort != {ROUTER_PORT}")));
    }

    #[test]
    fn no_provider_means_no_router() {
        let mut w = workload(true);
        w.providers.clear();
        assert!(router_of(&w).is_none());
        assert!(
            provider_wiring(&w, &[], &defaults(), "support")
                .init_containers
                .is_empty()
        );
    }

    #[test]
    fn the_router_passes_pod_security_restricted_and_listens_on_loopback() {
        let wiring = provider_wiring(&workload(true), &credentials(), &defaults(), "support");
        let router = &wiring.init_containers[0];
        let security = router.security_context.clone().expect("security context");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        let args = router.args.clone().unwrap_or_default().join(" ");
        assert!(args.contains("--listen 127.0.0.1:8790"), "{args}");
    }
}
