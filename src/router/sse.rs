//! An incremental reader of server-sent events: bytes in, whole events out, whatever the chunk
//! boundaries of the upstream's stream.

/// One event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

/// Buffers a partial event until its blank line arrives.
#[derive(Debug, Default)]
pub struct Reader {
    buffer: Vec<u8>,
}

impl Reader {
    /// The events completed by `bytes`. The buffer is read line by line in one pass and
    /// shifted once per call, not once per event; what is left is the unfinished event, read
    /// again with the bytes that finish it.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut pending = Event::default();
        let mut has_data = false;
        let mut event_start = 0;
        let mut cursor = 0;
        while let Some(offset) = memchr::memchr(b'\n', &self.buffer[cursor..]) {
            let line = strip_cr(&self.buffer[cursor..cursor + offset]);
            cursor += offset + 1;
            if line.is_empty() {
                if has_data || pending.event.is_some() {
                    events.push(std::mem::take(&mut pending));
                }
                has_data = false;
                event_start = cursor;
            } else {
                read_line(line, &mut pending, &mut has_data);
            }
        }
        self.buffer.drain(..event_start);
        events
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One line of an event: `data:` lines are joined by `\n`, `event:` names it, and comments
/// and other fields are skipped.
fn read_line(line: &[u8], event: &mut Event, has_data: &mut bool) {
    // Providers send UTF-8: checked at the fast validator's speed, and mended only if not.
    let line = match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    };
    if let Some(value) = line.strip_prefix("data:") {
        if *has_data {
            event.data.push('\n');
        }
        event
            .data
            .push_str(value.strip_prefix(' ').unwrap_or(value));
        *has_data = true;
    } else if let Some(value) = line.strip_prefix("event:") {
        event.event = Some(value.trim().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut reader = Reader::default();
        assert!(reader.push(b"event: message_start\nda").is_empty());
        let events = reader.push(b"ta: {\"a\":1}\n\ndata: [DONE]\r\n\r\n: comment\n\n");
        assert_eq!(
            events,
            [
                Event {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                Event {
                    event: None,
                    data: "[DONE]".into()
                }
            ]
        );
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_events() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: line one\r\ndata: line two\r\n\r\nevent: ping\n\ndata: [DONE]\n\n";
        let whole = Reader::default().push(stream);
        assert_eq!(
            whole.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["{\"a\":1}", "line one\nline two", "", "[DONE]"]
        );
        assert_eq!(whole[2].event.as_deref(), Some("ping"));
        for first in 0..stream.len() {
            for second in first..stream.len() {
                let mut reader = Reader::default();
                let mut events = reader.push(&stream[..first]);
                events.extend(reader.push(&stream[first..second]));
                events.extend(reader.push(&stream[second..]));
                assert_eq!(events, whole, "split at {first} and {second}");
            }
        }
    }
}
