//! An OpenAI chat request served by an Anthropic provider: the request in Anthropic's Messages
//! API (system prompt, tools, tool results, images), and its answer, streamed events and
//! errors back in OpenAI's format. Pure functions over JSON values, so each rule is unit-tested.
//!
//! Where the two APIs differ, the choice is made here, never left to the provider to refuse:
//! `temperature` above Anthropic's maximum of 1 is clamped to 1, empty text parts and messages
//! (which Anthropic refuses and OpenAI accepts) are left out, `parallel_tool_calls: false`
//! becomes `disable_parallel_tool_use`, and `n` above 1, which Anthropic cannot answer, makes
//! the request untranslatable, so the router tries the next provider.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::json::{sse, value_at};
use super::usage::Usage;

/// `max_tokens` is required by Anthropic; OpenAI's callers often leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Anthropic's largest `temperature`; OpenAI's goes to 2.
const MAX_TEMPERATURE: f64 = 1.0;

/// A request Anthropic cannot express.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct TranslateError(pub String);

/// The Messages request for an OpenAI chat request.
pub fn request(openai: &Map<String, Value>, model: &str) -> Result<Value, TranslateError> {
    let messages = openai
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError("messages must be an array".into()))?;
    if openai
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(TranslateError(
            "'n' above 1 (several choices) is not supported by Anthropic".into(),
        ));
    }
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(text_of(message.get("content")));
                continue;
            }
            "user" => ("user", user_blocks(message.get("content"))?),
            "assistant" => ("assistant", assistant_blocks(message)?),
            "tool" => ("user", vec![tool_result(message)]),
            other => {
                return Err(TranslateError(format!(
                    "message role '{other}' is not supported"
                )));
            }
        };
        let blocks: Vec<Value> = blocks.into_iter().filter(|b| !is_empty_text(b)).collect();
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants user and assistant turns to alternate: consecutive messages of one
        // role (several tool results, say) become one turn.
        match turns.last_mut() {
            Some((last, content)) if last == role => content.extend(blocks),
            _ => turns.push((role.to_string(), blocks)),
        }
    }

    if turns.is_empty() {
        return Err(TranslateError(
            "the request has no message with content".into(),
        ));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if let Some(instruction) = json_mode_instruction(openai.get("response_format")) {
        system.push(instruction);
    }
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    let max_tokens = openai
        .get("max_completion_tokens")
        .or_else(|| openai.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    for key in ["top_p", "stream"] {
        if let Some(value) = openai.get(key).filter(|v| !v.is_null()) {
            body.insert(key.into(), value.clone());
        }
    }
    if let Some(temperature) = openai.get("temperature").and_then(Value::as_f64) {
        body.insert(
            "temperature".into(),
            json!(temperature.clamp(0.0, MAX_TEMPERATURE)),
        );
    }
    match openai.get("stop") {
        Some(Value::String(stop)) => {
            body.insert("stop_sequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) => {
            body.insert("stop_sequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if let Some(user) = openai.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = openai.get("tools").and_then(Value::as_array) {
        body.insert(
            "tools".into(),
            Value::Array(tools.iter().map(tool).collect()),
        );
    }
    let has_tools = body.contains_key("tools");
    let mut choice = openai.get("tool_choice").and_then(tool_choice);
    if has_tools && openai.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(body))
}

fn is_empty_text(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("text")
        && block
            .get("text")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
}

fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn user_blocks(content: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match content {
        Some(Value::Array(parts)) => parts.iter().map(user_part).collect(),
        other => Ok(vec![json!({"type": "text", "text": text_of(other)})]),
    }
}

fn user_part(part: &Value) -> Result<Value, TranslateError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            Ok(json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))}))
        }
        Some("image_url") => {
            let url = value_at(part, &["image_url", "url"])
                .and_then(Value::as_str)
                .unwrap_or_default();
            let source = match url
                .strip_prefix("data:")
                .and_then(|r| r.split_once(";base64,"))
            {
                Some((media_type, data)) => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
                None => json!({"type": "url", "url": url}),
            };
            Ok(json!({"type": "image", "source": source}))
        }
        other => Err(TranslateError(format!(
            "content part type {} is not supported by Anthropic",
            other.unwrap_or("(none)")
        ))),
    }
}

fn assistant_blocks(message: &Value) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    let text = text_of(message.get("content"));
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arguments = value_at(call, &["function", "arguments"])
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(arguments).map_err(|_| {
            TranslateError("a tool call's function.arguments is not a JSON object".into())
        })?;
        blocks.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(json!("")),
            "name": value_at(call, &["function", "name"]).cloned().unwrap_or(json!("")),
            "input": input,
        }));
    }
    Ok(blocks)
}

fn tool_result(message: &Value) -> Value {
    json!({
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id").cloned().unwrap_or(json!("")),
        "content": text_of(message.get("content")),
    })
}

