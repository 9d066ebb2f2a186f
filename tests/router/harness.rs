//! Runs `agent-router` as a local process on the files the operator renders, with
//! fake providers behind it, and talks to it as an agent's OpenAI SDK would.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_operator::api::common::{RouterSpec, SecretKeyRef};
use agent_operator::api::llm_provider::ProviderType;
use agent_operator::resources::provider_config::{
    Allowance, CREDENTIALS_DIR, ProviderApi, ResolvedProvider, provider_config,
};
use agent_operator::resources::usage_report::UsageReport;
use serde_json::Value;

use crate::net::free_port;

/// One link of the chain under test.
#[derive(Clone, Debug)]
pub struct Link {
    pub name: String,
    pub provider_type: ProviderType,
    pub endpoint: String,
    pub model: Option<String>,
    pub key: Option<String>,
    pub api: ProviderApi,
}

impl Link {
    pub fn new(name: &str, provider_type: ProviderType, endpoint: String) -> Self {
        Self {
            name: name.into(),
            provider_type,
            endpoint,
            model: None,
            key: Some(format!("sk-{name}-0123456789abcdef")),
            api: ProviderApi::default(),
        }
    }

    pub fn model(mut self, model: &str) -> Self {
        self.model = Some(model.into());
        self
    }
}

/// Settings that make failover visible in test time.
pub fn quick_settings() -> RouterSpec {
    RouterSpec {
        first_byte_timeout: Duration::from_millis(500).into(),
        request_timeout: Duration::from_secs(10).into(),
        circuit_failure_threshold: 100,
        ..RouterSpec::default()
    }
}

pub struct RouterProcess {
    child: Child,
    pub address: SocketAddr,
    dir: PathBuf,
    args: Vec<String>,
    /// Environment variables the process gets beside the test's own.
    env: Vec<(String, String)>,
    logs: Arc<Mutex<Vec<u8>>>,
    http: reqwest::Client,
    /// Every key ever written, to check none leaks.
    keys: Mutex<Vec<String>>,
}

/// Renders the chain with the operator's own function, as the mounted ConfigMap holds it, with
/// the credential folder moved into the test's directory. Files are replaced by rename, as the
/// kubelet swaps a mounted volume's contents. Returns the keys written.
fn render(
    dir: &std::path::Path,
    links: &[Link],
    settings: &RouterSpec,
    allowance: Option<&Allowance>,
) -> Vec<String> {
    let chain: Vec<ResolvedProvider> = links
        .iter()
        .map(|link| ResolvedProvider {
            name: link.name.clone(),
            provider_type: Some(link.provider_type),
            endpoint: Some(link.endpoint.clone()),
            model: link.model.clone(),
            ready: true,
            reason: None,
            credential: link.key.as_ref().map(|_| SecretKeyRef {
                name: format!("{}-key", link.name),
                key: "apiKey".into(),
            }),
            api: link.api.clone(),
        })
        .collect();
    let credentials = dir.join("credentials");
    let mut keys = Vec::new();
    for link in links {
        if let Some(key) = &link.key {
            let folder = credentials.join(&link.name);
            std::fs::create_dir_all(&folder).expect("credential folder");
            replace_file(&folder.join("api-key"), key);
            keys.push(key.clone());
        }
    }
    let mut config = provider_config(&chain, &[], Some(settings));
    config.allowance = allowance.cloned();
    let json = serde_json::to_string_pretty(&config)
        .expect("serialize")
        .replace(CREDENTIALS_DIR, &credentials.display().to_string());
    replace_file(&dir.join("providers.json"), &json);
    keys
}

/// The router process on the test's files, its output collected into `logs`. Its usage report
/// lives in the test's folder, as on the pod's usage volume.
fn spawn(
    address: SocketAddr,
    dir: &std::path::Path,
    (args, env): (&[String], &[(String, String)]),
    logs: &Arc<Mutex<Vec<u8>>>,
) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-router"))
        .envs(env.iter().map(|(name, value)| (name, value)))
        .args(["--listen", &address.to_string(), "--config"])
        .arg(dir.join("providers.json"))
        .args(["--reload-interval", "100ms", "--limit-wait", "300ms"])
        .arg("--usage-file")
        .arg(dir.join("usage.json"))
        .arg("--termination-log")
        .arg(dir.join("termination-log"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the router starts");
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for mut pipe in pipes.into_iter().flatten() {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                logs.lock().expect("logs").extend_from_slice(&buffer[..n]);
            }
        });
    }
    child
}

