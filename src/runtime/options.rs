//! Options of `agent-operator run`. Every flag is also read from an environment variable, so the
//! chart and kustomize configure the operator without rewriting its arguments.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// How a process of this binary logs; shared by `run` and `router`.
#[derive(Args, Clone, Debug)]
pub struct LogOptions {
    /// Log format.
    #[arg(
        long,
        env = "AGENT_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `agent_operator=debug,kube=info`.
    #[arg(long, env = "AGENT_OPERATOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Args, Clone, Debug)]
pub struct RunOptions {
    /// Namespaces to watch, comma-separated; empty watches all namespaces. With a list, the
    /// operator needs only namespaced RBAC (Roles) in those namespaces.
    #[arg(long, env = "AGENT_OPERATOR_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub namespaces: Vec<String>,

    #[command(flatten)]
    pub log: LogOptions,

    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "AGENT_OPERATOR_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_address: SocketAddr,

    /// Objects of one kind reconciled at once.
    #[arg(long, env = "AGENT_OPERATOR_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Elect a leader among replicas through a Lease, so exactly one reconciles.
    #[arg(long, env = "AGENT_OPERATOR_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease; defaults to the pod's namespace (POD_NAMESPACE).
    #[arg(long, env = "AGENT_OPERATOR_LEASE_NAMESPACE", value_parser = parse_namespace)]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "AGENT_OPERATOR_LEASE_NAME",
        default_value = "agent-operator"
    )]
    pub lease_name: String,

    /// Requests per second the operator sends to the Kubernetes API at most, on average; 0
    /// turns client-side limiting off (the API server's priority and fairness still applies).
    #[arg(long, env = "AGENT_OPERATOR_CLIENT_QPS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub client_qps: u32,

    /// Requests the operator may send at once above `--client-qps` after a quiet period.
    #[arg(long, env = "AGENT_OPERATOR_CLIENT_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub client_burst: u32,

    /// Image of the LLM router sidecar in agent pods: this operator's own image, which holds the
    /// router's binary (`/agent-router`) beside the operator's. Changing it rolls every agent's pods.
    #[arg(long, env = "AGENT_OPERATOR_ROUTER_IMAGE", default_value = concat!("ghcr.io/agentoperator/agent-operator:", env!("CARGO_PKG_VERSION")))]
    pub router_image: String,

    /// The OTLP/HTTP endpoint (a collector's base URL, e.g. `http://otel-collector.monitoring:4318`)
    /// for the operator's reconcile spans, and the default of every router's
    /// (`spec.router.otlpEndpoint` overrides it per workload). Unset, nothing is exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Longest time a graceful shutdown waits for in-flight reconciles, in seconds.
    #[arg(long, env = "AGENT_OPERATOR_SHUTDOWN_TIMEOUT", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub shutdown_timeout_seconds: u64,
}

/// A namespace name must be a DNS label; a typo is refused at start instead of watching nothing.
pub fn parse_namespace(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!(
            "'{value}' is not a namespace name: use lower-case letters, digits and '-', at most 63 characters"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunOptions,
    }

    #[test]
    fn namespaces_are_a_validated_list() {
        let cli = Cli::try_parse_from(["x", "--namespaces", "team-a,team-b"]).expect("valid");
        assert_eq!(cli.run.namespaces, ["team-a", "team-b"]);
        let error = Cli::try_parse_from(["x", "--namespaces", "Team_A"])
            .err()
            .expect("invalid");
        assert!(
            error
                .to_string()
                .contains("'Team_A' is not a namespace name")
        );
    }

    #[test]
    fn defaults_watch_everything_and_log_json() {
        let cli = Cli::try_parse_from(["x"]).expect("valid");
        assert!(cli.run.namespaces.is_empty());
        assert_eq!(cli.run.log.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["x", "--concurrency", "0"]).is_err());
        assert_eq!((cli.run.client_qps, cli.run.client_burst), (50, 100));
    }

    #[test]
    fn client_limits_can_turn_off_but_not_go_negative() {
        let cli = Cli::try_parse_from(["x", "--client-qps", "0"]).expect("0 turns limiting off");
        assert_eq!(cli.run.client_qps, 0);
        assert!(Cli::try_parse_from(["x", "--client-burst", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--client-qps", "-1"]).is_err());
    }
}
