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

/// An apply as remembered: hashes of the desired object and of the
/// answer's marker and uid, and the answer's generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub desired: u64,
    marker: u64,
    /// 0 for kinds without a generation.
    generation: i64,
}

/// How a stored object stands to the last apply of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The apply's own answer, or later than it with the applied fields
    /// untouched (status updates, other managers' fields).
    AsApplied,
    /// Older than the apply: its watch event has not come yet. The marker
    /// tells only whether the set of fields the controller owns changed,
    /// not their values, so a new image in an old Deployment looks the
    /// same; the generation, which every spec change bumps, tells them
    /// apart.
    NotYet,
    /// Someone else took over an applied field, or it is another object of
    /// the same name.
    Changed,
}

/// What of a stored object's metadata tells its version.
#[derive(Clone, Debug)]
pub struct Version<'a> {
    /// See `cache::marker`.
    pub marker: String,
    pub uid: &'a str,
    pub generation: Option<i64>,
}

impl Applied {
    /// An apply of `desired`, answered with `answer`.
    pub fn new(desired: u64, answer: &Version<'_>) -> Self {
        Self {
            desired,
            marker: hash_of(&(&answer.marker, answer.uid)),
            generation: answer.generation.unwrap_or(0),
        }
    }

    /// How a stored object of version `stored` stands to this apply.
    pub fn seen_in(&self, stored: &Version<'_>) -> Seen {
        if self.marker != hash_of(&(&stored.marker, stored.uid)) {
            Seen::Changed
        } else if stored.generation.unwrap_or(0) < self.generation {
            Seen::NotYet
        } else {
            Seen::AsApplied
        }
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

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(marker: &str, generation: i64) -> Version<'static> {
        Version {
            marker: marker.into(),
            uid: "u1",
            generation: Some(generation),
        }
    }

    #[test]
    fn an_apply_is_found_by_kind_namespace_and_name_until_forgotten() {
        let memory = AppliedMemory::default();
        memory.record("Service", "ti-a", "app", Applied::new(7, &version("g1", 1)));
        memory.record("Secret", "ti-a", "app", Applied::new(8, &version("r5", 0)));
        memory.record("Service", "ti-b", "app", Applied::new(9, &version("g1", 1)));
        assert_eq!(
            memory.get("Service", "ti-a", "app"),
            Some(Applied::new(7, &version("g1", 1)))
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
    fn a_stored_object_is_as_applied_not_yet_or_changed() {
        let applied = Applied::new(1, &version("fabc", 2));
        assert_eq!(applied.seen_in(&version("fabc", 2)), Seen::AsApplied);
        // Someone else changed a field of their own since.
        assert_eq!(applied.seen_in(&version("fabc", 3)), Seen::AsApplied);
        // The object as it was before the apply changed a value (an image):
        // the same fields are owned, one generation earlier.
        assert_eq!(applied.seen_in(&version("fabc", 1)), Seen::NotYet);
        assert_eq!(applied.seen_in(&version("fabd", 2)), Seen::Changed);
        let other_object = Version {
            uid: "u2",
            ..version("fabc", 2)
        };
        assert_eq!(applied.seen_in(&other_object), Seen::Changed);
        // Kinds without a generation.
        let no_generation = Version {
            generation: None,
            ..version("fabc", 0)
        };
        let secret = Applied::new(1, &no_generation);
        assert_eq!(secret.seen_in(&no_generation), Seen::AsApplied);
    }
}
