//! Admission of tasks under an agent's `maxConcurrentTasks`: first come, first served. Pure.
//!
//! A task holds a slot from its first attempt until it finishes, retries and backoffs included,
//! so a retrying task keeps its place. A waiting task may start when it is among the first
//! `limit - holders` waiting tasks in creation order. The caller evaluates this and records the
//! start under one lock, so two reconciles running at once cannot both take the last slot.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// One task of the agent, as the queue sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub uid: String,
    pub name: String,
    pub created: Option<Time>,
    pub finished: bool,
    /// Started at least once (a Job exists, status counts an attempt, or this process is starting
    /// it).
    pub started: bool,
    /// Waiting for something other than a slot (a broken reference): it does not block the
    /// queue behind it.
    pub blocked: bool,
}

/// Whether the task `uid` may start now under `limit`.
pub fn may_start(uid: &str, entries: &[QueueEntry], limit: i32) -> bool {
    let active = entries.iter().filter(|e| !e.finished);
    if active.clone().any(|e| e.uid == uid && e.started) {
        return true;
    }
    let holders = active.clone().filter(|e| e.started).count();
    let free = usize::try_from(limit).unwrap_or(0).saturating_sub(holders);
    let mut waiting: Vec<&QueueEntry> = active
        .filter(|e| !e.started && (!e.blocked || e.uid == uid))
        .collect();
    waiting.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    waiting
        .iter()
        .position(|e| e.uid == uid)
        .is_some_and(|position| position < free)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn entry(name: &str, second: i64, started: bool, finished: bool) -> QueueEntry {
        QueueEntry {
            uid: name.into(),
            name: name.into(),
            created: Some(Time(Timestamp::from_second(second).expect("time"))),
            finished,
            started,
            blocked: false,
        }
    }

    #[test]
    fn first_come_first_served_within_the_limit() {
        let entries = [
            entry("a", 1, true, false),
            entry("b", 2, false, false),
            entry("c", 3, false, false),
        ];
        assert!(
            may_start("b", &entries, 2),
            "one slot free: the oldest waiter"
        );
        assert!(!may_start("c", &entries, 2), "c is behind b");
        assert!(may_start("a", &entries, 2), "a holder always continues");
    }

    #[test]
    fn finished_tasks_free_their_slots() {
        let entries = [
            entry("a", 1, true, true),
            entry("b", 2, true, false),
            entry("c", 3, false, false),
        ];
        assert!(may_start("c", &entries, 2));
        assert!(!may_start("c", &entries, 1));
    }

    #[test]
    fn same_second_ties_break_by_name() {
        let entries = [
            entry("task-02", 5, false, false),
            entry("task-01", 5, false, false),
        ];
        assert!(may_start("task-01", &entries, 1));
        assert!(!may_start("task-02", &entries, 1));
    }

    #[test]
    fn a_blocked_task_does_not_hold_up_the_queue() {
        let mut broken = entry("a", 1, false, false);
        broken.blocked = true;
        let entries = [broken, entry("b", 2, false, false)];
        assert!(may_start("b", &entries, 1));
    }

    #[test]
    fn never_more_starts_than_free_slots_whatever_order_they_are_asked_in() {
        let entries: Vec<QueueEntry> = (0..10)
            .map(|i| entry(&format!("t{i}"), i, i < 1, false))
            .collect();
        let starters = entries
            .iter()
            .filter(|e| !e.started && may_start(&e.uid, &entries, 3))
            .count();
        assert_eq!(starters, 2, "3 slots, 1 held");
    }
}
