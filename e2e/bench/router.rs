//! The router benchmark, measured the way the public gateway boards measure: the latency the
//! router adds against calling the fake provider directly (p50 and p99, at 1 and 100 clients,
//! streamed and not), throughput, the most requests a second within a p99 bound (the board's
//! capacity figure), streamed time to first token, the router's CPU time per
//! request and per streamed event (process CPU time over requests, which a noisy machine does
//! not skew the way wall time is skewed), its own `overhead` metric, and its memory. Each of the
//! router's paths: OpenAI's API and Anthropic's, passed on to a provider of the same API or
//! translated. Run by `e2e/bench/router`, which writes its section of docs/benchmarks.md. A
//! measurement, not a test: it asserts nothing.

#[path = "../../tests/support/fake_provider.rs"]
#[allow(dead_code)]
mod fake_provider;
mod report;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_operator::api::budget::{ModelPrice, Pricing};
use agent_operator::api::common::RouterSpec;
use agent_operator::api::llm_provider::ProviderType;
use agent_operator::resources::provider_config::{
    Allowance, ProviderApi, ResolvedProvider, provider_config,
};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// The router's binary (a release build of `agent-router`).
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
    /// What to measure: every path (`paths`), the router with a budget and tracing against the
    /// same router without (`instrumented`), the most requests a second within a p99 bound
    /// (`capacity`), or all three.
    #[arg(long, value_enum, default_value = "all")]
    part: Part,
    /// The p99 latency bound of `capacity`, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    p99_bound_ms: f64,
    /// An OpenTelemetry Collector binary (`e2e/tools/otelcol`), which the instrumented router
    /// exports its spans and metrics to; required by `instrumented`.
    #[arg(long)]
    collector: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    All,
    Paths,
    Instrumented,
    Capacity,
}

impl Part {
    fn includes(self, part: Part) -> bool {
        self == Part::All || self == part
    }
}

/// What a router under test runs with beyond its provider.
#[derive(Clone, Default)]
struct Extras {
    allowance: Option<Allowance>,
    pricing: Option<Pricing>,
    args: Vec<String>,
    /// Percent of requests traced (`spec.router.traceSamplingPercent`); unset, all.
    trace_sampling_percent: Option<i32>,
}

/// A path through the router: the agent's API and the provider's.
#[derive(Clone, Copy)]
struct Path {
    name: &'static str,
    /// The agent's endpoint on the router.
    routed: &'static str,
    /// The provider's own endpoint, called directly for the baseline.
    direct: &'static str,
    provider: ProviderType,
}

const PATHS: [Path; 4] = [
    Path {
        name: "OpenAI API → OpenAI-compatible",
        routed: "/v1/chat/completions",
        direct: "/v1/chat/completions",
        provider: ProviderType::OpenAICompatible,
    },
    Path {
        name: "Anthropic API → Anthropic",
        routed: "/v1/messages",
        direct: "/v1/messages",
        provider: ProviderType::Anthropic,
    },
    Path {
        name: "OpenAI API → Anthropic (translated)",
        routed: "/v1/chat/completions",
        direct: "/v1/messages",
        provider: ProviderType::Anthropic,
    },
    Path {
        name: "Anthropic API → OpenAI-compatible (translated)",
        routed: "/v1/messages",
        direct: "/v1/chat/completions",
        provider: ProviderType::OpenAICompatible,
    },
];

/// The request an agent of `endpoint`'s API sends.
fn body(endpoint: &str, stream: bool) -> Value {
    let messages = json!([{"role": "user", "content": "Say hello."}]);
    if endpoint == "/v1/messages" {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": stream, "messages": messages})
    } else {
        json!({"model": "gpt-4o", "stream": stream, "messages": messages})
    }
}

/// What one measurement of `requests` requests saw.
#[derive(Default)]
struct Samples {
    /// Request to last byte, ms.
    latency: Vec<f64>,
    /// Request to the first byte of the body, ms.
    first_byte: Vec<f64>,
    /// Server-sent events received in all.
    events: usize,
    wall: Duration,
}

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.latency.extend(other.latency);
        self.first_byte.extend(other.first_byte);
        self.events += other.events;
        self.wall += other.wall;
    }
}

