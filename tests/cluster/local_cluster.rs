//! The local control plane behaves as a real cluster in the ways the operator relies on:
//! scheduling onto simulated nodes, Deployments and Jobs, HPAs, Pod Security and tokens.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::support::{self, TestNamespace, wait_until};

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test object matches its type")
}

#[tokio::test]
async fn simulated_nodes_are_ready() {
    let client = support::client().await;
    let nodes: Api<Node> = Api::all(client);
    let ready = wait_until(Duration::from_secs(30), "3 Ready nodes", || async {
        let list = nodes.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|node| {
                node.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|conditions| {
                        conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            })
            .count();
        (ready >= 3).then_some(ready)
    })
    .await;
    assert!(ready >= 3);
}

fn pause_deployment(name: &str, replicas: i32) -> Deployment {
    from_json(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "main", "image": "registry.k8s.io/pause:3.10" }] }
            }
        }
    }))
}

#[tokio::test]
async fn deployment_of_three_replicas_becomes_ready() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "deployment-ready").await;
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &pause_deployment("web", 3))
        .await
        .expect("create deployment");
    wait_until(
        Duration::from_secs(60),
        "deployment web to be 3/3 ready",
        || async {
            let deployment = deployments.get("web").await.ok()?;
            (deployment.status?.ready_replicas? == 3).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn job_pods_end_as_their_annotations_say() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "job-outcomes").await;
    let jobs: Api<Job> = ns.api();
    let job = |name: &str, annotations: serde_json::Value| -> Job {
        from_json(json!({
            "metadata": { "name": name },
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": { "annotations": annotations },
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{ "name": "main", "image": "registry.k8s.io/pause:3.10" }]
                    }
                }
            }
        }))
    };
    jobs.create(&PostParams::default(), &job("succeeds", json!({})))
        .await
        .expect("create job");
    jobs.create(
        &PostParams::default(),
        &job(
            "fails",
            json!({
                "kwok.agentoperator.dev/exit-code": "3",
                "kwok.agentoperator.dev/message": "worker gave up"
            }),
        ),
    )
    .await
    .expect("create job");

    let job_condition = |name: &'static str, condition: &'static str| {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get(name).await.ok()?;
            let conditions = job.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == condition && c.status == "True")
                .then_some(())
        }
    };
    wait_until(Duration::from_secs(60), "job succeeds to complete", || {
        job_condition("succeeds", "Complete")
    })
    .await;
    wait_until(Duration::from_secs(60), "job fails to fail", || {
        job_condition("fails", "Failed")
    })
    .await;

    let pods: Api<Pod> = ns.api();
    let failed = pods
        .list(&ListParams::default().labels("job-name=fails"))
        .await
        .expect("list pods");
    let terminated = failed.items[0]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses[0].state.as_ref())
        .and_then(|state| state.terminated.clone())
        .expect("the failed pod's container has terminated");
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.message.as_deref(), Some("worker gave up"));
}

#[tokio::test]
async fn autoscaling_v2_hpa_is_accepted() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "hpa-accepted").await;
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &pause_deployment("web", 1))
        .await
        .expect("create deployment");
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    let hpa: HorizontalPodAutoscaler = from_json(json!({
        "metadata": { "name": "web" },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 70 } } }]
        }
    }));
    let created = hpas
        .create(&PostParams::default(), &hpa)
        .await
        .expect("the API server accepts an autoscaling/v2 HPA");
    assert_eq!(created.spec.max_replicas, 5);
}

#[tokio::test]
async fn restricted_namespace_rejects_privileged_pod() {
    let client = support::client().await;
    let ns = TestNamespace::with_labels(
        &client,
        "pod-security",
        json!({ "pod-security.kubernetes.io/enforce": "restricted" }),
    )
    .await;
    let pods: Api<Pod> = ns.api();
    let privileged: Pod = from_json(json!({
        "metadata": { "name": "privileged" },
        "spec": { "containers": [{ "name": "main", "image": "registry.k8s.io/pause:3.10", "securityContext": { "privileged": true } }] }
    }));
    let error = pods
        .create(&PostParams::default(), &privileged)
        .await
        .expect_err("a privileged pod is rejected");
    assert!(
        error
            .to_string()
            .contains("violates PodSecurity \"restricted"),
        "unexpected error: {error}"
    );

    let compliant: Pod = from_json(json!({
        "metadata": { "name": "compliant" },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "main",
                "image": "registry.k8s.io/pause:3.10",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
            }]
        }
    }));
    pods.create(&PostParams::default(), &compliant)
        .await
        .expect("a restricted-compliant pod is admitted");
}

#[tokio::test]
async fn service_account_token_authenticates_under_rbac() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "sa-token").await;
    let accounts: Api<ServiceAccount> = ns.api();
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "robot" } })),
        )
        .await
        .expect("create service account");
    // What `kubectl create token robot` does.
    let request: TokenRequest =
        from_json(json!({ "spec": { "audiences": [], "expirationSeconds": 600 } }));
    let token = accounts
        .create_subresource::<TokenRequest, TokenRequest>(
            "token",
            "robot",
            &PostParams::default(),
            &request,
        )
        .await
        .expect("the API server issues a token")
        .status
        .expect("token status")
        .token
        .expect("the token request returned a token");

    let mut kubeconfig = Kubeconfig::read_from(support::kubeconfig_path()).expect("kubeconfig");
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(AuthInfo {
            token: Some(token.clone().into()),
            ..Default::default()
        });
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let robot = Client::try_from(config).expect("client");
    let review = robot.apiserver_version().await;
    assert!(review.is_ok(), "the token authenticates: {review:?}");
    // RBAC is on: a fresh ServiceAccount may not read Secrets.
    let error = Api::<Secret>::namespaced(robot, &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("RBAC forbids a fresh ServiceAccount to list Secrets");
    assert!(
        matches!(error, kube::Error::Api(ref status) if status.code == 403),
        "expected 403 Forbidden, got {error}"
    );
}
