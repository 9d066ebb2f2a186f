//! JSON lookups that allocate nothing, and event writes that allocate only the event.
//!
//! `serde_json::Value::pointer` unescapes every token of its path with two `str::replace`
//! calls, two allocations a token: under callgrind that was a tenth of the router's
//! instructions on a streamed, translated answer, where each event is looked into three or
//! four times. The router's paths are constants, so they are given as their segments.

use serde::Serialize;
use serde_json::Value;

/// The value at `path` (`["choices", "0", "delta"]`), as `Value::pointer` finds
/// `/choices/0/delta`: object members by name, array elements by index.
pub fn value_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |value, segment| match value {
        Value::Object(map) => map.get(*segment),
        Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
        _ => None,
    })
}

/// One server-sent event: its `head` in parts (`["data: "]`, `["event: ", name, "\ndata: "]`),
/// `data` as compact JSON, and the blank line that ends it. Written straight into the event's
/// buffer, where `format!` would go through `Display` one token at a time.
pub fn sse(head: &[&str], data: &impl Serialize) -> String {
    let mut out = Vec::with_capacity(192);
    for part in head {
        out.extend_from_slice(part.as_bytes());
    }
    // Serializing a `Value`, or a struct of strings and numbers, into memory cannot fail.
    let _ = serde_json::to_writer(&mut out, data);
    out.extend_from_slice(b"\n\n");
    // serde_json writes UTF-8, and `head` is a `str`.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_path_finds_what_pointer_finds() {
        let chunk = json!({"choices": [{"delta": {"content": "Hi", "tool_calls": [{"index": 2}]}}],
                           "usage": null, "n": 1});
        for path in [
            "",
            "/choices",
            "/choices/0",
            "/choices/0/delta/content",
            "/choices/0/delta/tool_calls/0/index",
            "/choices/1",
            "/choices/x",
            "/usage",
            "/usage/prompt_tokens",
            "/n/0",
            "/missing/deeper",
        ] {
            let segments: Vec<&str> = path.split('/').skip(1).collect();
            assert_eq!(value_at(&chunk, &segments), chunk.pointer(path), "{path}");
        }
    }

    #[test]
    fn an_event_is_its_head_its_json_and_a_blank_line() {
        let data = json!({"type": "message_stop", "text": "a \"quoted\"\nline"});
        assert_eq!(
            sse(&["event: ", "message_stop", "\ndata: "], &data),
            format!("event: message_stop\ndata: {data}\n\n")
        );
        assert_eq!(sse(&["data: "], &json!({})), "data: {}\n\n");
    }
}
