//! Checks made before any controller starts, so a misconfigured operator says what is wrong in
//! one line instead of crash-looping: the API server answers, our CRDs are installed, and the
//! operator's account has every permission the controllers use.

use futures::{StreamExt, stream};
use kube::Client;

use super::options::RunOptions;
use super::permissions::{
    Access, CONTROLLER_PERMISSIONS, FEATURE_PERMISSIONS, LEADER_ELECTION_PERMISSIONS, accesses,
    allowed,
};
use crate::Error;
use crate::api::{GROUP, VERSION};

/// The kinds the operator serves.
const KINDS: [&str; 3] = ["LLMProvider", "AgentDeployment", "AgentTask"];

pub async fn check(client: &Client, options: &RunOptions) -> Result<(), Error> {
    client
        .apiserver_version()
        .await
        .map_err(|source| Error::ApiServerUnreachable { source })?;
    check_crds(client, &format!("{GROUP}/{VERSION}")).await?;
    check_permissions(client, options).await
}

/// Checks through discovery that `group_version` serves our three kinds.
pub async fn check_crds(client: &Client, group_version: &str) -> Result<(), Error> {
    // Discovery is readable by every authenticated user, so this check needs no extra RBAC.
    let served: Vec<String> = match client.list_api_group_resources(group_version).await {
        Ok(list) => list.resources.into_iter().map(|r| r.kind).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(source) => return Err(Error::ApiServerUnreachable { source }),
    };
    let missing: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|kind| !served.iter().any(|s| s == kind))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::CrdsMissing {
            missing: missing.join(", "),
        })
    }
}

/// Asks the API server whether this account may do each thing the controllers do, where they do
/// it. Every authenticated user may ask this about itself, so the check needs no RBAC of its own.
async fn check_permissions(client: &Client, options: &RunOptions) -> Result<(), Error> {
    let mut wanted = Vec::new();
    let mut optional = Vec::new();
    if options.namespaces.is_empty() {
        wanted.extend(accesses(CONTROLLER_PERMISSIONS, None));
        optional.extend(accesses(FEATURE_PERMISSIONS, None));
    } else {
        for namespace in &options.namespaces {
            wanted.extend(accesses(CONTROLLER_PERMISSIONS, Some(namespace)));
            optional.extend(accesses(FEATURE_PERMISSIONS, Some(namespace)));
        }
    }
    let required = wanted.len();
    wanted.extend(optional);
    if options.leader_election {
        let namespace = super::lease_namespace(options);
        wanted.extend(accesses(LEADER_ELECTION_PERMISSIONS, Some(&namespace)));
    }
    let answers: Vec<(usize, Access, Result<bool, kube::Error>)> =
        stream::iter(wanted.into_iter().enumerate())
            .map(|(index, access)| async move {
                let allowed = allowed(client, &access).await;
                (index, access, allowed)
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut missing = Vec::new();
    let mut features_missing = Vec::new();
    for (index, access, answer) in answers {
        match answer {
            Ok(true) => {}
            Ok(false) if index >= required => features_missing.push(access.to_string()),
            Ok(false) => missing.push(access),
            Err(source) => return Err(Error::ApiServerUnreachable { source }),
        }
    }
    if !features_missing.is_empty() {
        features_missing.sort();
        tracing::warn!(
            missing = %features_missing.join(", "),
            "the account may not keep lease Secrets: AgentDeployments with spec.budget will report the refusal in their status until the RBAC in config/rbac (or the chart) is applied"
        );
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    Err(Error::PermissionsMissing {
        missing: missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}
