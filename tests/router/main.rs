//! The LLM router as a real process in front of fake providers: every provider type's wire
//! format, failover, reloads and guards. No cluster needed.

#[path = "../support/fake_provider.rs"]
#[allow(dead_code)]
mod fake_provider;
#[allow(dead_code)]
mod harness;
#[path = "../support/net.rs"]
mod net;

mod budget;
mod failover;
mod fidelity;
mod guards;
mod lease;
mod messages;
mod reload;
mod sdk;
mod tls;
mod wire;
