//! Test harness for cluster-backed tests: a client for the local cluster, a fresh namespace per
//! test that is deleted afterwards, CRD installation and bounded waits.

#![allow(dead_code)]

pub mod accounts;
pub mod admission;
pub mod api_relay;
pub mod collector;
pub mod dashboard;
pub mod fake_provider;
pub mod net;
pub mod objects;
pub mod operator;
pub mod real_node;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

/// Field manager of objects the tests create.
pub const TEST_MANAGER: &str = "agent-operator-tests";

/// Where `e2e/cluster/up` writes the admin kubeconfig.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("AGENT_OPERATOR_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/cluster/.state/kubeconfig")
        })
}

fn install_crypto_provider() {
    // Both kube's and reqwest's rustls are in the tree, so none is chosen automatically.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for the local cluster. Panics with instructions when the cluster is not up: a
/// cluster-backed test must fail loudly, never skip silently.
pub async fn client() -> Client {
    install_crypto_provider();
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read the local cluster's kubeconfig at {}: {error}\n\
             Start the cluster with `e2e/cluster/up` (the README's test command does this).",
            path.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the local cluster's kubeconfig is valid");
    let client = Client::try_from(config).expect("a client can be built from the kubeconfig");
    if let Err(error) = client.apiserver_version().await {
        panic!(
            "the local cluster at {} does not answer: {error}\n\
             Start it with `e2e/cluster/up`; `e2e/cluster/status` shows its components and logs.",
            path.display()
        );
    }
    client
}

/// A namespace that exists for one test and is deleted when the test ends, pass or fail.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

static NAMESPACE_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNamespace {
    /// Creates a namespace named after the test, unique per run.
    pub async fn new(client: &Client, test: &str) -> Self {
        Self::with_labels(client, test, serde_json::json!({})).await
    }

    /// Creates a namespace with extra labels, e.g. to enforce a Pod Security level.
    pub async fn with_labels(client: &Client, test: &str, labels: Value) -> Self {
        let serial = NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let suffix = format!("{}-{serial}", std::process::id());
        let prefix: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let prefix = &prefix[..prefix.len().min(63 - suffix.len() - 1)];
        let name = format!("{}-{suffix}", prefix.trim_end_matches('-'));
        let mut all_labels = serde_json::json!({ "agentoperator.dev/test": "true" });
        if let (Some(all), Some(extra)) = (all_labels.as_object_mut(), labels.as_object()) {
            all.extend(extra.clone());
        }
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": all_labels }
        }))
        .expect("valid namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("cannot create test namespace {name}: {error}"));
        Self {
            name,
            client: client.clone(),
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime is blocked while it runs: delete from a
        // thread with its own runtime and its own client (a client's connection task lives on
        // the runtime that created it, so reusing the test's client here would deadlock).
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    let client = client().await;
                    let _ = Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await;
                });
            }
        });
        let _ = deleted.join();
    }
}

/// The usual start of a test of ours: a client, the CRDs installed, a fresh namespace.
pub async fn namespace_with_crds(test: &str) -> (Client, TestNamespace) {
    let client = client().await;
    install_crds(&client).await;
    let namespace = TestNamespace::new(&client, test).await;
    (client, namespace)
}

/// Installs (or updates) the operator's CRDs with server-side apply and waits until the API
/// server serves them.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(TEST_MANAGER).force();
    for crd in agent_operator::api::crds() {
        let name = crd.metadata.name.clone().expect("CRDs have names");
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|error| panic!("the API server rejected CRD {name}: {error}"));
        wait_until(
            Duration::from_secs(30),
            &format!("CRD {name} to be established"),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await;
    }
}

/// Polls `check` until it returns `Some`, or panics naming what it waited for.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A kubeconfig authenticating as ServiceAccount `account` of `namespace`, with a token minted by
/// the TokenRequest API (as `kubectl create token` does), written next to the operator logs.
pub async fn kubeconfig_for_service_account(
    client: &Client,
    namespace: &str,
    account: &str,
) -> PathBuf {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|error| panic!("cannot mint a token for {namespace}/{account}: {error}"))
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let mut kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("the admin kubeconfig");
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.as_str().into()),
            ..kube::config::AuthInfo::default()
        });
    }
    write_kubeconfig(&kubeconfig, &format!("{namespace}-{account}"))
}

/// Writes `kubeconfig` as `<name>.yaml` beside the test logs; returns its path.
pub fn write_kubeconfig(kubeconfig: &Kubeconfig, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubeconfigs");
    std::fs::create_dir_all(&dir).expect("create kubeconfig folder");
    let path = dir.join(format!("{name}.yaml"));
    let yaml = serde_yaml::to_string(kubeconfig).expect("kubeconfig renders");
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

/// A tool of the local cluster's toolbox (`kubectl`, `helm`), as built by `e2e/cluster/build`.
pub fn tool(name: &str) -> PathBuf {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/cluster/lib.sh");
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && printf %s \"$BIN_DIR\"",
            lib.display()
        ))
        .output()
        .expect("bash runs");
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).to_string()).join(name);
    assert!(
        path.is_file(),
        "{} is missing; build the local toolbox with `e2e/cluster/build`",
        path.display()
    );
    path
}

/// Runs a toolbox command against the local cluster; panics with its output when it fails.
pub fn run_tool(name: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(tool(name))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run {name}: {error}"));
    assert!(
        output.status.success(),
        "{name} {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

#[test]
fn merge_patch_replaces_merges_and_removes() {
    let mut target = serde_json::json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
    merge_patch(
        &mut target,
        &serde_json::json!({"a": {"b": null, "e": 3}, "d": [3]}),
    );
    assert_eq!(target, serde_json::json!({"a": {"c": 2, "e": 3}, "d": [3]}));
}
