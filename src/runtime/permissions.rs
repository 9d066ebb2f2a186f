//! Every permission the operator uses, in one table. The start-up check asks the API server for
//! each one (a SelfSubjectAccessReview per verb), and the RBAC shipped in `config/rbac/` and the
//! chart is generated from the same table, so the two cannot drift apart.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Resources of one API group and the verbs the operator uses on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

const WATCH: &[&str] = &["list", "watch"];
/// Children applied with server-side apply: `create` because applying an object that does not
/// exist creates it, `delete` for children no longer wanted.
const OWN: &[&str] = &["list", "watch", "create", "patch", "delete"];

/// What the controllers use, in every watched namespace.
pub const CONTROLLER_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "agentoperator.dev",
        resources: &["llmproviders", "agentdeployments"],
        verbs: WATCH,
    },
    // `delete` for `ttlDeletes: Task`.
    Permission {
        group: "agentoperator.dev",
        resources: &["agenttasks"],
        verbs: &["list", "watch", "delete"],
    },
    Permission {
        group: "agentoperator.dev",
        resources: &[
            "llmproviders/status",
            "agentdeployments/status",
            "agenttasks/status",
        ],
        verbs: &["patch"],
    },
    // `get` reads a task's `inputFrom` Secret; list and watch feed the credential caches.
    Permission {
        group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "watch"],
    },
    // `get` reads a task's `inputFrom` ConfigMap.
    Permission {
        group: "",
        resources: &["configmaps"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    Permission {
        group: "",
        resources: &["services", "serviceaccounts"],
        verbs: OWN,
    },
    // `patch` stamps an agent's running pods when their provider config changed, which makes
    // the kubelet refresh the mounted file at once instead of at its next periodic sync.
    Permission {
        group: "",
        resources: &["pods"],
        verbs: &["list", "watch", "patch"],
    },
    Permission {
        group: "apps",
        resources: &["deployments"],
        verbs: OWN,
    },
    Permission {
        group: "autoscaling",
        resources: &["horizontalpodautoscalers"],
        verbs: OWN,
    },
    Permission {
        group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: OWN,
    },
    Permission {
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: OWN,
    },
    // Jobs are created (never applied: a second create of an attempt must fail) and deleted.
    Permission {
        group: "batch",
        resources: &["jobs"],
        verbs: &["list", "watch", "create", "delete"],
    },
    // The event recorder creates events and patches them into series.
    Permission {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// What one feature alone uses, in every watched namespace: granted by the shipped RBAC like
/// the rest, but checked at start without refusing to start, so that an operator running
/// with an older release's RBAC keeps its other work going; the feature's objects then report
/// the API server's refusal in their status. Keeping the lease Secret of an agent with a
/// budget is the only Secret write the operator makes.
pub const FEATURE_PERMISSIONS: &[Permission] = &[Permission {
    group: "",
    resources: &["secrets"],
    verbs: &["create", "patch", "delete"],
}];

/// What leader election uses, in the Lease's namespace only.
pub const LEADER_ELECTION_PERMISSIONS: &[Permission] = &[Permission {
    group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "update"],
}];

/// What `agent-operator dashboard` reads: the three kinds and the events about them, never
/// anything else (no Secrets, no ConfigMaps, no writes).
pub const DASHBOARD_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "agentoperator.dev",
        resources: &["llmproviders", "agentdeployments", "agenttasks"],
        verbs: WATCH,
    },
    Permission {
        group: "",
        resources: &["events"],
        verbs: WATCH,
    },
];

/// One verb on one resource, as a SelfSubjectAccessReview asks it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub verb: &'static str,
    /// `None` for all namespaces.
    pub namespace: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_string(),
        };
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        match &self.namespace {
            Some(namespace) => write!(f, "{} {resource}{group} in {namespace}", self.verb),
            None => write!(f, "{} {resource}{group} in all namespaces", self.verb),
        }
    }
}

