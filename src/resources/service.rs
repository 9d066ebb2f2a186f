//! The Service in front of an agent's ports.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::selector_labels;
use crate::api::AgentDeployment;

/// `None` when the agent declares no ports: there is nothing to serve.
pub fn service(agent: &AgentDeployment, name: &str) -> Option<Service> {
    if agent.spec.ports.is_empty() {
        return None;
    }
    let agent_name = agent.metadata.name.clone().unwrap_or_default();
    let ports = agent
        .spec
        .ports
        .iter()
        .map(|port| ServicePort {
            name: Some(port.name.clone()),
            port: port.service_port.unwrap_or(port.container_port),
            target_port: Some(IntOrString::String(port.name.clone())),
            protocol: Some(
                port.protocol
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "TCP".into()),
            ),
            ..ServicePort::default()
        })
        .collect();
    Some(Service {
        metadata: super::child_metadata(agent, name),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&agent_name)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
