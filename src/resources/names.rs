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

/// A label value: at most 63 characters, starting and ending alphanumerically.
pub fn label_value(value: &str) -> String {
    let name = child_name(value, "", DNS_LABEL_MAX);
    name.replace('.', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

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
