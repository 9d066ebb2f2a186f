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
    /// Print the CustomResourceDefinitions as one multi-document YAML stream
    /// (`agent-operator crds | kubectl apply --server-side -f -`).
    Crds,
    /// Print the version of this binary.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
            println!("agent-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
