//! Deletions that a relist shows only by absence. After a watch gap (`410 Gone` once etcd has
//! compacted past the watch's revision, an API-server restart), the watcher lists afresh and
//! its store silently drops whatever was deleted meanwhile: no `Delete` event ever comes for
//! it. Controllers that act on deletions — free a task's queue slot, forget what they kept
//! about an object — learn of these from [`Vanished`]. Found by the fault suite: a running task
//! deleted during a gap kept its agent's queue blocked until the idle requeue.

use std::collections::HashSet;
use std::sync::Arc;

use kube::Resource;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::Event;

/// Watches one reflected stream's relists and reports the objects each one left out.
pub struct Vanished<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    /// The store as it was when the running relist began; `None` between relists.
    before: Option<Vec<Arc<K>>>,
}

impl<K> Vanished<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub fn new(store: Store<K>) -> Self {
        Vanished {
            store,
            before: None,
        }
    }

    /// Takes every event after the store has applied it (downstream of `reflect`). The store
    /// keeps showing its old contents until the relist's `InitDone`, so it is read at `Init`
    /// for what was there and at `InitDone` for what is there now.
    pub fn observe(&mut self, event: &Event<K>) -> Vec<Arc<K>> {
        match event {
            Event::Init => {
                self.before = Some(self.store.state());
                Vec::new()
            }
            Event::InitDone => match self.before.take() {
                Some(before) => vanished(&before, &self.store.state()),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }
}

/// The objects of `before` that `after` no longer has. Compared by UID, so an object deleted
/// and created again under the same name during the gap counts as deleted; by name where an
/// object has no UID.
pub fn vanished<K>(before: &[Arc<K>], after: &[Arc<K>]) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()>,
{
    let identity = |object: &Arc<K>| {
        let meta = object.meta();
        match meta.uid.clone() {
            Some(uid) => Identity::Uid(uid),
            None => Identity::Name(meta.namespace.clone(), meta.name.clone()),
        }
    };
    let present: HashSet<Identity> = after.iter().map(identity).collect();
    before
        .iter()
        .filter(|object| !present.contains(&identity(object)))
        .cloned()
        .collect()
}

#[derive(PartialEq, Eq, Hash)]
enum Identity {
    Uid(String),
    Name(Option<String>, Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;

    fn object(name: &str, uid: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team-a".into()),
                uid: uid.map(Into::into),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn names(objects: &[Arc<ConfigMap>]) -> Vec<String> {
        let mut names: Vec<String> = objects
            .iter()
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn objects_missing_after_the_relist_or_recreated_under_their_name_vanished() {
        let before = [
            object("kept", Some("1")),
            object("deleted", Some("2")),
            object("recreated", Some("3")),
            object("no-uid-kept", None),
            object("no-uid-deleted", None),
        ]
        .map(Arc::new);
        let after = [
            object("kept", Some("1")),
            object("recreated", Some("4")),
            object("no-uid-kept", None),
            object("new", Some("5")),
        ]
        .map(Arc::new);
        assert_eq!(
            names(&vanished(&before, &after)),
            ["deleted", "no-uid-deleted", "recreated"]
        );
    }

    #[test]
    fn a_relist_through_the_store_reports_what_it_dropped_and_the_first_list_nothing() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let mut tracker = Vanished::new(store);
        let mut feed = |event: Event<ConfigMap>| {
            writer.apply_watcher_event(&event);
            tracker.observe(&event)
        };
        // The first list: nothing was there before it.
        assert!(feed(Event::Init).is_empty());
        assert!(feed(Event::InitApply(object("a", Some("1")))).is_empty());
        assert!(feed(Event::InitApply(object("b", Some("2")))).is_empty());
        assert!(feed(Event::InitDone).is_empty());
        // A Delete seen as an event is the watcher's to report, not this.
        assert!(feed(Event::Delete(object("b", Some("2")))).is_empty());
        assert!(feed(Event::Apply(object("c", Some("3")))).is_empty());
        // A relist after a gap in which `a` was deleted.
        assert!(feed(Event::Init).is_empty());
        assert!(feed(Event::InitApply(object("c", Some("3")))).is_empty());
        assert_eq!(names(&feed(Event::InitDone)), ["a"]);
        // Events after it report nothing more.
        assert!(feed(Event::Apply(object("d", Some("4")))).is_empty());
    }
}
