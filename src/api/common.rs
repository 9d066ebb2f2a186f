//! Small types shared by several kinds: references, durations and pod-shape fragments.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest name a namespaced object may have (a DNS subdomain).
pub const MAX_NAME_LENGTH: u32 = 253;

/// A duration written as a string in Go's `time.ParseDuration` format (`30s`, `5m`, `1h30m`),
/// the format every Kubernetes API uses.
///
/// The schema carries a CEL rule with the same grammar that the parser accepts, so a value the
/// API server admits always deserializes here: an unparseable object in a watch stream would
/// otherwise stall every reconcile of its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("{0}")]
    Syntax(#[from] kube::core::duration::ParseError),
    #[error("a duration must not be negative")]
    Negative,
}

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Self(value)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed: kube::core::Duration = s.parse()?;
        if parsed.is_negative() {
            return Err(DurationError::Negative);
        }
        Ok(Self(parsed.into()))
    }
}

/// Formats like Go's `time.Duration.String()` (`1h30m0s`, `500ms`), the form `kubectl` users
/// know from every other Kubernetes duration.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0;
        if total.is_zero() {
            return f.write_str("0s");
        }
        if total < std::time::Duration::from_secs(1) {
            return write!(f, "{}ms", total.as_millis());
        }
        let secs = total.as_secs();
        let (hours, minutes, seconds) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        let millis = total.subsec_millis();
        let seconds = if millis == 0 {
            format!("{seconds}s")
        } else {
            let fraction = format!("{millis:03}");
            format!("{seconds}.{}s", fraction.trim_end_matches('0'))
        };
        match (hours, minutes) {
            (0, 0) => f.write_str(&seconds),
            (0, m) => write!(f, "{m}m{seconds}"),
            (h, m) => write!(f, "{h}h{m}m{seconds}"),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The regular expression of a non-negative Go duration, as a CEL string literal. At most five
/// digits per number keep every value within CEL's duration range (about 292 years), so a rule
/// comparing durations never fails with a conversion error on a huge value.
const DURATION_PATTERN: &str = r"'^([0-9]{1,5}(\\.[0-9]+)?(ns|us|ms|s|m|h))+$'";

/// A rule that the duration `field` is longer than zero, for fields where zero cannot work.
pub fn positive_duration(field: &str) -> String {
    rule_on_durations(&[field], &format!("duration({field}) > duration('0s')"))
}

/// Guards a CEL rule that calls `duration()` on some fields so that it holds when any of them is
/// not a valid duration: the field's own rule reports that clearly, and the guarded rule would
/// only add a confusing "type conversion error".
pub fn rule_on_durations(fields: &[&str], rule: &str) -> String {
    let guards: Vec<String> = fields
        .iter()
        .map(|field| format!("!{field}.matches({DURATION_PATTERN})"))
        .collect();
    format!("{} || ({rule})", guards.join(" || "))
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches({DURATION_PATTERN})"),
                "message": "must be a duration such as 500ms, 30s, 5m or 1h30m (units ms, s, m, h; at most 5 digits per number)",
            }],
        })
    }
}

/// A key of a Secret in the same namespace as the object that refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::DNS_SUBDOMAIN)).message("must be a Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::DATA_KEY)).message("must be a Secret key: letters, digits, '-', '_' and '.'"))]
    pub key: String,
}

/// A key of a ConfigMap in the same namespace as the object that refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::DNS_SUBDOMAIN)).message("must be a ConfigMap name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
    /// Key within the ConfigMap's data.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::DATA_KEY)).message("must be a ConfigMap key: letters, digits, '-', '_' and '.'"))]
    pub key: String,
}

/// One link of a failover chain: an LLMProvider in the same namespace, optionally with the model
/// to request from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// Name of an LLMProvider in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::DNS_SUBDOMAIN)).message("must be an LLMProvider name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
    /// Model to use with this provider. Defaults to the provider's `defaultModel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
}

/// An environment variable of the agent container taken from a Secret key, so the value is
/// resolved by the kubelet and never copied into a pod spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretEnv {
    /// Name of the environment variable in the agent container, e.g. `GITHUB_TOKEN`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a valid environment variable name: letters, digits and '_', not starting with a digit"))]
    pub name: String,
    /// The Secret key that holds the value.
    pub secret_key_ref: SecretKeyRef,
}

/// A tool endpoint the agent may call. Tools are listed in the mounted agent config and, when
/// the network policy is on, are the only destinations besides the providers the agent may reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// Name of the tool, unique within the agent.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$')").message("must be lower-case letters, digits, '-' or '_', starting and ending with a letter or digit"))]
    pub name: String,
    /// URL of the tool's endpoint. It must carry no credentials: give the agent those through
    /// `secrets`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("must be an absolute http:// or https:// URL with a host"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::no_userinfo()).message("must not contain credentials (user:password@): the URL is written into the agent's config; pass tool credentials with spec.secrets"))]
    #[x_kube(validation = kube::core::Rule::new(super::rules::url_port_in_range()).message("the port must be between 1 and 65535"))]
    pub url: String,
    /// What the tool does, passed to the agent in its config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// The container and pod fields every agent workload has, whether it is a long-running
