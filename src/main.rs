//! The `agent-operator` binary: command-line parsing only; each command lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A Kubernetes operator that runs AI agent workloads: LLMProviders, AgentDeployments and
/// AgentTasks.
#[derive(Parser, Debug)]
#[command(name = "agent-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers.
    Run(agent_operator::runtime::options::RunOptions),
    /// Run the LLM router, the sidecar of agent pods: the OpenAI and Anthropic APIs on loopback
    /// with failover along the pod's provider chain.
    Router(agent_operator::router::RouterOptions),
    /// Serve a read-only web page of the agents, providers and task queue, live, on loopback,
    /// with your kubeconfig.
    Dashboard(agent_operator::dashboard::DashboardOptions),
    /// Print the CustomResourceDefinitions as one multi-document YAML stream
    /// (`agent-operator crds | kubectl apply --server-side -f -`).
    Crds,
    /// Print the version of this binary.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(options) => block_on(
            tokio::runtime::Builder::new_multi_thread(),
            agent_operator::runtime::run(options),
        ),
        Command::Router(options) => block_on(
            tokio::runtime::Builder::new_current_thread(),
            agent_operator::router::run(options),
        ),
        Command::Dashboard(options) => block_on(
            tokio::runtime::Builder::new_multi_thread(),
            agent_operator::dashboard::run(options),
        ),
        Command::Crds => match agent_operator::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!("agent-operator {}", version());
            ExitCode::SUCCESS
        }
    }
}

/// The crate's version, and the source revision when the build was stamped with one (the
/// container image sets `AGENT_OPERATOR_REVISION` at build time).
fn version() -> String {
    match option_env!("AGENT_OPERATOR_REVISION") {
        Some(revision) if !revision.is_empty() => {
            format!("{} ({revision})", env!("CARGO_PKG_VERSION"))
        }
        _ => env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Runs `command` to completion on `runtime`. The operator takes every core; the router serves
/// one pod, where a single thread keeps its memory and latency low.
fn block_on<E: std::fmt::Display>(
    mut runtime: tokio::runtime::Builder,
    command: impl std::future::Future<Output = Result<(), E>>,
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
