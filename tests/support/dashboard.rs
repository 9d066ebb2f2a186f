//! `agent-operator dashboard` as a real process, with plain HTTP reads of its pages and live
//! streams.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running dashboard; killed when dropped.
pub struct Dashboard {
    child: Child,
    pub url: String,
}

impl Dashboard {
    /// Starts `agent-operator dashboard --port 0` with `kubeconfig` and `args`, and waits for the
    /// address it prints.
    pub fn start(kubeconfig: &Path, tag: &str, args: &[&str]) -> Dashboard {
        let (child, log_path, first_line) = Self::spawn(kubeconfig, tag, args);
        // Its log stays under the test target's folder, named by `tag`.
        let url = first_line
            .as_deref()
            .and_then(|line| line.strip_prefix("agent-operator dashboard: open "))
            .unwrap_or_else(|| {
                panic!(
                    "the dashboard printed no address ({first_line:?}); its log: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            })
            .trim_end_matches('/')
            .to_string();
        Dashboard { child, url }
    }

    /// Runs the dashboard expecting it to refuse to start; returns its error output.
    pub fn refusal(kubeconfig: &Path, tag: &str, args: &[&str]) -> String {
        let (mut child, log_path, first_line) = Self::spawn(kubeconfig, tag, args);
        assert_eq!(
            first_line, None,
            "the dashboard started, expected a refusal"
        );
        let status = child.wait().expect("the dashboard exits");
        assert!(
            !status.success(),
            "the dashboard exited 0, expected a refusal"
        );
        std::fs::read_to_string(&log_path).expect("its log")
    }

    fn spawn(kubeconfig: &Path, tag: &str, args: &[&str]) -> (Child, PathBuf, Option<String>) {
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-logs");
        std::fs::create_dir_all(&log_dir).expect("create log folder");
        let log_path = log_dir.join(format!("{tag}.log"));
        let log = std::fs::File::create(&log_path).expect("create dashboard log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_agent-operator"))
            .args(["dashboard", "--port", "0", "--log-format", "json"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agent-operator dashboard");
        let stdout = child.stdout.take().expect("stdout");
        // The first line is the address, printed once the caches started and the port is bound.
        let mut first_line = String::new();
        let read = BufReader::new(stdout).read_line(&mut first_line);
        let first_line = match read {
            Ok(n) if n > 0 => Some(first_line.trim().to_string()),
            _ => None,
        };
        (child, log_path, first_line)
    }

    /// The page at `path` (with its query), read by plain HTTP: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        let status = response.status().as_u16();
        (status, response.text().await.expect("a body"))
    }

    /// The first message of the live stream of the page at `path`: the page's `<main>`.
    pub async fn first_live_update(&self, path: &str) -> String {
        let url = format!("{}/live{path}", self.url);
        let read = async {
            let mut response = reqwest::get(&url).await.expect("the live stream answers");
            assert_eq!(response.status().as_u16(), 200, "{url}");
            let mut received = String::new();
            while let Some(chunk) = response.chunk().await.expect("stream chunk") {
                received.push_str(&String::from_utf8_lossy(&chunk));
                if received.contains("event: view") && received.contains("\n\n") {
                    return received;
                }
            }
            panic!("the live stream of {path} ended before its first update")
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| panic!("no update on the live stream of {path} within 10 s"))
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
