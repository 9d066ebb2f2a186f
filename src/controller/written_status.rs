//! The status a controller last wrote, per object UID.
//!
//! Right after a status write the watch cache can still hold the old status; a reconcile in
//! that window would see a difference that is not there and write, count or announce it again.
//! Each controller is the only writer of its kind's status, so the status it last wrote is the
//! truth whenever it has one.

use std::collections::HashMap;
use std::sync::Mutex;

pub struct WrittenStatus<S> {
    by_uid: Mutex<HashMap<String, S>>,
}

impl<S> Default for WrittenStatus<S> {
    fn default() -> Self {
        Self {
            by_uid: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Clone> WrittenStatus<S> {
    /// The status to compare against: the last one written, else the cached one.
    pub fn previous(&self, uid: &str, cached: Option<&S>) -> Option<S> {
        let written = self
            .by_uid
            .lock()
            .ok()
            .and_then(|map| map.get(uid).cloned());
        written.or_else(|| cached.cloned())
    }

    pub fn remember(&self, uid: String, status: S) {
        if let Ok(mut map) = self.by_uid.lock() {
            map.insert(uid, status);
        }
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.by_uid.lock() {
            map.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
