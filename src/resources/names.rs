//! Names of child objects. A child named after its owner can exceed the limit of its own kind
//! (a Service name is a DNS label of at most 63 characters while an AgentDeployment's name may
//! have 253), so long names are shortened stably: a prefix plus a hash of the full name.

use super::short_hash;

/// Longest name of a Service, and of anything used as a label value.
pub const DNS_LABEL_MAX: usize = 63;
/// Longest name of most namespaced objects.
pub const DNS_SUBDOMAIN_MAX: usize = 253;

/// `base` plus `suffix`, shortened to `max` characters when needed. Equal inputs always give
/// the same name; different inputs give different names.
pub fn child_name(base: &str, suffix: &str, max: usize) -> String {
    let full = if suffix.is_empty() {
        base.to_string()
    } else {
        format!("{base}-{suffix}")
    };
    if full.len() <= max {
        return full;
    }
    let hash = &short_hash(full.as_bytes())[..10];
    let keep = max
        - hash.len()
        - 1
        - if suffix.is_empty() {
            0
        } else {
            suffix.len() + 1
        };
    let prefix = base[..keep.min(base.len())].trim_end_matches(['-', '.']);
    if suffix.is_empty() {
        format!("{prefix}-{hash}")
    } else {
        format!("{prefix}-{hash}-{suffix}")
    }
}

/// A Service's name: a DNS-1035 label (lower-case letters, digits and '-', starting with a
/// letter, at most 63 characters). An AgentDeployment may be named `team.support` or
/// `9-lives`, which a Service cannot be: such names get a cleaned prefix and a hash of the
/// whole name, so two agents never share a Service. Names of letters, digits and '-' keep
/// the plain shortening of [`child_name`].
pub fn service_name(agent: &str) -> String {
    let plain = agent.starts_with(|c: char| c.is_ascii_lowercase())
        && agent
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if plain {
        return child_name(agent, "", DNS_LABEL_MAX);
    }
    let hash = &short_hash(agent.as_bytes())[..10];
    let cleaned: String = agent
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = if cleaned.starts_with(|c: char| c.is_ascii_lowercase()) {
        cleaned
    } else {
        format!("a-{cleaned}")
    };
    let keep = DNS_LABEL_MAX - hash.len() - 1;
    let prefix = cleaned[..keep.min(cleaned.len())].trim_end_matches('-');
    format!("{prefix}-{hash}")
}

/// A label value: at most 63 characters, starting and ending alphanumerically.
pub fn label_value(value: &str) -> String {
    let name = child_name(value, "", DNS_LABEL_MAX);
    name.replace('.', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels_whatever_the_agent_is_called() {
        assert_eq!(service_name("support"), "support");
        let dotted = service_name("team.support");
        let digit = service_name("9-lives");
        let long = service_name(&format!("{}.x", "a".repeat(250)));
        for name in [&dotted, &digit, &long] {
            assert!(name.len() <= DNS_LABEL_MAX, "{name}");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
        assert!(dotted.starts_with("team-support-"));
        assert_ne!(
            service_name("team.support"),
            service_name("team-support"),
            "no two agents share a Service"
        );
        assert_eq!(service_name("team.support"), dotted, "stable");
    }

    #[test]
    fn short_names_are_kept() {
        assert_eq!(
            child_name("support-agent", "", DNS_LABEL_MAX),
            "support-agent"
        );
        assert_eq!(
            child_name("support-agent", "providers", DNS_SUBDOMAIN_MAX),
            "support-agent-providers"
        );
    }

    #[test]
    fn long_names_are_shortened_stably_and_distinctly() {
        let long_a = "a".repeat(200);
        let long_b = format!("{}b", "a".repeat(199));
        let a = child_name(&long_a, "", DNS_LABEL_MAX);
        assert_eq!(a.len(), DNS_LABEL_MAX);
        assert_eq!(a, child_name(&long_a, "", DNS_LABEL_MAX));
        assert_ne!(a, child_name(&long_b, "", DNS_LABEL_MAX));
        let with_suffix = child_name(&long_a, "providers", DNS_LABEL_MAX);
        assert!(with_suffix.ends_with("-providers") && with_suffix.len() == DNS_LABEL_MAX);
    }

    #[test]
    fn label_values_have_no_dots_and_fit() {
        let value = label_value(&format!("agent.{}", "x".repeat(100)));
        assert!(value.len() <= DNS_LABEL_MAX && !value.contains('.'));
    }
}
