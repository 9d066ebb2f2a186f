//! The fault and bad-input suite: the operator as a real process on the local control plane
//! while the cluster, the providers or the input misbehave. Run one test at a time
//! (`--test-threads=1`): restarting the API server affects every client of the cluster.
//!
//! The short form runs in `e2e/test`; `e2e/faults/run` runs the full form
//! (`AGENT_OPERATOR_FAULTS=full`: 100 kill rounds, 1,000 objects at once).

#[path = "../support/mod.rs"]
mod support;

mod apiserver;
mod bad_input;
mod figures;
mod kills;
mod leader;
mod providers;
mod throttling;
mod watch_expiry;

/// Whether the full, slow form was asked for.
pub fn full() -> bool {
    std::env::var("AGENT_OPERATOR_FAULTS").as_deref() == Ok("full")
}

/// `short` in CI, `long` in the full form.
pub fn scale(short: usize, long: usize) -> usize {
    if full() { long } else { short }
}
