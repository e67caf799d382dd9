//! Which changes of a TestInstallation run a pass. The spec (its
//! generation), labels (capacity counts requesters by label), finalizers and
//! the start of a deletion do; the status (which the controller writes
//! itself) and annotations (where adapters keep their memory) do not.

use std::hash::{DefaultHasher, Hash, Hasher};

use kube::{
    Resource,
    runtime::{Predicate, predicates},
};

/// The deletion timestamp (a deletion must run a pass even where the API
/// server does not bump the generation).
pub fn deletion<K: Resource>(object: &K) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    object
        .meta()
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// The changes of an installation that run a pass.
pub fn installation_changes<K: Resource>() -> impl Predicate<K> {
    predicates::generation
        .combine(predicates::labels)
        .combine(predicates::finalizers)
        .combine(deletion)
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
    fn spec_labels_finalizers_and_deletion_do() {
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
        for changed in [spec, labelled, finalized, deleted] {
            assert_ne!(fingerprint(&before), fingerprint(&changed));
        }
    }
}
