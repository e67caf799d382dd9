//! What this process last applied of each child, so that a pass skips the
//! applies that would change nothing (see `Caches::unchanged`).
//!
//! There are over a dozen children to an installation, so the memory is
//! compact: per namespace, a 64-bit hash of each child's kind and name, and
//! of what was applied and the marker the API server answered with (see
//! `cache::marker`). Two different values taking the same hash is left to a
//! chance of one in 2^64: the cost would be one apply skipped until the
//! next change of that child.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Mutex, MutexGuard},
};

/// An apply as remembered: hashes of the desired object and of its marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub desired: u64,
    pub marker: u64,
}

impl Applied {
    pub fn new(desired: u64, marker: &str) -> Self {
        Self {
            desired,
            marker: hash_of(marker),
        }
    }

    /// Whether `marker` is the one the apply was answered with.
    pub fn marked(&self, marker: &str) -> bool {
        self.marker == hash_of(marker)
    }
}

#[derive(Default)]
pub struct AppliedMemory {
    by_namespace: Mutex<HashMap<Box<str>, HashMap<u64, Applied>>>,
}

impl AppliedMemory {
    pub fn record(&self, kind: &str, namespace: &str, name: &str, applied: Applied) {
        self.lock()
            .entry(namespace.into())
            .or_default()
            .insert(child_key(kind, name), applied);
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Applied> {
        self.lock()
            .get(namespace)?
            .get(&child_key(kind, name))
            .copied()
    }

    /// Forgets every child of `namespace` (its installation is gone).
    pub fn forget_namespace(&self, namespace: &str) {
        self.lock().remove(namespace);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, HashMap<u64, Applied>>> {
        self.by_namespace.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn child_key(kind: &str, name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (kind, name).hash(&mut hasher);
    hasher.finish()
}

fn hash_of(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_is_found_by_kind_namespace_and_name_until_forgotten() {
        let memory = AppliedMemory::default();
        memory.record("Service", "ti-a", "app", Applied::new(7, "g1"));
        memory.record("Secret", "ti-a", "app", Applied::new(8, "r5"));
        memory.record("Service", "ti-b", "app", Applied::new(9, "g1"));
        assert_eq!(
            memory.get("Service", "ti-a", "app"),
            Some(Applied::new(7, "g1"))
        );
        assert_eq!(
            memory.get("Secret", "ti-a", "app").map(|a| a.desired),
            Some(8)
        );
        assert!(memory.get("Service", "ti-a", "db").is_none());
        memory.forget_namespace("ti-a");
        assert!(memory.get("Service", "ti-a", "app").is_none());
        assert_eq!(
            memory.get("Service", "ti-b", "app").map(|a| a.desired),
            Some(9)
        );
    }

    #[test]
    fn the_marker_tells_an_apply_answered_with_it() {
        let applied = Applied::new(1, "fabc");
        assert!(applied.marked("fabc"));
        assert!(!applied.marked("fabd"));
        assert_ne!(Applied::new(1, "g1"), Applied::new(1, "g2"));
    }
}