struct Row {
    path: &'static str,
    concurrency: usize,
    stream: bool,
    direct: (f64, f64),
    routed: (f64, f64),
    first_byte_added: f64,
    throughput: f64,
    cpu_per_request_us: f64,
    cpu_per_event_us: Option<f64>,
}

struct RouterUnderTest {
    child: Child,
    address: String,
}

impl RouterUnderTest {
    async fn start(
        args: &Args,
        dir: &std::path::Path,
        provider: ProviderType,
        endpoint: String,
        port: u16,
        extras: &Extras,
    ) -> Self {
        let chain = [ResolvedProvider {
            name: "fake".into(),
            provider_type: Some(provider),
            endpoint: Some(endpoint),
            model: None,
            ready: true,
            reason: None,
            credential: None,
            api: ProviderApi {
                pricing: extras.pricing.clone(),
                ..ProviderApi::default()
            },
        }];
        let settings = RouterSpec {
            trace_sampling_percent: extras.trace_sampling_percent,
            ..RouterSpec::default()
        };
        let mut config = provider_config(&chain, &[], Some(&settings));
        config.allowance = extras.allowance.clone();
        let file = dir.join(format!("providers-{port}.json"));
        std::fs::write(&file, serde_json::to_string(&config).expect("json")).expect("config");
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(&args.binary)
            .args(["--listen", &address, "--log-level", "warn", "--config"])
            .arg(&file)
            .args(&extras.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("the router starts");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http
                .get(format!("http://{address}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, address }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Unpaced streams: the fake sends its events as fast as it can, so a stream's cost is the
    // router's per-event work, not the fake's pacing.
    let fake = fake_provider::FakeProvider::start(fake_provider::Behaviour {
        stream_pace: Duration::ZERO,
        ..fake_provider::Behaviour::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("router-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    if args.part.includes(Part::Instrumented) {
        let section = instrumented(&args, &dir, &fake, &http).await;
        report::write_section(&args.out, "router-instrumented", &section);
        println!("{section}");
    }
    if args.part.includes(Part::Paths) {
        let section = paths(&args, &dir, &fake, &http).await;
        report::write_section(&args.out, "router", &section);
        println!("{section}");
    }
    if args.part.includes(Part::Capacity) {
        let section = capacity(&args, &dir, &fake, &http).await;
        report::write_section(&args.out, "router-capacity", &section);
        println!("{section}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every path through the router, against the provider called directly.
async fn paths(
    args: &Args,
    dir: &std::path::Path,
    fake: &fake_provider::FakeProvider,
    http: &reqwest::Client,
) -> String {
    let mut openai = RouterUnderTest::start(
        args,
        dir,
        ProviderType::OpenAICompatible,
        fake.openai_endpoint(),
        18790,
        &Extras::default(),
    )
    .await;
    let mut anthropic = RouterUnderTest::start(
        args,
        dir,
        ProviderType::Anthropic,
        fake.root_endpoint(),
        18791,
        &Extras::default(),
    )
    .await;
    let http = http.clone();

    let mut rows = Vec::new();
    for path in PATHS {
        let router = if path.provider == ProviderType::Anthropic {
            &anthropic
        } else {
            &openai
        };
        let routed_url = format!("http://{}{}", router.address, path.routed);
        let direct_url = format!("http://{}{}", fake.address, path.direct);
        for stream in [false, true] {
            for &concurrency in &args.concurrency {
                let routed_body = body(path.routed, stream);
                let direct_body = body(path.direct, stream);
                // Warm both paths' connection pools, then interleave to share any drift.
                measure(&http, &direct_url, &direct_body, concurrency, 200).await;
                measure(&http, &routed_url, &routed_body, concurrency, 200).await;
                let mut direct = Samples::default();
                let mut routed = Samples::default();
                let mut cpu = 0u64;
                for _ in 0..2 {
                    direct.extend(
                        measure(&http, &direct_url, &direct_body, concurrency, args.requests).await,
                    );
                    let before = report::cpu_nanos(router.pid());
                    routed.extend(
                        measure(&http, &routed_url, &routed_body, concurrency, args.requests).await,
                    );
                    cpu += report::cpu_nanos(router.pid()) - before;
                }
                let requests = routed.latency.len() as f64;
                let row = Row {
                    path: path.name,
                    concurrency,
                    stream,
                    direct: quantiles(&mut direct.latency),
                    routed: quantiles(&mut routed.latency),
                    first_byte_added: quantiles(&mut routed.first_byte).0
                        - quantiles(&mut direct.first_byte).0,
                    throughput: requests / routed.wall.as_secs_f64(),
                    cpu_per_request_us: cpu as f64 / 1000.0 / requests,
                    cpu_per_event_us: stream
                        .then(|| cpu as f64 / 1000.0 / routed.events.max(1) as f64),
                };
                eprintln!(
                    "{} stream={stream} concurrency={concurrency}: added p50 {:+.3} ms p99 {:+.3} ms, CPU {:.1} µs/request",
                    path.name,
                    row.routed.0 - row.direct.0,
                    row.routed.1 - row.direct.1,
                    row.cpu_per_request_us
                );
                rows.push(row);
            }
        }
    }
    let overhead = overhead_quantiles(&http, &openai.address).await;
    let footprints: Vec<(f64, f64)> = [&openai, &anthropic]
        .iter()
        .map(|r| report::footprint(r.pid()))
        .collect();
    for router in [&mut openai, &mut anthropic] {
        let _ = router.child.kill();
        let _ = router.child.wait();
    }
    markdown(args, &rows, &footprints, overhead)
}

/// Clients of the capacity part, each a measurement: closed loops, so each level's
/// throughput is what the machine serves at that concurrency, and its p99 what it costs.
const CAPACITY_CLIENTS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// One level of the capacity part: (requests a second, p99 in ms) directly and routed.
struct Level {
    clients: usize,
    direct: (f64, f64),
    routed: (f64, f64),
}

/// Throughput at a fixed p99 bound, as the gateway boards report capacity: the most requests
/// a second through the router, at any number of clients whose p99 stays within the bound,
/// beside the same for the fake called directly (the machine's own bound, since the load
/// generator and the fake share its cores with the router). The OpenAI-compatible path,
/// not streamed.
async fn capacity(
    args: &Args,
    dir: &std::path::Path,
    fake: &fake_provider::FakeProvider,
    http: &reqwest::Client,
) -> String {
    let mut router = RouterUnderTest::start(
        args,
        dir,
        ProviderType::OpenAICompatible,
        fake.openai_endpoint(),
        18796,
        &Extras::default(),
    )
    .await;
    let path = &PATHS[0];
    let routed_url = format!("http://{}{}", router.address, path.routed);
    let direct_url = format!("http://{}{}", fake.address, path.direct);
    let routed_body = body(path.routed, false);
    let direct_body = body(path.direct, false);
    let mut levels = Vec::new();
    for clients in CAPACITY_CLIENTS {
        // At least 20 requests a client, so that a p99 is not one client's first request.
        let requests = args.requests.max(clients * 20);
        measure(http, &direct_url, &direct_body, clients, 200).await;
        measure(http, &routed_url, &routed_body, clients, 200).await;
        let rate_and_p99 = |mut samples: Samples| {
            let rate = samples.latency.len() as f64 / samples.wall.as_secs_f64();
            (rate, quantiles(&mut samples.latency).1)
        };
        let direct =
            rate_and_p99(measure(http, &direct_url, &direct_body, clients, requests).await);
        let routed =
            rate_and_p99(measure(http, &routed_url, &routed_body, clients, requests).await);
        eprintln!(
            "capacity clients={clients}: direct {:.0}/s p99 {:.3} ms, routed {:.0}/s p99 {:.3} ms",
            direct.0, direct.1, routed.0, routed.1
        );
        levels.push(Level {
            clients,
            direct,
            routed,
        });
    }
    let _ = router.child.kill();
    let _ = router.child.wait();
    capacity_markdown(args, &levels)
}

fn capacity_markdown(args: &Args, levels: &[Level]) -> String {
    let bound = args.p99_bound_ms;
    let best = |of: fn(&Level) -> (f64, f64)| {
        levels
            .iter()
            .filter(|level| of(level).1 <= bound)
            .max_by(|a, b| of(a).0.total_cmp(&of(b).0))
            .map_or("none within the bound".to_string(), |level| {
                format!("{:.0}/s at {} clients", of(level).0, level.clients)
            })
    };
    let mut out = format!(
        "## LLM router: throughput within a p99 bound\n\nGenerated by `e2e/bench/router --part capacity`. Machine: {}; release build; the router its own process (one thread), the fake provider and the load generator in another, all on the same cores. The OpenAI-compatible path, not streamed; at each number of closed-loop clients, at least {} requests (20 a client), first directly, then through the router.\n\n",
        report::machine(),
        args.requests
    );
    out.push_str("| clients | direct | direct p99 | through the router | router p99 |\n|---|---|---|---|---|\n");
    for level in levels {
        out.push_str(&format!(
            "| {} | {:.0}/s | {:.3} ms | {:.0}/s | {:.3} ms |\n",
            level.clients, level.direct.0, level.direct.1, level.routed.0, level.routed.1
        ));
    }
    out.push_str(&format!(
        "\nThe most requests a second with p99 ≤ {bound} ms: through the router {}; directly {}.\n\nRerun: `e2e/bench/router --part capacity` (`--p99-bound-ms`, `--requests`).\n",
        best(|level| level.routed),
        best(|level| level.direct),
    ));
    out
}

/// One router configuration's measurement against the same requests.
struct Measured {
    cpu_per_request_us: f64,
    added_p50: f64,
    added_p99: f64,
}

/// The sampling percent of the fourth instrumented router.
const SAMPLED_PERCENT: i32 = 10;

/// The OpenAI-compatible path with a budget (every request reserved and settled, the usage
/// report written after each answer) and tracing (a span and the GenAI metrics per request,
/// exported to a real collector), with both and a tenth of the requests traced, against the
/// same router with neither.
async fn instrumented(
    args: &Args,
    dir: &std::path::Path,
    fake: &fake_provider::FakeProvider,
    http: &reqwest::Client,
) -> String {
    let collector_binary = args
        .collector
        .as_ref()
        .expect("--collector: the instrumented router exports to a real collector");
    let collector_port = 18799;
    let config = dir.join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{collector_port}\nexporters:\n  file:\n    path: {}\nservice:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [file]}}\n    metrics: {{receivers: [otlp], exporters: [file]}}\n",
            dir.join("telemetry.jsonl").display()
        ),
    )
    .expect("collector config");
    let mut collector = Command::new(collector_binary)
        .arg("--config")
        .arg(format!("file:{}", config.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the collector starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut plain = RouterUnderTest::start(
        args,
        dir,
        ProviderType::OpenAICompatible,
        fake.openai_endpoint(),
        18792,
        &Extras::default(),
    )
    .await;
    let endpoint = format!("http://127.0.0.1:{collector_port}");
    let budget = || Extras {
        allowance: Some(Allowance {
            max_tokens: Some(u64::MAX / 2),
            max_cost_nanos: Some(u64::MAX / 2),
            currency: "USD".into(),
        }),
        pricing: Some(Pricing {
            currency: "USD".into(),
            models: vec![ModelPrice {
                model: "gpt-4o".into(),
                input: "2.50".into(),
                output: "10".into(),
                cached_input: None,
                cache_write: None,
            }],
        }),
        args: [
            "--usage-file",
            &dir.join("usage.json").display().to_string(),
            "--termination-log",
            &dir.join("termination-log").display().to_string(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect(),
        trace_sampling_percent: None,
    };
    let budgeted = RouterUnderTest::start(
        args,
        dir,
        ProviderType::OpenAICompatible,
        fake.openai_endpoint(),
        18793,
        &budget(),
    )
    .await;
    let mut with_tracing = budget();
    with_tracing
        .args
        .extend(["--otlp-endpoint".to_string(), endpoint.clone()]);
    let mut with_sampling = with_tracing.clone();
    with_sampling.trace_sampling_percent = Some(SAMPLED_PERCENT);
    // Their own usage files.
    for (extras, suffix) in [
        (&mut with_tracing, ".traced"),
        (&mut with_sampling, ".sampled"),
    ] {
        for path in extras.args.iter_mut().filter(|a| a.starts_with('/')) {
            path.push_str(suffix);
        }
    }
    let traced = RouterUnderTest::start(
        args,
        dir,
        ProviderType::OpenAICompatible,
        fake.openai_endpoint(),
        18794,
        &with_tracing,
    )
    .await;
    let sampled = RouterUnderTest::start(
        args,
        dir,
        ProviderType::OpenAICompatible,
        fake.openai_endpoint(),
        18795,
        &with_sampling,
    )
    .await;
    let direct_url = format!("http://{}/v1/chat/completions", fake.address);
    let mut out = format!(
        "## LLM router with a budget and tracing\n\nGenerated by `e2e/bench/router --part instrumented`. Machine: {}; release build. The OpenAI-compatible path, {} requests per row measured twice, interleaved, through four routers: as above; with a task budget (each request reserved and settled, the usage report written to its two files, at most every 200 ms); with the budget and OpenTelemetry (a span and the GenAI metrics per request, batched to a real collector on the same machine); and the same with `traceSamplingPercent: {SAMPLED_PERCENT}` (the metrics for every request, a span for one in {}). CPU is each router process's, its exporter threads included. The target: with both, within 10% of the router's cost without.\n\n| streamed | clients | CPU per request, without | with a budget | with a budget and tracing | ratio | with {SAMPLED_PERCENT}% traced | ratio | added p50, without | with both | added p99, without | with both |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        report::machine(),
        args.requests,
        100 / SAMPLED_PERCENT
    );
    for stream in [false, true] {
        for &concurrency in &args.concurrency {
            let request = body("/v1/chat/completions", stream);
            let mut direct = Samples::default();
            let mut runs: [(Samples, u64); 4] = Default::default();
            let routers = [&plain, &budgeted, &traced, &sampled];
            for router in routers {
                let url = format!("http://{}/v1/chat/completions", router.address);
                measure(http, &url, &request, concurrency, 200).await;
            }
            for _ in 0..2 {
                direct
                    .extend(measure(http, &direct_url, &request, concurrency, args.requests).await);
                for (run, router) in runs.iter_mut().zip(routers) {
                    let url = format!("http://{}/v1/chat/completions", router.address);
                    let before = report::cpu_nanos(router.pid());
                    run.0
                        .extend(measure(http, &url, &request, concurrency, args.requests).await);
                    run.1 += report::cpu_nanos(router.pid()) - before;
                }
            }
            let direct = quantiles(&mut direct.latency);
            let [without, budgeted_only, with, with_sampling] = runs.map(|(mut samples, cpu)| {
                let requests = samples.latency.len() as f64;
                let routed = quantiles(&mut samples.latency);
                Measured {
                    cpu_per_request_us: cpu as f64 / 1000.0 / requests,
                    added_p50: routed.0 - direct.0,
                    added_p99: routed.1 - direct.1,
                }
            });
            eprintln!(
                "instrumented stream={stream} concurrency={concurrency}: {:.1} → {:.1} → {:.1} ({:.1} sampled) µs/request",
                without.cpu_per_request_us,
                budgeted_only.cpu_per_request_us,
                with.cpu_per_request_us,
                with_sampling.cpu_per_request_us
            );
            out.push_str(&format!(
                "| {} | {concurrency} | {:.1} µs | {:.1} µs | {:.1} µs | {:.2} | {:.1} µs | {:.2} | {:+.3} ms | {:+.3} ms | {:+.3} ms | {:+.3} ms |\n",
                if stream { "yes" } else { "no" },
                without.cpu_per_request_us,
                budgeted_only.cpu_per_request_us,
                with.cpu_per_request_us,
                with.cpu_per_request_us / without.cpu_per_request_us,
                with_sampling.cpu_per_request_us,
                with_sampling.cpu_per_request_us / without.cpu_per_request_us,
                without.added_p50,
                with.added_p50,
                without.added_p99,
                with.added_p99,
            ));
        }
    }
    let footprints: Vec<String> = [&plain, &budgeted, &traced, &sampled]
        .iter()
        .map(|r| format!("{:.1} MiB", report::footprint(r.pid()).0))
        .collect();
    out.push_str(&format!(
        "\nPeak RSS of the four: {}.\n\nRerun: `e2e/bench/router --part instrumented`.\n",
        footprints.join(", ")
    ));
    let (mut budgeted, mut traced, mut sampled) = (budgeted, traced, sampled);
    for router in [&mut plain, &mut budgeted, &mut traced, &mut sampled] {
        let _ = router.child.kill();
        let _ = router.child.wait();
    }
    let _ = collector.kill();
    let _ = collector.wait();
    out
}

/// `requests` requests sent by `concurrency` clients, each reading the whole answer.
async fn measure(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    concurrency: usize,
    requests: usize,
) -> Samples {
    let per_client = requests.div_ceil(concurrency);
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.to_string(), body.clone());
            tokio::spawn(async move {
                let mut samples = Samples::default();
                for _ in 0..per_client {
                    let sent = Instant::now();
                    let mut response = http.post(&url).json(&body).send().await.expect("answer");
                    assert!(
                        response.status().is_success(),
                        "status {}",
                        response.status()
                    );
                    let mut first = None;
                    let mut events = 0;
                    while let Some(chunk) = response.chunk().await.expect("body") {
                        first.get_or_insert_with(|| sent.elapsed());
                        events += chunk.windows(2).filter(|w| w == b"\n\n").count();
                    }
                    samples.latency.push(sent.elapsed().as_secs_f64() * 1000.0);
                    samples
                        .first_byte
                        .push(first.unwrap_or_default().as_secs_f64() * 1000.0);
                    samples.events += events;
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::default();
    for client in clients {
        all.extend(client.await.expect("client"));
    }
    all.wall = started.elapsed();
    all
}

/// (p50, p99) in ms.
fn quantiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

/// The router's own overhead histogram, p50 and p99 in µs, read from its `/metrics` as
/// Prometheus would (the bucket the quantile falls in, upper bound).
async fn overhead_quantiles(http: &reqwest::Client, address: &str) -> (f64, f64) {
    let text = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("agent_operator_router_overhead_seconds_bucket"))
        .filter_map(|l| {
            let bound = l.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, count)| *count >= total * q)
            .map_or(f64::NAN, |(bound, _)| bound * 1e6)
    };
    (at(0.5), at(0.99))
}

fn markdown(args: &Args, rows: &[Row], footprints: &[(f64, f64)], overhead: (f64, f64)) -> String {
    let mut out = format!(
        "## LLM router\n\nGenerated by `e2e/bench/router`. Machine: {}; release build; each router its own process (one thread), the fake provider and the load generator in another, all on the same cores. Each row: {} requests per path, measured twice, interleaved with the direct calls; latency is from sending the request to the last byte of the answer, and the fake streams unpaced (9 to 11 events), so streamed rows show the router's per-event cost. CPU is the router process's CPU time (`/proc/<pid>/task/*/schedstat`) over the routed requests, and over their events for streams.\n\n",
        report::machine(),
        args.requests
    );
    out.push_str("| path | clients | streamed | direct p50 | added p50 | direct p99 | added p99 | added to first byte (p50) | router throughput | router CPU per request | per event |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} ms | {:+.3} ms | {:.3} ms | {:+.3} ms | {:+.3} ms | {:.0}/s | {:.1} µs | {} |\n",
            row.path,
            row.concurrency,
            if row.stream { "yes" } else { "no" },
            row.direct.0,
            row.routed.0 - row.direct.0,
            row.direct.1,
            row.routed.1 - row.direct.1,
            row.first_byte_added,
            row.throughput,
            row.cpu_per_request_us,
            row.cpu_per_event_us.map_or("—".to_string(), |us| format!("{us:.2} µs")),
        ));
    }
    let rss: Vec<String> = footprints
        .iter()
        .map(|(rss, _)| format!("{rss:.1} MiB"))
        .collect();
    out.push_str(&format!(
        "\nPeak RSS of the two routers after all runs: {}. The router's own `agent_operator_router_overhead_seconds` over the OpenAI-compatible router's requests: p50 ≤ {:.0} µs, p99 ≤ {:.0} µs (bucket bounds).\n\nRerun: `e2e/bench/router` (`--requests`, `--concurrency` to change the load).\n",
        rss.join(" and "),
        overhead.0,
        overhead.1
    ));
    out
}
