//! Server-side apply of the desired objects (one field manager, forced, so
//! the controller's intent always wins) and pruning of labelled leftovers that
//! are no longer desired (say, the MinIO objects after a switch to s3).

use std::collections::BTreeSet;

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{LimitRange, Namespace, ResourceQuota, Secret, Service},
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};

use super::build::DesiredObject;
use crate::api::labels;

/// The field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "ephemera-controller";

pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

pub async fn apply_namespace(client: &Client, namespace: &Namespace) -> kube::Result<Namespace> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        &namespace.name_any(),
        &apply_params(),
        &Patch::Apply(namespace),
    )
    .await
}

/// Applies each object in order. A Job whose template changed cannot be
/// updated in place; it is deleted and comes back on the next pass.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    objects: &[DesiredObject],
) -> kube::Result<()> {
    for desired in objects {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &desired.resource);
        match api
            .patch(
                desired.name(),
                &apply_params(),
                &Patch::Apply(&desired.object),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 422 && desired.kind() == "Job" => {
                tracing::info!(job = desired.name(), %namespace, "job template changed; replacing the job");
                api.delete(desired.name(), &DeleteParams::background())
                    .await?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The kinds the controller creates and may therefore prune.
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
    ]
}

/// Deletes objects labelled as this installation's that are not desired any
/// more. Returns `Kind/name` of each deleted object.
pub async fn prune(
    client: &Client,
    namespace: &str,
    installation: &str,
    desired: &[DesiredObject],
) -> kube::Result<Vec<String>> {
    let wanted: BTreeSet<(String, String)> = desired
        .iter()
        .map(|d| (d.kind().to_string(), d.name().to_string()))
        .collect();
    let selector = format!(
        "{}={installation},{}={}",
        labels::INSTALLATION,
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY_VALUE
    );
    let mut deleted = Vec::new();
    for resource in prunable_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let existing = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await?;
        for object in existing.items {
            let name = object.name_any();
            if object.metadata.deletion_timestamp.is_some()
                || wanted.contains(&(resource.kind.clone(), name.clone()))
            {
                continue;
            }
            api.delete(&name, &DeleteParams::background()).await?;
            deleted.push(format!("{}/{name}", resource.kind));
        }
    }
    Ok(deleted)
}
