//! The status a controller last wrote, per object UID.
//!
//! Right after a status write the watch cache can still hold the old status; a reconcile in
//! that window would see a difference that is not there and write, count or announce it again.
//! Each controller is the only writer of its kind's status, so the status it last wrote is the
//! truth whenever it has one.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Map, Value};

/// The copies are boxed: a status is hundreds of bytes inline, and a hash table's capacity
/// outlives the burst of writes that grew it (5,000 tasks starting at once left 3.6 MiB of
/// table behind, empty).
pub struct WrittenStatus<S> {
    by_uid: Mutex<HashMap<String, Box<S>>>,
}

/// Below one entry in this many buckets, the table gives its room back.
const SPARSE: usize = 8;
/// A table this small is kept as it is.
const SMALL: usize = 64;

/// Removes `uid`'s copy, and shrinks the table once it is mostly empty: the shrinks halve it
/// at least, so their cost spread over the removals stays constant.
fn remove_copy<S>(map: &mut HashMap<String, Box<S>>, uid: &str) {
    map.remove(uid);
    if map.capacity() > SMALL && map.len() < map.capacity() / SPARSE {
        map.shrink_to_fit();
    }
}

impl<S> Default for WrittenStatus<S> {
    fn default() -> Self {
        Self {
            by_uid: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Clone + PartialEq> WrittenStatus<S> {
    /// The status to compare against: the last one written, else the cached one. Once the
    /// cache holds what was written, the copy is dropped: the cache only moves forward, and at
    /// thousands of objects a second copy of every status is memory for nothing.
    pub fn previous(&self, uid: &str, cached: Option<&S>) -> Option<S> {
        let Ok(mut map) = self.by_uid.lock() else {
            return cached.cloned();
        };
        match map.get(uid) {
            Some(written) if Some(&**written) == cached => {
                remove_copy(&mut map, uid);
                cached.cloned()
            }
            Some(written) => Some(S::clone(written)),
            None => cached.cloned(),
        }
    }

    /// Reads the status `previous` would return, without copying it: for the reconciles that
    /// read many objects' statuses to decide one (a queue's holders).
    pub fn read_previous<R>(
        &self,
        uid: &str,
        cached: Option<&S>,
        read: impl FnOnce(Option<&S>) -> R,
    ) -> R {
        let Ok(map) = self.by_uid.lock() else {
            return read(cached);
        };
        match map.get(uid) {
            Some(written) => read(Some(&**written)),
            None => read(cached),
        }
    }

    /// Drops the copy once the cache holds it, as a watch event arrives: objects whose own
    /// status writes do not trigger a reconcile (a finished task) would otherwise keep their
    /// copy until the next one.
    pub fn caught_up(&self, uid: &str, cached: Option<&S>) {
        if let Ok(mut map) = self.by_uid.lock()
            && map
                .get(uid)
                .is_some_and(|written| Some(&**written) == cached)
        {
            remove_copy(&mut map, uid);
        }
    }

    pub fn remember(&self, uid: String, status: S) {
        if let Ok(mut map) = self.by_uid.lock() {
            map.insert(uid, Box::new(status));
        }
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.by_uid.lock() {
            remove_copy(&mut map, uid);
        }
    }
}

/// The JSON merge patch (RFC 7386) that turns the status `old` into `new`, as `{"status": …}`.
/// Optional fields are left out of a serialized status when they are unset, and a merge patch
/// keeps what it does not mention: without an explicit `null`, a fact that ceased to be true
/// (an active provider, a budget taken off) would stay in the status.
pub fn status_patch<S: Serialize>(old: Option<&S>, new: &S) -> Value {
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let old = old.and_then(|old| serde_json::to_value(old).ok());
    serde_json::json!({ "status": merge_diff(old.as_ref(), new) })
}

fn merge_diff(old: Option<&Value>, new: Value) -> Value {
    match (old, new) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            let mut patch = Map::new();
            for key in old.keys() {
                if !new.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, value) in new {
                let diff = merge_diff(old.get(&key), value);
                patch.insert(key, diff);
            }
            Value::Object(patch)
        }
        (_, new) => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_that_is_gone_is_nulled_however_deep_and_arrays_are_replaced() {
        let old = serde_json::json!({
            "activeProvider": "openai",
            "budget": {"windowStart": "a", "usage": {"cost": "0.1", "requests": 1}},
            "conditions": [{"type": "Ready"}, {"type": "BudgetExceeded"}]
        });
        let new = serde_json::json!({
            "budget": {"windowStart": "b", "usage": {"requests": 2}},
            "conditions": [{"type": "Ready"}]
        });
        assert_eq!(
            status_patch(Some(&old), &new),
            serde_json::json!({"status": {
                "activeProvider": null,
                "budget": {"windowStart": "b", "usage": {"cost": null, "requests": 2}},
                "conditions": [{"type": "Ready"}]
            }})
        );
        assert_eq!(
            status_patch(None, &new),
            serde_json::json!({ "status": new })
        );
    }

    #[test]
    fn the_last_write_wins_over_the_cache() {
        let written = WrittenStatus::<u32>::default();
        assert_eq!(
            written.previous("a", Some(&1)),
            Some(1),
            "nothing written: the cache"
        );
        written.remember("a".into(), 2);
        assert_eq!(
            written.previous("a", Some(&1)),
            Some(2),
            "a stale cache loses"
        );
        assert_eq!(written.previous("b", None), None);
        written.forget("a");
        assert_eq!(written.previous("a", Some(&1)), Some(1));
    }

    #[test]
    fn the_copy_goes_once_the_cache_has_caught_up() {
        let written = WrittenStatus::<u32>::default();
        written.remember("a".into(), 2);
        assert_eq!(written.previous("a", Some(&2)), Some(2));
        assert!(written.by_uid.lock().expect("lock").is_empty());
        assert_eq!(
            written.previous("a", Some(&2)),
            Some(2),
            "the cache from now on"
        );
        written.remember("b".into(), 3);
        written.caught_up("b", Some(&1));
        assert_eq!(
            written.previous("b", Some(&1)),
            Some(3),
            "a stale event keeps it"
        );
        written.caught_up("b", Some(&3));
        assert!(written.by_uid.lock().expect("lock").is_empty());
    }

    #[test]
    fn a_burst_of_writes_leaves_no_empty_table_behind() {
        let written = WrittenStatus::<u32>::default();
        for i in 0..5000 {
            written.remember(format!("u-{i}"), i);
        }
        let grown = written.by_uid.lock().expect("lock").capacity();
        for i in 0..5000 {
            written.caught_up(&format!("u-{i}"), Some(&i));
        }
        let left = written.by_uid.lock().expect("lock").capacity();
        assert!(
            grown >= 5000 && left <= SMALL,
            "{grown} buckets, then {left}"
        );
    }
}
