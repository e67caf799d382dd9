//! What the last pass of each installation observed, against which a
//! child's event is judged: an event that leaves the observation as the
//! last pass saw it runs no pass.
//!
//! A pass that applies looks at the stores again at its end, after they
//! show what it applied: what it observes, and whether anything it applied
//! has been changed or deleted since. Any event whose object is in a store
//! before that last look is in what the pass ends on, so while such a pass
//! runs (`Observing`) no event wakes it: its own writes coming back (the
//! namespace it created, the workloads it applied, often before the
//! answers to its applies) would otherwise cost one more pass. The last
//! look and the end of `Observing` happen under one lock, so an event is
//! judged either after the pass's last look or while that look is still
//! to come.

use std::{collections::HashMap, sync::Mutex};

use super::observe::Observed;

#[derive(Debug, Default)]
pub struct Baselines(Mutex<HashMap<String, Baseline>>);

#[derive(Debug)]
enum Baseline {
    Observed(Box<Observed>),
    /// A pass is running that observes again before it ends.
    Observing,
}

impl Baselines {
    /// Records what a pass of `installation` observed.
    pub fn record(&self, installation: &str, observed: &Observed) {
        self.lock().insert(
            installation.to_string(),
            Baseline::Observed(Box::new(observed.clone())),
        );
    }

    /// Marks `installation` as in a pass that will observe again; the
    /// guard records that observation (`Observing::finish`) or, dropped
    /// before (the pass failed), leaves no baseline, so that every event
    /// runs a pass.
    pub fn observing<'a>(&'a self, installation: &'a str) -> Observing<'a> {
        self.lock()
            .insert(installation.to_string(), Baseline::Observing);
        Observing {
            baselines: self,
            installation,
            finished: false,
        }
    }

    /// Whether a pass of `installation` is running that will look at the
    /// stores again before it ends.
    pub fn is_observing(&self, installation: &str) -> bool {
        matches!(self.lock().get(installation), Some(Baseline::Observing))
    }

    /// Whether `now` (what a pass would observe, as the status sees it)
    /// differs from what the last pass of `installation` observed.
    pub fn changed(&self, installation: &str, now: &Observed) -> bool {
        match self.lock().get(installation) {
            Some(Baseline::Observed(last)) => last.as_the_status_sees_it() != *now,
            Some(Baseline::Observing) => false,
            None => true,
        }
    }

    pub fn forget(&self, installation: &str) {
        self.lock().remove(installation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Baseline>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pass between its first and its last look (see `Baselines::observing`).
pub struct Observing<'a> {
    baselines: &'a Baselines,
    installation: &'a str,
    finished: bool,
}

impl Observing<'_> {
    /// Takes the pass's last look with `look` (what it observes, and
    /// whatever else it reads of the stores) and records the observation,
    /// as one step for the events judged meanwhile.
    pub fn finish<T>(mut self, look: impl FnOnce() -> (Observed, T)) -> (Observed, T) {
        let mut baselines = self.baselines.lock();
        let (observed, also) = look();
        baselines.insert(
            self.installation.to_string(),
            Baseline::Observed(Box::new(observed.clone())),
        );
        self.finished = true;
        (observed, also)
    }
}

impl Drop for Observing<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.baselines.forget(self.installation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::observe::NamespaceState;

    fn with_namespace(namespace: NamespaceState) -> Observed {
        Observed::nothing(namespace)
    }

    #[test]
    fn an_event_is_judged_against_the_last_observation() {
        let baselines = Baselines::default();
        let absent = with_namespace(NamespaceState::Absent);
        let ours = with_namespace(NamespaceState::Ours);
        assert!(baselines.changed("a", &absent), "no pass has observed yet");
        baselines.record("a", &absent);
        assert!(!baselines.changed("a", &absent));
        assert!(baselines.changed("a", &ours));
    }

    #[test]
    fn while_a_pass_will_look_again_no_event_wakes_it_and_its_last_look_counts() {
        let baselines = Baselines::default();
        let absent = with_namespace(NamespaceState::Absent);
        let ours = with_namespace(NamespaceState::Ours);
        baselines.record("a", &absent);
        let observing = baselines.observing("a");
        assert!(baselines.is_observing("a"));
        assert!(
            !baselines.changed("a", &ours),
            "its own namespace appearing"
        );
        assert_eq!(observing.finish(|| (ours.clone(), ())).0, ours);
        assert!(!baselines.is_observing("a"));
        assert!(!baselines.changed("a", &ours));
        assert!(baselines.changed("a", &absent));
    }

    #[test]
    fn a_pass_that_fails_before_its_last_look_leaves_every_event_waking() {
        let baselines = Baselines::default();
        let absent = with_namespace(NamespaceState::Absent);
        baselines.record("a", &absent);
        drop(baselines.observing("a"));
        assert!(!baselines.is_observing("a"));
        assert!(baselines.changed("a", &absent));
    }
}
