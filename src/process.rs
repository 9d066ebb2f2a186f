//! What both binaries (`agent-operator` and `agent-router`) do around their command: the
//! command line, the async runtime it runs on, its error as one line and an exit code, and the
//! version they print.

use std::future::Future;
use std::process::ExitCode;

use clap::Parser;

/// The command line of `C`, whose `--version` prints [`version`]: clap's own would leave out
/// the revision that the `version` command and the image's label show.
pub fn parse<C: Parser>() -> C {
    // Leaked once per process: clap keeps its version as a `&'static str`.
    let version: &'static str = version().leak();
    let matches = C::command().version(version).get_matches();
    C::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// The crate's version, and the source revision when the build was stamped with one (the
/// container image sets `AGENT_OPERATOR_REVISION` at build time).
pub fn version() -> String {
    match option_env!("AGENT_OPERATOR_REVISION") {
        Some(revision) if !revision.is_empty() => {
            format!("{} ({revision})", env!("CARGO_PKG_VERSION"))
        }
        _ => env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Runs `command` to completion on `runtime`. The operator takes every core; the router serves
/// one pod, where a single thread keeps its memory and latency low.
pub fn block_on<E: std::fmt::Display>(
    mut runtime: tokio::runtime::Builder,
    command: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, naming the problem and the fix, for a person reading `kubectl logs`.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
