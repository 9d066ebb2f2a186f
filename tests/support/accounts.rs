//! ServiceAccounts for running the operator with exactly the generated RBAC.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding};
use kube::api::PostParams;
use serde_json::json;

use super::TestNamespace;

/// The rules of `config/rbac/role.yaml`, generated from the code's permission table.
pub fn generated_rules() -> Vec<PolicyRule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rbac/role.yaml");
    let text = std::fs::read_to_string(path).expect("config/rbac/role.yaml");
    let role: ClusterRole = serde_yaml::from_str(&text).expect("a ClusterRole");
    role.rules.expect("rules")
}

/// ServiceAccount `account` bound in `ns` to a Role with `rules`.
pub async fn account_with_rules(ns: &TestNamespace, account: &str, rules: Vec<PolicyRule>) {
    let params = PostParams::default();
    let service_account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": account}})).expect("ServiceAccount");
    ns.api::<ServiceAccount>()
        .create(&params, &service_account)
        .await
        .expect("create ServiceAccount");
    let role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some(account.into()),
            ..Default::default()
        },
        rules: Some(rules),
    };
    ns.api::<Role>()
        .create(&params, &role)
        .await
        .expect("create Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns.name}]
    }))
    .expect("RoleBinding");
    ns.api::<RoleBinding>()
        .create(&params, &binding)
        .await
        .expect("create RoleBinding");
}
