//! The formats Kubernetes' own validation and the kubelet enforce on the fields our kinds embed
//! or pass on, as CEL rule text for the schemas: names, label keys and values, quantities, URLs.
//! A mistake is then refused at `kubectl apply`, naming the user's field, instead of failing
//! later in a child object's apply, a ReplicaSet's events or a probe's run time.
//!
//! Regular expressions are RE2 inside CEL single-quoted strings, so each `\` is doubled.

/// A DNS-1123 subdomain: the name of a Secret, ConfigMap, ServiceAccount or our own kinds.
pub const DNS_SUBDOMAIN: &str =
    r"'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'";

/// A key of a Secret's or ConfigMap's data.
pub const DATA_KEY: &str = r"'^[-._a-zA-Z0-9]+$'";

/// A qualified name: a label, annotation, node-selector or toleration key (`app`,
/// `example.com/tier`), each DNS label of the prefix at most 63 characters, the name at most 63.
pub const QUALIFIED_NAME: &str = r"'^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'";

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
pub const LABEL_VALUE: &str = r"'^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'";

/// An environment variable name: printable ASCII without `=` (what the kubelet accepts).
pub const ENV_NAME: &str = r"'^[ -<>-~]+$'";

/// A resource quantity without a sign (`100m`, `512Mi`, `1.5`, `2e3`); `512MB` is not one.
pub const QUANTITY: &str =
    r"'^[+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$'";

/// `QUANTITY` as an OpenAPI `pattern` (no CEL quoting).
pub const QUANTITY_PATTERN: &str =
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$";

/// An HTTP header value: printable characters and tabs, no CR or LF.
pub const HEADER_VALUE: &str = r"'^[^\\x00-\\x08\\x0A-\\x1F\\x7F]*$'";

/// A URL whose authority carries `user:password@`.
pub const URL_WITH_USERINFO: &str = r"'^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@'";

/// The rule that a URL field (`self`) carries no credentials.
pub fn no_userinfo() -> String {
    format!("!self.matches({URL_WITH_USERINFO})")
}

/// A URL whose authority ends in a port outside 1 to 65535 (0, or above 65535).
pub const URL_WITH_BAD_PORT: &str = r"'^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*:(0+|[0-9]{6,}|6553[6-9]|655[4-9][0-9]|65[6-9][0-9]{2}|6[6-9][0-9]{3}|[7-9][0-9]{4})([/?#]|$)'";

/// The rule that a URL field (`self`) has no port outside 1 to 65535.
pub fn url_port_in_range() -> String {
    format!("!self.matches({URL_WITH_BAD_PORT})")
}

/// The rule that a probe (`self`) has exactly one handler, as the kubelet requires.
pub fn one_probe_handler() -> String {
    "(has(self.exec) ? 1 : 0) + (has(self.httpGet) ? 1 : 0) + (has(self.tcpSocket) ? 1 : 0) \
     + (has(self.grpc) ? 1 : 0) == 1"
        .into()
}

/// The rule that a probe's named or numbered port (`self`, an int-or-string) is a valid one.
pub fn probe_port(field: &str) -> String {
    format!(
        "!has({field}) || (type({field}.port) == int ? ({field}.port >= 1 && {field}.port <= 65535) \
         : (string({field}.port).matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && string({field}.port).matches('[a-z]') \
         && size(string({field}.port)) <= 15))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regular expression inside a CEL string literal, as RE2 sees it.
    fn regex(literal: &str) -> regex::Regex {
        let inner = literal.trim_matches('\'').replace("\\\\", "\\");
        regex::Regex::new(&inner).expect("a valid expression")
    }

    #[test]
    fn the_formats_accept_what_kubernetes_accepts_and_refuse_the_rest() {
        let cases: [(&str, &[&str], &[&str]); 6] = [
            (
                DNS_SUBDOMAIN,
                &["openai", "a.b-c", "x1"],
                &["OpenAI", "my_key", "a b", "-a", "a."],
            ),
            (
                QUALIFIED_NAME,
                &["app", "example.com/tier", "A_b.c"],
                &["-app", "a/b/c", "Example.com/x", "x/", ""],
            ),
            (
                LABEL_VALUE,
                &["", "v1", "a.b_c-d"],
                &["-a", "a b", &"x".repeat(64)],
            ),
            (
                ENV_NAME,
                &["PATH", "my.var", "A-B"],
                &["A=B", "", "tab\tname"],
            ),
            (
                QUANTITY,
                &["100m", "512Mi", "1.5", "2e3", "1", ".5"],
                &["512MB", "-1", "1.5.2", "ten", ""],
            ),
            (
                HEADER_VALUE,
                &["org-123", "a\tb"],
                &["org\r\nX-Evil: 1", "a\nb"],
            ),
        ];
        assert_eq!(
            QUANTITY_PATTERN,
            QUANTITY.trim_matches('\'').replace("\\\\", "\\"),
            "the pattern is the CEL literal's regular expression"
        );
        for (literal, good, bad) in cases {
            let re = regex(literal);
            for value in good {
                assert!(re.is_match(value), "{literal} refuses {value:?}");
            }
            for value in bad {
                assert!(!re.is_match(value), "{literal} accepts {value:?}");
            }
        }
        let userinfo = regex(URL_WITH_USERINFO);
        assert!(userinfo.is_match("https://user:sk-1@api.example.com/v1"));
        assert!(!userinfo.is_match("https://api.example.com/v1/@me"));
        let port = regex(URL_WITH_BAD_PORT);
        for bad in [
            "https://a:0/v1",
            "https://a:65536",
            "http://a:99999/x",
            "http://a:123456",
        ] {
            assert!(port.is_match(bad), "{bad}");
        }
        for good in [
            "https://a:1/v1",
            "https://a:65535",
            "http://a:8080/x",
            "https://a/v1:9",
        ] {
            assert!(!port.is_match(good), "{good}");
        }
    }
}
