//! One reconcile of an LLMProvider: read its credential, probe it, compute its health and
//! status, write the status only when it changed, and schedule the next probe.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{debug, info, instrument};

use super::ProviderController;
use super::status::{ProbeReport, desired_status, event_for};
use crate::api::conditions::{is_condition_true, now_to_the_second};
use crate::api::llm_provider::{LLMProvider, LLMProviderStatus, condition};
use crate::providers::health::{Health, Thresholds, next_probe_delay, observe};
use crate::providers::{FailureClass, ProbeFailure, ProbeOutcome, probe::probe};

/// Name of this controller in metrics, logs and as the status field manager.
pub const CONTROLLER: &str = "llmprovider";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("LLMProvider has no namespace")]
    MissingNamespace,
    #[error("cannot update the status of LLMProvider {namespace}/{name}: {source}")]
    UpdateStatus {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

impl ReconcileError {
    /// Every value of [`Self::reason`], for the metrics' zero-valued series.
    pub const REASONS: &[&str] = &["MissingNamespace", "UpdateStatus"];

    /// A stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::MissingNamespace => "MissingNamespace",
            ReconcileError::UpdateStatus { .. } => "UpdateStatus",
        }
    }
}

#[instrument(skip_all, fields(otel.name = "reconcile LLMProvider", kind = "LLMProvider", namespace = provider.namespace(), name = %provider.name_any(), reconcile_id = %crate::controller::reconcile_id()))]
pub async fn reconcile(
    provider: Arc<LLMProvider>,
    controller: Arc<ProviderController>,
) -> Result<Action, ReconcileError> {
    // Decisions need whole caches: the first lists may still be arriving.
    controller.context.readiness.wait_for_caches().await;
    // Observed when the reconcile ends, on every path, errors included.
    let _timer = controller.context.metrics.reconcile_timer(CONTROLLER);
    let context = &controller.context;
    let namespace = provider
        .namespace()
        .ok_or(ReconcileError::MissingNamespace)?;
    let name = provider.name_any();
    let spec = &provider.spec;

    // Read.
    let credential = read_credential(&controller.secrets, &provider, &namespace);
    let credential_hash = credential
        .as_ref()
        .ok()
        .and_then(|c| c.as_deref())
        .map(credential_hash);

    // A first status at once: an object with no status reads as healthy (kstatus Current) to
    // every GitOps tool, and the probe may take up to its timeout.
    let uid = provider.uid().unwrap_or_default();
    if provider.status.is_none() && controller.written.previous(&uid, None).is_none() {
        let unprobed = Health::default();
        let first = desired_status(
            None,
            provider.meta().generation,
            &ProbeReport {
                health: &unprobed,
                latency: std::time::Duration::ZERO,
                has_credentials: spec.credentials.is_some(),
                credential_hash: None,
            },
            now_to_the_second(),
        );
        write_status(&controller, &namespace, &name, uid.clone(), None, first).await?;
    }

    // Probe.
    let started = Instant::now();
    let outcome = match &credential {
        Ok(key) => {
            probe(
                &context.http,
                spec,
                key.as_deref(),
                spec.health_check.timeout.as_std(),
            )
            .await
        }
        Err(failure) => ProbeOutcome::Failed(failure.clone()),
    };
    let latency = started.elapsed();
    record_probe(context, &namespace, &name, &outcome, latency);

    // Compute.
    let thresholds = Thresholds {
        failure: u32::try_from(spec.health_check.failure_threshold)
            .unwrap_or(1)
            .max(1),
        success: u32::try_from(spec.health_check.success_threshold)
            .unwrap_or(1)
            .max(1),
    };
    // Compare against the status we last wrote: the cache may not have caught up with it yet.
    let previous = controller.written.previous(&uid, provider.status.as_ref());
    let previous_health = remembered_health(&controller, &uid, previous.as_ref());
    let health = observe(&previous_health, &outcome, thresholds);
    let report = ProbeReport {
        health: &health,
        latency,
        has_credentials: spec.credentials.is_some(),
        credential_hash,
    };
    let status = desired_status(
        previous.as_ref(),
        provider.meta().generation,
        &report,
        now_to_the_second(),
    );
    if let Ok(mut remembered) = controller.health.lock() {
        remembered.insert(uid.clone(), health.clone());
    }
    context
        .metrics
        .provider_up
        .with_label_values(&[namespace.as_str(), name.as_str()])
        .set(i64::from(health.ready == Some(true)));

    // Report.
    if previous.as_ref() != Some(&status) {
        if ready_changed(previous.as_ref(), &status) {
            info!(ready = health.ready, reason = ?health.last_failure.as_ref().map(|f| f.class.reason()), "provider readiness changed");
        }
        if let Some(event) = event_for(previous.as_ref(), &status) {
            context
                .publish(provider.as_ref(), event.warning, &event.reason, event.note)
                .await;
        }
        write_status(
            &controller,
            &namespace,
            &name,
            uid,
            previous.as_ref(),
            status,
        )
        .await?;
    } else {
        debug!("status unchanged");
    }
    let delay = next_probe_delay(
        spec.health_check.interval.as_std(),
        &health,
        thresholds,
        rand::random::<f64>(),
    );
    Ok(Action::requeue(delay))
}

