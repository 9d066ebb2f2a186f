//! An Anthropic Messages request (`POST /v1/messages`, what Anthropic's SDKs send) served by a
//! provider that speaks OpenAI's chat completions: the request in OpenAI's format, and the
//! answer, streamed events and errors back in Anthropic's. Pure functions over JSON values, so
//! each rule is unit-tested. An Anthropic provider gets the request as the agent sent it.
//!
//! What OpenAI cannot express is decided here: `thinking` blocks and the `thinking` and `top_k`
//! parameters are left out (OpenAI's models reason without them), `cache_control` marks are
//! left out (OpenAI caches prompts by itself), and documents, server tools and more than four
//! stop sequences make the request untranslatable, so the router tries the next provider.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::anthropic::TranslateError;
use super::json::{sse, value_at};
use super::usage::Usage;

/// OpenAI accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// How the provider takes the answer's length limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthParameter {
    /// `max_completion_tokens`: OpenAI and Azure OpenAI, whose reasoning models refuse
    /// `max_tokens`.
    MaxCompletionTokens,
    /// `max_tokens`: the OpenAI-compatible servers (vLLM, Ollama, …), which may not know the
    /// newer name.
    MaxTokens,
}

/// The OpenAI chat request for an Anthropic Messages request.
pub fn request(
    messages: &Map<String, Value>,
    model: &str,
    length: LengthParameter,
) -> Result<Value, TranslateError> {
    let turns = messages
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError("messages must be an array".into()))?;
    let mut out = Vec::new();
    let system = system_text(messages.get("system"))?;
    if !system.is_empty() {
        out.push(json!({"role": "system", "content": system}));
    }
    for turn in turns {
        match turn.get("role").and_then(Value::as_str) {
            Some("user") => user_messages(turn.get("content"), &mut out)?,
            Some("assistant") => out.push(assistant_message(turn.get("content"))?),
            other => {
                return Err(TranslateError(format!(
                    "message role '{}' is not supported",
                    other.unwrap_or("(none)")
                )));
            }
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(out));
    if let Some(max_tokens) = messages.get("max_tokens").and_then(Value::as_u64) {
        let name = match length {
            LengthParameter::MaxCompletionTokens => "max_completion_tokens",
            LengthParameter::MaxTokens => "max_tokens",
        };
        body.insert(name.into(), json!(max_tokens));
    }
    for key in ["temperature", "top_p"] {
        if let Some(value) = messages.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), value.clone());
        }
    }
    if let Some(stops) = messages.get("stop_sequences").and_then(Value::as_array)
        && !stops.is_empty()
    {
        if stops.len() > MAX_STOP_SEQUENCES {
            return Err(TranslateError(format!(
                "OpenAI accepts at most {MAX_STOP_SEQUENCES} stop sequences"
            )));
        }
        body.insert("stop".into(), Value::Array(stops.clone()));
    }
    if messages.get("stream").and_then(Value::as_bool) == Some(true) {
        body.insert("stream".into(), json!(true));
        // Anthropic's stream always ends with the usage; OpenAI's only when asked.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = messages
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        body.insert("user".into(), json!(user));
    }
    if let Some(tools) = messages.get("tools").and_then(Value::as_array)
        && !tools.is_empty()
    {
        let tools = tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = messages.get("tool_choice") {
        if let Some(mode) = tool_choice(choice) {
            body.insert("tool_choice".into(), mode);
        }
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true))
            && body.contains_key("tools")
        {
            body.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(Value::Object(body))
}

fn system_text(system: Option<&Value>) -> Result<String, TranslateError> {
    match system {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(blocks)) => Ok(blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n")),
        Some(_) => Err(TranslateError(
            "system must be a string or an array of text blocks".into(),
        )),
    }
}

