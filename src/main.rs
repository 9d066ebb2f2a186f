//! The `agent-operator` binary: command-line parsing only; each command lives in the library.
//! The LLM router is a binary of its own, `agent-router` (`src/bin/agent-router.rs`).

use std::process::ExitCode;

use agent_operator::process::{block_on, parse, version};
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
    let cli: Cli = parse();
    match cli.command {
        Command::Run(options) => block_on(
            tokio::runtime::Builder::new_multi_thread(),
            agent_operator::runtime::run(options),
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
