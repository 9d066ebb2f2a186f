//! An agent's request body, as the router reads it: any bytes are either refused with a message
//! or read as a chat request, which then translates to Anthropic's Messages API or is refused,
//! never a panic.
#![no_main]

use agent_operator::router::{anthropic, proxy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = proxy::parse_request(body) {
        let _ = anthropic::request(&request, "claude-fuzz");
    }
});
