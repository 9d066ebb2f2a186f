//! An agent's request body, as the router reads it: any bytes are either refused with a message
//! or read as a request, which then translates to the other API (an OpenAI chat request to
//! Anthropic's Messages API, a Messages request to OpenAI's) or is refused, never a panic.
#![no_main]

use agent_operator::router::messages::LengthParameter;
use agent_operator::router::{anthropic, messages, proxy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = proxy::parse_request(body) {
        let _ = anthropic::request(&request, "claude-fuzz");
        let _ = messages::request(&request, "gpt-fuzz", LengthParameter::MaxCompletionTokens);
        let _ = messages::request(&request, "gpt-fuzz", LengthParameter::MaxTokens);
    }
});
