//! Makes text from a provider safe to put in a condition message, an event or a log line.
//!
//! Providers sometimes echo part of the key they refused ("Incorrect API key provided:
//! sk-abc...xyz"); nothing key-like may leave the process.

/// Longest message kept from a provider's answer.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// Removes the credential and anything that looks like a key, and bounds the length.
pub fn scrub(text: &str, credential: Option<&str>) -> String {
    let mut cleaned = text.to_string();
    if let Some(secret) = credential.filter(|s| !s.is_empty()) {
        cleaned = cleaned.replace(secret, "[redacted]");
    }
    let words: Vec<String> = cleaned
        .split_whitespace()
        .map(|word| {
            if looks_like_key(word) {
                "[redacted]".to_string()
            } else {
                word.to_string()
            }
        })
        .collect();
    let joined = words.join(" ");
    let mut bounded: String = joined.chars().take(MAX_MESSAGE_CHARS).collect();
    if joined.chars().count() > MAX_MESSAGE_CHARS {
        bounded.push('…');
    }
    bounded
}

/// A word is key-like when it carries a known key prefix or is a long run of token characters.
fn looks_like_key(word: &str) -> bool {
    let token: String = word
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_')
        .to_string();
    const PREFIXES: [&str; 4] = ["sk-", "sk_", "key-", "Bearer"];
    let prefixed = PREFIXES
        .iter()
        .any(|p| token.starts_with(p) && token.len() > p.len() + 6);
    // Azure keys are 32 hex digits; model names are shorter or hyphenated words.
    let long_token = token.len() >= 32
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && token.chars().any(|c| c.is_ascii_digit())
        && token.matches('-').count() < 4;
    prefixed || long_token
}

/// `url` without the `user:password@` part of its authority. The schema refuses such URLs; an
/// object stored before that rule must still never have its credentials copied into a
/// ConfigMap, a status, an event, a log line or an error message (HTTP clients quote the URL).
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{tail}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_cut_from_urls_and_nothing_else() {
        assert_eq!(
            without_userinfo("https://user:sk-abc@api.example.com:8443/v1?x=a@b"),
            "https://api.example.com:8443/v1?x=a@b"
        );
        assert_eq!(
            without_userinfo("http://sk-only@ollama:11434"),
            "http://ollama:11434"
        );
        assert_eq!(
            without_userinfo("https://api.openai.com/v1/users/@me"),
            "https://api.openai.com/v1/users/@me"
        );
        assert_eq!(without_userinfo("not a url"), "not a url");
    }

    #[test]
    fn credential_and_key_like_words_are_removed() {
        let said = scrub(
            "Incorrect API key provided: sk-proj-abcdef123456. You can find your key",
            Some("secret-value"),
        );
        assert_eq!(
            said,
            "Incorrect API key provided: [redacted] You can find your key"
        );
        let said = scrub("token secret-value was refused", Some("secret-value"));
        assert!(!said.contains("secret-value"));
        let said = scrub("id 0123456789abcdef0123456789abcdef is bad", None);
        assert_eq!(said, "id [redacted] is bad");
    }

    #[test]
    fn ordinary_words_and_model_names_stay() {
        for text in [
            "model gpt-4o-mini-2024-07-18 not found",
            "model claude-3-5-sonnet-20241022 not found",
        ] {
            assert_eq!(scrub(text, None), text);
        }
    }

    #[test]
    fn long_messages_are_bounded() {
        let said = scrub(&"word ".repeat(100), None);
        assert_eq!(said.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(said.ends_with('…'));
    }
}
