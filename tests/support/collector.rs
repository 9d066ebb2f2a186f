//! A real OpenTelemetry Collector (`e2e/tools/otelcol`, built from the collector's modules by
//! `e2e/cluster/build`) on loopback: OTLP/HTTP in, the file exporter out. Tests read what it
//! received as OTLP JSON, the way any backend behind a collector would get it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::net::free_port;
use super::wait_until;

pub struct Collector {
    child: Child,
    /// The OTLP/HTTP base URL to export to.
    pub endpoint: String,
    dir: PathBuf,
}

impl Collector {
    /// A collector on loopback.
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1").await
    }

    /// A collector listening on `host` (the real node's pods reach the host's bridge address).
    pub async fn start_on(name: &str, host: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("collector-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("collector folder");
        let port = free_port();
        let config = format!(
            r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: {host}:{port}
exporters:
  file/traces:
    path: {traces}
    flush_interval: 100ms
  file/metrics:
    path: {metrics}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file/traces]
    metrics:
      receivers: [otlp]
      exporters: [file/metrics]
"#,
            traces = dir.join("traces.jsonl").display(),
            metrics = dir.join("metrics.jsonl").display(),
        );
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config).expect("collector config");
        let log = std::fs::File::create(dir.join("collector.log")).expect("log");
        let mut child = Command::new(super::tool("otelcol"))
            .arg("--config")
            .arg(format!("file:{}", config_path.display()))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("the collector starts");
        let address = format!("{host}:{port}");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return Self {
                    child,
                    endpoint: format!("http://{address}"),
                    dir,
                };
            }
            if let Ok(Some(exit)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default();
                panic!("the collector exited ({exit}):\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        panic!("the collector did not listen on {address} within 30s");
    }

    /// The collector's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The raw OTLP JSON of every span export received.
    pub fn traces_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("traces.jsonl")).unwrap_or_default()
    }

    /// Every span received, each with its resource's attributes under `resource`.
    pub fn spans(&self) -> Vec<Value> {
        let mut spans = Vec::new();
        for export in self.lines("traces.jsonl") {
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["resource"] = resource["resource"]["attributes"].clone();
                        spans.push(span);
                    }
                }
            }
        }
        spans
    }

    /// Every metric received (name, unit and data points), in export order.
    pub fn metrics(&self) -> Vec<Value> {
        let mut metrics = Vec::new();
        for export in self.lines("metrics.jsonl") {
            for resource in export["resourceMetrics"].as_array().into_iter().flatten() {
                for scope in resource["scopeMetrics"].as_array().into_iter().flatten() {
                    metrics.extend(scope["metrics"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        metrics
    }

    /// Waits for a span that `matches`.
    pub async fn span(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        wait_until(Duration::from_secs(60), what, || async {
            self.spans().into_iter().find(|span| matches(span))
        })
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OTLP attribute's value by key, as JSON (`{"stringValue": ...}` unwrapped to its value;
/// integers, which OTLP JSON writes as strings, as numbers).
pub fn attribute(attributes: &Value, key: &str) -> Option<Value> {
    let value = attributes
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?
        .get("value")?
        .clone();
    unwrap_value(&value)
}

fn unwrap_value(value: &Value) -> Option<Value> {
    let (kind, inner) = value.as_object()?.iter().next()?;
    Some(match kind.as_str() {
        "intValue" => inner
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Value::from)
            .unwrap_or_else(|| inner.clone()),
        "arrayValue" => Value::Array(
            inner["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(unwrap_value)
                .collect(),
        ),
        _ => inner.clone(),
    })
}
