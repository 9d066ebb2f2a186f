//! A provider's account limits, enforced in the pod: requests in flight and requests per minute
//! from the LLMProvider's `limits`. A request waits a bounded time for room, then gives up.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one provider, as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub requests_per_minute: Option<u32>,
    pub max_concurrent_requests: Option<u32>,
}

pub struct Limits {
    settings: LimitSettings,
    in_flight: Option<Arc<Semaphore>>,
    per_minute: Option<DefaultDirectRateLimiter>,
}

/// Room for one request; dropping it frees the in-flight slot.
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
}

/// No room within the wait; `retry_after` is when there may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full {
    pub retry_after: Duration,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            in_flight: settings
                .max_concurrent_requests
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            per_minute: settings
                .requests_per_minute
                .and_then(NonZeroU32::new)
                .map(|n| RateLimiter::direct(Quota::per_minute(n))),
        }
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    /// Waits up to `wait` for an in-flight slot and a per-minute token.
    pub async fn admit(&self, wait: Duration) -> Result<Admitted, Full> {
        let deadline = tokio::time::Instant::now() + wait;
        let permit = match &self.in_flight {
            None => None,
            Some(semaphore) => {
                match tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => {
                        return Err(Full {
                            retry_after: Duration::from_secs(1),
                        });
                    }
                }
            }
        };
        if let Some(limiter) = &self.per_minute {
            loop {
                match limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        let clock = DefaultClock::default();
                        let pause = not_until.wait_time_from(clock.now());
                        if tokio::time::Instant::now() + pause > deadline {
                            return Err(Full {
                                retry_after: pause.max(Duration::from_secs(1)),
                            });
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        Ok(Admitted { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_requests_are_bounded_and_a_freed_slot_is_reused() {
        let limits = Limits::new(LimitSettings {
            requests_per_minute: None,
            max_concurrent_requests: Some(1),
        });
        let first = limits.admit(Duration::ZERO).await.expect("room");
        assert!(limits.admit(Duration::from_millis(20)).await.is_err());
        drop(first);
        assert!(limits.admit(Duration::ZERO).await.is_ok());
    }

    #[tokio::test]
    async fn the_per_minute_budget_refuses_beyond_the_wait() {
        let limits = Limits::new(LimitSettings {
            requests_per_minute: Some(2),
            max_concurrent_requests: None,
        });
        assert!(limits.admit(Duration::ZERO).await.is_ok());
        assert!(limits.admit(Duration::ZERO).await.is_ok());
        let full = limits
            .admit(Duration::from_millis(10))
            .await
            .err()
            .expect("third request in the minute");
        assert!(full.retry_after >= Duration::from_secs(1));
    }
}
