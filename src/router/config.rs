//! The router's view of the mounted files: `providers.json` as the operator renders it, and each
//! provider's credential file. Read whole and swapped whole, so a request sees one consistent
//! snapshot while a new one is loaded.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ledger::PriceList;
use crate::api::llm_provider::ProviderType;
use crate::resources::provider_config::{Allowance, ProviderApi, ProviderConfig, RouterSettings};

/// An API key. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential([redacted])")
    }
}

/// One provider the router may send requests to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub provider_type: ProviderType,
    /// The endpoint without a trailing `/`.
    pub endpoint: String,
    /// The model this provider is asked for; `None` keeps the agent's.
    pub model: Option<String>,
    /// The operator's probe found it Ready.
    pub ready: bool,
    pub credential: Option<Credential>,
    pub api: ProviderApi,
    /// `api.pricing`, parsed.
    pub prices: Option<PriceList>,
    /// The provider as the telemetry of a request it answers names it.
    pub answerer: super::telemetry::Answerer,
}

/// Everything the router needs from the files, at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// In the order to try: Ready providers first, each group in chain order.
    pub upstreams: Vec<Upstream>,
    pub settings: RouterSettings,
    /// What the pod may still spend.
    pub allowance: Option<Allowance>,
    /// Providers of the chain the router cannot use, and why (no LLMProvider, unreadable key).
    pub unusable: Vec<(String, String)>,
    /// Digest of every byte read, to notice a change.
    pub fingerprint: [u8; 32],
}

/// The providers whose circuit and `Retry-After` hold a change from `old` to `new` makes
/// meaningless: a new endpoint, type or key (a rotated key fixes the 401s that opened the
/// circuit), or a provider the operator's probe found Ready again. Keeping their circuit open
/// would refuse a provider that now works for up to `circuitOpenDuration` more.
pub fn invalidated_circuits(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    new.upstreams
        .iter()
        .filter(|upstream| {
            old.upstreams
                .iter()
                .find(|previous| previous.name == upstream.name)
                .is_some_and(|previous| {
                    previous.endpoint != upstream.endpoint
                        || previous.provider_type != upstream.provider_type
                        || previous.credential != upstream.credential
                        || (!previous.ready && upstream.ready)
                })
        })
        .map(|upstream| upstream.name.clone())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the provider config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the provider config {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads the config file and every credential it names.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config: ProviderConfig =
        serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    let mut digest = Sha256::new();
    digest.update(&bytes);
    let mut upstreams = Vec::new();
    let mut unusable = Vec::new();
    for entry in config.providers {
        let (Some(provider_type), Some(endpoint)) = (entry.provider_type, entry.endpoint) else {
            let reason = entry.reason.unwrap_or_else(|| "NotFound".into());
            unusable.push((entry.name, reason));
            continue;
        };
        let credential = match &entry.credential_file {
            None => None,
            Some(file) => match std::fs::read_to_string(file) {
                Ok(key) => {
                    digest.update(key.as_bytes());
                    Some(Credential::new(key.trim()))
                }
                Err(error) => {
                    // The error names the file, never its content.
                    unusable.push((entry.name, format!("cannot read {file}: {error}")));
                    continue;
                }
            },
        };
        let answerer = super::telemetry::Answerer::new(&entry.name, provider_type, &endpoint);
        upstreams.push(Upstream {
            name: entry.name,
            provider_type,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            model: entry.model,
            ready: entry.ready,
            credential,
            prices: entry.api.pricing.as_ref().map(PriceList::of),
            answerer,
            api: entry.api,
        });
    }
    Ok(Snapshot {
        upstreams,
        settings: config.router.unwrap_or_default(),
        allowance: config.allowance,
        unusable,
        fingerprint: digest.finalize().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str, endpoint: &str, key: &str, ready: bool) -> Upstream {
        Upstream {
            name: name.into(),
            provider_type: ProviderType::OpenAI,
            endpoint: endpoint.into(),
            model: None,
            ready,
            credential: Some(Credential::new(key)),
            api: ProviderApi::default(),
            prices: None,
            answerer: crate::router::telemetry::Answerer::new(name, ProviderType::OpenAI, endpoint),
        }
    }

    fn snapshot(upstreams: Vec<Upstream>) -> Snapshot {
        Snapshot {
            upstreams,
            settings: RouterSettings::default(),
            allowance: None,
            unusable: Vec::new(),
            fingerprint: [0; 32],
        }
    }

    #[test]
    fn a_credential_never_prints() {
        let upstream = upstream("a", "https://x", "sk-secret-value", true);
        assert!(!format!("{upstream:?}").contains("sk-secret-value"));
    }

    #[test]
    fn a_new_key_endpoint_or_recovered_health_invalidates_only_that_providers_circuit() {
        let old = snapshot(vec![
            upstream("rotated", "https://a", "sk-1", true),
            upstream("moved", "https://b", "sk-1", true),
            upstream("recovered", "https://c", "sk-1", false),
            upstream("unchanged", "https://d", "sk-1", true),
            upstream("failing", "https://e", "sk-1", true),
        ]);
        let new = snapshot(vec![
            upstream("rotated", "https://a", "sk-2", true),
            upstream("moved", "https://b2", "sk-1", true),
            upstream("recovered", "https://c", "sk-1", true),
            upstream("unchanged", "https://d", "sk-1", true),
            upstream("failing", "https://e", "sk-1", false),
            upstream("added", "https://f", "sk-1", true),
        ]);
        assert_eq!(
            invalidated_circuits(&old, &new),
            ["rotated", "moved", "recovered"]
        );
        assert!(invalidated_circuits(&new, &new).is_empty());
    }

    #[test]
    fn providers_without_an_llmprovider_or_a_readable_key_are_set_aside() {
        let dir = std::env::temp_dir().join(format!("router-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = dir.join("key");
        std::fs::write(&key, "sk-1\n").expect("key");
        let config = serde_json::json!({
            "version": 1, "activeProvider": "a",
            "providers": [
                {"name": "a", "type": "OpenAI", "endpoint": "https://a/v1/", "ready": true,
                 "credentialFile": key},
                {"name": "b", "ready": false, "reason": "NotFound"},
                {"name": "c", "type": "Anthropic", "endpoint": "https://c", "ready": true,
                 "credentialFile": dir.join("absent")},
            ],
            "tools": []
        });
        let file = dir.join("providers.json");
        std::fs::write(&file, config.to_string()).expect("config");
        let snapshot = load(&file).expect("loads");
        assert_eq!(snapshot.upstreams.len(), 1);
        assert_eq!(snapshot.upstreams[0].endpoint, "https://a/v1");
        assert_eq!(
            snapshot.upstreams[0]
                .credential
                .as_ref()
                .map(Credential::expose),
            Some("sk-1"),
            "the newline a Secret often carries is dropped"
        );
        let names: Vec<&str> = snapshot.unusable.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        let before = snapshot.fingerprint;
        std::fs::write(&key, "sk-2\n").expect("rotate");
        assert_ne!(load(&file).expect("loads").fingerprint, before);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