/// AgentDeployment or the inline template of an AgentTask. Flattened into both specs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.providers) || self.providers.all(p, self.providers.exists_one(q, q.name == p.name))").message("the failover chain (providers) names the same LLMProvider twice: list each provider once, in failover order").field_path(".providers"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.secrets) || self.secrets.all(s, self.secrets.exists_one(t, t.name == s.name))").message("secrets names the same environment variable twice: each secrets[].name must be unique").field_path(".secrets"))]
pub struct AgentWorkload {
    /// Container image of the agent, e.g. `ghcr.io/acme/support-agent:1.4.2`.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = kube::core::Rule::new("!self.matches('\\\\s')").message("must be an image reference without spaces, e.g. ghcr.io/acme/agent:1.4.2"))]
    pub image: String,

    /// Entrypoint override for the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments for the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub args: Vec<String>,

    /// Environment variables of the agent container. Use `secrets` for credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(e, e.name.matches({}))", super::rules::ENV_NAME)).message("each env[].name must be printable characters without '=' (the kubelet refuses others)"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(e, !(has(e.value) && e.value != '' && has(e.valueFrom)))").message("an env entry sets value or valueFrom, not both"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(e, !has(e.valueFrom) || (has(e.valueFrom.configMapKeyRef) ? 1 : 0) + (has(e.valueFrom.secretKeyRef) ? 1 : 0) + (has(e.valueFrom.fieldRef) ? 1 : 0) + (has(e.valueFrom.resourceFieldRef) ? 1 : 0) + (has(e.valueFrom.fileKeyRef) ? 1 : 0) == 1)").message("an env entry's valueFrom needs exactly one source: configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef or fileKeyRef"))]
    pub env: Vec<EnvVar>,

    /// ConfigMaps and Secrets whose keys become environment variables of the agent container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(s, has(s.configMapRef) != has(s.secretRef))").message("each envFrom entry needs exactly one of configMapRef or secretRef"))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(s, (!has(s.configMapRef) || s.configMapRef.name.matches({dns})) && (!has(s.secretRef) || s.secretRef.name.matches({dns})))", dns = super::rules::DNS_SUBDOMAIN)).message("envFrom names a ConfigMap or Secret by an invalid name: lower-case letters, digits, '-' and '.'"))]
    pub env_from: Vec<EnvFromSource>,

    /// CPU and memory requests and limits of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The ordered failover chain: LLMProviders in this namespace, first choice first. The agent
    /// uses the first Ready provider; the mounted config lists Ready providers first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub providers: Vec<ProviderRef>,

    /// Extra Secret keys the agent needs, such as tool API keys, exposed as environment variables
    /// that the kubelet resolves (the value never appears in the pod spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub secrets: Vec<SecretEnv>,

    /// ServiceAccount the pods run as. For an AgentDeployment the operator creates a dedicated
    /// one when unset; a task's worker uses the agent's, or the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches({})", super::rules::DNS_SUBDOMAIN)).message("must be a ServiceAccount name: lower-case letters, digits, '-' and '.'"))]
    pub service_account_name: Option<String>,

    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(k, size(k) <= 317 && k.matches({}) && size(self[k]) <= 63 && self[k].matches({}))", super::rules::QUALIFIED_NAME, super::rules::LABEL_VALUE)).message("nodeSelector keys must be label keys (e.g. topology.kubernetes.io/zone) and values label values (at most 63 letters, digits, '-', '_' or '.')"))]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, !has(t.operator) || t.operator in ['Exists', 'Equal'])").message("a toleration's operator is Exists or Equal"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, !has(t.effect) || t.effect in ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute'])").message("a toleration's effect is NoSchedule, PreferNoSchedule or NoExecute"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || t.value == '')").message("a toleration with operator Exists takes no value"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, has(t.key) && t.key != '' || (has(t.operator) && t.operator == 'Exists'))").message("a toleration without a key must use operator Exists"))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(t, (!has(t.key) || t.key == '' || (size(t.key) <= 317 && t.key.matches({}))) && (!has(t.value) || (size(t.value) <= 63 && t.value.matches({}))))", super::rules::QUALIFIED_NAME, super::rules::LABEL_VALUE)).message("a toleration's key must be a label key and its value a label value"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, !has(t.tolerationSeconds) || (has(t.effect) && t.effect == 'NoExecute'))").message("tolerationSeconds applies only to effect NoExecute"))]
    pub tolerations: Vec<Toleration>,

    /// Secrets holding credentials for pulling the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(s, s.name.matches({}))", super::rules::DNS_SUBDOMAIN)).message("each imagePullSecrets[].name must be a Secret name: lower-case letters, digits, '-' and '.'"))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// The LLM router sidecar: one local endpoint in every pod with providers, serving the
    /// OpenAI and Anthropic APIs and failing over along `providers` request by request. The
    /// agent container gets `OPENAI_BASE_URL` and `ANTHROPIC_BASE_URL` and never the provider
    /// credentials, which only the router reads.
    #[serde(default)]
    pub router: RouterSpec,
}

