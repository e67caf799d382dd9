//! The names of one kind's stored objects, by namespace. Every installation
//! lives in a namespace of its own, so a pass (and every child event's
//! predicate) finds its objects by looking up that namespace instead of
//! scanning a store that holds every installation's objects: the cost of a
//! lookup stays the same at a thousand installations as at one.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, RwLock},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Resource, ResourceExt,
    runtime::{reflector::ObjectRef, reflector::Store, watcher},
};

/// Per namespace, its objects' names in order. A namespace holds a few
/// objects of a kind: a sorted `Vec` costs a fraction of a `BTreeSet`'s
/// node.
type Names = HashMap<String, Vec<String>>;

/// Kept in step with a reflector's store by feeding it the same watch
/// events, before the store takes them.
#[derive(Clone, Default)]
pub struct NamespaceIndex {
    live: Arc<RwLock<Names>>,
    /// Filled while a watch (re)lists; replaces `live` when the list is done,
    /// as the store does with its own buffer.
    relisting: Arc<RwLock<Option<Names>>>,
}

impl NamespaceIndex {
    pub fn apply<K: Resource>(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(object) => insert(&mut write(&self.live), object),
            watcher::Event::Delete(object) => {
                let mut live = write(&self.live);
                let namespace = object.namespace().unwrap_or_default();
                if let Some(names) = live.get_mut(&namespace) {
                    if let Ok(at) = names.binary_search(&object.name_any()) {
                        names.remove(at);
                    }
                    if names.is_empty() {
                        live.remove(&namespace);
                    }
                }
            }
            watcher::Event::Init => *write(&self.relisting) = Some(Names::new()),
            watcher::Event::InitApply(object) => {
                if let Some(names) = write(&self.relisting).as_mut() {
                    insert(names, object);
                }
            }
            watcher::Event::InitDone => {
                if let Some(names) = write(&self.relisting).take() {
                    *write(&self.live) = names;
                }
            }
        }
    }

    /// The names of the objects in `namespace`.
    pub fn names_in(&self, namespace: &str) -> Vec<String> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }
}

/// A reflector's store with the names of its objects by namespace.
pub struct IndexedStore<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    pub index: NamespaceIndex,
}

impl<K> IndexedStore<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    /// The object `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// The metadata of the object `name` in `namespace`.
    pub fn meta(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.get(namespace, name).map(|o| o.meta().clone())
    }

    /// Every stored object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.index
            .names_in(namespace)
            .iter()
            .filter_map(|name| self.get(namespace, name))
            .collect()
    }
}

fn insert<K: Resource>(names: &mut Names, object: &K) {
    let in_namespace = names
        .entry(object.namespace().unwrap_or_default())
        .or_default();
    let name = object.name_any();
    if let Err(at) = in_namespace.binary_search(&name) {
        in_namespace.insert(at, name);
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use watcher::Event;

    fn object(namespace: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_applies_and_deletes_by_namespace() {
        let index = NamespaceIndex::default();
        index.apply(&Event::Apply(object("ti-a", "app")));
        index.apply(&Event::Apply(object("ti-a", "database")));
        index.apply(&Event::Apply(object("ti-b", "app")));
        index.apply(&Event::Apply(object("ti-a", "app")));
        assert_eq!(index.names_in("ti-a"), ["app", "database"]);
        assert_eq!(index.names_in("ti-b"), ["app"]);
        index.apply(&Event::Delete(object("ti-a", "app")));
        index.apply(&Event::Delete(object("ti-b", "app")));
        assert_eq!(index.names_in("ti-a"), ["database"]);
        assert!(index.names_in("ti-b").is_empty());
        assert!(index.names_in("ti-c").is_empty());
    }

    #[test]
    fn a_relist_replaces_the_names_only_when_it_is_done() {
        let index = NamespaceIndex::default();
        index.apply(&Event::Apply(object("ti-a", "gone-while-disconnected")));
        index.apply(&Event::<ConfigMap>::Init);
        index.apply(&Event::InitApply(object("ti-a", "app")));
        // Until the list is complete, lookups see what was there before.
        assert_eq!(index.names_in("ti-a"), ["gone-while-disconnected"]);
        index.apply(&Event::<ConfigMap>::InitDone);
        assert_eq!(index.names_in("ti-a"), ["app"]);
    }
}
