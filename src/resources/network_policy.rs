//! The NetworkPolicy of an agent with `spec.networkPolicy.enabled`: ingress only to the agent's
//! ports; egress only to DNS, to the providers and tools, and to the listed CIDRs.
//!
//! A NetworkPolicy selects pods and IP ranges, not host names. So an endpoint whose host is an
//! IP address becomes a /32 (or /128) block; a host `<service>.<namespace>.svc[.cluster.local]`
//! allows that namespace on the endpoint's port; an external host name cannot be expressed and
//! must be covered by `allowedEgressCidrs` (documented on the field).

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::selector_labels;
use crate::api::AgentDeployment;

/// Where an endpoint URL lets the agent send traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressTarget {
    Ip { address: IpAddr, port: u16 },
    Namespace { namespace: String, port: u16 },
}

/// The egress target of an endpoint URL, `None` for external host names.
pub fn egress_target(url: &str) -> Option<EgressTarget> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host.trim_matches(['[', ']']), port.parse().ok()?)
        }
        _ => (authority.trim_matches(['[', ']']), default_port),
    };
    if let Ok(address) = host.parse::<IpAddr>() {
        return Some(EgressTarget::Ip { address, port });
    }
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [_, namespace, "svc"] | [_, namespace, "svc", "cluster", "local"] => {
            Some(EgressTarget::Namespace {
                namespace: (*namespace).to_string(),
                port,
            })
        }
        _ => None,
    }
}

pub fn network_policy(
    agent: &AgentDeployment,
    name: &str,
    provider_endpoints: &[String],
) -> Option<NetworkPolicy> {
    let policy = agent.spec.network_policy.as_ref().filter(|p| p.enabled)?;
    let agent_name = agent.metadata.name.clone().unwrap_or_default();
    let tcp_port = |port: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };

    // The router's budget lease is token-protected, and the operator calls it from wherever
    // it runs: the port is open to any source, like the agent's own.
    let leased = agent.spec.budget.is_some()
        && super::router_sidecar::router_of(&agent.spec.workload).is_some();
    let ingress_ports: Vec<NetworkPolicyPort> = agent
        .spec
        .ports
        .iter()
        .map(|p| p.container_port)
        .chain(leased.then_some(i32::from(super::budget_lease::LEASE_PORT)))
        .map(tcp_port)
        .collect();
    let ingress = (!ingress_ports.is_empty()).then(|| {
        vec![NetworkPolicyIngressRule {
            ports: Some(ingress_ports),
            from: None,
        }]
    });

    let dns = NetworkPolicyEgressRule {
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".into()),
                ..NetworkPolicyPort::default()
            },
            tcp_port(53),
        ]),
        to: None,
    };
    let mut egress = vec![dns];
    let endpoints = provider_endpoints
        .iter()
        .cloned()
        .chain(agent.spec.tools.iter().map(|t| t.url.clone()));
    for target in endpoints.filter_map(|url| egress_target(&url)) {
        let (peer, port) = match target {
            EgressTarget::Ip { address, port } => {
                let prefix = if address.is_ipv4() { 32 } else { 128 };
                (
                    NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: format!("{address}/{prefix}"),
                            except: None,
                        }),
                        ..NetworkPolicyPeer::default()
                    },
                    port,
                )
            }
            EgressTarget::Namespace { namespace, port } => (
                NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(
                            [("kubernetes.io/metadata.name".to_string(), namespace)].into(),
                        ),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                },
                port,
            ),
        };
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(i32::from(port))]),
            to: Some(vec![peer]),
        });
    }
    for cidr in &policy.allowed_egress_cidrs {
        egress.push(NetworkPolicyEgressRule {
            ports: (!cidr.ports.is_empty())
                .then(|| cidr.ports.iter().map(|p| tcp_port(*p)).collect()),
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.cidr.clone(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            }]),
        });
    }

    Some(NetworkPolicy {
        metadata: super::child_metadata(agent, name),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&agent_name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress.unwrap_or_default()),
            egress: Some(egress),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_ip_blocks_or_namespaces() {
        assert_eq!(
            egress_target("http://10.1.2.3:8000/v1"),
            Some(EgressTarget::Ip {
                address: "10.1.2.3".parse().expect("ip"),
                port: 8000
            })
        );
        assert_eq!(
            egress_target("http://ollama.llm.svc.cluster.local:11434"),
            Some(EgressTarget::Namespace {
                namespace: "llm".into(),
                port: 11434
            })
        );
        assert_eq!(
            egress_target("https://vllm.models.svc/v1"),
            Some(EgressTarget::Namespace {
                namespace: "models".into(),
                port: 443
            })
        );
        assert_eq!(egress_target("https://api.openai.com/v1"), None);
        assert_eq!(
            egress_target("http://[::1]:9000"),
            Some(EgressTarget::Ip {
                address: "::1".parse().expect("ip"),
                port: 9000
            })
        );
    }
}
