//! Logging setup: `tracing`, JSON or text, filtered by `--log-level`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::options::LogFormat;
use crate::Error;

/// Logs to standard output, as containers are expected to.
pub fn init(format: LogFormat, level: &str) -> Result<(), Error> {
    init_with(format, level, std::io::stdout)
}

/// Logs to standard error, leaving standard output to what a command prints for its user.
pub fn init_stderr(format: LogFormat, level: &str) -> Result<(), Error> {
    init_with(format, level, std::io::stderr)
}

fn init_with<W>(format: LogFormat, level: &str, writer: W) -> Result<(), Error>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).map_err(|source| Error::InvalidLogLevel {
        level: level.to_string(),
        reason: source.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = installed;
    Ok(())
}
