//! The operator as a real process, as it runs in production: its own binary, a kubeconfig,
//! watching the test's namespace. Killed when the handle drops; its log is kept for inspection.

use super::net::free_port;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct OperatorProcess {
    child: Child,
    pub metrics_port: u16,
    pub log_path: PathBuf,
}

impl OperatorProcess {
    /// Starts `agent-operator run` watching `namespace` and waits until `/readyz` answers ok.
    pub async fn start(namespace: &str) -> Self {
        Self::start_with(namespace, "", &[]).await
    }

    /// As `start`, with extra arguments; `tag` tells apart the logs of several processes.
    pub async fn start_with(namespace: &str, tag: &str, extra_args: &[&str]) -> Self {
        Self::start_as(namespace, tag, extra_args, &super::kubeconfig_path()).await
    }

    /// As `start_with`, authenticated by `kubeconfig` instead of the cluster admin's.
    pub async fn start_as(
        namespace: &str,
        tag: &str,
        extra_args: &[&str],
        kubeconfig: &std::path::Path,
    ) -> Self {
        Self::start_as_within(
            namespace,
            tag,
            extra_args,
            kubeconfig,
            Duration::from_secs(30),
        )
        .await
    }

    /// As `start_as`, waiting up to `ready_within` for `/readyz` (a throttled API server slows
    /// the first lists down).
    pub async fn start_as_within(
        namespace: &str,
        tag: &str,
        extra_args: &[&str],
        kubeconfig: &std::path::Path,
        ready_within: Duration,
    ) -> Self {
        let metrics_port = free_port();
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&log_dir).expect("create log folder");
        let log_path = log_dir.join(format!("{namespace}{tag}.log"));
        let log = std::fs::File::create(&log_path).expect("create operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_agent-operator"))
            .args([
                "run",
                "--namespaces",
                namespace,
                "--log-format",
                "json",
                "--log-level",
                "info",
            ])
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agent-operator");
        let mut operator = Self {
            child,
            metrics_port,
            log_path,
        };
        let url = format!("http://127.0.0.1:{metrics_port}/readyz");
        let deadline = tokio::time::Instant::now() + ready_within;
        loop {
            if let Ok(Some(status)) = operator.child.try_wait() {
                panic!("agent-operator exited with {status}:\n{}", operator.log());
            }
            if http_get(&url).await.is_some_and(|(code, _)| code == 200) {
                return operator;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("agent-operator did not become ready:\n{}", operator.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Whether the process is still running (it never exited by itself).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The status code of `/readyz`, `None` when it does not answer.
    pub async fn readyz(&self) -> Option<u16> {
        http_get(&format!("http://127.0.0.1:{}/readyz", self.metrics_port))
            .await
            .map(|(code, _)| code)
    }

    /// SIGTERM, then waits up to `bound` for the exit; returns the exit code.
    pub async fn terminate(&mut self, bound: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + bound;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The operator's /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The operator's API requests of `verb` so far, by resource, every answer code summed, from
    /// its own `agent_operator_kubernetes_requests_total`.
    pub async fn requests_by_resource(&self, verb: &str) -> BTreeMap<String, f64> {
        let verb = format!("verb=\"{verb}\"");
        let mut counts = BTreeMap::new();
        for line in self.metrics().await.lines() {
            let Some(sample) = line.strip_prefix("agent_operator_kubernetes_requests_total{")
            else {
                continue;
            };
            let Some((labels, value)) = sample.rsplit_once("} ") else {
                continue;
            };
            let resource = labels
                .split(',')
                .find_map(|label| label.strip_prefix("resource=\""))
                .map(|quoted| quoted.trim_end_matches('"').to_string());
            if let (true, Some(resource), Ok(value)) =
                (labels.contains(&verb), resource, value.parse::<f64>())
            {
                *counts.entry(resource).or_insert(0.0) += value;
            }
        }
        counts
    }

    /// The value of one sample of `/metrics`, e.g. `agent_operator_status_writes_total{controller="llmprovider"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP GET on loopback: status code and body.
async fn http_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.ok()?))
}

/// Runs `agent-operator run` for `namespace` as `kubeconfig` until it exits by itself (a failed
/// start-up check), and returns its output; panics if it is still running after `bound`.
pub async fn run_until_exit(
    namespace: &str,
    kubeconfig: &std::path::Path,
    bound: Duration,
) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_agent-operator"))
        .args(["run", "--namespaces", namespace, "--metrics-address"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent-operator");
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    tokio::time::timeout(bound, waited)
        .await
        .expect("agent-operator exits by itself")
        .expect("join")
        .expect("output")
}

/// `agent-operator run` with leader election on a Lease in the test's namespace.
pub async fn elected(namespace: &str, tag: &str) -> OperatorProcess {
    OperatorProcess::start_with(
        namespace,
        tag,
        &["--leader-election", "true", "--lease-namespace", namespace],
    )
    .await
}

/// The identity holding the operator's Lease in `namespace`, if any.
pub async fn lease_holder(client: &kube::Client, namespace: &str) -> Option<String> {
    kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), namespace)
        .get_opt("agent-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}
