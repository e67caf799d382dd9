//! The controller's own metadata writes to a TestInstallation (adding its
//! finalizer) whose watch event must not run another pass.
//!
//! The predicate on TestInstallations runs a pass when the finalizers
//! change, so that a removed finalizer is put back. The pass that adds it
//! would otherwise wake itself: its own patch comes back as a finalizer
//! change, and the installation costs a pass that finds nothing to do.
//!
//! Before the patch the pass records what the predicate will see of the
//! patched object (its fingerprint: generation, labels, finalizers,
//! deletion). An event with that fingerprint shows nothing the pass has not
//! worked on, whoever wrote it, so it is dropped. The record is made before
//! the patch because the echo can arrive before the patch's answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{Resource, runtime::Predicate};

use super::predicates::installation_changes;

#[derive(Clone, Debug, Default)]
pub struct OwnWrites(Arc<Mutex<HashMap<String, u64>>>);

impl OwnWrites {
    /// Expects `installation` to become `patched` by this process's own
    /// write.
    pub fn expect<K: Resource>(&self, installation: &str, patched: &K) {
        if let Some(fingerprint) = installation_changes::<K>().hash_property(patched) {
            self.lock().insert(installation.to_string(), fingerprint);
        }
    }

    /// Whether `event` (of `installation`) is the echo of an expected
    /// write; the expectation is met by it and forgotten.
    pub fn is_echo<K: Resource>(&self, installation: &str, event: &K) -> bool {
        let mut writes = self.lock();
        let echo = writes.get(installation).is_some_and(|expected| {
            installation_changes::<K>().hash_property(event) == Some(*expected)
        });
        if echo {
            writes.remove(installation);
        }
        echo
    }

    /// Forgets what was expected of `installation` (the write failed, or
    /// the installation is gone).
    pub fn forget(&self, installation: &str) {
        self.lock().remove(installation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TestInstallation, TestInstallationSpec};

    fn installation(finalizers: &[&str]) -> TestInstallation {
        let mut ti = TestInstallation::new("a", TestInstallationSpec::default());
        ti.metadata.generation = Some(1);
        ti.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        ti
    }

    #[test]
    fn the_event_of_the_patched_object_is_an_echo_once() {
        let writes = OwnWrites::default();
        let patched = installation(&["ours"]);
        assert!(!writes.is_echo("a", &patched), "nothing expected");
        writes.expect("a", &patched);
        assert!(!writes.is_echo("b", &patched), "another installation");
        assert!(writes.is_echo("a", &patched));
        assert!(!writes.is_echo("a", &patched), "a second one is news");
    }

    #[test]
    fn an_event_that_differs_from_the_patched_object_is_news() {
        let writes = OwnWrites::default();
        writes.expect("a", &installation(&["ours"]));
        assert!(!writes.is_echo("a", &installation(&[])), "an older event");
        let mut changed = installation(&["ours"]);
        changed.metadata.generation = Some(2);
        assert!(!writes.is_echo("a", &changed), "the spec changed too");
        assert!(writes.is_echo("a", &installation(&["ours"])));
        writes.expect("a", &installation(&["ours"]));
        writes.forget("a");
        assert!(!writes.is_echo("a", &installation(&["ours"])));
    }
}
