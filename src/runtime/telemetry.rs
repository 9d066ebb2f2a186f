//! Logging setup: `tracing` to stdout, JSON or text, filtered by `--log-level`.

use tracing_subscriber::EnvFilter;

use super::options::LogFormat;
use crate::Error;

pub fn init(format: LogFormat, level: &str) -> Result<(), Error> {
    let filter = EnvFilter::try_new(level).map_err(|source| Error::InvalidLogLevel {
        level: level.to_string(),
        reason: source.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
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
