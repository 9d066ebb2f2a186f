//! The `agent-router` binary: the LLM router, the native sidecar of agent pods (the OpenAI and
//! Anthropic APIs on loopback, with failover along the pod's provider chain). It is a binary of
//! its own, beside `agent-operator` in the same image, because most of a router's memory is its
//! binary's code mapped in: without the controllers, the Kubernetes client and the API types, a
//! pod's sidecar maps a fraction of what the operator's binary would.

use std::process::ExitCode;

use agent_operator::process::{block_on, parse};
use agent_operator::router::RouterOptions;
use clap::Parser;

/// The LLM router of an agent pod: serves the OpenAI chat completions and Anthropic Messages APIs
/// on loopback and carries each request along the pod's failover chain of LLMProviders.
#[derive(Parser, Debug)]
#[command(name = "agent-router", version, about)]
struct Cli {
    #[command(flatten)]
    options: RouterOptions,
}

fn main() -> ExitCode {
    let cli: Cli = parse();
    block_on(
        tokio::runtime::Builder::new_current_thread(),
        agent_operator::router::run(cli.options),
    )
}
