//! Per-object exponential backoff for failed reconciles: a failing object is retried quickly at
//! first, then less and less often, while other objects are unaffected. A success resets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Records a failure of `key` and returns the delay before its next attempt.
    pub fn next_delay(&self, key: &str, jitter: f64) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        delay_after(*count, jitter)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset(&self, key: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(key);
    }
}

/// `FIRST_RETRY` doubled per further failure, capped at `MAX_RETRY`, spread by ±10% (`jitter` in
/// [0, 1)) so objects that failed together do not retry together.
pub fn delay_after(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
    base.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let delays: Vec<u64> = (1..=10).map(|n| delay_after(n, 0.5).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    }

    #[test]
    fn success_resets_and_objects_are_independent() {
        let backoff = ErrorBackoff::default();
        backoff.next_delay("a", 0.5);
        assert_eq!(backoff.next_delay("a", 0.5), Duration::from_secs(2));
        assert_eq!(backoff.next_delay("b", 0.5), Duration::from_secs(1));
        backoff.reset("a");
        assert_eq!(backoff.next_delay("a", 0.5), Duration::from_secs(1));
    }
}
