//! Server-side apply of the desired objects (one field manager, forced, so
//! the controller's intent always wins) and pruning of labelled leftovers that
//! are no longer desired (say, the MinIO objects after a switch to s3).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service},
    networking::v1::{Ingress, NetworkPolicy},
    rbac::v1::RoleBinding,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};

use super::{
    build::DesiredObject,
    error::{Context, Result},
};
use crate::api::labels;

/// The field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "ephemera-controller";

pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

pub async fn apply_namespace(client: &Client, namespace: &Namespace) -> Result<Namespace> {
    let api: Api<Namespace> = Api::all(client.clone());
    let name = namespace.name_any();
    api.patch(&name, &apply_params(), &Patch::Apply(namespace))
        .await
        .request("apply", format!("Namespace {name}"))
}

/// What `apply_all` had to do besides applying.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// `Kind/name` of objects deleted to be created anew on the next pass,
    /// because a field that changed cannot be updated in place.
    pub recreated: Vec<String>,
    /// UID of each applied object, by `Kind/name`, as the API server
    /// answered (a UID other than the one read means it was created anew).
    pub uids: BTreeMap<String, String>,
}

/// Applies each object in order. A Job or StatefulSet whose change the API
/// server refuses as an update of an immutable field (422) is deleted and
/// comes back, as asked, on the next pass (for the database that means a new,
/// empty volume: the change asked for a different kind of storage). Any other
/// refusal is returned with the object it concerns.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    objects: &[DesiredObject],
) -> Result<Applied> {
    let mut applied = Applied::default();
    for desired in objects {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &desired.resource);
        let what = format!("{} {namespace}/{}", desired.kind(), desired.name());
        match api
            .patch(
                desired.name(),
                &apply_params(),
                &Patch::Apply(&desired.object),
            )
            .await
        {
            Ok(object) => {
                if let Some(uid) = object.metadata.uid {
                    applied
                        .uids
                        .insert(format!("{}/{}", desired.kind(), desired.name()), uid);
                }
            }
            Err(kube::Error::Api(status)) if status.code == 422 && recreatable(desired.kind()) => {
                tracing::info!(object = %what, message = %status.message, "a changed field cannot be updated in place; recreating the object");
                // A 404 here means it did not exist: the object itself is
                // invalid, and recreating would not help.
                api.delete(desired.name(), &DeleteParams::background())
                    .await
                    .map_err(|_| kube::Error::Api(status))
                    .request("apply", what)?;
                applied
                    .recreated
                    .push(format!("{}/{}", desired.kind(), desired.name()));
            }
            Err(err) => return Err(err).request("apply", what),
        }
    }
    Ok(applied)
}

/// Kinds whose immutable fields are changed by deleting and creating them.
fn recreatable(kind: &str) -> bool {
    matches!(kind, "Job" | "StatefulSet")
}

/// The kinds the controller creates (or, for claims, has created for it)
/// and may therefore prune.
fn prunable_kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<Ingress>(&()),
        ApiResource::erase::<ResourceQuota>(&()),
        ApiResource::erase::<LimitRange>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
    ]
}

/// `(kind, name)` of every object that should exist: the desired ones, and
/// the claims their StatefulSets' volume claim templates make.
pub fn wanted(desired: &[DesiredObject]) -> BTreeSet<(String, String)> {
    let mut wanted: BTreeSet<(String, String)> = desired
        .iter()
        .map(|d| (d.kind().to_string(), d.name().to_string()))
        .collect();
    for d in desired.iter().filter(|d| d.kind() == "StatefulSet") {
        let spec = &d.object.data["spec"];
        // Claims stay while the set is scaled to zero (hibernation keeps data).
        let replicas = spec["replicas"].as_u64().unwrap_or(1).max(1);
        let claims = spec["volumeClaimTemplates"].as_array().cloned();
        for claim in claims.unwrap_or_default() {
            let Some(claim) = claim["metadata"]["name"].as_str() else {
                continue;
            };
            for ordinal in 0..replicas {
                wanted.insert((
                    "PersistentVolumeClaim".into(),
                    format!("{claim}-{}-{ordinal}", d.name()),
                ));
            }
        }
    }
    wanted
}

/// What `prune` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// `Kind/name` of each deleted object.
    pub deleted: Vec<String>,
    /// Kinds that could not be listed (say, 403: the controller's role does
    /// not cover them), with the API server's message.
    pub skipped: Vec<String>,
}

/// Deletes objects labelled as this installation's that are not desired any
/// more. A kind that cannot be listed is skipped (and reported), not a
/// failure of the pass.
pub async fn prune(
    client: &Client,
    namespace: &str,
    installation: &str,
    desired: &[DesiredObject],
) -> Result<Pruned> {
    let wanted = wanted(desired);
    let selector = format!(
        "{}={installation},{}={}",
        labels::INSTALLATION,
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY_VALUE
    );
    let mut pruned = Pruned::default();
    for resource in prunable_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let existing = match api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 404 => {
                tracing::warn!(kind = %resource.kind, %namespace, message = %status.message, "cannot list objects to prune; skipping this kind");
                pruned
                    .skipped
                    .push(format!("{}: {}", resource.kind, status.message));
                continue;
            }
            Err(err) => {
                return Err(err).request("list", format!("{} in {namespace}", resource.plural));
            }
        };
        for object in existing.items {
            let name = object.name_any();
            if object.metadata.deletion_timestamp.is_some()
                || wanted.contains(&(resource.kind.clone(), name.clone()))
            {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => pruned.deleted.push(format!("{}/{name}", resource.kind)),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => {
                    return Err(err)
                        .request("delete", format!("{} {namespace}/{name}", resource.kind));
                }
            }
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseSpec, DatabaseStorage, TestInstallationSpec};
    use crate::controller::build::{
        self, BuildInput, ExternalSecrets,
        test_support::{generated, plan_with},
    };

    #[test]
    fn claims_of_the_database_are_wanted_only_while_it_is_persistent() {
        let claim = (
            "PersistentVolumeClaim".to_string(),
            "data-database-0".to_string(),
        );
        let (generated, external) = (generated(), ExternalSecrets::default());
        for (storage, hibernate, expected) in [
            (DatabaseStorage::Persistent, false, true),
            (DatabaseStorage::Persistent, true, true),
            (DatabaseStorage::Ephemeral, false, false),
        ] {
            let spec = TestInstallationSpec {
                database: Some(DatabaseSpec {
                    storage: Some(storage),
                    ..Default::default()
                }),
                hibernate,
                ..Default::default()
            };
            let plan = plan_with(spec, crate::controller::plan::tests::profile());
            let input = BuildInput {
                plan: &plan,
                generated: &generated,
                external: &external,
                app_version: &plan.version,
                seed: false,
            };
            let children = build::children(&input).unwrap();
            assert_eq!(
                wanted(&children).contains(&claim),
                expected,
                "{storage:?} {hibernate}"
            );
        }
    }
}
