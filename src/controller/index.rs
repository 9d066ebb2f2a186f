//! Secondary indexes of a watch cache: the objects of one owner, kept in order, so that a
//! reconcile reads its task's Jobs, or the head of its agent's queue, without copying and
//! filtering the whole cache. kube's stores are keyed by name only; at ten thousand tasks a scan
//! per reconcile made admission quadratic in the queue's length.
//!
//! An index follows the same watch events as its store, in the same order, and swaps in a
//! relist's result only when the relist is complete, as the store does, so the two never
//! disagree for longer than one event.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::watcher::Event;

/// Where an object belongs in an index: the group it is in, and its place in that group.
pub type EntryOf<K, Key, Member> = fn(&K) -> Option<(Key, Member)>;

pub struct Index<K, Key, Member>
where
    K: Resource<DynamicType = ()>,
{
    entries: Arc<RwLock<Entries<K, Key, Member>>>,
    entry_of: EntryOf<K, Key, Member>,
}

impl<K, Key, Member> Clone for Index<K, Key, Member>
where
    K: Resource<DynamicType = ()>,
{
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            entry_of: self.entry_of,
        }
    }
}

struct Entries<K: Resource<DynamicType = ()>, Key, Member> {
    current: Groups<K, Key, Member>,
    /// A relist in progress; it replaces `current` when complete.
    relisting: Option<Groups<K, Key, Member>>,
}

struct Groups<K: Resource<DynamicType = ()>, Key, Member> {
    by_key: HashMap<Key, Group<Member>>,
    /// Each object's entry, to move or drop it when the object changes or goes, by the
    /// object's UID: one short string, where kube's `ObjectRef` is four fields and two strings,
    /// and this table has an entry for every Job and pod of every task.
    of_object: HashMap<Box<str>, (Key, Member)>,
    _kind: PhantomData<fn(&K)>,
}

/// The members of one key, in order. Most keys have one (a task's Job, a task's pod), and a
/// `BTreeSet` costs a node of about 0.3 KiB however few members it holds.
enum Group<Member> {
    One(Member),
    Many(BTreeSet<Member>),
}

impl<Member: Ord> Group<Member> {
    fn insert(&mut self, member: Member) {
        match self {
            Group::One(only) if *only == member => {}
            Group::One(_) => {
                let Group::One(first) = std::mem::replace(self, Group::Many(BTreeSet::new()))
                else {
                    unreachable!("matched as one member")
                };
                *self = Group::Many(BTreeSet::from([first, member]));
            }
            Group::Many(members) => {
                members.insert(member);
            }
        }
    }

