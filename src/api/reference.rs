//! Renders `docs/api.md`, the field reference of every kind, from the CRD schemas themselves,
//! so the reference cannot drift from what the API server enforces.

use std::fmt::Write;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};

/// The whole reference document as Markdown.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::new();
    out.push_str("# API reference: `agentoperator.dev/v1alpha1`\n\n");
    out.push_str(
        "<!-- Generated from the CRD schemas by `UPDATE_GENERATED=1 cargo test --test generated`; do not edit. -->\n\n",
    );
    out.push_str("Every field below is also available through `kubectl explain`, e.g. ");
    out.push_str("`kubectl explain agentdeployment.spec.autoscaling`.\n\n");
    out.push_str(HEALTH_MODEL);
    for crd in crds {
        render_crd(&mut out, crd);
    }
    out
}

/// How each kind's status reads as health, for people and for the tools that judge it.
const HEALTH_MODEL: &str = "## Health\n\n\
Every kind reports the conditions that kstatus (Flux's health checks, `kubectl wait`) and the \
shipped Argo CD health check (`config/argocd/argocd-cm.yaml`) read, with `observedGeneration` on \
the status and on each condition, current after every reconcile, finished tasks included. A \
first status is written as soon as an object is seen, so no tool mistakes \"no status yet\" for \
healthy.\n\n\
- `Ready`: the summary. True when the object does what it was asked: a provider answers with \
its models and accepts its key, an agent's pods run the current version with a Ready \
provider, a task succeeded.\n\
- `Reconciling=True` (present only while true): work in progress that needs no person: the \
first probes of a provider, an agent's Deployment being created or rolled out (or awaiting \
its providers' first verdict), a task pending, queued, backing off or running.\n\
- `Stalled=True` (present only while true): nothing changes until a person acts; the reason \
and message name what to fix. A provider whose Secret or key is missing, whose key is refused \
or that lacks a configured model; an agent with a missing provider, Secret or key (after 10 s \
for objects applied together), a child the API server refuses, a rollout past its deadline, \
or pods that crash, cannot pull their image or cannot be configured; a task that failed or was \
cancelled, or whose agent does not exist (after 10 s).\n\
- `Ready=False` alone: not working and not stuck: a provider that is unreachable, times out or \
answers 5xx or 429, an agent none of whose providers is Ready. It may recover by itself.\n\n\
| state | kstatus | Argo CD |\n\
|---|---|---|\n\
| `Ready=True` | Current | Healthy (Suspended for an agent with `spec.suspend`) |\n\
| `Reconciling=True`, or `observedGeneration` behind | InProgress | Progressing |\n\
| `Stalled=True` | Failed | Degraded |\n\
| `Ready=False` alone | InProgress | Degraded |\n\n\
AgentTasks also keep `Complete` and `Failed` for `kubectl wait --for=condition=Complete`. \
`tests/cluster/health.rs` checks every row with kstatus's and Argo CD's own code.\n\n";

fn render_crd(out: &mut String, crd: &CustomResourceDefinition) {
    let names = &crd.spec.names;
    let _ = writeln!(out, "## {}\n", names.kind);
    let Some(version) = crd.spec.versions.first() else {
        return;
    };
    let Some(schema) = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return;
    };
    if let Some(description) = &schema.description {
        let _ = writeln!(out, "{}\n", description.trim());
    }
    let short = names.short_names.clone().unwrap_or_default().join(", ");
    let categories = names.categories.clone().unwrap_or_default().join(", ");
    let _ = writeln!(
        out,
        "Plural `{}`, short names `{}`, categories `{}`, scope {}.\n",
        names.plural, short, categories, crd.spec.scope
    );
    if let Some(columns) = &version.additional_printer_columns {
        let listed: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let _ = writeln!(out, "`kubectl get` columns: {}.\n", listed.join(", "));
    }
    let properties = schema.properties.clone().unwrap_or_default();
    for part in ["spec", "status"] {
        if let Some(props) = properties.get(part) {
            let _ = writeln!(out, "### {} `.{}`\n", names.kind, part);
            render_rules(out, props);
            out.push_str("| Field | Type | Default | Description |\n|---|---|---|---|\n");
            render_fields(out, part, props);
            out.push('\n');
        }
    }
}

fn render_rules(out: &mut String, schema: &JSONSchemaProps) {
    let Some(rules) = &schema.x_kubernetes_validations else {
        return;
    };
    out.push_str("Rules checked at admission:\n\n");
    for rule in rules {
        let message = rule.message.as_deref().unwrap_or("(no message)");
        let _ = writeln!(out, "- {message}");
    }
    out.push('\n');
}

fn render_fields(out: &mut String, path: &str, schema: &JSONSchemaProps) {
    let required = schema.required.clone().unwrap_or_default();
    for (name, field) in schema.properties.iter().flatten() {
        let field_path = format!("{path}.{name}");
        let mut description = field
            .description
            .as_deref()
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        if required.contains(name) {
            description = format!("**Required.** {description}");
        }
        for rule in field.x_kubernetes_validations.iter().flatten() {
            if let Some(message) = &rule.message {
                let _ = write!(
                    description,
                    " Must hold: {}.",
                    message.trim_end_matches('.')
                );
            }
        }
        let default = field
            .default
            .as_ref()
            .map(|d| format!("`{}`", d.0))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{field_path}` | {} | {default} | {description} |",
            type_of(field)
        );
        // Kubernetes' own types (pod probes, affinity, metrics) are documented upstream;
        // descending into them would repeat the Kubernetes reference.
        if is_kubernetes_type(name) {
            continue;
        }
        match (&field.type_.as_deref(), &field.items) {
            (Some("object"), _) if field.properties.is_some() => {
                render_fields(out, &field_path, field)
            }
            (Some("array"), Some(JSONSchemaPropsOrArray::Schema(items)))
                if items.properties.is_some() =>
            {
                render_fields(out, &format!("{field_path}[]"), items)
            }
            _ => {}
        }
    }
}

fn type_of(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "int or string".to_string();
    }
    let base = schema.type_.clone().unwrap_or_else(|| "any".to_string());
    match (base.as_str(), &schema.items) {
        ("array", Some(JSONSchemaPropsOrArray::Schema(items))) => format!("[]{}", type_of(items)),
        ("string", _) if schema.enum_.is_some() => {
            let values: Vec<String> = schema
                .enum_
                .iter()
                .flatten()
                .map(|v| v.0.as_str().unwrap_or_default().to_string())
                .collect();
            format!("enum: {}", values.join(", "))
        }
        ("object", _) if schema.additional_properties.is_some() => "map".to_string(),
        _ => base,
    }
}

/// Fields whose type is Kubernetes' own (core/v1, autoscaling/v2, meta/v1). Their schemas are
/// documented upstream, and schemars replaces the type's description with the field's, so they
/// are recognised by name; descending into them would repeat the Kubernetes reference.
const KUBERNETES_TYPED_FIELDS: [&str; 14] = [
    "env",
    "envFrom",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "tolerations",
    "affinity",
    "imagePullSecrets",
    "metrics",
    "behavior",
    "conditions",
    "configMapRef",
    "startTime",
];

fn is_kubernetes_type(field_name: &str) -> bool {
    KUBERNETES_TYPED_FIELDS.contains(&field_name)
}
