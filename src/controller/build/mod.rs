//! Pure builders: a decided `Plan` (plus the generated passwords and the
//! values of referenced Secrets) becomes the objects of one installation.
//! Nothing here talks to the API server, so every builder is unit-tested.

pub mod access;
pub mod app;
pub mod database;
pub mod filestore;
pub mod ingress;
pub mod namespace;
pub mod policy;
pub mod secrets;
pub mod security;
pub mod seed;
pub mod template;

use std::collections::BTreeMap;

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Resource,
    api::{ApiResource, DynamicObject},
};
use serde::Serialize;

use super::plan::Plan;
use crate::api::labels;
pub use secrets::{ExternalSecrets, GeneratedSecrets};

/// What a build needs besides the plan.
#[derive(Clone, Debug)]
pub struct BuildInput<'a> {
    pub plan: &'a Plan,
    pub generated: &'a GeneratedSecrets,
    pub external: &'a ExternalSecrets,
    /// The version the app runs in this pass (differs from `plan.version`
    /// while an upgrade test still runs the old one).
    pub app_version: &'a str,
    /// Whether the seed Job belongs to the installation now.
    pub seed: bool,
}

/// One object to apply, type-erased so objects of every kind can be applied
/// and pruned the same way.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl DesiredObject {
    pub fn kind(&self) -> &str {
        &self.resource.kind
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }
}

/// Erases a typed object into a `DesiredObject`.
pub fn erase<K>(object: K) -> DesiredObject
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize,
{
    let resource = ApiResource::erase::<K>(&());
    let mut value = serde_json::to_value(&object).expect("Kubernetes objects serialize to JSON");
    value["apiVersion"] = resource.api_version.clone().into();
    value["kind"] = resource.kind.clone().into();
    let object: DynamicObject =
        serde_json::from_value(value).expect("a serialized object reads back as a DynamicObject");
    DesiredObject { resource, object }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("profile env {name}: {source}")]
    Template {
        name: String,
        source: template::TemplateError,
    },
    #[error("referenced secret {namespace}/{name} has no key {key:?}")]
    MissingSecretKey {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{0} needs a secretRef")]
    MissingSecretRef(&'static str),
}

impl BuildError {
    pub fn reason(&self) -> &'static str {
        match self {
            BuildError::Template { .. } => "ProfileTemplateInvalid",
            BuildError::MissingSecretKey { .. } => "SecretKeyMissing",
            BuildError::MissingSecretRef(_) => "SecretRefMissing",
        }
    }
}

/// Every namespaced object of the installation, in apply order.
pub fn children(input: &BuildInput) -> Result<Vec<DesiredObject>, BuildError> {
    let mut objects = vec![
        erase(secrets::generated_copy(input)),
        erase(secrets::credentials(input)),
        erase(policy::resource_quota(input)),
        erase(policy::limit_range(input)),
        erase(policy::network_policy(input)),
    ];
    objects.extend(access::credentials_reader_binding(input).map(erase));
    objects.extend(database::objects(input)?);
    objects.extend(filestore::objects(input)?);
    objects.extend(app::objects(input)?);
    objects.push(erase(ingress::ingress(input)));
    if input.seed {
        objects.extend(seed::job(input).map(erase));
    }
    Ok(objects)
}

/// Labels on every object of an installation.
pub fn labels(plan: &Plan, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY_KEY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::INSTALLATION.to_string(), plan.name.clone()),
        (labels::COMPONENT.to_string(), component.to_string()),
        ("app.kubernetes.io/instance".to_string(), plan.name.clone()),
    ])
}

/// Labels that select the pods of one component.
pub fn selector(plan: &Plan, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::INSTALLATION.to_string(), plan.name.clone()),
        (labels::COMPONENT.to_string(), component.to_string()),
    ])
}

/// Metadata of a namespaced child.
pub fn meta(input: &BuildInput, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(input.plan.namespace.clone()),
        labels: Some(labels(input.plan, component)),
        ..Default::default()
    }
}

/// A short, stable hash of some bytes, for pod template annotations that roll
/// pods when their configuration changes.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in parts {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value);
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::controller::{config::ControllerConfig, plan};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    pub fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "ephemera.dev/v1alpha1".into(),
            kind: "TestInstallation".into(),
            name: "demo".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn plan_with(
        spec: crate::api::TestInstallationSpec,
        profile: crate::api::InstallationProfile,
    ) -> Plan {
        plan::plan(
            &plan::tests::installation(spec),
            &profile,
            &ControllerConfig::default(),
        )
        .unwrap()
    }

    pub fn input<'a>(
        plan: &'a Plan,
        generated: &'a GeneratedSecrets,
        external: &'a ExternalSecrets,
    ) -> BuildInput<'a> {
        BuildInput {
            plan,
            generated,
            external,
            app_version: &plan.version,
            seed: false,
        }
    }

    pub fn generated() -> GeneratedSecrets {
        GeneratedSecrets {
            credentials: crate::api::credentials::Credentials {
                admin_user: "admin".into(),
                admin_password: "admin-pw".into(),
                user: "user".into(),
                user_password: "user-pw".into(),
            },
            database_password: "db-pw".into(),
            filestore_access_key: "fs-access".into(),
            filestore_secret_key: "fs-secret".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{generated, input, plan_with};
    use super::*;
    use crate::controller::plan::tests::profile;

    #[test]
    fn children_are_labelled_and_owned_only_through_their_namespace() {
        let plan = plan_with(Default::default(), profile());
        let (generated, external) = (generated(), ExternalSecrets::default());
        let children = children(&input(&plan, &generated, &external)).unwrap();
        assert!(children.len() > 10, "{} children", children.len());
        for child in &children {
            let what = format!("{} {}", child.kind(), child.name());
            let meta = &child.object.metadata;
            assert_eq!(meta.namespace.as_deref(), Some("ti-demo"), "{what}");
            assert_eq!(
                meta.labels.as_ref().unwrap()[labels::INSTALLATION],
                "demo",
                "{what}"
            );
            // The garbage collector would look up the installation for
            // every child it meets before the installation itself.
            assert!(meta.owner_references.is_none(), "{what}");
        }
    }
}
