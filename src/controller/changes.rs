//! Acting on change: apply only the objects whose desired state differs from
//! what this process last applied or that changed since (as the stores show
//! them), and prune from the stores instead of listing every kind.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch},
};

use super::{
    apply::apply_params,
    build::DesiredObject,
    cache::{Caches, desired_hash},
};

/// Applies the namespace unless the store shows it as last applied.
pub async fn apply_namespace(
    client: &Client,
    caches: &Caches,
    namespace: &Namespace,
) -> kube::Result<()> {
    let name = namespace.name_any();
    let desired = desired_hash(namespace);
    if caches.unchanged("Namespace", "", &name, desired) {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let applied = api
        .patch(&name, &apply_params(), &Patch::Apply(namespace))
        .await?;
    caches.record_applied("Namespace", &applied.metadata, desired);
    Ok(())
}

/// Applies, in order, each object that is missing, changed by someone else
/// or desired differently than last applied. A Job whose template changed
/// cannot be updated in place; it is deleted and comes back on the next pass.
/// Returns how many objects were applied.
pub async fn apply_changed(
    client: &Client,
    caches: &Caches,
    namespace: &str,
    objects: &[DesiredObject],
) -> kube::Result<usize> {
    let mut applied_count = 0;
    for desired in objects {
        let hash = desired_hash(&desired.object);
        if caches.unchanged(desired.kind(), namespace, desired.name(), hash) {
            continue;
        }
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
            Ok(applied) => {
                caches.record_applied(desired.kind(), &applied.metadata, hash);
                applied_count += 1;
            }
            Err(kube::Error::Api(status)) if status.code == 422 && desired.kind() == "Job" => {
                tracing::info!(job = desired.name(), %namespace, "job template changed; replacing the job");
                api.delete(desired.name(), &DeleteParams::background())
                    .await?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(applied_count)
}

/// Deletes the installation's labelled objects that the stores show and
/// that are not desired any more. Returns `Kind/name` of each deleted object.
pub async fn prune(
    client: &Client,
    caches: &Caches,
    namespace: &str,
    installation: &str,
    desired: &[DesiredObject],
) -> kube::Result<Vec<String>> {
    let wanted: BTreeSet<(&str, &str)> = desired.iter().map(|d| (d.kind(), d.name())).collect();
    let mut deleted = Vec::new();
    for (kind, meta) in caches.children_of(namespace, installation) {
        let name = meta.name.clone().unwrap_or_default();
        if meta.deletion_timestamp.is_some() || wanted.contains(&(kind, name.as_str())) {
            continue;
        }
        let Some(resource) = resource_of(kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("{kind}/{name}")),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(deleted)
}

fn resource_of(kind: &str) -> Option<ApiResource> {
    use k8s_openapi::api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{LimitRange, ResourceQuota, Secret, Service},
        networking::v1::{Ingress, NetworkPolicy},
    };
    Some(match kind {
        "Secret" => ApiResource::erase::<Secret>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
        "Job" => ApiResource::erase::<Job>(&()),
        "Ingress" => ApiResource::erase::<Ingress>(&()),
        "ResourceQuota" => ApiResource::erase::<ResourceQuota>(&()),
        "LimitRange" => ApiResource::erase::<LimitRange>(&()),
        "NetworkPolicy" => ApiResource::erase::<NetworkPolicy>(&()),
        _ => return None,
    })
}
