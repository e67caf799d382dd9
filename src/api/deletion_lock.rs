//! `spec.deletionLocked`: a ValidatingAdmissionPolicy (and its binding) that
//! makes the API server itself refuse to delete a locked TestInstallation, for
//! every client: kubectl, GitOps tools, the adapters and the controller's own
//! expiry. Shipped with the CRDs.

use k8s_openapi::{
    api::admissionregistration::v1::{
        MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
        ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
        ValidatingAdmissionPolicySpec, Validation,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

pub const POLICY_NAME: &str = "ephemera-deletion-lock";

pub fn policy() -> ValidatingAdmissionPolicy {
    ValidatingAdmissionPolicy {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.into()),
            ..Default::default()
        },
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec![super::GROUP.into()]),
                    api_versions: Some(vec!["*".into()]),
                    operations: Some(vec!["DELETE".into()]),
                    resources: Some(vec!["testinstallations".into()]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            validations: Some(vec![Validation {
                expression: "!has(oldObject.spec.deletionLocked) || oldObject.spec.deletionLocked != true".into(),
                message_expression: Some(
                    "'TestInstallation ' + oldObject.metadata.name + ' is locked against deletion: set spec.deletionLocked to false first'".into(),
                ),
                reason: Some("Forbidden".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn binding() -> ValidatingAdmissionPolicyBinding {
    ValidatingAdmissionPolicyBinding {
        metadata: ObjectMeta {
            name: Some(POLICY_NAME.into()),
            ..Default::default()
        },
        spec: ValidatingAdmissionPolicyBindingSpec {
            policy_name: POLICY_NAME.into(),
            validation_actions: vec!["Deny".into()],
            ..Default::default()
        },
    }
}
