//! Loopback addresses for the processes the tests start and the providers they fake.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// A loopback port nothing listens on at the moment, from the kernel's ephemeral range.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Ports for closed endpoints: below the ephemeral range (32768 and up on Linux), where the
/// servers the tests start on port 0 never land, so a concurrent test cannot take one between
/// its choice and its use.
const CLOSED_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// An OpenAI-style base URL on loopback where nothing listens: a provider that refuses
/// connections.
pub fn closed_endpoint() -> String {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = CLOSED_PORTS.end - CLOSED_PORTS.start;
    // Test binaries run one after another; threads of one binary take successive ports.
    let offset = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = CLOSED_PORTS.start + (offset + step) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("http://127.0.0.1:{port}/v1");
        }
    }
    panic!("no free port in {CLOSED_PORTS:?} for a closed endpoint");
}
