//! A provider's answer, as the router reads it: a whole JSON answer or error of either API, and
//! the same bytes as a server-sent event stream cut into chunks at every boundary the first byte
//! chooses, fed through both stream translations. Nothing a provider sends may panic the
//! router.
#![no_main]

use agent_operator::router::usage::Usage;
use agent_operator::router::{anthropic, messages, sse};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = serde_json::from_slice::<Value>(data) {
        let _ = anthropic::response(&answer, 0);
        let _ = anthropic::error(&answer);
        let _ = messages::response(&answer);
        let _ = messages::error(400, &answer);
        let mut usage = Usage::from_openai(&answer);
        usage.merge_anthropic(&answer);
        let _ = (usage.openai(), usage.anthropic());
    }
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut reader = sse::Reader::default();
    let mut to_openai = anthropic::StreamTranslator::new(0, true);
    let mut to_anthropic = messages::StreamTranslator::default();
    for chunk in data.chunks(step) {
        for event in reader.push(chunk) {
            if let Ok(value) = serde_json::from_str::<Value>(&event.data) {
                let _ = to_openai.translate(event.event.as_deref().unwrap_or(""), &value);
            }
            let _ = to_anthropic.translate(&event.data);
        }
    }
    let _ = (to_openai.usage(), to_anthropic.finish(), to_anthropic.usage());
});
