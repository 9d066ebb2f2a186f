//! The router benchmark: the latency the router adds to a chat completion, against calling the
//! fake provider directly, at 1 and 100 concurrent clients, streamed and not, and the router's
//! memory. Run by `e2e/bench/router`, which writes its section of docs/benchmarks.md. A
//! measurement, not a test: it asserts nothing.

#[path = "../../tests/support/fake_provider.rs"]
#[allow(dead_code)]
mod fake_provider;
mod report;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_operator::api::common::RouterSpec;
use agent_operator::api::llm_provider::ProviderType;
use agent_operator::resources::provider_config::{ProviderApi, ResolvedProvider, provider_config};
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// The operator binary (a release build), run as `agent-operator router`.
    #[arg(long)]
    binary: PathBuf,
    /// Requests per measurement (each configuration is measured twice, interleaved).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    concurrency: Vec<usize>,
    /// Where to write the Markdown results.
    #[arg(long)]
    out: PathBuf,
}

struct Row {
    concurrency: usize,
    stream: bool,
    direct: (f64, f64),
    routed: (f64, f64),
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = fake_provider::FakeProvider::start(fake_provider::Behaviour::default()).await;
    let dir = std::env::temp_dir().join(format!("router-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let chain = [ResolvedProvider {
        name: "fake".into(),
        provider_type: Some(ProviderType::OpenAICompatible),
        endpoint: Some(fake.openai_endpoint()),
        model: Some("gpt-4o".into()),
        ready: true,
        reason: None,
        credential: None,
        api: ProviderApi::default(),
    }];
    let config = provider_config(&chain, &[], Some(&RouterSpec::default()));
    std::fs::write(
        dir.join("providers.json"),
        serde_json::to_string(&config).expect("json"),
    )
    .expect("config");
    let listen = "127.0.0.1:18790";
    let mut router = Command::new(&args.binary)
        .args([
            "router",
            "--listen",
            listen,
            "--log-level",
            "warn",
            "--config",
        ])
        .arg(dir.join("providers.json"))
        .stdout(Stdio::null())
        .spawn()
        .expect("the router starts");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let routed_url = format!("http://{listen}/v1/chat/completions");
    let direct_url = format!("{}/chat/completions", fake.openai_endpoint());
    for _ in 0..100 {
        if http
            .get(format!("http://{listen}/healthz"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut rows = Vec::new();
    for stream in [false, true] {
        for &concurrency in &args.concurrency {
            // Warm both paths' connection pools, then interleave to share any drift.
            measure(&http, &direct_url, stream, concurrency, 200).await;
            measure(&http, &routed_url, stream, concurrency, 200).await;
            let mut direct = Vec::new();
            let mut routed = Vec::new();
            for _ in 0..2 {
                direct
                    .extend(measure(&http, &direct_url, stream, concurrency, args.requests).await);
                routed
                    .extend(measure(&http, &routed_url, stream, concurrency, args.requests).await);
            }
            let row = Row {
                concurrency,
                stream,
                direct: quantiles(&mut direct),
                routed: quantiles(&mut routed),
            };
            eprintln!(
                "stream={stream} concurrency={concurrency}: direct p50 {:.2} ms p99 {:.2} ms, routed p50 {:.2} ms p99 {:.2} ms",
                row.direct.0, row.direct.1, row.routed.0, row.routed.1
            );
            rows.push(row);
        }
    }
    let (rss, cpu) = report::footprint(router.id());
    let _ = router.kill();
    let _ = router.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let section = markdown(&args, &rows, rss, cpu);
    report::write_section(&args.out, "router", &section);
    println!("{section}");
}

/// Latencies (ms) of `requests` completions sent by `concurrency` clients, each reading the
/// whole answer.
async fn measure(
    http: &reqwest::Client,
    url: &str,
    stream: bool,
    concurrency: usize,
    requests: usize,
) -> Vec<f64> {
    let body = json!({
        "model": "gpt-4o", "stream": stream,
        "messages": [{"role": "user", "content": "Say hello."}]
    });
    let per_client = requests.div_ceil(concurrency);
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.to_string(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let started = Instant::now();
                    let response = http.post(&url).json(&body).send().await.expect("answer");
                    assert!(
                        response.status().is_success(),
                        "status {}",
                        response.status()
                    );
                    response.bytes().await.expect("body");
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(requests);
    for client in clients {
        all.extend(client.await.expect("client"));
    }
    all
}

/// (p50, p99) in ms.
fn quantiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

fn markdown(args: &Args, rows: &[Row], rss: f64, cpu: f64) -> String {
    let mut out = format!(
        "## LLM router\n\nGenerated by `e2e/bench/router`. Machine: {}; release build; the router as its own process (one thread), the fake provider and the load generator in another. Each row: {} requests per path, measured twice, interleaved; latency is from sending the request to the last byte of the answer.\n\n",
        report::machine(),
        args.requests
    );
    out.push_str("| clients | streamed | direct p50 | via router p50 | added p50 | direct p99 | via router p99 | added p99 |\n|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:+.2} ms | {:.2} ms | {:.2} ms | {:+.2} ms |\n",
            row.concurrency,
            if row.stream { "yes" } else { "no" },
            row.direct.0,
            row.routed.0,
            row.routed.0 - row.direct.0,
            row.direct.1,
            row.routed.1,
            row.routed.1 - row.direct.1,
        ));
    }
    out.push_str(&format!(
        "\nRouter process after all runs: peak RSS {rss:.1} MiB, CPU {cpu:.1} s.\n\nThe fake provider paces streamed events 2 ms apart, so streamed rows include about 25 ms of the fake's own pacing on both paths. Rerun: `e2e/bench/router` (`--requests`, `--concurrency` to change the load).\n"
    ));
    out
}
