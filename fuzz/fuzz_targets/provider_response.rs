//! A provider's answer, as the router reads it: a whole JSON answer or error, and the same bytes
//! as a server-sent event stream cut into chunks at every boundary the first byte chooses, fed
//! through Anthropic's stream translation. Nothing a provider sends may panic the router.
#![no_main]

use agent_operator::router::{anthropic, sse};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = serde_json::from_slice::<Value>(data) {
        let _ = anthropic::response(&answer, 0);
        let _ = anthropic::error(&answer);
    }
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut reader = sse::Reader::default();
    let mut translator = anthropic::StreamTranslator::new(0, true);
    for chunk in data.chunks(step) {
        for event in reader.push(chunk) {
            if let Ok(value) = serde_json::from_str::<Value>(&event.data) {
                let _ = translator.translate(event.event.as_deref().unwrap_or(""), &value);
            }
        }
    }
    let _ = translator.tokens();
});
