//! Admission of tasks under an agent's `maxConcurrentTasks`: first come, first served. Pure.
//!
//! A task holds a slot from its first attempt until it finishes, retries and backoffs included,
//! so a retrying task keeps its place. A waiting task may start when it is among the first
//! `limit - holders` waiting tasks in creation order. The caller evaluates this and records the
//! start under one lock, so two reconciles running at once cannot both take the last slot.
//!
//! The queue is read from its head and only as far as the answer needs: at most `limit`
//! waiting tasks ahead of this one decide it, however long the queue behind them.

/// A task of the agent that the cache shows waiting for its first attempt, with what this
/// process knows beyond the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub uid: String,
    /// Started after all (this process is starting it, or its Job exists): counted among the
    /// holders by the caller, and not ahead of anyone.
    pub holds_slot: bool,
    /// Finished by a status this process wrote and the cache does not show yet.
    pub finished: bool,
    /// Waiting for something other than a slot (a broken reference): it does not block the
    /// queue behind it.
    pub blocked: bool,
}

/// Whether the waiting task `uid` may start now, with `holders` slots of `limit` held and
/// `queue` the agent's waiting tasks in queue order.
pub fn may_start(
    uid: &str,
    holders: usize,
    queue: impl IntoIterator<Item = Waiter>,
    limit: i32,
) -> bool {
    let free = usize::try_from(limit).unwrap_or(0).saturating_sub(holders);
    let mut ahead = 0;
    for waiter in queue {
        if ahead >= free {
            return false;
        }
        if waiter.uid == uid {
            return true;
        }
        if !(waiter.holds_slot || waiter.finished || waiter.blocked) {
            ahead += 1;
        }
    }
    // Not in the queue yet (the index trails the cache by one event): it is the newest.
    ahead < free
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(uid: &str) -> Waiter {
        Waiter {
            uid: uid.into(),
            holds_slot: false,
            finished: false,
            blocked: false,
        }
    }

    #[test]
    fn first_come_first_served_within_the_limit() {
        let queue = || [waiter("b"), waiter("c")];
        assert!(
            may_start("b", 1, queue(), 2),
            "one slot free: the oldest waiter"
        );
        assert!(!may_start("c", 1, queue(), 2), "c is behind b");
        assert!(may_start("c", 0, queue(), 2), "two slots free");
    }

    #[test]
    fn no_free_slot_admits_nobody() {
        assert!(!may_start("b", 2, [waiter("b")], 2));
        assert!(
            !may_start("b", 3, [waiter("b")], 2),
            "the limit was lowered"
        );
        assert!(!may_start("b", 0, [waiter("b")], 0));
    }

    #[test]
    fn finished_started_and_blocked_tasks_are_not_ahead() {
        let finished = Waiter {
            finished: true,
            ..waiter("a")
        };
        let started = Waiter {
            holds_slot: true,
            ..waiter("b")
        };
        let blocked = Waiter {
            blocked: true,
            ..waiter("c")
        };
        assert!(may_start(
            "d",
            1,
            [finished, started, blocked, waiter("d")],
            2
        ));
    }

    #[test]
    fn a_blocked_task_keeps_its_own_place() {
        let blocked = Waiter {
            blocked: true,
            ..waiter("a")
        };
        assert!(may_start("a", 0, [blocked, waiter("b")], 1));
    }

    #[test]
    fn a_task_not_yet_in_the_queue_is_behind_it() {
        assert!(may_start("new", 0, [waiter("a")], 2));
        assert!(!may_start("new", 0, [waiter("a")], 1));
    }

    #[test]
    fn the_answer_reads_no_further_than_the_free_slots() {
        let mut read = 0;
        let queue = (0..10_000).map(|i| {
            read += 1;
            waiter(&format!("t{i}"))
        });
        assert!(!may_start("t9999", 7, queue, 10));
        assert_eq!(read, 4, "three free slots: three ahead decide it");
    }

    #[test]
    fn never_more_starts_than_free_slots_whatever_order_they_are_asked_in() {
        let queue: Vec<Waiter> = (0..10).map(|i| waiter(&format!("t{i}"))).collect();
        let starters = queue
            .iter()
            .filter(|w| may_start(&w.uid, 1, queue.clone(), 3))
            .count();
        assert_eq!(starters, 2, "3 slots, 1 held");
    }
}