impl RouterProcess {
    pub async fn start(links: &[Link], settings: &RouterSpec) -> Self {
        Self::start_with(links, settings, &[]).await
    }

    pub async fn start_with(links: &[Link], settings: &RouterSpec, args: &[&str]) -> Self {
        Self::start_budgeted(links, settings, None, args).await
    }

    /// Starts the router with what the pod may spend, as a task's worker gets it.
    pub async fn start_budgeted(
        links: &[Link],
        settings: &RouterSpec,
        allowance: Option<&Allowance>,
        args: &[&str],
    ) -> Self {
        Self::start_in_env(links, settings, allowance, (args, &[])).await
    }

    /// Starts the router with `env` set in its environment, as the pod's spec sets it.
    pub async fn start_in_env(
        links: &[Link],
        settings: &RouterSpec,
        allowance: Option<&Allowance>,
        (args, env): (&[&str], &[(&str, &str)]),
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!(
            "router-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let address: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let keys = render(&dir, links, settings, allowance);
        let logs = Arc::new(Mutex::new(Vec::new()));
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let child = spawn(address, &dir, (&args, &env), &logs);
        let router = Self {
            child,
            address,
            dir,
            args,
            env,
            logs,
            http: reqwest::Client::new(),
            keys: Mutex::new(keys),
        };
        router.wait_healthy().await;
        router
    }

    /// Stops the router at once (SIGKILL, as an OOM kill would) and starts it again on the
    /// same files, as the kubelet restarts a sidecar.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.address, &self.dir, (&self.args, &self.env), &self.logs);
        self.wait_healthy().await;
    }

