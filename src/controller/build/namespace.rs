//! The installation's namespace: owned by the TestInstallation, labelled as
//! managed by ephemera, with Pod Security labels.

use k8s_openapi::{
    api::core::v1::Namespace,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use super::labels;
use crate::controller::plan::Plan;

pub fn namespace(plan: &Plan, owner: OwnerReference) -> Namespace {
    let mut labels = labels(plan, "namespace");
    // Images that must start as root cannot meet "restricted"; they still get
    // "baseline", and a warning for anything below "restricted".
    let enforce = if plan.run_as_non_root {
        "restricted"
    } else {
        "baseline"
    };
    labels.insert("pod-security.kubernetes.io/enforce".into(), enforce.into());
    labels.insert(
        "pod-security.kubernetes.io/warn".into(),
        "restricted".into(),
    );
    labels.insert(
        "pod-security.kubernetes.io/audit".into(),
        "restricted".into(),
    );
    Namespace {
        metadata: ObjectMeta {
            name: Some(plan.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::test_support::{owner, plan_with};
    use crate::controller::plan::tests::profile;

    #[test]
    fn labelled_owned_and_restricted() {
        let ns = namespace(&plan_with(Default::default(), profile()), owner());
        let labels = ns.metadata.labels.unwrap();
        assert_eq!(ns.metadata.name.as_deref(), Some("ti-demo"));
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ephemera");
        assert_eq!(labels["ephemera.dev/installation"], "demo");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(ns.metadata.owner_references.unwrap()[0].uid, "uid-1");
    }
}
