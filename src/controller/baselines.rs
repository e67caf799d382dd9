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
//!
//! A pass that applied everything its installation's spec asks for, with
//! nothing left that follows from the status, marks its baseline settled at
//! the installation's generation and its profile's version: until either
//! changes, an event that only changes what is observed refreshes the
//! status (see `refresh`) instead of running a pass.

use std::{collections::HashMap, sync::Mutex};

use super::observe::Observed;

#[derive(Debug, Default)]
pub struct Baselines(Mutex<HashMap<String, Baseline>>);

/// What a pass applied everything of: the installation's generation and
/// its profile's resourceVersion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub generation: i64,
    pub profile_version: Option<String>,
}

#[derive(Debug)]
enum Baseline {
    Observed {
        observed: Box<Observed>,
        /// What the last pass applied in full.
        settled_at: Option<Settled>,
    },
    /// A pass is running that observes again before it ends.
    Observing,
}

impl Baselines {
    /// Records what a pass of `installation` observed.
    pub fn record(&self, installation: &str, observed: &Observed) {
        self.lock()
            .insert(installation.to_string(), Baseline::observed(observed, None));
    }

    /// Whether the last pass of `installation` applied everything
    /// `generation` asks for.
    pub fn is_settled_at(&self, installation: &str, generation: i64) -> bool {
        matches!(
            self.lock().get(installation),
            Some(Baseline::Observed { settled_at: Some(at), .. }) if at.generation == generation
        )
    }

    /// For a status refresh: when `installation` is settled at `settled`
    /// (its spec and profile as they are now), takes a look with `look` and records it (still
    /// settled), as one step for the events judged meanwhile. Returns the
    /// look and whether the status sees it differently from the last one.
    pub fn look_again(
        &self,
        installation: &str,
        settled: &Settled,
        look: impl FnOnce() -> Observed,
    ) -> Option<(Observed, bool)> {
        let mut baselines = self.lock();
        let baseline = baselines.get_mut(installation)?;
        let Baseline::Observed {
            observed,
            settled_at: Some(at),
        } = baseline
        else {
            return None;
        };
        if at != settled {
            return None;
        }
        let now = look();
        let changed = observed.as_the_status_sees_it() != now.as_the_status_sees_it();
        **observed = now.clone();
        Some((now, changed))
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
            Some(Baseline::Observed { observed, .. }) => observed.as_the_status_sees_it() != *now,
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

impl Baseline {
    fn observed(observed: &Observed, settled_at: Option<Settled>) -> Self {
        Self::Observed {
            observed: Box::new(observed.clone()),
            settled_at,
        }
    }
}

/// A pass between its first and its last look (see `Baselines::observing`).
pub struct Observing<'a> {
    baselines: &'a Baselines,
    installation: &'a str,
    finished: bool,
}

impl Observing<'_> {
    /// Takes the pass's last look with `look` (what it observes, whatever
    /// else it reads of the stores or concludes, and whether that settles
    /// the installation) and records it, as one step for the events judged
    /// meanwhile.
    pub fn finish<T>(
        mut self,
        look: impl FnOnce() -> (Observed, T, Option<Settled>),
    ) -> (Observed, T) {
        let mut baselines = self.baselines.lock();
        let (observed, also, settled) = look();
        baselines.insert(
            self.installation.to_string(),
            Baseline::observed(&observed, settled),
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
        assert_eq!(observing.finish(|| (ours.clone(), (), None)).0, ours);
        assert!(!baselines.is_observing("a"));
        assert!(!baselines.changed("a", &ours));
        assert!(baselines.changed("a", &absent));
    }

    #[test]
    fn a_settled_installation_is_looked_at_again_only_as_it_was_settled() {
        let baselines = Baselines::default();
        let absent = with_namespace(NamespaceState::Absent);
        let ours = with_namespace(NamespaceState::Ours);
        let at = |generation, profile: &str| Settled {
            generation,
            profile_version: Some(profile.into()),
        };
        assert_eq!(
            baselines.look_again("a", &at(1, "p1"), || ours.clone()),
            None
        );
        baselines.record("a", &absent);
        assert!(!baselines.is_settled_at("a", 1));
        assert_eq!(
            baselines.look_again("a", &at(1, "p1"), || ours.clone()),
            None
        );
        baselines
            .observing("a")
            .finish(|| (absent.clone(), (), Some(at(1, "p1"))));
        assert!(baselines.is_settled_at("a", 1));
        assert!(!baselines.is_settled_at("a", 2), "the spec changed since");
        assert_eq!(
            baselines.look_again("a", &at(2, "p1"), || ours.clone()),
            None
        );
        assert_eq!(
            baselines.look_again("a", &at(1, "p2"), || ours.clone()),
            None,
            "the profile changed since"
        );
        assert_eq!(
            baselines.look_again("a", &at(1, "p1"), || ours.clone()),
            Some((ours.clone(), true))
        );
        assert!(
            !baselines.changed("a", &ours),
            "the refresh's look is the baseline"
        );
        assert_eq!(
            baselines.look_again("a", &at(1, "p1"), || ours.clone()),
            Some((ours.clone(), false)),
            "nothing changed since the last look"
        );
        assert!(baselines.is_settled_at("a", 1), "and it stays settled");
        // The next pass starts unsettled until it has applied everything.
        drop(baselines.observing("a"));
        assert!(!baselines.is_settled_at("a", 1));
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
