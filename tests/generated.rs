//! Generated files are committed; these tests fail when they drift from the code.
//! Regenerate with `UPDATE_GENERATED=1 cargo test --test generated`.

use std::path::{Path, PathBuf};

use agent_operator::api;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Compares a committed file with its generated content, or rewrites it when asked to.
fn check_generated(relative: &str, generated: &str) {
    let path = repo_path(relative);
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent folder");
        }
        std::fs::write(&path, generated).expect("write generated file");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{relative} is out of date with the code; run `UPDATE_GENERATED=1 cargo test --test generated` and commit the result"
    );
}

#[test]
fn crds_folder_matches_the_code() {
    let crds = api::crds();
    let mut expected: Vec<String> = Vec::new();
    for crd in &crds {
        let file = api::crd_file_name(crd);
        let yaml = api::crd_yaml(crd).expect("CRD renders");
        check_generated(&format!("crds/{file}"), &yaml);
        // kustomize reads no file outside its base: config/crd carries its own copy.
        check_generated(&format!("config/crd/{file}"), &yaml);
        expected.push(file);
    }
    // Nothing else, so that `kubectl apply -f crds/` applies every file there: it refuses a
    // folder with a file that is no Kubernetes object (a kustomization.yaml is not).
    let mut present: Vec<String> = std::fs::read_dir(repo_path("crds"))
        .expect("crds/ exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(present, expected, "crds/ holds exactly the generated CRDs");
    let base = std::fs::read_to_string(repo_path("config/crd/kustomization.yaml"))
        .expect("config/crd/kustomization.yaml");
    for file in &expected {
        assert!(
            base.contains(&format!("- {file}")),
            "config/crd lists {file}"
        );
    }
}

#[test]
fn api_reference_matches_the_schemas() {
    check_generated("docs/api.md", &api::reference::markdown(&api::crds()));
}

#[test]
fn crds_stay_far_below_the_last_applied_annotation_limit() {
    // `kubectl apply` stores the whole object as JSON in an annotation limited to 256 KiB; a CRD
    // above it cannot be applied the way users apply it.
    const BUDGET: usize = 192 * 1024;
    for crd in api::crds() {
        let size = serde_json::to_vec(&crd).expect("serialize").len();
        assert!(
            size < BUDGET,
            "{} is {size} bytes of JSON, over the budget of {BUDGET}",
            crd.metadata.name.unwrap_or_default()
        );
    }
}

#[test]
fn rbac_matches_the_permissions_the_code_uses() {
    use agent_operator::runtime::permissions::{
        controller_cluster_role, dashboard_cluster_role, leader_election_role,
    };
    let header = "# Generated from src/runtime/permissions.rs, the table the operator's start-up check\n\
                  # also reads. Regenerate: UPDATE_GENERATED=1 cargo test --test generated\n";
    let role = serde_yaml::to_string(&controller_cluster_role()).expect("ClusterRole renders");
    check_generated("config/rbac/role.yaml", &format!("{header}{role}"));
    let leases = serde_yaml::to_string(&leader_election_role()).expect("Role renders");
    check_generated(
        "config/rbac/leader_election_role.yaml",
        &format!("{header}{leases}"),
    );
    // The chart inserts the same rules into its ClusterRole or per-namespace Roles.
    let rules = |role_rules: Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>| {
        serde_yaml::to_string(&role_rules.unwrap_or_default()).expect("rules render")
    };
    check_generated(
        "charts/agent-operator/files/controller-rules.yaml",
        &rules(controller_cluster_role().rules),
    );
    check_generated(
        "charts/agent-operator/files/leader-election-rules.yaml",
        &rules(leader_election_role().rules),
    );
    check_generated(
        "charts/agent-operator/files/dashboard-rules.yaml",
        &rules(dashboard_cluster_role().rules),
    );
}

#[test]
fn the_chart_ships_the_same_crds_byte_for_byte() {
    for crd in api::crds() {
        let file = api::crd_file_name(&crd);
        check_generated(
            &format!("charts/agent-operator/files/crds/{file}"),
            &api::crd_yaml(&crd).expect("CRD renders"),
        );
    }
}

/// The argocd-cm patch holds `config/argocd/health.lua` once per kind, as Argo CD keys health
/// checks by group and kind.
#[test]
fn the_argocd_health_checks_hold_the_lua_script() {
    let lua = std::fs::read_to_string(repo_path("config/argocd/health.lua")).expect("health.lua");
    let body: String = lua
        .lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_string()
            } else {
                format!("    {line}\n")
            }
        })
        .collect();
    let mut patch = String::from(
        "# Argo CD health checks for agent-operator's kinds: merge into the argocd-cm ConfigMap of your\n\
         # Argo CD installation (or the `configs.cm` values of its Helm chart), e.g.\n\
         #   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm.yaml\n\
         # Generated from config/argocd/health.lua by `UPDATE_GENERATED=1 cargo test --test generated`.\n\
         data:\n",
    );
    for kind in ["LLMProvider", "AgentDeployment", "AgentTask"] {
        patch.push_str(&format!(
            "  resource.customizations.health.agentoperator.dev_{kind}: |\n{body}"
        ));
    }
    check_generated("config/argocd/argocd-cm.yaml", &patch);
}
