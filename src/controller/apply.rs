//! Server-side apply of child objects, skipped when the cached child already carries the hash
//! of exactly what would be sent: an unchanged object then costs no request at all.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::resources::short_hash;

/// The field manager of every object the operator applies.
pub const FIELD_MANAGER: &str = "agent-operator";
/// Annotation holding the hash of the applied object.
pub const APPLIED_HASH_ANNOTATION: &str = "agentoperator.dev/applied-hash";

/// A namespaced object the operator writes whole: what each function here needs of it.
pub trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// Applies `desired` unless `cache` shows it already applied. Returns whether a request was made.
pub async fn apply_if_changed<K: Child>(
    client: &Client,
    cache: &Store<K>,
    mut desired: K,
) -> Result<bool, kube::Error> {
    let hash = stamp_applied_hash(&mut desired);
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

/// Creates `desired` unless it exists, and returns the object that exists then: the cached
/// one, the one created, or the one another writer created first. For a child whose content
/// must be made once and never replaced (a generated token): an apply would overwrite what a
/// reconcile with a stale cache made moments before.
pub async fn create_if_absent<K: Child>(
    client: &Client,
    cache: &Store<K>,
    mut desired: K,
) -> Result<K, kube::Error> {
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    if let Some(cached) = cache.get(&ObjectRef::new(&name).within(&namespace)) {
        return Ok(K::clone(&cached));
    }
    // Stamped as an apply would stamp it, so a later apply of the same content writes nothing.
    stamp_applied_hash(&mut desired);
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match api.create(&params, &desired).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await,
        Err(error) => Err(error),
    }
}

/// Records in `desired` the hash of its content as it is without the hash, and returns it.
fn stamp_applied_hash<K: Resource + Serialize>(desired: &mut K) -> String {
    let hash = short_hash(serde_json::to_vec(&desired).unwrap_or_default().as_slice());
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_string(), hash.clone());
    hash
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
