//! Loopback addresses for the processes the tests start and the providers they fake.

/// A loopback port nothing listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An OpenAI-style base URL on loopback where nothing listens: a provider that refuses
/// connections.
pub fn closed_endpoint() -> String {
    format!("http://127.0.0.1:{}/v1", free_port())
}
