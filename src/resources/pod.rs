//! The parts every agent pod shares, whether a Deployment or a task's Job runs it: the agent
//! container's environment, the mounted provider config and credentials, a writable `/tmp`,
//! and the security context that Pod Security `restricted` admits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath, PodSecurityContext,
    ProjectedVolumeSource, SeccompProfile, SecretKeySelector, SecretProjection, SecurityContext,
    Volume, VolumeMount, VolumeProjection,
};

use super::provider_config::{CONFIG_DIR, CONFIG_FILE, CREDENTIAL_FILE, CREDENTIALS_DIR};
use crate::api::common::{AgentWorkload, SecretKeyRef};

/// Name of the agent's container.
pub const AGENT_CONTAINER: &str = "agent";
/// Environment variable pointing the agent at its provider config.
pub const CONFIG_ENV: &str = "AGENT_OPERATOR_PROVIDERS_FILE";
/// Name of the volume holding the provider config.
pub const CONFIG_VOLUME: &str = "providers";

/// The agent container's environment: the config file's path first, then `secrets` (resolved by
/// the kubelet, never copied into the spec), then `extra`, then the user's `env`, which may
/// override anything before it.
pub fn agent_env(workload: &AgentWorkload, extra: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut env = vec![plain_env(CONFIG_ENV, format!("{CONFIG_DIR}/{CONFIG_FILE}"))];
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
    env.extend(extra);
    env.extend(workload.env.iter().cloned());
    env
}

/// An environment variable with a literal value.
pub fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The scratch `/tmp` volume and its mount: the root filesystem is read-only by default.
pub fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    )
}

/// A read-only mount of a whole volume folder. Never `subPath`: only whole-folder mounts are
/// refreshed in place by the kubelet when the config or a credential changes.
pub fn read_only_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The provider credentials as one projected volume, a folder per provider, and its mount; none
/// when no provider has a credential.
pub fn credentials_volume(credentials: &[(String, SecretKeyRef)]) -> Option<(Volume, VolumeMount)> {
    if credentials.is_empty() {
        return None;
    }
    let sources = credentials
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
    Some((
        Volume {
            name: "credentials".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        read_only_mount("credentials", CREDENTIALS_DIR),
    ))
}

/// The supplementary group of every agent process, owning the mounted files.
pub const AGENT_FS_GROUP: i64 = 65532;

/// The user agent processes run as when the spec names none.
pub const DEFAULT_AGENT_USER: i64 = 65532;

/// The pod-level half of Pod Security `restricted`. The `fsGroup` makes the kubelet give the
/// mounted credentials (mode 0440) to a group the agent's processes belong to: without it they
/// are root's, and a non-root agent could not read its own API key.
///
/// The user is always numeric: with `runAsNonRoot` and no `runAsUser`, the kubelet refuses
/// every image whose user is root or a name (`USER nonroot`) with CreateContainerConfigError,
/// which is most public base images. An explicit user makes them all start; an image that needs
/// its own UID sets `spec.security.runAsUser` to it.
pub fn restricted_pod_security(run_as_user: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(run_as_user.unwrap_or(DEFAULT_AGENT_USER)),
        // The primary group of a UID the image does not know would be root's (0).
        run_as_group: Some(AGENT_FS_GROUP),
        fs_group: Some(AGENT_FS_GROUP),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(runtime_default_seccomp()),
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
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// `None` for an empty map, so an unset field stays unset in the applied object.
pub fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

/// `None` for an empty list, likewise.
pub fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::SecretEnv;

    #[test]
    fn user_env_comes_last_so_it_can_override() {
        let workload = AgentWorkload {
            image: "a".into(),
            env: vec![plain_env("X", "user")],
            secrets: vec![SecretEnv {
                name: "TOKEN".into(),
                secret_key_ref: SecretKeyRef {
                    name: "tools".into(),
                    key: "t".into(),
                },
            }],
            ..AgentWorkload::default()
        };
        let names: Vec<String> = agent_env(&workload, vec![plain_env("X", "operator")])
            .into_iter()
            .map(|e| format!("{}={}", e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            names,
            [
                "AGENT_OPERATOR_PROVIDERS_FILE=/etc/agentoperator/providers.json",
                "TOKEN=",
                "X=operator",
                "X=user"
            ]
        );
    }

    #[test]
    fn mounted_credentials_are_readable_by_the_non_root_agent() {
        let (volume, _) = credentials_volume(&[(
            "openai".into(),
            SecretKeyRef {
                name: "k".into(),
                key: "apiKey".into(),
            },
        )])
        .expect("a credentials volume");
        let sources = volume.projected.and_then(|p| p.sources).expect("sources");
        let item = &sources[0]
            .secret
            .as_ref()
            .and_then(|s| s.items.clone())
            .expect("items")[0];
        assert_eq!(item.mode, Some(0o440), "owner and group only");
        let pod = restricted_pod_security(None);
        assert_eq!(
            pod.fs_group,
            Some(AGENT_FS_GROUP),
            "the group is the agent's"
        );
        assert_eq!(pod.run_as_non_root, Some(true));
    }

    #[test]
    fn the_agent_always_runs_as_a_numeric_user_so_root_and_named_images_start() {
        let default = restricted_pod_security(None);
        assert_eq!(default.run_as_user, Some(DEFAULT_AGENT_USER));
        assert_eq!(default.run_as_group, Some(AGENT_FS_GROUP));
        let chosen = restricted_pod_security(Some(1000));
        assert_eq!(chosen.run_as_user, Some(1000), "the spec's user wins");
    }

    #[test]
    fn no_credentials_means_no_volume() {
        assert!(credentials_volume(&[]).is_none());
    }
}