    /// Removes `member`; returns whether the group is empty now.
    fn remove(&mut self, member: &Member) -> bool {
        match self {
            Group::One(only) => only == member,
            Group::Many(members) => {
                members.remove(member);
                if members.is_empty() {
                    return true;
                }
                if members.len() == 1
                    && let Some(last) = members.pop_first()
                {
                    *self = Group::One(last);
                }
                false
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Member> {
        let (one, many) = match self {
            Group::One(only) => (Some(only), None),
            Group::Many(members) => (None, Some(members.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl<K: Resource<DynamicType = ()>, Key, Member> Default for Groups<K, Key, Member> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            of_object: HashMap::new(),
            _kind: PhantomData,
        }
    }
}

impl<K, Key, Member> Groups<K, Key, Member>
where
    K: Resource<DynamicType = ()>,
    Key: Hash + Eq + Clone,
    Member: Ord + Clone,
{
    fn upsert(&mut self, object: &K, entry_of: EntryOf<K, Key, Member>) {
        let reference = object_key(object);
        self.remove(&reference);
        if let Some((key, member)) = entry_of(object) {
            match self.by_key.get_mut(&key) {
                Some(group) => group.insert(member.clone()),
                None => {
                    self.by_key.insert(key.clone(), Group::One(member.clone()));
                }
            }
            self.of_object.insert(reference, (key, member));
        }
    }

    fn remove(&mut self, reference: &str) {
        let Some((key, member)) = self.of_object.remove(reference) else {
            return;
        };
        if let Some(group) = self.by_key.get_mut(&key)
            && group.remove(&member)
        {
            self.by_key.remove(&key);
        }
    }
}

/// An object's UID, which the API server gives every object; objects built without one (in
/// tests) go by namespace and name, which no UID can equal.
fn object_key<K: Resource>(object: &K) -> Box<str> {
    let meta = object.meta();
    match &meta.uid {
        Some(uid) => uid.as_str().into(),
        None => format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
        .into(),
    }
}

impl<K, Key, Member> Index<K, Key, Member>
where
    K: Resource<DynamicType = ()>,
    Key: Hash + Eq + Clone,
    Member: Ord + Clone,
{
    pub fn new(entry_of: EntryOf<K, Key, Member>) -> Self {
        Self {
            entries: Arc::new(RwLock::new(Entries {
                current: Groups::default(),
                relisting: None,
            })),
            entry_of,
        }
    }

    /// Follows one watch event; called right after the store has applied it.
    pub fn observe(&self, event: &Event<K>) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            Event::Apply(object) => entries.current.upsert(object, self.entry_of),
            Event::Delete(object) => entries.current.remove(&object_key(object)),
            Event::Init => entries.relisting = Some(Groups::default()),
            Event::InitApply(object) => match entries.relisting.as_mut() {
                Some(relisting) => relisting.upsert(object, self.entry_of),
                None => entries.current.upsert(object, self.entry_of),
            },
            Event::InitDone => {
                if let Some(relisted) = entries.relisting.take() {
                    entries.current = relisted;
                }
            }
        }
    }

    /// The members of `key`, in order.
    pub fn members(&self, key: &Key) -> Vec<Member> {
        self.with_members(key, |members| members.cloned().collect())
    }

    /// Lets `read` take as many of the members of `key` as it needs, in order, without copying
    /// them. The index is read-locked meanwhile: `read` must not wait for a watch event.
    pub fn with_members<R>(
        &self,
        key: &Key,
        read: impl FnOnce(&mut dyn Iterator<Item = &Member>) -> R,
    ) -> R {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        read(
            &mut entries
                .current
                .by_key
                .get(key)
                .into_iter()
                .flat_map(Group::iter),
        )
    }

    pub fn contains_key(&self, key: &Key) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .current
            .by_key
            .contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn config_map(name: &str, group: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "team", "labels": {"group": group}}
        }))
        .expect("config map")
    }

    fn by_group() -> Index<ConfigMap, String, String> {
        Index::new(|c| {
            let group = c.metadata.labels.as_ref()?.get("group")?.clone();
            Some((group, c.metadata.name.clone()?))
        })
    }

    #[test]
    fn members_follow_applies_and_deletes_in_order() {
        let index = by_group();
        for (name, group) in [("c", "x"), ("a", "x"), ("b", "y")] {
            index.observe(&Event::Apply(config_map(name, group)));
        }
        assert_eq!(index.members(&"x".into()), ["a", "c"]);
        index.observe(&Event::Apply(config_map("a", "y")));
        assert_eq!(index.members(&"x".into()), ["c"], "a moved to y");
        assert_eq!(index.members(&"y".into()), ["a", "b"]);
        index.observe(&Event::Delete(config_map("c", "x")));
        assert!(!index.contains_key(&"x".into()), "an empty group goes");
    }

    #[test]
    fn objects_from_the_api_are_followed_by_uid() {
        let index = by_group();
        let with_uid = |name: &str, group: &str, uid: &str| {
            let mut object = config_map(name, group);
            object.metadata.uid = Some(uid.into());
            object
        };
        index.observe(&Event::Apply(with_uid("a", "x", "uid-1")));
        index.observe(&Event::Apply(with_uid("a", "y", "uid-1")));
        assert!(!index.contains_key(&"x".into()), "a moved to y");
        // Its last state, as a Delete event carries it: the entry goes by the UID.
        index.observe(&Event::Delete(with_uid("a", "z", "uid-1")));
        assert!(!index.contains_key(&"y".into()));
        index.observe(&Event::Apply(with_uid("a", "x", "uid-2")));
        assert_eq!(index.members(&"x".into()), ["a"], "created again");
    }

    #[test]
    fn a_group_grows_and_shrinks_in_order_and_goes_when_empty() {
        let index = by_group();
        for name in ["b", "a", "c", "a"] {
            index.observe(&Event::Apply(config_map(name, "x")));
        }
        assert_eq!(index.members(&"x".into()), ["a", "b", "c"]);
        for (gone, left) in [("b", &["a", "c"][..]), ("a", &["c"][..])] {
            index.observe(&Event::Delete(config_map(gone, "x")));
            assert_eq!(index.members(&"x".into()), left);
        }
        index.observe(&Event::Apply(config_map("d", "x")));
        assert_eq!(index.members(&"x".into()), ["c", "d"]);
        for name in ["c", "d"] {
            index.observe(&Event::Delete(config_map(name, "x")));
        }
        assert!(!index.contains_key(&"x".into()));
    }

    #[test]
    fn a_relist_replaces_the_entries_only_when_complete() {
        let index = by_group();
        index.observe(&Event::Apply(config_map("gone", "x")));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(config_map("kept", "x")));
        assert_eq!(
            index.members(&"x".into()),
            ["gone"],
            "the old entries serve until the relist is done"
        );
        index.observe(&Event::InitDone);
        assert_eq!(
            index.members(&"x".into()),
            ["kept"],
            "deleted during the gap"
        );
    }

    #[test]
    fn a_reader_takes_only_what_it_needs() {
        let index = by_group();
        for name in ["a", "b", "c"] {
            index.observe(&Event::Apply(config_map(name, "x")));
        }
        let mut seen = 0;
        let found = index.with_members(&"x".into(), |members| {
            members.inspect(|_| seen += 1).find(|m| *m == "b").cloned()
        });
        assert_eq!((found.as_deref(), seen), (Some("b"), 2));
    }
}
