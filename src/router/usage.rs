//! Token usage as each API defines it, in one shape the router counts. OpenAI's `prompt_tokens`
//! includes the cached prompt tokens and names them in `prompt_tokens_details.cached_tokens`;
//! Anthropic's `input_tokens` excludes them and reports `cache_read_input_tokens` and
//! `cache_creation_input_tokens` beside it. Pure, so each conversion is unit-tested.

use serde_json::{Value, json};

use super::json::value_at;

/// The tokens of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached or not (OpenAI's `prompt_tokens`).
    pub prompt: u64,
    pub completion: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read: u64,
    /// Prompt tokens written to the provider's cache (Anthropic only).
    pub cache_write: u64,
}

fn field(usage: &Value, path: &[&str]) -> Option<u64> {
    value_at(usage, path).and_then(Value::as_u64)
}

impl Usage {
    /// From an OpenAI `usage` object.
    pub fn from_openai(usage: &Value) -> Self {
        Self {
            prompt: field(usage, &["prompt_tokens"]).unwrap_or(0),
            completion: field(usage, &["completion_tokens"]).unwrap_or(0),
            cache_read: field(usage, &["prompt_tokens_details", "cached_tokens"]).unwrap_or(0),
            cache_write: 0,
        }
    }

    /// From an Anthropic `usage` object.
    pub fn from_anthropic(usage: &Value) -> Self {
        let mut counted = Self::default();
        counted.merge_anthropic(usage);
        counted
    }

    /// Takes the fields an Anthropic `usage` object carries. Streams report usage in parts:
    /// `message_start` has the input side, `message_delta` the cumulative output (and, since
    /// 2025, the input side again), so a field absent from one event keeps its earlier value.
    pub fn merge_anthropic(&mut self, usage: &Value) {
        let uncached = field(usage, &["input_tokens"]).unwrap_or_else(|| self.uncached_prompt());
        if let Some(read) = field(usage, &["cache_read_input_tokens"]) {
            self.cache_read = read;
        }
        if let Some(write) = field(usage, &["cache_creation_input_tokens"]) {
            self.cache_write = write;
        }
        self.prompt = uncached + self.cache_read + self.cache_write;
        if let Some(output) = field(usage, &["output_tokens"]) {
            self.completion = output;
        }
    }

    /// OpenAI's `usage` object.
    pub fn openai(&self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        });
        if self.cache_read > 0 {
            usage["prompt_tokens_details"] = json!({"cached_tokens": self.cache_read});
        }
        usage
    }

    /// Anthropic's `usage` object.
    pub fn anthropic(&self) -> Value {
        json!({
            "input_tokens": self.uncached_prompt(),
            "output_tokens": self.completion,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
        })
    }

    /// Prompt tokens that were neither read from nor written to a cache.
    pub fn uncached_prompt(&self) -> u64 {
        self.prompt
            .saturating_sub(self.cache_read + self.cache_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_cached_tokens_count_into_the_prompt_as_openai_defines_it() {
        let usage = Usage::from_anthropic(&json!({
            "input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
        }));
        assert_eq!(
            usage,
            Usage {
                prompt: 130,
                completion: 5,
                cache_read: 100,
                cache_write: 20
            }
        );
        assert_eq!(
            usage.openai(),
            json!({"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                   "prompt_tokens_details": {"cached_tokens": 100}})
        );
        assert_eq!(usage.anthropic()["input_tokens"], 10);
    }

    #[test]
    fn streamed_anthropic_usage_merges_across_events() {
        let mut usage = Usage::from_anthropic(&json!({
            "input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 40,
        }));
        usage.merge_anthropic(&json!({"output_tokens": 9}));
        assert_eq!(
            (usage.prompt, usage.completion, usage.cache_read),
            (43, 9, 40)
        );
    }

    #[test]
    fn openai_usage_round_trips_with_its_cached_tokens() {
        let openai = json!({"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52,
                            "prompt_tokens_details": {"cached_tokens": 32}});
        let usage = Usage::from_openai(&openai);
        assert_eq!(usage.openai(), openai);
        assert_eq!(usage.anthropic()["input_tokens"], 18);
        assert_eq!(usage.anthropic()["cache_read_input_tokens"], 32);
    }
}