    /// Stops the router as the kubelet stops a sidecar: SIGTERM, then waits for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as the kubelet does, without waiting for the router to exit.
    pub fn ask_to_stop(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The report once it counts `requests` answered requests, in the router's usage file
    /// (as on the pod's usage volume) and, the same, in its termination message: both are
    /// written just after each answer.
    pub async fn usage_after(&self, requests: u64) -> UsageReport {
        let read = |name: &str| {
            std::fs::read_to_string(self.dir.join(name))
                .ok()
                .and_then(|text| UsageReport::parse(&text))
        };
        let mut last = None;
        for _ in 0..100 {
            last = read("usage.json");
            if let Some(report) = &last
                && report.total.requests == requests
                && read("termination-log").as_ref() == Some(report)
            {
                return report.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the usage file never counted {requests} requests: {last:?}");
    }

    /// The usage report the router left where the kubelet reads its termination message.
    pub fn termination_message(&self) -> UsageReport {
        let text = std::fs::read_to_string(self.dir.join("termination-log"))
            .expect("the router wrote its termination message");
        UsageReport::parse(&text).unwrap_or_else(|| panic!("not a usage report: {text}"))
    }

    async fn wait_healthy(&self) {
        for _ in 0..100 {
            if let Ok(response) = self.http.get(self.url("/healthz")).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the router did not become healthy; logs:\n{}", self.logs());
    }

    /// Replaces the mounted files, as the kubelet does when the ConfigMap or a Secret changes.
    pub fn write_config(&self, links: &[Link], settings: &RouterSpec) {
        self.write_budgeted_config(links, settings, None);
    }

    pub fn write_budgeted_config(
        &self,
        links: &[Link],
        settings: &RouterSpec,
        allowance: Option<&Allowance>,
    ) {
        let keys = render(&self.dir, links, settings, allowance);
        self.keys.lock().expect("keys").extend(keys);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().expect("logs")).into_owned()
    }

    /// Whether the router logs `line` within a few seconds: its output is read apart from the
    /// requests, so a line written as an answer leaves may be read after the answer arrives.
    pub async fn logs_soon(&self, line: &str) -> bool {
        for _ in 0..250 {
            if self.logs().contains(line) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    /// POSTs `body` as the agent's SDK would, with its placeholder key.
    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth("agent-operator-router")
            .json(body)
            .send()
            .await
            .expect("the router answers")
    }

    /// An answer's status and text, checked to hold no key.
    async fn read(&self, response: reqwest::Response) -> (u16, String) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        self.assert_no_key_in(&text);
        (status, text)
    }

    /// An answer's status and JSON body.
    async fn read_json(&self, response: reqwest::Response) -> (u16, Value) {
        let (status, text) = self.read(response).await;
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("the router answered JSON, not: {text}"));
        (status, value)
    }

    /// A non-streamed completion: status, JSON body.
    pub async fn chat(&self, body: &Value) -> (u16, Value) {
        self.read_json(self.post(body).await).await
    }

    /// A streamed completion: status and the `data:` payloads in order.
    pub async fn stream(&self, body: &Value) -> (u16, Vec<String>) {
        let (status, text) = self.read(self.post(body).await).await;
        let events = text
            .split("\n\n")
            .filter_map(|event| event.trim().strip_prefix("data: ").map(str::to_string))
            .collect();
        (status, events)
    }

    /// POSTs `body` to the Messages endpoint as Anthropic's SDK would, with its own key (which
    /// the router ignores) and the headers the SDK sends.
    pub async fn post_messages(&self, body: &Value, beta: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/v1/messages"))
            .header("x-api-key", "agent-operator-router")
            .header("anthropic-version", "2023-06-01");
        if let Some(beta) = beta {
            request = request.header("anthropic-beta", beta);
        }
        request.json(body).send().await.expect("the router answers")
    }

    /// A non-streamed Messages request: status, JSON body.
    pub async fn messages(&self, body: &Value) -> (u16, Value) {
        self.read_json(self.post_messages(body, None).await).await
    }

    /// A streamed Messages request: status and the events as (name, data) in order.
    pub async fn messages_stream(&self, body: &Value) -> (u16, Vec<(String, Value)>) {
        let (status, text) = self.read(self.post_messages(body, None).await).await;
        let events = text
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let mut name = String::new();
                let mut data = Value::Null;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = value.to_string();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(value)
                            .unwrap_or_else(|_| panic!("an event's data is JSON: {value}"));
                    }
                }
                (name, data)
            })
            .collect();
        (status, events)
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub fn assert_no_key_in(&self, text: &str) {
        for key in self.keys.lock().expect("keys").iter() {
            assert!(
                !text.contains(key.as_str()),
                "a credential leaked into: {text}"
            );
        }
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever a test did, no key may have reached a log line.
        if !std::thread::panicking() {
            self.assert_no_key_in(&self.logs());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn replace_file(path: &std::path::Path, content: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, content).expect("write");
    std::fs::rename(&staged, path).expect("rename");
}

/// The text of a non-streamed answer.
pub fn content(answer: &Value) -> &str {
    answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The text of a streamed answer, from its chunks.
pub fn streamed_content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// A server that accepts connections, reads the request and drops the connection unanswered.
pub async fn resetting_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            use tokio::io::AsyncReadExt;
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            drop(stream);
        }
    });
    (format!("http://{address}/v1"), task)
}

/// A Messages request as Anthropic's SDK sends it.
pub fn messages_request(stream: bool) -> Value {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "stream": stream,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello."}]
    })
}

/// The text of an Anthropic answer.
pub fn message_text(answer: &Value) -> String {
    answer["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|block| block["text"].as_str())
        .collect()
}

/// A metric line's value, 0 when the series is absent.
pub fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A chat request; `model` is what the agent asks for.
pub fn chat_request(stream: bool) -> Value {
    serde_json::json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}
        ]
    })
}

impl RouterProcess {
    /// Overwrites the config with something that is not JSON.
    pub fn break_config(&self) {
        replace_file(&self.dir.join("providers.json"), "{ not json");
    }
}
