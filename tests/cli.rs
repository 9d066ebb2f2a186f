//! The binary's command line without a cluster: generated output and clear start-up errors.

use std::process::Command;

fn operator(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agent-operator"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("the binary runs")
}

#[test]
fn crds_prints_all_three_definitions() {
    let output = operator(&["crds"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    for name in [
        "llmproviders.agentoperator.dev",
        "agentdeployments.agentoperator.dev",
        "agenttasks.agentoperator.dev",
    ] {
        assert!(text.contains(&format!("name: {name}")), "{name} is printed");
    }
}

#[test]
fn an_invalid_flag_is_named_with_its_fix() {
    let output = operator(&["run", "--namespaces", "Team_A"]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("--namespaces") && said.contains("'Team_A' is not a namespace name"),
        "{said}"
    );
}

#[test]
fn no_cluster_configuration_is_one_clear_error_line() {
    let output = operator(&["run", "--metrics-address", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {said}");
    assert!(
        lines[0].starts_with("error: no usable kubeconfig") && lines[0].contains("set KUBECONFIG"),
        "{said}"
    );
}

#[test]
fn an_invalid_log_level_is_named() {
    let output = operator(&["run", "--log-level", "agent_operator=loud"]);
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("--log-level 'agent_operator=loud'"), "{said}");
}

#[test]
fn the_dashboard_without_a_cluster_is_one_clear_error_line_and_prints_no_address() {
    let output = operator(&["dashboard", "--port", "0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no address is printed");
    let said = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {said}");
    assert!(
        lines[0].starts_with("error: no usable kubeconfig") && lines[0].contains("--context"),
        "{said}"
    );
}

#[test]
fn the_dashboard_check_fails_when_nothing_serves() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let output = operator(&["dashboard", "--check", "--port", &port.to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("is not healthy"), "{said}");
}

/// `e2e/test` builds with the revision stamped (`AGENT_OPERATOR_REVISION`), which clap's own
/// `--version` would leave out.
#[test]
fn both_binaries_print_the_version_command_s_text() {
    let stdout = |output: std::process::Output| {
        assert!(output.status.success());
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let version = stdout(operator(&["version"]));
    assert!(version.starts_with("agent-operator "), "{version}");
    assert_eq!(stdout(operator(&["--version"])), version);
    let router = Command::new(env!("CARGO_BIN_EXE_agent-router"))
        .arg("--version")
        .output()
        .expect("the router runs");
    assert_eq!(
        stdout(router),
        version.replacen("agent-operator", "agent-router", 1)
    );
}