/// Patches the status and remembers it as the last written.
async fn write_status(
    controller: &ProviderController,
    namespace: &str,
    name: &str,
    uid: String,
    previous: Option<&LLMProviderStatus>,
    status: LLMProviderStatus,
) -> Result<(), ReconcileError> {
    let api: Api<LLMProvider> = Api::namespaced(controller.context.client.clone(), namespace);
    let patch = crate::controller::written_status::status_patch(previous, &status);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ReconcileError::UpdateStatus {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        })?;
    controller.context.metrics.status_written(CONTROLLER);
    controller.written.remember(uid, status);
    Ok(())
}

/// The API key, `Ok(None)` for providers without credentials, or the failure that explains why
/// it cannot be read. Read from the Secret cache at probe time so a rotation is probed at once.
fn read_credential(
    secrets: &Store<Secret>,
    provider: &LLMProvider,
    namespace: &str,
) -> Result<Option<String>, ProbeFailure> {
    let Some(reference) = &provider.spec.credentials else {
        return Ok(None);
    };
    let not_found = |message: String| ProbeFailure {
        class: FailureClass::CredentialsNotFound,
        message,
    };
    let secret = secrets
        .get(&ObjectRef::new(&reference.name).within(namespace))
        .ok_or_else(|| {
            not_found(format!(
                "Secret {namespace}/{} does not exist",
                reference.name
            ))
        })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .ok_or_else(|| {
            not_found(format!(
                "Secret {namespace}/{} has no key {}",
                reference.name, reference.key
            ))
        })?;
    let key = String::from_utf8(bytes.0.clone()).map_err(|_| {
        not_found(format!(
            "key {} of Secret {namespace}/{} is not UTF-8 text",
            reference.key, reference.name
        ))
    })?;
    Ok(Some(key.trim().to_string()))
}

/// The first 16 hex digits of the key's SHA-256: enough to see a rotation, useless to an attacker.
pub fn credential_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(digest)[..16].to_string()
}

/// Health from memory, or rebuilt from status after a restart.
fn remembered_health(
    controller: &ProviderController,
    uid: &str,
    status: Option<&LLMProviderStatus>,
) -> Health {
    if let Some(health) = controller
        .health
        .lock()
        .ok()
        .and_then(|m| m.get(uid).cloned())
    {
        return health;
    }
    let Some(status) = status else {
        return Health::default();
    };
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
        .and_then(|c| match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        });
    Health {
        ready,
        consecutive_failures: u32::try_from(status.consecutive_failures).unwrap_or(0),
        credentials_valid: ready
            .map(|_| is_condition_true(&status.conditions, condition::CREDENTIALS_VALID)),
        models: status.models.clone(),
        ..Health::default()
    }
}

fn ready_changed(previous: Option<&LLMProviderStatus>, next: &LLMProviderStatus) -> bool {
    let ready = |s: &LLMProviderStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    previous.and_then(ready) != ready(next)
}

fn record_probe(
    context: &crate::controller::Context,
    namespace: &str,
    name: &str,
    outcome: &ProbeOutcome,
    latency: std::time::Duration,
) {
    let metrics = &context.metrics;
    metrics
        .provider_probe_duration
        .with_label_values(&[namespace, name])
        .observe(latency.as_secs_f64());
    if let ProbeOutcome::Failed(failure) = outcome {
        metrics
            .provider_probe_failures
            .with_label_values(&[namespace, name, failure.class.reason()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_hash_is_short_stable_and_not_the_key() {
        let hash = credential_hash("sk-test-123");
        assert_eq!(hash.len(), 16);
        assert_eq!(hash, credential_hash("sk-test-123"));
        assert_ne!(hash, credential_hash("sk-test-124"));
        assert!(!hash.contains("sk-test"));
    }
}
