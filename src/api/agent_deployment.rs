//! The AgentDeployment kind: a long-running agent service with an LLM failover chain.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscalerBehavior, MetricSpec};
use k8s_openapi::api::core::v1::{Affinity, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::budget::{AgentBudget, AgentBudgetStatus};
use super::common::{AgentWorkload, Tool};

/// AgentDeployment runs an agent as a long-lived service. The operator creates and owns its
/// Deployment, Service, ServiceAccount, provider config, and optionally a HorizontalPodAutoscaler,
/// PodDisruptionBudget and NetworkPolicy, and keeps the agent pointed at the first healthy
/// provider of its failover chain.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "agentoperator.dev",
    version = "v1alpha1",
    kind = "AgentDeployment",
    plural = "agentdeployments",
    singular = "agentdeployment",
    namespaced,
    status = "AgentDeploymentStatus",
    shortname = "agentdeploy",
    shortname = "adep",
    category = "agents",
    category = "agentoperator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
    printcolumn(
        name = "Provider",
        type_ = "string",
        json_path = ".status.activeProvider"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        priority = 1
    ),
    printcolumn(
        name = "Tokens",
        type_ = "integer",
        description = "Tokens used in the budget's current window",
        json_path = ".status.budget.usage.totalTokens",
        priority = 1
    ),
    printcolumn(
        name = "Cost",
        type_ = "string",
        description = "Cost in the budget's current window",
        json_path = ".status.budget.usage.cost",
        priority = 1
    ),
    printcolumn(
        name = "Budget",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="BudgetExceeded")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.replicas) || !has(self.autoscaling)").message("spec.replicas and spec.autoscaling are mutually exclusive: remove spec.replicas when autoscaling is on, the HorizontalPodAutoscaler sets the replica count").field_path(".replicas"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.tools) || self.tools.all(t, self.tools.exists_one(u, u.name == t.name))").message("spec.tools has two tools with the same name: tool names must be unique").field_path(".tools"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.ports) || (has(self.router) && !self.router.enabled) || self.ports.all(p, p.containerPort != 8790)").message("port 8790 is the LLM router's inside the pod: choose another spec.ports[].containerPort, or turn the router off with spec.router.enabled: false").field_path(".ports"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.ports) || self.ports.all(p, self.ports.exists_one(q, q.name == p.name))").message("spec.ports has two ports with the same name: port names must be unique").field_path(".ports"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.ports) || self.ports.all(p, self.ports.exists_one(q, q.containerPort == p.containerPort && (has(q.protocol) ? q.protocol : 'TCP') == (has(p.protocol) ? p.protocol : 'TCP')))").message("spec.ports lists the same containerPort and protocol twice: each port number must be unique").field_path(".ports"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.budget) || !has(self.router) || self.router.enabled").message("spec.budget is enforced by the LLM router: remove spec.budget, or turn the router on with spec.router.enabled: true").field_path(".budget"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.budget) || !has(self.ports) || self.ports.all(p, p.containerPort != 8791)").message("port 8791 is where the operator leases the budget to the LLM router: choose another spec.ports[].containerPort").field_path(".ports"))]
// The optional fields that are large and rarely set (autoscaling, budgets, pod metadata, the
// input source, the policies) are boxed: every cached object would otherwise hold room for
// them inline, unused on most (an AgentTask 1,136 → 944 bytes, an AgentDeployment 1,808 →
// 1,240, each cached once per controller).
pub struct AgentDeploymentSpec {
    /// Image, command, env, resources, failover chain and the other fields shared with an
    /// AgentTask's template.
    #[serde(flatten)]
    pub workload: AgentWorkload,

    /// When the kubelet pulls the image: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Ports the agent listens on. Each becomes a port of the agent's Service; with no ports, no
    /// Service is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ports: Vec<AgentPort>,

    // The probes and the affinity are boxed: few agents set them, and each agent is cached
    // twice, with room for all four inline (about 1 KiB) otherwise.
    /// Liveness probe of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(super::rules::one_probe_handler()).message("a probe needs exactly one handler: exec, httpGet, tcpSocket or grpc"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::probe_port("self.httpGet")).message("httpGet.port must be a port number (1-65535) or a port name"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::probe_port("self.tcpSocket")).message("tcpSocket.port must be a port number (1-65535) or a port name"))]
    #[x_kube(validation = kube::core::Rule::new("!has(self.successThreshold) || self.successThreshold <= 1").message("successThreshold must be 1 for liveness and startup probes"))]
    pub liveness_probe: Option<Box<Probe>>,