/// The in-pod LLM router's settings. See `docs/agent-contract.md` for both modes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(rule_on_durations(&["self.firstByteTimeout", "self.requestTimeout"], "duration(self.firstByteTimeout) <= duration(self.requestTimeout)")).message("spec.router.firstByteTimeout must not exceed spec.router.requestTimeout"))]
pub struct RouterSpec {
    /// Run the router. When false, the agent container gets the provider credentials mounted
    /// and reads `providers.json` itself (the mounted contract).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Overall deadline of one request from the agent, across every provider tried.
    #[serde(default = "default_router_request_timeout")]
    #[x_kube(validation = kube::core::Rule::new(positive_duration("self")).message("must be longer than 0s"))]
    pub request_timeout: Duration,
    /// A provider that sends no byte within this time is abandoned for the next one. For a
    /// non-streamed completion the first byte comes with the whole answer, so a hung provider
    /// holds such a request this long before the next provider is tried.
    #[serde(default = "default_router_first_byte_timeout")]
    #[x_kube(validation = kube::core::Rule::new(positive_duration("self")).message("must be longer than 0s"))]
    pub first_byte_timeout: Duration,
    /// Longest silence between two events of a streamed answer. Before its first content the
    /// provider is abandoned for the next one; after it, the stream ends with an error event.
    #[serde(default = "default_router_stream_idle_timeout")]
    #[x_kube(validation = kube::core::Rule::new(positive_duration("self")).message("must be longer than 0s"))]
    pub stream_idle_timeout: Duration,
    /// Providers tried for one request at most, the first included.
    #[serde(default = "default_router_max_attempts")]
    #[schemars(range(min = 1, max = 16))]
    pub max_attempts: i32,
    /// Consecutive failures after which a provider is skipped for `circuitOpenDuration`.
    #[serde(default = "default_router_circuit_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub circuit_failure_threshold: i32,
    /// How long a provider whose circuit opened is skipped before one request tries it again.
    #[serde(default = "default_router_circuit_open")]
    pub circuit_open_duration: Duration,
    /// CPU and memory of the router container; defaults to a small request and a 64Mi limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where the router exports its OpenTelemetry spans and GenAI metrics: an OTLP/HTTP base
    /// URL such as `http://otel-collector.monitoring:4318`. Defaults to the operator's
    /// `--otlp-endpoint` (the chart's `telemetry.otlpEndpoint`); unset there too, nothing is
    /// exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("must be an absolute http:// or https:// URL with a host, e.g. http://otel-collector.monitoring:4318"))]
    pub otlp_endpoint: Option<String>,
    /// Percent of the agent's requests that start a trace of their own, when the router
    /// exports (`otlpEndpoint`), chosen at random per request; unset, every one. A request
    /// whose agent sent a `traceparent` follows its sampled flag instead, so an agent's
    /// sampled trace is never cut. The GenAI metrics count every request either way. Lower it
    /// on a busy agent: a span costs the router more than the metrics do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub trace_sampling_percent: Option<i32>,
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            request_timeout: default_router_request_timeout(),
            first_byte_timeout: default_router_first_byte_timeout(),
            stream_idle_timeout: default_router_stream_idle_timeout(),
            max_attempts: default_router_max_attempts(),
            circuit_failure_threshold: default_router_circuit_threshold(),
            circuit_open_duration: default_router_circuit_open(),
            resources: None,
            otlp_endpoint: None,
            trace_sampling_percent: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_router_request_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_router_first_byte_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_router_stream_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_router_max_attempts() -> i32 {
    3
}
fn default_router_circuit_threshold() -> i32 {
    3
}
fn default_router_circuit_open() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_in_go_format() {
        for text in ["30s", "5m0s", "1h30m0s", "500ms", "0s", "1.5s"] {
            let parsed: Duration = text.parse().expect(text);
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            "90s".parse::<Duration>().map(|d| d.as_std().as_secs()),
            Ok(90)
        );
    }

    #[test]
    fn duration_rule_guard_names_every_field() {
        let rule = rule_on_durations(
            &["self.a", "self.b"],
            "duration(self.a) <= duration(self.b)",
        );
        assert!(rule.starts_with("!self.a.matches('^"));
        assert!(rule.contains("|| !self.b.matches('^"));
        assert!(rule.ends_with("|| (duration(self.a) <= duration(self.b))"));
    }

    #[test]
    fn negative_and_unitless_durations_are_rejected() {
        assert!("-5s".parse::<Duration>().is_err());
        assert!("5".parse::<Duration>().is_err());
        assert!(serde_json::from_str::<Duration>("\"-1m\"").is_err());
    }
}
