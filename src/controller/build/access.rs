//! Who besides the controller may read what in an installation's namespace:
//! a RoleBinding of the configured credentials reader (the chat adapter) to
//! its ClusterRole, so that adapter reads the `credentials` Secret of the
//! installations only, namespace by namespace, instead of every Secret of
//! that name in the cluster.

use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};

use super::{BuildInput, meta};

/// Name of the RoleBinding in each installation namespace.
pub const CREDENTIALS_READER_BINDING: &str = "ephemera-credentials-reader";

/// The binding of the credentials reader, if one is configured.
pub fn credentials_reader_binding(input: &BuildInput) -> Option<RoleBinding> {
    let reader = input.plan.credentials_reader.as_ref()?;
    let (namespace, name) = reader.subject()?;
    Some(RoleBinding {
        metadata: meta(input, CREDENTIALS_READER_BINDING, "access"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: reader.cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{
        build::{
            ExternalSecrets,
            test_support::{generated, input},
        },
        config::{ControllerConfig, CredentialsReader},
        plan,
    };

    fn plan_with(reader: Option<CredentialsReader>) -> plan::Plan {
        let config = ControllerConfig {
            credentials_reader: reader,
            ..Default::default()
        };
        let profile: crate::api::InstallationProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "ephemera.dev/v1alpha1", "kind": "InstallationProfile",
            "metadata": { "name": "p" },
            "spec": { "image": "registry.example/app", "defaultVersion": "1.0.0" }
        }))
        .unwrap();
        plan::plan(
            &plan::tests::installation(Default::default()),
            &profile,
            &config,
        )
        .unwrap()
    }

    #[test]
    fn binds_the_configured_reader_in_the_installation_namespace_only() {
        let plan = plan_with(Some(CredentialsReader {
            service_account: "ephemera-system/ephemera-chat".into(),
            cluster_role: "ephemera-credentials-reader".into(),
        }));
        let (generated, external) = (generated(), ExternalSecrets::default());
        let binding = credentials_reader_binding(&input(&plan, &generated, &external)).unwrap();
        assert_eq!(
            binding.metadata.namespace.as_deref(),
            Some(plan.namespace.as_str())
        );
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "ephemera-credentials-reader");
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "ephemera-chat");
        assert_eq!(subjects[0].namespace.as_deref(), Some("ephemera-system"));
    }

    #[test]
    fn no_reader_no_binding() {
        let plan = plan_with(None);
        let (generated, external) = (generated(), ExternalSecrets::default());
        assert!(credentials_reader_binding(&input(&plan, &generated, &external)).is_none());
    }

    #[test]
    fn a_reader_must_name_namespace_and_account() {
        for bad in ["no-slash", "/name", "ns/", "ns/Upper", "a/b/c"] {
            let reader = CredentialsReader {
                service_account: bad.into(),
                cluster_role: "r".into(),
            };
            assert_eq!(reader.subject(), None, "{bad}");
            let config = ControllerConfig {
                credentials_reader: Some(reader),
                ..Default::default()
            };
            let err = config.check().unwrap_err().to_string();
            assert!(err.contains("credentialsReader.serviceAccount"), "{err}");
        }
    }
}
