//! Acting on change: apply only the objects whose desired state differs from
//! what this process last applied or that changed since (as the stores show
//! them), and prune from the stores instead of listing every kind.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch},
};

use super::{
    apply::{Applied, Pruned, apply_params, wanted},
    build::{DesiredObject, secrets::GENERATED_SECRET},
    cache::{Caches, desired_hash},
    error::{Context as _, Result},
};
use crate::api::labels;

/// Applies the namespace unless the store shows it as last applied.
/// Returns how long it waited for the store to show it.
pub async fn apply_namespace(
    client: &Client,
    caches: &Caches,
    namespace: &Namespace,
) -> Result<Duration> {
    let name = namespace.name_any();
    let desired = desired_hash(namespace);
    if caches.unchanged("Namespace", "", &name, desired) {
        return Ok(Duration::ZERO);
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let applied = api
        .patch(&name, &apply_params(), &Patch::Apply(namespace))
        .await
        .request("apply", format!("Namespace {name}"))?;
    caches.record_applied("Namespace", &applied.metadata, desired);
    Ok(caches.catch_up(&[("Namespace", "", &name)]).await)
}

/// What `apply_changed` did: the objects applied (with their UIDs as the API
/// server answered, or as the store shows the unchanged ones) and those
/// deleted to be created anew.
pub struct Changes {
    pub applied: Applied,
    /// How many objects were actually sent to the API server.
    pub sent: usize,
    /// How long the pass waited for the stores to show what it sent.
    pub store_wait: Duration,
}

/// Applies each object that is missing, changed by someone else or desired
/// differently than last applied, wave by wave (see `wave`), the objects of
/// a wave at once. A Job or StatefulSet whose change the API server refuses
/// as an update of an immutable field (422) is deleted and comes back on the
/// next pass.
pub async fn apply_changed(
    client: &Client,
    caches: &Caches,
    namespace: &str,
    objects: &[DesiredObject],
) -> Result<Changes> {
    let mut changes = Changes {
        applied: Applied::default(),
        sent: 0,
        store_wait: Duration::ZERO,
    };
    for wave in waves(objects) {
        let outcomes = futures::future::join_all(
            wave.iter()
                .map(|desired| apply_one(client, caches, namespace, desired)),
        )
        .await;
        for (desired, outcome) in wave.iter().zip(outcomes) {
            let key = format!("{}/{}", desired.kind(), desired.name());
            match outcome? {
                Applying::Unchanged(uid) => {
                    if let Some(uid) = uid {
                        changes.applied.uids.insert(key, uid);
                    }
                }
                Applying::Applied(uid) => {
                    changes.sent += 1;
                    if let Some(uid) = uid {
                        changes.applied.uids.insert(key, uid);
                    }
                }
                Applying::Recreating => {
                    changes.sent += 1;
                    changes.applied.recreated.push(key);
                }
            }
        }
    }
    if changes.sent > 0 {
        let applied: Vec<(&str, &str, &str)> = objects
            .iter()
            .filter(|o| {
                changes
                    .applied
                    .uids
                    .contains_key(&format!("{}/{}", o.kind(), o.name()))
            })
            .map(|o| (o.kind(), namespace, o.name()))
            .collect();
        changes.store_wait = caches.catch_up(&applied).await;
    }
    Ok(changes)
}

/// What became of one desired object, with its UID where known.
enum Applying {
    /// As the store shows it, last applied so.
    Unchanged(Option<String>),
    Applied(Option<String>),
    /// Deleted, to be created anew by the next pass.
    Recreating,
}

async fn apply_one(
    client: &Client,
    caches: &Caches,
    namespace: &str,
    desired: &DesiredObject,
) -> Result<Applying> {
    let hash = desired_hash(&desired.object);
    if caches.unchanged(desired.kind(), namespace, desired.name(), hash) {
        let uid = caches
            .child(desired.kind(), namespace, desired.name())
            .and_then(|meta| meta.uid);
        return Ok(Applying::Unchanged(uid));
    }
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
        Ok(applied) => {
            caches.record_applied(desired.kind(), &applied.metadata, hash);
            Ok(Applying::Applied(applied.metadata.uid))
        }
        Err(kube::Error::Api(status)) if status.code == 422 && recreatable(desired.kind()) => {
            tracing::info!(object = %what, message = %status.message, "a changed field cannot be updated in place; recreating the object");
            // A 404 here means it did not exist: the object itself is
            // invalid, and recreating would not help.
            api.delete(desired.name(), &DeleteParams::background())
                .await
                .map_err(|_| kube::Error::Api(status))
                .request("apply", what)?;
            Ok(Applying::Recreating)
        }
        Err(err) => Err(err).request("apply", what),
    }
}

