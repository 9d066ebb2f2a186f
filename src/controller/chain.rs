//! Resolves a failover chain against the LLMProvider cache: each link with its provider's type,
//! endpoint, model, readiness and the credential to mount. Shared by agents and tasks, so both
//! kinds of pod are wired the same way.

use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::common::{ProviderRef, SecretKeyRef};
use crate::api::conditions::is_condition_true;
use crate::api::llm_provider::{LLMProvider, condition};
use crate::providers::scrub::without_userinfo;
use crate::resources::provider_config::{ProviderApi, ResolvedProvider};

/// Each link of `links` resolved from `providers`. `credential_usable` decides whether a
/// provider's credential is mounted.
pub fn resolve_chain(
    providers: &Store<LLMProvider>,
    links: &[ProviderRef],
    namespace: &str,
    credential_usable: impl Fn(&LLMProvider, &SecretKeyRef) -> bool,
) -> Vec<ResolvedProvider> {
    links
        .iter()
        .map(|link| {
            match providers.get(&ObjectRef::<LLMProvider>::new(&link.name).within(namespace)) {
                None => ResolvedProvider {
                    name: link.name.clone(),
                    provider_type: None,
                    endpoint: None,
                    model: link.model.clone(),
                    ready: false,
                    reason: Some("NotFound".into()),
                    credential: None,
                    api: ProviderApi::default(),
                },
                Some(provider) => resolve_link(link, &provider, &credential_usable),
            }
        })
        .collect()
}

fn resolve_link(
    link: &ProviderRef,
    provider: &LLMProvider,
    credential_usable: &impl Fn(&LLMProvider, &SecretKeyRef) -> bool,
) -> ResolvedProvider {
    let conditions = provider
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = is_condition_true(conditions, condition::READY);
    let reason = (!ready).then(|| {
        conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "NotProbed".into())
    });
    ResolvedProvider {
        name: link.name.clone(),
        provider_type: Some(provider.spec.provider_type),
        endpoint: Some(without_userinfo(&provider.spec.endpoint)),
        model: link
            .model
            .clone()
            .or_else(|| provider.spec.default_model.clone()),
        ready,
        reason,
        credential: provider
            .spec
            .credentials
            .clone()
            .filter(|c| credential_usable(provider, c)),
        api: ProviderApi::of(&provider.spec),
    }
}

/// True when the provider's probe last accepted its credential: the Secret key existed then.
pub fn credential_validated(provider: &LLMProvider) -> bool {
    provider
        .status
        .as_ref()
        .is_some_and(|s| is_condition_true(&s.conditions, condition::CREDENTIALS_VALID))
}