    /// Readiness probe of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(super::rules::one_probe_handler()).message("a probe needs exactly one handler: exec, httpGet, tcpSocket or grpc"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::probe_port("self.httpGet")).message("httpGet.port must be a port number (1-65535) or a port name"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::probe_port("self.tcpSocket")).message("tcpSocket.port must be a port number (1-65535) or a port name"))]
    pub readiness_probe: Option<Box<Probe>>,

    /// Startup probe of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(super::rules::one_probe_handler()).message("a probe needs exactly one handler: exec, httpGet, tcpSocket or grpc"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::probe_port("self.httpGet")).message("httpGet.port must be a port number (1-65535) or a port name"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::probe_port("self.tcpSocket")).message("tcpSocket.port must be a port number (1-65535) or a port name"))]
    #[x_kube(validation = kube::core::Rule::new("!has(self.successThreshold) || self.successThreshold <= 1").message("successThreshold must be 1 for liveness and startup probes"))]
    pub startup_probe: Option<Box<Probe>>,

    /// Scheduling affinity of the agent's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Box<Affinity>>,

    /// Extra labels and annotations for the agent's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<Box<PodMetadata>>,

    /// Security settings of the agent container beyond the restricted defaults.
    #[serde(default)]
    pub security: AgentSecurity,

    /// Number of agent pods. Mutually exclusive with `autoscaling`; defaults to 1. Set through
    /// the scale subresource by `kubectl scale` and KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Run a HorizontalPodAutoscaler for the agent. While set, the operator never writes the
    /// Deployment's replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Box<Autoscaling>>,

    /// Tool endpoints the agent may call, written into its mounted config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tools: Vec<Tool>,

    /// Restrict the agent's network traffic with a NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<Box<AgentNetworkPolicy>>,

    /// Keep agent pods available during voluntary disruptions with a PodDisruptionBudget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<Box<DisruptionBudget>>,

    /// Most AgentTasks referring to this agent that may run at once; more wait as Queued.
    /// Unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_concurrent_tasks: Option<i32>,

    /// Scale the agent to zero while keeping every other object.
    #[serde(default)]
    pub suspend: bool,

    /// Limits on what the agent's pods spend per day, week or month, enforced by their
    /// routers before each request and during streams. Needs the router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Box<AgentBudget>>,
}

/// Image pull policy of the agent container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// A port the agent listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentPort {
    /// Name of the port, used by the Service (an IANA service name: at most 15 characters).
    #[schemars(length(min = 1, max = 15))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.matches('[a-z]') && !self.contains('--')").message("must be an IANA service name: lower-case letters, digits and '-', with at least one letter, starting and ending with a letter or digit, no '--'"))]
    pub name: String,
    /// Port number in the container.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// Port number on the Service; defaults to `containerPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub service_port: Option<i32>,
    /// TCP, UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
}

/// Network protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum PortProtocol {
    TCP,
    UDP,
    SCTP,
}

/// Labels and annotations added to the agent's pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    /// Extra pod labels. Labels the operator sets for its selector take precedence. Keys are
    /// label keys (`team`, `example.com/tier`), values at most 63 letters, digits, `-`, `_`, `.`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(k, size(k) <= 317 && k.matches({}) && size(self[k]) <= 63 && self[k].matches({}))", super::rules::QUALIFIED_NAME, super::rules::LABEL_VALUE)).message("label keys must be qualified names (e.g. example.com/tier) and values at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations. Keys are qualified names, like label keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(k, size(k) <= 317 && k.matches({}) && size(self[k]) <= 65536)", super::rules::QUALIFIED_NAME)).message("annotation keys must be qualified names (e.g. example.com/note) and values at most 64 KiB"))]
    pub annotations: BTreeMap<String, String>,
}

/// Security settings of the agent container. The pod always runs as non-root, without privilege
/// escalation, with all capabilities dropped and the RuntimeDefault seccomp profile, so it is
/// admitted where Pod Security `restricted` is enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSecurity {
    /// Mount the container's root filesystem read-only. A writable `/tmp` is always mounted.
    #[serde(default = "default_true")]
    pub read_only_root_filesystem: bool,
    /// User ID the agent runs as (never root). Defaults to 65532, so that images whose user is
    /// root or a name, which the kubelet cannot verify as non-root, start as well; set it to the
    /// image's own UID when the image needs it (files only that user may read or write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_147_483_647))]
    pub run_as_user: Option<i64>,
}

