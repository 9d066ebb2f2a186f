//! Checks made before any controller starts, so a misconfigured operator says what is wrong in
//! one line instead of crash-looping: the API server answers, and our CRDs are installed.

use kube::Client;

use crate::Error;
use crate::api::{GROUP, VERSION};

/// The kinds the operator serves.
const KINDS: [&str; 3] = ["LLMProvider", "AgentDeployment", "AgentTask"];

pub async fn check(client: &Client) -> Result<(), Error> {
    client
        .apiserver_version()
        .await
        .map_err(|source| Error::ApiServerUnreachable { source })?;
    // Discovery is readable by every authenticated user, so this check needs no extra RBAC.
    let group_version = format!("{GROUP}/{VERSION}");
    let served: Vec<String> = match client.list_api_group_resources(&group_version).await {
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
