//! Headless Debian Chromium, driven through its chromedriver, for the browser tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Headless Chromium driven through chromedriver, which is killed when dropped.
pub struct Chromium {
    driver: Child,
    pub browser: Browser,
    _profile: TempDir,
}

impl Chromium {
    pub async fn start() -> Chromium {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing: install Debian's chromium and chromium-driver (e2e/test does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::new("chromium-profile");
        // The machine has no network beyond loopback: Chromium's background services would
        // only fail, so they are off, and so is the sandbox, which needs privileges tests lack.
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.0.display()),
                ]
            }
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let browser = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(browser) => break browser,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("chromedriver gave no browser session: {error}"),
            }
        };
        Chromium {
            driver,
            browser,
            _profile: profile,
        }
    }

    /// Opens `url`; a page that takes over 10 s to load fails the test (a browser waiting for a
    /// free connection to the server, say).
    pub async fn open(&self, url: &str) {
        tokio::time::timeout(Duration::from_secs(10), self.browser.goto(url))
            .await
            .unwrap_or_else(|_| panic!("{url} did not load within 10 s"))
            .unwrap_or_else(|error| panic!("open {url}: {error}"));
    }

    /// The text of the first element matching `css`, or `None` when there is none. Read in one
    /// step in the page: the live stream may replace the element at any moment.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .browser
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![json!(css)],
            )
            .await
            .ok()?;
        value.as_str().map(str::to_string)
    }

    /// The attribute `name` of the first element matching `css`.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let value = self
            .browser
            .execute(
                "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
                vec![json!(css), json!(name)],
            )
            .await
            .ok()?;
        value.as_str().map(str::to_string)
    }

    /// Waits until the page's live stream is connected (the indicator says so).
    pub async fn wait_live(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.text("#live").await.as_deref() == Some("live") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page's live stream did not connect within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.browser
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|error| panic!("run {script}: {error}"))
    }

    /// Saves a screenshot of the page under the test target's folder and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.browser.screenshot().await.expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).expect("create screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Chromium {
    /// chromedriver and the browsers it started share a process group: end them all, also when
    /// a test fails halfway.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&path).expect("create temporary folder");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