impl Default for AgentSecurity {
    fn default() -> Self {
        Self {
            read_only_root_filesystem: true,
            run_as_user: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Autoscaling of the agent by an autoscaling/v2 HorizontalPodAutoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas").message("spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas"))]
#[x_kube(validation = kube::core::Rule::new("has(self.targetCPUUtilizationPercentage) || has(self.targetMemoryUtilizationPercentage) || (has(self.metrics) && size(self.metrics) > 0)").message("spec.autoscaling needs a target: set targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or metrics"))]
pub struct Autoscaling {
    /// Fewest agent pods.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most agent pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilization, in percent of the CPU request, to keep the agent at.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average memory utilization, in percent of the memory request, to keep the agent at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_memory_utilization_percentage: Option<i32>,
    /// Further autoscaling/v2 metrics (pods, object, external), as in a HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = kube::core::Rule::new("self.all(m, (m.type == 'Resource' && has(m.resource)) || (m.type == 'Pods' && has(m.pods)) || (m.type == 'Object' && has(m.object)) || (m.type == 'External' && has(m.external)) || (m.type == 'ContainerResource' && has(m.containerResource)))").message("each metric needs the source its type names: type Resource with resource, Pods with pods, Object with object, External with external, ContainerResource with containerResource"))]
    pub metrics: Vec<MetricSpec>,
    /// Scale-up and scale-down behavior, as in a HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

fn default_min_replicas() -> i32 {
    1
}

/// The agent's NetworkPolicy. Ingress is allowed only to the agent's ports, egress only to DNS,
/// to in-cluster provider and tool Services, and to the listed CIDRs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentNetworkPolicy {
    /// Create the NetworkPolicy.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Extra destinations the agent may reach, as CIDRs (e.g. the address ranges of an external
    /// LLM API, which a NetworkPolicy cannot name by host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_egress_cidrs: Vec<EgressCidr>,
}

/// A CIDR the agent may send traffic to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressCidr {
    /// The address range, e.g. `203.0.113.0/24`.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("isCIDR(self)").message("must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32"))]
    pub cidr: String,
    /// Ports allowed to that range; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, p >= 1 && p <= 65535)").message("ports must be between 1 and 65535"))]
    pub ports: Vec<i32>,
}

/// A PodDisruptionBudget value: a count or a percentage of at most 100.
const INT_OR_PERCENT: &str = "type(self) == int ? self >= 0 : (string(self).matches('^[0-9]{1,3}%$') && int(string(self).replace('%', '')) <= 100)";

/// The agent's PodDisruptionBudget: exactly one of `minAvailable` or `maxUnavailable`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.minAvailable) != has(self.maxUnavailable)").message("spec.disruptionBudget needs exactly one of minAvailable or maxUnavailable"))]
pub struct DisruptionBudget {
    /// Pods that must stay available, as a number or a percentage (`50%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(INT_OR_PERCENT).message("must be a non-negative number or a percentage such as 50%"))]
    pub min_available: Option<IntOrString>,
    /// Pods that may be unavailable, as a number or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(INT_OR_PERCENT).message("must be a non-negative number or a percentage such as 50%"))]
    pub max_unavailable: Option<IntOrString>,
}

/// What the operator observed of the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentDeploymentStatus {
    /// `Ready`, `Progressing`, `Degraded` and `ProvidersReady`, with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the agent's Deployment.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods running the current pod template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Ready pods over desired pods, for display (`2/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Label selector of the agent's pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The provider the agent uses now: the first Ready provider of the failover chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_provider: Option<String>,
    /// Each provider of the failover chain, in chain order, with its readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderState>,
    /// With `spec.budget`: the usage of the current window and the pods' leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Box<AgentBudgetStatus>>,
}

/// The state of one provider of a failover chain, as the AgentDeployment sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderState {
    /// Name of the LLMProvider.
    pub name: String,
    /// The model the agent requests from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether the provider is Ready.
    pub ready: bool,
    /// Why it is not Ready (the LLMProvider's reason, or NotFound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Condition types of an AgentDeployment.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const PROVIDERS_READY: &str = "ProvidersReady";
    /// With `spec.budget`: True while the window's budget is spent.
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
}
