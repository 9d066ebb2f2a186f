//! Logging setup: `tracing`, JSON or text, filtered by `--log-level`; and, with an OTLP
//! endpoint, the same spans (each reconcile's, with its kind, namespace and name) exported as
//! OpenTelemetry traces.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::options::LogFormat;
use crate::Error;

/// Logs to standard output, as containers are expected to.
pub fn init(format: LogFormat, level: &str) -> Result<(), Error> {
    init_with(format, level, std::io::stdout, None).map(|_| ())
}

/// Logs to standard error, leaving standard output to what a command prints for its user.
pub fn init_stderr(format: LogFormat, level: &str) -> Result<(), Error> {
    init_with(format, level, std::io::stderr, None).map(|_| ())
}

/// Logs to standard output and exports the spans to `otlp_endpoint` (an OTLP/HTTP base URL).
/// The returned provider flushes the last spans when shut down.
pub fn init_traced(
    format: LogFormat,
    level: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Option<SdkTracerProvider>, Error> {
    init_with(format, level, std::io::stdout, otlp_endpoint)
}

fn init_with<W>(
    format: LogFormat,
    level: &str,
    writer: W,
    otlp_endpoint: Option<&str>,
) -> Result<Option<SdkTracerProvider>, Error>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).map_err(|source| Error::InvalidLogLevel {
        level: level.to_string(),
        reason: source.to_string(),
    })?;
    let provider = otlp_endpoint
        .filter(|e| !e.is_empty())
        .map(span_exporter)
        .transpose()?;
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("agent-operator"))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    let installed = match format {
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(true))
            .try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = installed;
    Ok(provider)
}

fn span_exporter(endpoint: &str) -> Result<SdkTracerProvider, Error> {
    let base = endpoint.trim_end_matches('/');
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|error| Error::Otlp {
            endpoint: base.to_string(),
            reason: error.to_string(),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "agent-operator".into()),
        )
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}
