//! Which changes run a pass.
//!
//! Of a TestInstallation: the spec (its generation), labels (capacity counts
//! requesters by label), finalizers, the start of a deletion and a person's
//! request for a pass (`ephemera.dev/reconcile-requested-at`); not the
//! status (which the controller writes itself) nor other annotations (where
//! adapters keep their memory).
//!
//! Of a child (see `child_event_wake`): a change someone else made to what
//! the controller applied, or one that changes what a pass observes; not
//! the echo of the controller's own apply, nor the many status updates of a
//! rollout that do not change the installation's status. A change of what
//! is observed, with nothing to apply, only refreshes the status (see
//! `refresh`).

use std::hash::{DefaultHasher, Hash, Hasher};

use kube::{
    Resource,
    runtime::{Predicate, predicates},
};

/// The deletion timestamp (a deletion must run a pass even where the API
/// server does not bump the generation).
pub fn deletion<K: Resource>(object: &K) -> Option<u64> {
    let timestamp = object.meta().deletion_timestamp.as_ref();
    Some(hash_of(timestamp.map(|t| t.0.to_string())))
}

/// The value of `ephemera.dev/reconcile-requested-at`, when there is one.
pub fn reconcile_requested<K: Resource>(object: &K) -> Option<u64> {
    let annotations = object.meta().annotations.as_ref()?;
    let value = annotations.get(crate::api::labels::RECONCILE_REQUESTED_AT)?;
    Some(hash_of(value))
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The changes of an installation that run a pass.
pub fn installation_changes<K: Resource>() -> impl Predicate<K> {
    predicates::generation
        .combine(predicates::labels)
        .combine(predicates::finalizers)
        .combine(deletion)
        .combine(reconcile_requested)
}

/// A watch event of one of an installation's children (or its namespace),
/// as the stores show it once the event is in.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChildEvent {
    /// The installation is being deleted: the urgent lane has it.
    pub installation_deleting: bool,
    /// For kinds the controller applies: whether the object is gone from
    /// its store, and whether it is as this process last applied it.
    /// `None` for kinds it only watches (pods).
    pub applied: Option<AppliedState>,
    /// Whether what a pass observes of the installation now differs from
    /// what its last pass observed.
    pub observed_changed: bool,
    /// Whether everything the installation's spec asks for, at its current
    /// generation, was applied by the last pass, with nothing left that
    /// follows from its status (see `baselines`).
    pub settled: bool,
}

/// What a child's event makes the controller do for its installation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Nothing,
    /// Record what the workloads show in the status, without a pass: there
    /// is nothing to apply.
    Refresh,
    /// Run a pass.
    Pass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppliedState {
    /// As this process last applied it: the event is the echo of its own
    /// write, or a status update.
    AsApplied,
    /// Changed by someone else, or not applied by this process (yet).
    Changed,
    Gone,
}

/// What a child's event makes the controller do for its installation.
pub fn child_event_wake(event: &ChildEvent) -> Wake {
    if event.installation_deleting {
        return Wake::Nothing;
    }
    if matches!(
        event.applied,
        Some(AppliedState::Changed | AppliedState::Gone)
    ) {
        return Wake::Pass;
    }
    match (event.observed_changed, event.settled) {
        (false, _) => Wake::Nothing,
        (true, true) => Wake::Refresh,
        (true, false) => Wake::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TestInstallation, TestInstallationSpec};

    fn installation() -> TestInstallation {
        let mut ti = TestInstallation::new("demo", TestInstallationSpec::default());
        ti.metadata.generation = Some(1);
        ti.metadata.uid = Some("u".into());
        ti
    }

    fn fingerprint(ti: &TestInstallation) -> Option<u64> {
        installation_changes::<TestInstallation>().hash_property(ti)
    }

    #[test]
    fn status_and_annotations_do_not_run_a_pass() {
        let before = installation();
        let mut after = before.clone();
        after.status = Some(Default::default());
        after
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("ephemera.dev/chat-thread".into(), "x".into());
        assert_eq!(fingerprint(&before), fingerprint(&after));
    }

    #[test]
    fn spec_labels_finalizers_deletion_and_a_requested_pass_do() {
        let before = installation();
        let mut spec = before.clone();
        spec.metadata.generation = Some(2);
        let mut labelled = before.clone();
        labelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("ephemera.dev/requester".into(), "ann".into());
        let mut finalized = before.clone();
        finalized.metadata.finalizers = Some(vec!["ephemera.dev/namespace-cleanup".into()]);
        let mut deleted = before.clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        let mut requested = before.clone();
        requested
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(
                crate::api::labels::RECONCILE_REQUESTED_AT.into(),
                "2026-12-03T14:00:00Z".into(),
            );
        let mut requested_again = requested.clone();
        requested_again
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(
                crate::api::labels::RECONCILE_REQUESTED_AT.into(),
                "2026-12-03T14:05:00Z".into(),
            );
        assert_ne!(fingerprint(&requested), fingerprint(&requested_again));
        for changed in [spec, labelled, finalized, deleted, requested] {
            assert_ne!(fingerprint(&before), fingerprint(&changed));
        }
    }

    #[test]
    fn own_writes_and_status_updates_that_change_nothing_do_not_wake() {
        let echo = ChildEvent {
            applied: Some(AppliedState::AsApplied),
            ..Default::default()
        };
        assert_eq!(child_event_wake(&echo), Wake::Nothing);
        // A pod appearing without trouble changes nothing a pass observes.
        let pod = ChildEvent::default();
        assert_eq!(child_event_wake(&pod), Wake::Nothing);
    }

    #[test]
    fn drift_and_deletion_run_a_pass_even_when_settled() {
        for applied in [AppliedState::Changed, AppliedState::Gone] {
            let drift = ChildEvent {
                applied: Some(applied),
                observed_changed: true,
                settled: true,
                ..Default::default()
            };
            assert_eq!(child_event_wake(&drift), Wake::Pass, "{applied:?}");
        }
    }

    #[test]
    fn an_observed_change_refreshes_a_settled_installation_and_runs_a_pass_otherwise() {
        let rolled_out = ChildEvent {
            applied: Some(AppliedState::AsApplied),
            observed_changed: true,
            settled: true,
            ..Default::default()
        };
        assert_eq!(child_event_wake(&rolled_out), Wake::Refresh);
        let pod_ready = ChildEvent {
            applied: None,
            ..rolled_out
        };
        assert_eq!(child_event_wake(&pod_ready), Wake::Refresh);
        let unsettled = ChildEvent {
            settled: false,
            ..rolled_out
        };
        assert_eq!(child_event_wake(&unsettled), Wake::Pass);
    }

    #[test]
    fn nothing_wakes_an_installation_being_deleted() {
        let cascade = ChildEvent {
            installation_deleting: true,
            applied: Some(AppliedState::Gone),
            observed_changed: true,
            settled: true,
        };
        assert_eq!(child_event_wake(&cascade), Wake::Nothing);
    }
}