/// Every access of `permissions` in `namespace`.
pub fn accesses(permissions: &[Permission], namespace: Option<&str>) -> Vec<Access> {
    let mut all = Vec::new();
    for permission in permissions {
        for resource in permission.resources {
            let (resource, subresource) = match resource.split_once('/') {
                Some((resource, sub)) => (resource, Some(sub)),
                None => (*resource, None),
            };
            for verb in permission.verbs {
                all.push(Access {
                    group: permission.group,
                    resource,
                    subresource,
                    verb,
                    namespace: namespace.map(str::to_string),
                });
            }
        }
    }
    all
}

fn rules(permissions: &[Permission]) -> Vec<PolicyRule> {
    permissions
        .iter()
        .map(|p| PolicyRule {
            api_groups: Some(vec![p.group.to_string()]),
            resources: Some(p.resources.iter().map(|r| r.to_string()).collect()),
            verbs: p.verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/name".to_string(),
                "agent-operator".to_string(),
            ),
            (
                "app.kubernetes.io/component".to_string(),
                "rbac".to_string(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// The ClusterRole of the controllers (bound cluster-wide, or per watched namespace through
/// RoleBindings).
pub fn controller_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: metadata("agent-operator"),
        rules: Some(rules(
            &[CONTROLLER_PERMISSIONS, FEATURE_PERMISSIONS].concat(),
        )),
        ..ClusterRole::default()
    }
}

/// The read-only ClusterRole of the in-cluster dashboard.
pub fn dashboard_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: metadata("agent-operator-dashboard"),
        rules: Some(rules(DASHBOARD_PERMISSIONS)),
        ..ClusterRole::default()
    }
}

/// The Role for leader election in the operator's own namespace.
pub fn leader_election_role() -> Role {
    Role {
        metadata: metadata("agent-operator-leader-election"),
        rules: Some(rules(LEADER_ELECTION_PERMISSIONS)),
    }
}

/// Asks the API server whether this account may make `access` (a SelfSubjectAccessReview). Every
/// authenticated user may ask this about itself, so asking needs no RBAC of its own.
pub async fn allowed(client: &Client, access: &Access) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(access.group.to_string()),
                resource: Some(access.resource.to_string()),
                subresource: access.subresource.map(str::to_string),
                verb: Some(access.verb.to_string()),
                namespace: access.namespace.clone(),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_anywhere() {
        for rule in controller_cluster_role()
            .rules
            .into_iter()
            .flatten()
            .chain(leader_election_role().rules.into_iter().flatten())
            .chain(dashboard_cluster_role().rules.into_iter().flatten())
        {
            assert!(!rule.verbs.iter().any(|v| v == "*"));
            assert!(!rule.resources.iter().flatten().any(|r| r == "*"));
            assert!(!rule.api_groups.iter().flatten().any(|g| g == "*"));
        }
    }

    #[test]
    fn the_dashboard_reads_and_never_writes_or_sees_secrets() {
        for access in accesses(DASHBOARD_PERMISSIONS, None) {
            assert!(matches!(access.verb, "list" | "watch"), "{access}");
            assert!(
                !matches!(access.resource, "secrets" | "configmaps"),
                "{access}"
            );
        }
    }

    #[test]
    fn accesses_split_subresources_and_name_the_scope() {
        let all = accesses(CONTROLLER_PERMISSIONS, Some("team-a"));
        let status = all
            .iter()
            .find(|a| a.resource == "agenttasks" && a.subresource == Some("status"))
            .expect("agenttasks/status");
        assert_eq!(
            status.to_string(),
            "patch agenttasks/status.agentoperator.dev in team-a"
        );
        let secrets = accesses(CONTROLLER_PERMISSIONS, None)
            .into_iter()
            .find(|a| a.resource == "secrets" && a.verb == "list")
            .expect("list secrets");
        assert_eq!(secrets.to_string(), "list secrets in all namespaces");
    }
}