fn tool(openai_tool: &Value) -> Value {
    let function = openai_tool.get("function").cloned().unwrap_or(json!({}));
    let mut tool = Map::new();
    tool.insert(
        "name".into(),
        function.get("name").cloned().unwrap_or(json!("")),
    );
    if let Some(description) = function.get("description") {
        tool.insert("description".into(), description.clone());
    }
    tool.insert(
        "input_schema".into(),
        function
            .get("parameters")
            .cloned()
            .unwrap_or(json!({"type": "object", "properties": {}})),
    );
    Value::Object(tool)
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => None,
        },
        Value::Object(_) => value_at(choice, &["function", "name"])
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    }
}

/// Anthropic has no JSON mode: the request's `response_format` becomes an instruction.
fn json_mode_instruction(format: Option<&Value>) -> Option<String> {
    match format?.get("type")?.as_str()? {
        "json_object" => Some("Respond with one JSON object and nothing else.".into()),
        "json_schema" => {
            let schema = value_at(format?, &["json_schema", "schema"])?;
            Some(format!(
                "Respond with one JSON object and nothing else, matching this JSON schema: {schema}"
            ))
        }
        _ => None,
    }
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`. OpenAI's SDKs know only `stop`,
/// `length`, `tool_calls`, `content_filter` and `function_call`, so every other reason, a new
/// one and a missing one included, is `stop`: the turn ended and nothing was cut.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// The OpenAI chat completion for an Anthropic Messages answer.
pub fn response(anthropic: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in anthropic
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(json!("")),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let usage = Usage::from_anthropic(anthropic.get("usage").unwrap_or(&Value::Null));
    json!({
        "id": anthropic.get("id").cloned().unwrap_or(json!("")),
        "object": "chat.completion",
        "created": created,
        "model": anthropic.get("model").cloned().unwrap_or(json!("")),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(anthropic.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage.openai(),
    })
}

/// An OpenAI error body for an Anthropic error body.
pub fn error(anthropic: &Value) -> Value {
    json!({"error": {
        "message": value_at(anthropic, &["error", "message"]).cloned().unwrap_or(json!("error from the provider")),
        "type": value_at(anthropic, &["error", "type"]).cloned().unwrap_or(json!("invalid_request_error")),
        "code": Value::Null,
    }})
}

/// Turns Anthropic's streamed events into OpenAI's `chat.completion.chunk` events, keeping what
/// the translation needs across events.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_calls: HashMap<u64, usize>,
    usage: Usage,
    stop_reason: Option<String>,
    /// The agent asked for the usage chunk (`stream_options.include_usage`).
    include_usage: bool,
}

/// An OpenAI `chat.completion.chunk` as the translator writes it.
#[derive(Serialize)]
struct Chunk<'a, Delta> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<Delta>; 1],
}

#[derive(Serialize)]
struct Choice<Delta> {
    index: u32,
    delta: Delta,
    finish_reason: Option<&'static str>,
}

/// What the translator reads of an Anthropic event. The rest is skipped as it is parsed, where
/// a whole `Value` allocates a map for each object and a string for each member. What stays a
/// `Value` is passed on or read leniently, as the `Value` was; a field of another type than
/// the API's (a `type` that is not a string, say) leaves the event read as empty.
#[derive(Default, Deserialize)]
struct EventIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<MessageIn>,
    content_block: Option<BlockIn>,
    index: Option<u64>,
    delta: Option<DeltaIn>,
    usage: Option<Value>,
}

#[derive(Default, Deserialize)]
struct MessageIn {
    id: Option<Value>,
    model: Option<Value>,
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct BlockIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<Value>,
    name: Option<Value>,
}

#[derive(Default, Deserialize)]
struct DeltaIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<Value>,
    partial_json: Option<Value>,
    stop_reason: Option<Value>,
}

/// The delta of a piece of text.
#[derive(Serialize)]
struct Content<'a> {
    content: &'a str,
}

impl StreamTranslator {
    pub fn new(created: u64, include_usage: bool) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created,
            tool_calls: HashMap::new(),
            usage: Usage::default(),
            stop_reason: None,
            include_usage,
        }
    }

    /// Tokens counted so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// A `chat.completion.chunk` with one choice, written from borrowed parts: most of a
    /// streamed answer is these, one per piece of text.
    fn chunk(&self, delta: impl Serialize, finish_reason: Option<&'static str>) -> String {
        sse(
            &["data: "],
            &Chunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: [Choice {
                    index: 0,
                    delta,
                    finish_reason,
                }],
            },
        )
    }

    /// The OpenAI events for one Anthropic event (often none): `name` is its `event:` line,
    /// `data` its JSON.
    pub fn translate(&mut self, name: Option<&str>, data: &str) -> Vec<String> {
        // An event that is not JSON still counts by its name (`message_stop` ends the answer).
        let event = serde_json::from_str::<EventIn>(data).unwrap_or_default();
        let text =
            |value: &Option<Value>| value.as_ref().and_then(Value::as_str).map(str::to_string);
        match name.or(event.kind.as_deref()).unwrap_or_default() {
            "message_start" => {
                let message = event.message.unwrap_or_default();
                self.id = text(&message.id).unwrap_or_default();
                self.model = text(&message.model).unwrap_or_default();
                if let Some(usage) = &message.usage {
                    self.usage.merge_anthropic(usage);
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let Some(block) = event
                    .content_block
                    .filter(|b| b.kind.as_deref() == Some("tool_use"))
                else {
                    return Vec::new();
                };
                let index = event.index.unwrap_or(0);
                let call = self.tool_calls.len();
                self.tool_calls.insert(index, call);
                vec![self.chunk(
                    json!({"tool_calls": [{
                        "index": call,
                        "id": block.id.unwrap_or(json!("")),
                        "type": "function",
                        "function": {"name": block.name.unwrap_or(json!("")), "arguments": ""},
                    }]}),
                    None,
                )]
            }
            "content_block_delta" => {
                let delta = event.delta.unwrap_or_default();
                match delta.kind.as_deref() {
                    Some("text_delta") => vec![
                        self.chunk(
                            Content {
                                content: delta
                                    .text
                                    .as_ref()
                                    .and_then(Value::as_str)
                                    .unwrap_or_default(),
                            },
                            None,
                        ),
                    ],
                    Some("input_json_delta") => {
                        let index = event.index.unwrap_or(0);
                        let Some(call) = self.tool_calls.get(&index) else {
                            return Vec::new();
                        };
                        vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": call,
                                "function": {"arguments": delta.partial_json.unwrap_or(json!(""))},
                            }]}),
                            None,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                self.stop_reason = event.delta.and_then(|d| text(&d.stop_reason));
                if let Some(usage) = &event.usage {
                    self.usage.merge_anthropic(usage);
                }
                Vec::new()
            }
            "message_stop" => {
                let mut events =
                    vec![self.chunk(json!({}), Some(finish_reason(self.stop_reason.as_deref())))];
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": self.usage.openai(),
                    });
                    events.push(sse(&["data: "], &chunk));
                }
                events.push("data: [DONE]\n\n".into());
                events
            }
            "error" => {
                // Rare: read whole, as a refusal's body is.
                let problem = serde_json::from_str::<Value>(data).unwrap_or(Value::Null);
                vec![sse(&["data: "], &error(&problem))]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn system_messages_become_the_system_prompt_and_tools_translate() {
        let openai = object(json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "stop": "END",
            "response_format": {"type": "json_object"},
        }));
        let body = request(&openai, "claude-sonnet-4-5").expect("translates");
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(
            body["system"]
                .as_str()
                .expect("system")
                .starts_with("Be brief.\n\nRespond with one JSON object")
        );
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(
            body["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(
            body["messages"][2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "18C"})
        );
        assert_eq!(
            body["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
        assert_eq!(body["stop_sequences"], json!(["END"]));
    }

    #[test]
    fn consecutive_tool_results_become_one_user_turn() {
        let openai = object(json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": "2"},
        ]}));
        let body = request(&openai, "m").expect("translates");
        let turns = body["messages"].as_array().expect("turns");
        assert_eq!(turns.len(), 3);
        assert_eq!(turns[2]["content"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn images_keep_their_data() {
        let openai = object(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]}]}));
        let body = request(&openai, "m").expect("translates");
        assert_eq!(
            body["messages"][0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
    }

    #[test]
    fn answers_with_tool_use_become_tool_calls() {
        let answer = json!({
            "id": "msg_1", "model": "claude", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5},
        });
        let openai = response(&answer, 7);
        let message = &openai["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(openai["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(openai["usage"]["total_tokens"], 15);
    }

    #[test]
    fn streamed_events_become_chunks_ending_in_done() {
        let mut translator = StreamTranslator::new(7, true);
        let mut out = Vec::new();
        let events = [
            (
                "message_start",
                json!({"message": {"id": "m1", "model": "claude", "usage": {"input_tokens": 3}}}),
            ),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            (
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f"}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            ),
            (
                "message_delta",
                json!({"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
            ),
            ("message_stop", json!({})),
        ];
        for (name, data) in events {
            out.extend(translator.translate(Some(name), &data.to_string()));
        }
        assert_eq!(out.len(), 7);
        assert!(out[1].contains("\"content\":\"Hi\""));
        assert!(out[2].contains("\"tool_calls\"") && out[2].contains("\"index\":0"));
        assert!(out[3].contains("{\\\"a\\\":"));
        assert!(out[4].contains("\"finish_reason\":\"tool_calls\""));
        assert!(out[5].contains("\"total_tokens\":7"));
        assert_eq!(out[6], "data: [DONE]\n\n");
        assert_eq!(
            (translator.usage().prompt, translator.usage().completion),
            (3, 4)
        );
    }

    #[test]
    fn an_event_without_its_name_line_is_named_by_its_type_and_a_broken_end_still_ends() {
        let mut translator = StreamTranslator::new(7, false);
        let delta =
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        let out = translator.translate(None, delta);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("\"content\":\"Hi\""), "{}", out[0]);
        let end = translator.translate(Some("message_stop"), "not json");
        assert_eq!(end.len(), 2, "{end:?}");
        assert!(end[0].contains("\"finish_reason\":\"stop\""), "{}", end[0]);
        assert_eq!(end[1], "data: [DONE]\n\n");
    }
}
