//! Which namespaces the dashboard shows: those the viewer's account may list and watch, asked of
//! the API server itself (SelfSubjectAccessReviews), so a person with access to one namespace
//! sees that namespace and nothing else, without an error page.

use std::collections::BTreeSet;

use kube::Client;

use crate::runtime::permissions::{Access, DASHBOARD_PERMISSIONS, Permission, accesses, allowed};

/// Where objects are read from: every namespace, or the listed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    AllNamespaces,
    Namespaces(Vec<String>),
}

impl Scope {
    /// The namespaces to watch, `None` standing for all of them.
    pub fn watch_namespaces(&self) -> Vec<Option<String>> {
        match self {
            Scope::AllNamespaces => vec![None],
            Scope::Namespaces(namespaces) => namespaces.iter().cloned().map(Some).collect(),
        }
    }

    /// How the page names the scope.
    pub fn label(&self) -> String {
        match self {
            Scope::AllNamespaces => "all namespaces".to_string(),
            Scope::Namespaces(namespaces) => namespaces.join(", "),
        }
    }
}

/// What the dashboard reads: the kinds' scope, where it may read events, and a note for the
/// viewer when the scope is narrower than they might expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visibility {
    pub scope: Scope,
    /// The namespaces (`None`: all) whose events are readable; empty hides events.
    pub events: Vec<Option<String>>,
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error(
        "your account cannot list and watch LLMProviders, AgentDeployments and AgentTasks in {}; ask for read access there or choose other namespaces with --namespace",
        .0.join(", ")
    )]
    Unreadable(Vec<String>),
    #[error(
        "your account cannot list and watch LLMProviders, AgentDeployments and AgentTasks in all namespaces, nor in your context's namespace {0}; choose namespaces you can read with --namespace"
    )]
    NothingReadable(String),
    #[error("cannot ask the API server what your account may read: {0}")]
    Review(String),
}

/// The kinds the dashboard must read (the first rule of its permissions) and the events it may
/// read (the second).
fn kinds() -> &'static [Permission] {
    &DASHBOARD_PERMISSIONS[..1]
}

fn events() -> &'static [Permission] {
    &DASHBOARD_PERMISSIONS[1..]
}

/// Asks the API server what the account may read and decides the scope.
pub async fn resolve(
    client: &Client,
    requested: &[String],
    default_namespace: &str,
) -> Result<Visibility, ScopeError> {
    let candidates: Vec<String> = if requested.is_empty() {
        vec![default_namespace.to_string()]
    } else {
        requested.to_vec()
    };
    let cluster_wide = may_read(client, kinds(), None).await?;
    let mut readable = BTreeSet::new();
    for namespace in &candidates {
        if may_read(client, kinds(), Some(namespace)).await? {
            readable.insert(namespace.clone());
        }
    }
    let (scope, note) = decide(requested, default_namespace, cluster_wide, &readable)?;
    let mut events = Vec::new();
    for namespace in scope.watch_namespaces() {
        if may_read(client, self::events(), namespace.as_deref()).await? {
            events.push(namespace);
        }
    }
    Ok(Visibility {
        scope,
        events,
        note,
    })
}

async fn may_read(
    client: &Client,
    permissions: &[Permission],
    namespace: Option<&str>,
) -> Result<bool, ScopeError> {
    for access in accesses(permissions, namespace) {
        if !ask(client, &access).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn ask(client: &Client, access: &Access) -> Result<bool, ScopeError> {
    allowed(client, access)
        .await
        .map_err(|error| ScopeError::Review(error.to_string()))
}

/// The scope from what the viewer asked for and what the account may read. Namespaces asked for
/// must all be readable; without a request, all namespaces when allowed, else the context's own.
pub fn decide(
    requested: &[String],
    default_namespace: &str,
    cluster_wide: bool,
    readable: &BTreeSet<String>,
) -> Result<(Scope, Option<String>), ScopeError> {
    if !requested.is_empty() {
        let wanted: BTreeSet<String> = requested.iter().cloned().collect();
        let unreadable: Vec<String> = wanted.difference(readable).cloned().collect();
        if !unreadable.is_empty() {
            return Err(ScopeError::Unreadable(unreadable));
        }
        return Ok((Scope::Namespaces(wanted.into_iter().collect()), None));
    }
    if cluster_wide {
        return Ok((Scope::AllNamespaces, None));
    }
    if readable.contains(default_namespace) {
        let note = format!(
            "your account cannot read these kinds in every namespace, so the dashboard shows namespace {default_namespace} only; choose others with --namespace"
        );
        return Ok((
            Scope::Namespaces(vec![default_namespace.to_string()]),
            Some(note),
        ));
    }
    Err(ScopeError::NothingReadable(default_namespace.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_cluster_reader_sees_every_namespace() {
        let (scope, note) = decide(&[], "default", true, &set(&["default"])).unwrap();
        assert_eq!(scope, Scope::AllNamespaces);
        assert_eq!(note, None);
        assert_eq!(scope.watch_namespaces(), vec![None]);
    }

    #[test]
    fn a_namespace_reader_sees_the_context_namespace_with_a_note() {
        let (scope, note) = decide(&[], "team-a", false, &set(&["team-a"])).unwrap();
        assert_eq!(scope, Scope::Namespaces(vec!["team-a".into()]));
        assert!(note.unwrap().contains("--namespace"));
    }

    #[test]
    fn asked_namespaces_must_all_be_readable() {
        let requested = vec!["team-b".to_string(), "team-a".into(), "team-a".into()];
        let (scope, _) = decide(&requested, "default", false, &set(&["team-a", "team-b"])).unwrap();
        assert_eq!(
            scope,
            Scope::Namespaces(vec!["team-a".into(), "team-b".into()])
        );
        assert_eq!(scope.label(), "team-a, team-b");

        let error = decide(&requested, "default", true, &set(&["team-a"])).unwrap_err();
        assert_eq!(error, ScopeError::Unreadable(vec!["team-b".into()]));
        assert!(error.to_string().contains("team-b"));
    }

    #[test]
    fn nothing_readable_names_the_namespace_and_the_fix() {
        let error = decide(&[], "default", false, &set(&[])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("default") && message.contains("--namespace"));
    }
}