/// When an object is applied, as a wave number: the copy of the generated
/// values first (no generated value is written anywhere before its copy,
/// so a lost Secret can always be restored), then what pods need to be
/// admitted and to start (Secrets, quota, limit range, policies, Services),
/// then the workloads and the ingress. A pass of a new installation waits
/// for three round trips to the API server instead of one per object.
fn wave(kind: &str, name: &str) -> usize {
    match kind {
        "Secret" if name == GENERATED_SECRET => 0,
        "Deployment" | "StatefulSet" | "Job" | "Ingress" => 2,
        _ => 1,
    }
}

/// `objects` grouped by `wave`, in wave order, each in the given order.
fn waves(objects: &[DesiredObject]) -> Vec<Vec<&DesiredObject>> {
    let mut waves: Vec<Vec<&DesiredObject>> = vec![Vec::new(); 3];
    for object in objects {
        waves[wave(object.kind(), object.name())].push(object);
    }
    waves.retain(|wave| !wave.is_empty());
    waves
}

/// Kinds whose immutable fields are changed by deleting and creating them.
fn recreatable(kind: &str) -> bool {
    matches!(kind, "Job" | "StatefulSet")
}

/// Deletes the installation's labelled objects that the stores show and
/// that are not desired any more. Claims of the database (not watched) are
/// listed only when `list_claims` (the pass changed something in a namespace
/// that existed before it): they outlive their StatefulSet, which a change
/// of storage replaces.
pub async fn prune(
    client: &Client,
    caches: &Caches,
    namespace: &str,
    installation: &str,
    desired: &[DesiredObject],
    list_claims: bool,
) -> Result<Pruned> {
    let wanted = wanted(desired);
    let mut pruned = Pruned::default();
    let mut candidates: Vec<(String, String)> = caches
        .children_of(namespace)
        .into_iter()
        .filter(|(_, meta)| meta.deletion_timestamp.is_none())
        .map(|(kind, meta)| (kind.to_string(), meta.name.unwrap_or_default()))
        .collect();
    if list_claims {
        let selector = format!(
            "{}={installation},{}={}",
            labels::INSTALLATION,
            labels::MANAGED_BY_KEY,
            labels::MANAGED_BY_VALUE
        );
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        match claims
            .list_metadata(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => candidates.extend(
                list.items
                    .into_iter()
                    .filter(|claim| claim.metadata.deletion_timestamp.is_none())
                    .map(|claim| ("PersistentVolumeClaim".to_string(), claim.name_any())),
            ),
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 404 => {
                tracing::warn!(%namespace, message = %status.message, "cannot list claims to prune; skipping them");
                pruned
                    .skipped
                    .push(format!("PersistentVolumeClaim: {}", status.message));
            }
            Err(err) => {
                return Err(err).request("list", format!("persistentvolumeclaims in {namespace}"));
            }
        }
    }
    let unique: BTreeSet<(String, String)> = candidates.into_iter().collect();
    for (kind, name) in unique {
        if wanted.contains(&(kind.clone(), name.clone())) {
            continue;
        }
        let Some(resource) = resource_of(&kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => pruned.deleted.push(format!("{kind}/{name}")),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => {
                return Err(err).request("delete", format!("{kind} {namespace}/{name}"));
            }
        }
    }
    Ok(pruned)
}

fn resource_of(kind: &str) -> Option<ApiResource> {
    use k8s_openapi::api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{LimitRange, ResourceQuota, Secret, Service},
        networking::v1::{Ingress, NetworkPolicy},
        rbac::v1::RoleBinding,
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
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        "PersistentVolumeClaim" => ApiResource::erase::<PersistentVolumeClaim>(&()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{
        build::{
            self, ExternalSecrets,
            test_support::{generated, input, plan_with},
        },
        plan::tests::profile,
    };

    #[test]
    fn the_generated_copy_goes_first_and_workloads_after_what_their_pods_need() {
        let plan = plan_with(Default::default(), profile());
        let (generated, external) = (generated(), ExternalSecrets::default());
        let children = build::children(&input(&plan, &generated, &external)).unwrap();
        let waves = waves(&children);
        let kinds = |wave: &[&DesiredObject]| -> Vec<String> {
            wave.iter()
                .map(|o| format!("{} {}", o.kind(), o.name()))
                .collect()
        };
        assert_eq!(kinds(&waves[0]), [format!("Secret {GENERATED_SECRET}")]);
        let needed = kinds(&waves[1]);
        for kind in ["Secret", "ResourceQuota", "LimitRange", "Service"] {
            assert!(
                needed.iter().any(|k| k.starts_with(kind)),
                "{kind} in {needed:?}"
            );
        }
        let last = kinds(&waves[2]);
        assert!(last.iter().any(|k| k.starts_with("Deployment")), "{last:?}");
        assert!(
            needed
                .iter()
                .all(|k| !k.starts_with("Deployment") && !k.starts_with("StatefulSet")),
            "{needed:?}"
        );
        // Nothing left out, nothing twice.
        assert_eq!(waves.iter().map(Vec::len).sum::<usize>(), children.len());
    }
}
