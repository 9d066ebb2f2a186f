//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! reconciles. The holder renews the Lease every `retry_period`; a candidate takes it over once
//! `renewTime + leaseDurationSeconds` has passed. Updates carry the resourceVersion they read,
//! so two candidates can never both win: the second gets a conflict.
//!
//! Losing the Lease (a renewal failed for longer than `renew_deadline`) stops reconciling at
//! once; the process stays up and competes again, so an API-server outage costs leadership, not
//! a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Timing of the election, as in Kubernetes' own components.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Fences the API client's writes to the time the Lease is known to be ours: a leader whose
/// process was paused (SIGSTOP, a frozen VM, a long GC-like stall) resumes with in-flight
/// reconciles that must not write, because another replica may lead by now. Writes are allowed
/// only within `renew_deadline` of the last successful renewal, by the monotonic clock, which
/// keeps running while the process is stopped.
///
/// A renewal counts from when its round began, not from when its answer arrived: a process
/// stopped while the answer was on its way reads a success on resuming that may be many
/// seconds old, and counting from the arrival would reopen the fence for a Lease another
/// replica has taken since.
#[derive(Debug)]
pub struct WriteFence {
    renewed_at: Mutex<Option<Instant>>,
    deadline: Duration,
}

impl WriteFence {
    pub fn new(deadline: Duration) -> Self {
        Self {
            renewed_at: Mutex::new(None),
            deadline,
        }
    }

    fn set(&self, value: Option<Instant>) {
        let mut renewed_at = self
            .renewed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *renewed_at = value;
    }

    /// The Lease was renewed by a round that began at `round_began`.
    pub fn renewed(&self, round_began: Instant) {
        self.set(Some(round_began));
    }

    pub fn revoke(&self) {
        self.set(None);
    }

    pub fn allows_writes(&self) -> bool {
        self.renewed_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() < self.deadline)
    }
}

/// What a candidate may do with the Lease as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Another holder's lease is still valid.
    Wait,
}

/// Decides from the Lease's spec; pure, so the expiry rule is unit-tested.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match &spec.renew_time {
        Some(renewed)
            if renewed
                .0
                .saturating_add(duration)
                .map_or(true, |expiry| expiry > now) =>
        {
            Decision::Wait
        }
        _ => Decision::Acquire,
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    fence: Arc<WriteFence>,
}

impl LeaderElector {
    /// `fence` must be the one the operator's API client checks.
    pub fn new(
        api: Api<Lease>,
        name: String,
        identity: String,
        timing: LeaseTiming,
        fence: Arc<WriteFence>,
    ) -> Self {
        Self {
            api,
            name,
            identity,
            timing,
            fence,
        }
    }

    /// Competes for the Lease until `shutdown`, publishing whether we lead. On shutdown a held
    /// Lease is released so a successor need not wait for it to expire.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: CancellationToken) {
        let mut last_renewal = Instant::now();
        loop {
            let round_began = Instant::now();
            let held = self.try_acquire_or_renew().await;
            match held {
                Ok(true) => {
                    last_renewal = round_began;
                    self.fence.renewed(round_began);
                    if !*leading.borrow() {
                        tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                        let _ = leading.send(true);
                    }
                }
                Ok(false) => {
                    self.fence.revoke();
                    if *leading.borrow() {
                        tracing::warn!(identity = %self.identity, "another replica holds the lease; stopping reconciles");
                        let _ = leading.send(false);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot reach the lease");
                    if *leading.borrow() && last_renewal.elapsed() > self.timing.renew_deadline {
                        tracing::warn!(identity = %self.identity, "lease not renewed within the deadline; stopping reconciles");
                        self.fence.revoke();
                        let _ = leading.send(false);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
        if *leading.borrow() {
            let _ = leading.send(false);
            self.fence.revoke();
            match self.release().await {
                Ok(()) => tracing::info!(lease = %self.name, "released the lease"),
                Err(error) => tracing::warn!(%error, "cannot release the lease; it will expire"),
            }
        }
    }

    /// One round: `Ok(true)` when we hold the Lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(
            current.as_ref().map(|l| &l.spec).and_then(Option::as_ref),
            &self.identity,
            now,
        );
        if decision == Decision::Wait {
            return Ok(false);
        }
        let lease_duration = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(15);
        match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(lease_duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(error) => Err(error),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Acquire {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(lease_duration);
                spec.renew_time = Some(MicroTime(now));
                // replace sends the resourceVersion we read: a concurrent winner makes this a 409.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(error) => Err(error),
                }
            }
        }
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_allows_writes_only_within_the_deadline_of_a_renewal() {
        let fence = WriteFence::new(Duration::from_millis(50));
        assert!(!fence.allows_writes(), "never renewed");
        fence.renewed(Instant::now());
        assert!(fence.allows_writes());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!fence.allows_writes(), "a paused leader resumes fenced");
        fence.renewed(Instant::now());
        fence.revoke();
        assert!(!fence.allows_writes(), "another replica holds the Lease");
    }

    #[test]
    fn a_renewal_answered_while_the_process_was_stopped_does_not_reopen_the_fence() {
        let fence = WriteFence::new(Duration::from_millis(50));
        let round_began = Instant::now();
        // The process stops with the answer in flight and resumes later than the deadline.
        std::thread::sleep(Duration::from_millis(60));
        fence.renewed(round_began);
        assert!(!fence.allows_writes());
    }

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = Timestamp::from_second(1_000).expect("ts");
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                now.saturating_sub(SignedDuration::from_secs(renewed_secs_ago))
                    .expect("ts"),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_rules() {
        let now = Timestamp::from_second(1_000).expect("ts");
        assert_eq!(decide(None, "me", now), Decision::Acquire, "no lease yet");
        assert_eq!(
            decide(Some(&spec(Some("me"), 5, 15)), "me", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 5, 15)), "me", now),
            Decision::Wait,
            "valid lease of another"
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 16, 15)), "me", now),
            Decision::Acquire,
            "expired"
        );
        assert_eq!(
            decide(Some(&spec(None, 0, 1)), "me", now),
            Decision::Acquire,
            "released"
        );
    }
}
