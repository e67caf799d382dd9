//! The controller's own metadata writes to a TestInstallation (adding its
//! finalizer) whose watch event must not run another pass.
//!
//! The predicate on TestInstallations runs a pass when the finalizers
//! change, so that a removed finalizer is put back. The pass that adds it
//! would otherwise wake itself: its own patch comes back as a finalizer
//! change, and the installation costs a pass that finds nothing to do.
//! The patch tests the resourceVersion the pass read, so the object at the
//! resourceVersion it answers is the one the pass worked on plus the
//! finalizer: its event can be dropped without losing anything.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[derive(Clone, Debug, Default)]
pub struct OwnWrites(Arc<Mutex<HashMap<String, String>>>);

impl OwnWrites {
    /// Remembers that `installation` is at `resource_version` by this
    /// process's own write.
    pub fn record(&self, installation: &str, resource_version: String) {
        self.lock()
            .insert(installation.to_string(), resource_version);
    }

    /// Whether a watch event of `installation` at `resource_version` is the
    /// echo of the recorded write. The first event of the installation
    /// after the write settles it: events come in resourceVersion order, so
    /// a later one means the echo was skipped (a relist) or is past.
    pub fn is_echo(&self, installation: &str, resource_version: Option<&str>) -> bool {
        let mut writes = self.lock();
        match writes.remove(installation) {
            Some(written) => resource_version == Some(written.as_str()),
            None => false,
        }
    }

    /// Forgets the installation (it is gone).
    pub fn forget(&self, installation: &str) {
        self.lock().remove(installation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_event_at_the_written_version_is_an_echo_and_only_once() {
        let writes = OwnWrites::default();
        assert!(!writes.is_echo("a", Some("7")), "nothing written");
        writes.record("a", "8".into());
        assert!(!writes.is_echo("b", Some("8")), "another installation");
        assert!(writes.is_echo("a", Some("8")));
        assert!(!writes.is_echo("a", Some("8")), "a second event is news");
    }

    #[test]
    fn a_later_event_settles_the_write_without_being_dropped() {
        let writes = OwnWrites::default();
        writes.record("a", "8".into());
        assert!(!writes.is_echo("a", Some("9")), "someone else's change");
        assert!(!writes.is_echo("a", Some("8")), "the write is settled");
        writes.record("a", "10".into());
        writes.forget("a");
        assert!(!writes.is_echo("a", Some("10")));
    }
}
