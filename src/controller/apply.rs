//! Server-side apply of child objects, skipped when the cached child already carries the hash
//! of exactly what would be sent: an unchanged object then costs no request at all.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::resources::short_hash;

/// The field manager of every object the operator applies.
pub const FIELD_MANAGER: &str = "agent-operator";
/// Annotation holding the hash of the applied object.
pub const APPLIED_HASH_ANNOTATION: &str = "agentoperator.dev/applied-hash";

/// Applies `desired` unless `cache` shows it already applied. Returns whether a request was made.
pub async fn apply_if_changed<K>(
    client: &Client,
    cache: &Store<K>,
    mut desired: K,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let hash = short_hash(serde_json::to_vec(&desired).unwrap_or_default().as_slice());
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_string(), hash.clone());
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let cached = cache.get(&ObjectRef::new(&name).within(&namespace));
    if cached.is_some_and(|c| c.annotations().get(APPLIED_HASH_ANNOTATION) == Some(&hash)) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(true)
}

/// Deletes a child that is no longer wanted, if the cache has it. A 404 means it is gone already.
pub async fn delete_if_present<K>(
    client: &Client,
    cache: &Store<K>,
    namespace: &str,
    name: &str,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    if cache.get(&ObjectRef::new(name).within(namespace)).is_none() {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}