/// A content field as blocks: a plain string is one text block.
fn blocks(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match content {
        Some(Value::String(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(Value::Array(blocks)) => Ok(blocks.clone()),
        _ => Err(TranslateError(
            "a message's content must be a string or an array of content blocks".into(),
        )),
    }
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

/// A user turn: its tool results become `tool` messages, which OpenAI wants right after the
/// assistant's tool calls, and the rest one user message after them.
fn user_messages(content: Option<&Value>, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for block in blocks(content)? {
        match block_type(&block) {
            "tool_result" => out.push(json!({
                "role": "tool",
                "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(json!("")),
                "content": tool_result_text(&block),
            })),
            "text" => parts.push(
                json!({"type": "text", "text": block.get("text").cloned().unwrap_or(json!(""))}),
            ),
            "image" => parts.push(image_part(&block)?),
            other => return Err(unsupported_block(other)),
        }
    }
    if !parts.is_empty() {
        let only_text = parts.len() == 1 && parts[0]["type"] == "text";
        let content = if only_text {
            parts[0]["text"].clone()
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn tool_result_text(block: &Value) -> String {
    let text = match block.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    if block.get("is_error") == Some(&Value::Bool(true)) {
        format!("Error: {text}")
    } else {
        text
    }
}

fn image_part(block: &Value) -> Result<Value, TranslateError> {
    let source = block.get("source").cloned().unwrap_or(json!({}));
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or("")
        ),
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => {
            return Err(TranslateError(
                "an image's source must be base64 or url".into(),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn unsupported_block(kind: &str) -> TranslateError {
    TranslateError(format!(
        "content block type '{kind}' is not supported by OpenAI's chat completions"
    ))
}

fn assistant_message(content: Option<&Value>) -> Result<Value, TranslateError> {
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for block in blocks(content)? {
        match block_type(&block) {
            "text" => text.push(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            "tool_use" => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(json!("")),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            // The model's own reasoning: OpenAI's models take none back.
            "thinking" | "redacted_thinking" => {}
            other => return Err(unsupported_block(other)),
        }
    }
    let text = text.concat();
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

fn tool(tool: &Value) -> Result<Value, TranslateError> {
    let Some(schema) = tool.get("input_schema") else {
        return Err(TranslateError(format!(
            "tool type '{}' is one of Anthropic's server tools, which OpenAI does not run",
            tool.get("type").and_then(Value::as_str).unwrap_or("(none)")
        )));
    };
    let mut function = Map::new();
    function.insert(
        "name".into(),
        tool.get("name").cloned().unwrap_or(json!("")),
    );
    if let Some(description) = tool.get("description") {
        function.insert("description".into(), description.clone());
    }
    function.insert("parameters".into(), schema.clone());
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice.get("type").and_then(Value::as_str)? {
        "auto" => Some(json!("auto")),
        "any" => Some(json!("required")),
        "none" => Some(json!("none")),
        "tool" => Some(json!({"type": "function", "function": {"name": choice.get("name")?}})),
        _ => None,
    }
}

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// The Anthropic message for an OpenAI chat completion.
pub fn response(openai: &Value) -> Value {
    let message = value_at(openai, &["choices", "0", "message"])
        .cloned()
        .unwrap_or(json!({}));
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str)
        && !text.is_empty()
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(json!("")),
            "name": value_at(call, &["function", "name"]).cloned().unwrap_or(json!("")),
            "input": tool_input(value_at(call, &["function", "arguments"])),
        }));
    }
    let usage = Usage::from_openai(openai.get("usage").unwrap_or(&Value::Null));
    json!({
        "id": openai.get("id").cloned().unwrap_or(json!("")),
        "type": "message",
        "role": "assistant",
        "model": openai.get("model").cloned().unwrap_or(json!("")),
        "content": content,
        "stop_reason": stop_reason(value_at(openai, &["choices", "0", "finish_reason"]).and_then(Value::as_str)),
        "stop_sequence": Value::Null,
        "usage": usage.anthropic(),
    })
}

/// A tool call's arguments as Anthropic's `input` object; arguments that are not a JSON object
/// (a model's malformed output) are kept as the one field `arguments`, never dropped.
fn tool_input(arguments: Option<&Value>) -> Value {
    let text = arguments.and_then(Value::as_str).unwrap_or("{}");
    match serde_json::from_str::<Value>(text) {
        Ok(input @ Value::Object(_)) => input,
        _ => json!({"arguments": text}),
    }
}

/// Anthropic's error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An Anthropic error body.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// An Anthropic error body for an OpenAI error body answered with `status`.
pub fn error(status: u16, openai: &Value) -> Value {
    let message = value_at(openai, &["error", "message"])
        .and_then(Value::as_str)
        .unwrap_or("error from the provider");
    error_body(error_type(status), message)
}

/// Turns OpenAI's `chat.completion.chunk` events into Anthropic's streamed events: a
/// `message_start`, a content block per text run or tool call, and at the end the stop reason
/// and usage (which OpenAI sends last) in `message_delta`, then `message_stop`.
#[derive(Debug, Default)]
pub struct StreamTranslator {
    started: bool,
    finished: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(usize, bool)>,
    blocks: usize,
    /// OpenAI tool-call index → Anthropic content-block index.
    tool_calls: HashMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Usage,
}

fn event(name: &str, data: impl Serialize) -> String {
    sse(&["event: ", name, "\ndata: "], &data)
}

/// What the translator reads of an OpenAI chunk. The rest of it is skipped as it is parsed,
/// where a whole `Value` allocates a map for each object and a string for each member. Each
/// field read stays a `Value`, so a chunk reads as its `Value` did but in two cases: one whose
/// `choices` or `delta` is not of the API's shape is skipped, as a chunk that is not JSON is,
/// and a chunk with `"error": null` is read as content, not as an error.
#[derive(Deserialize)]
struct ChunkIn {
    error: Option<Value>,
    id: Option<Value>,
    model: Option<Value>,
    usage: Option<Value>,
    choices: Option<Vec<ChoiceIn>>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    delta: Option<DeltaIn>,
    finish_reason: Option<Value>,
}

#[derive(Deserialize)]
struct DeltaIn {
    content: Option<Value>,
    tool_calls: Option<Value>,
}

/// A piece of text, the event most of a streamed answer is made of: written from the chunk's
/// own string, where a `json!` event would copy it and build a map for each object.
#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: TextPiece<'a>,
}

#[derive(Serialize)]
struct TextPiece<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl StreamTranslator {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The Anthropic events for one OpenAI `data:` payload (often none).
    pub fn translate(&mut self, data: &str) -> Vec<String> {
        if self.finished {
            return Vec::new();
        }
        if data.trim() == "[DONE]" {
            return self.finish();
        }
        let Ok(chunk) = serde_json::from_str::<ChunkIn>(data) else {
            return Vec::new();
        };
        if let Some(problem) = &chunk.error {
            let message = problem
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error from the provider");
            self.finished = true;
            return vec![event("error", error_body("api_error", message))];
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": chunk.id.clone().unwrap_or(json!("")),
                    "type": "message", "role": "assistant",
                    "model": chunk.model.clone().unwrap_or(json!("")),
                    "content": [], "stop_reason": Value::Null, "stop_sequence": Value::Null,
                    "usage": Usage::default().anthropic(),
                }}),
            ));
        }
        if let Some(usage) = chunk.usage.as_ref().filter(|u| u.is_object()) {
            self.usage = Usage::from_openai(usage);
        }
        let Some(choice) = chunk.choices.as_ref().and_then(|choices| choices.first()) else {
            return out;
        };
        let delta = choice.delta.as_ref();
        if let Some(text) = delta
            .and_then(|d| d.content.as_ref())
            .and_then(Value::as_str)
            && !text.is_empty()
        {
            let index = self.open_block(true, None, &mut out);
            out.push(event(
                "content_block_delta",
                TextDelta {
                    kind: "content_block_delta",
                    index,
                    delta: TextPiece {
                        kind: "text_delta",
                        text,
                    },
                },
            ));
        }
        for call in delta
            .and_then(|d| d.tool_calls.as_ref())
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let index = match self.tool_calls.get(&call_index) {
                Some(&index) => index,
                None => {
                    let start = json!({"type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(json!("")),
                        "name": value_at(call, &["function", "name"]).cloned().unwrap_or(json!("")),
                        "input": {}});
                    let index = self.open_block(false, Some(start), &mut out);
                    self.tool_calls.insert(call_index, index);
                    index
                }
            };
            if let Some(arguments) =
                value_at(call, &["function", "arguments"]).and_then(Value::as_str)
                && !arguments.is_empty()
            {
                out.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                ));
            }
        }
        if let Some(reason) = choice.finish_reason.as_ref().and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        out
    }

    /// Opens a block unless the open one is the text block wanted; returns its index.
    fn open_block(&mut self, text: bool, start: Option<Value>, out: &mut Vec<String>) -> usize {
        if let Some((index, true)) = self.open
            && text
        {
            return index;
        }
        self.close_block(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((index, text));
        let block = start.unwrap_or_else(|| json!({"type": "text", "text": ""}));
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn close_block(&mut self, out: &mut Vec<String>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// The closing events, once: at `[DONE]`, or when the stream ends without it.
    pub fn finish(&mut self) -> Vec<String> {
        if self.finished || !self.started {
            return Vec::new();
        }
        self.finished = true;
        let mut out = Vec::new();
        self.close_block(&mut out);
        out.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(self.finish_reason.as_deref()), "stop_sequence": Value::Null},
                   "usage": self.usage.anthropic()}),
        ));
        out.push(event("message_stop", json!({"type": "message_stop"})));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn a_tool_round_trip_translates_to_openai_messages() {
        let messages = object(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 256,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "...", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "text", "text": "And tomorrow?"}]},
            ],
            "tools": [{"name": "weather", "description": "Current weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "stream": true,
        }));
        let body =
            request(&messages, "gpt-4o", LengthParameter::MaxCompletionTokens).expect("translates");
        let out = body["messages"].as_array().expect("messages");
        assert_eq!(out[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(out[2]["content"], "Checking.");
        assert_eq!(
            out[2]["tool_calls"][0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            out[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"})
        );
        assert_eq!(out[4], json!({"role": "user", "content": "And tomorrow?"}));
        assert_eq!(body["max_completion_tokens"], 256);
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn what_openai_cannot_run_is_untranslatable() {
        let server_tool = object(
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        );
        let document = object(
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}),
        );
        for messages in [server_tool, document] {
            assert!(request(&messages, "m", LengthParameter::MaxTokens).is_err());
        }
    }

    #[test]
    fn answers_become_anthropic_messages_with_cached_tokens() {
        let openai = json!({
            "id": "chatcmpl-1", "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55,
                      "prompt_tokens_details": {"cached_tokens": 32}},
        });
        let message = response(&openai);
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(message["usage"]["input_tokens"], 18);
        assert_eq!(message["usage"]["cache_read_input_tokens"], 32);
    }

    #[test]
    fn streamed_chunks_become_anthropic_events_in_order() {
        let mut translator = StreamTranslator::default();
        let chunks = [
            json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]}),
            json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        ];
        let mut events: Vec<String> = chunks
            .iter()
            .flat_map(|c| translator.translate(&c.to_string()))
            .collect();
        events.extend(translator.translate("[DONE]"));
        let names: Vec<&str> = events
            .iter()
            .filter_map(|e| e.strip_prefix("event: ")?.split('\n').next())
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(events[7].contains("\"stop_reason\":\"tool_use\""));
        assert!(events[7].contains("\"output_tokens\":4"));
        assert!(translator.finish().is_empty(), "the end is sent once");
    }

    #[test]
    fn a_chunk_with_a_null_error_is_content_and_one_with_an_error_ends_the_stream() {
        let mut translator = StreamTranslator::default();
        let events = translator.translate(
            r#"{"id":"c1","error":null,"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
        );
        assert!(
            events.iter().any(|e| e.contains("\"text\":\"Hi\"")),
            "{events:?}"
        );
        let failed = translator.translate(r#"{"error":{"message":"overloaded"}}"#);
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].starts_with("event: error\n") && failed[0].contains("overloaded"),
            "{}",
            failed[0]
        );
        assert!(
            translator.translate("[DONE]").is_empty(),
            "nothing after an error"
        );
    }
}
