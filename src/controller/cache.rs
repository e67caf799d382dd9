//! Reflector stores of everything a reconcile pass reads: every kind the
//! controller creates (metadata only where that is enough), the pods, the
//! InstallationProfiles and the Secrets installations may reference. Each
//! store's watch also triggers a pass of the installation its object belongs
//! to, so a child deleted or edited by hand is repaired at once.
//!
//! A pass reads from these stores, never from the API server, except where a
//! store cannot be trusted to know an object yet (see `reconcile`).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    hash::{Hash, Hasher},
    sync::Mutex,
};

use futures::Stream;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{LimitRange, Namespace, Pod, ResourceQuota, Secret, Service},
        networking::v1::{Ingress, NetworkPolicy},
        rbac::v1::RoleBinding,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use super::{
    build::{app, database, filestore, ingress, seed},
    config::ControllerConfig,
    observe::{self, NamespaceState, Observed},
    plan,
};
use crate::api::{InstallationProfile, TestInstallation, labels};

type Guarded = DeserializeGuard<TestInstallation>;

/// The stores, shared by every pass.
pub struct Caches {
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The installations' own Secrets (generated credentials, app env).
    pub secrets: Store<Secret>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub resource_quotas: Store<PartialObjectMeta<ResourceQuota>>,
    pub limit_ranges: Store<PartialObjectMeta<LimitRange>>,
    pub role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    pub jobs: Store<Job>,
    /// Pods without their spec: only labels and status are read.
    pub pods: Store<Pod>,
    pub profiles: Store<InstallationProfile>,
    /// Secrets of `allowedSecretNamespaces`, by namespace.
    pub referenced_secrets: BTreeMap<String, Store<Secret>>,
    /// What this process last applied, to skip applies that change nothing.
    applied: Mutex<HashMap<ChildKey, Applied>>,
}

/// (kind, namespace, name)
type ChildKey = (String, String, String);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    desired: u64,
    marker: String,
}

/// Label selector of everything the controller creates.
pub fn children_selector() -> String {
    format!(
        "{},{}={}",
        labels::INSTALLATION,
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY_VALUE
    )
}

fn children_config() -> watcher::Config {
    watcher::Config::default()
        .labels(&children_selector())
        .any_semantic()
}

/// Maps a labelled child to its installation.
fn installation_of<K: Resource>(child: K) -> Option<ObjectRef<Guarded>> {
    child
        .labels()
        .get(labels::INSTALLATION)
        .map(|name| ObjectRef::new(name))
}

/// A store of `K` fed by `events`, and the stream of touched objects
/// (deletions included) that triggers passes.
fn reflect<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        events.backoff(super::trigger_backoff::TriggerBackoff::default()),
    )
    .touched_objects();
    (reader, stream)
}

fn full<K>(
    client: &Client,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    reflect(watcher(Api::<K>::all(client.clone()), config).modify(trim))
}

fn metadata<K>(
    client: &Client,
    config: watcher::Config,
) -> (
    Store<PartialObjectMeta<K>>,
    impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    reflect(
        watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config)
            .modify(|o| o.managed_fields_mut().clear()),
    )
}

fn without_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// Starts a store for every kind a pass reads and wires each one's watch
/// into `controller` as a trigger. `installations` is the controller's own
/// store (profiles map to the installations that use them).
pub fn watch_all(
    controller: Controller<Guarded>,
    client: &Client,
    config: &ControllerConfig,
    installations: Store<Guarded>,
) -> (Controller<Guarded>, Caches) {
    // Every namespace, not only labelled ones: a pass must see a namespace
    // of the same name that is not its own.
    let (namespaces, namespace_events) =
        metadata::<Namespace>(client, watcher::Config::default().any_semantic());
    let (secrets, secret_events) =
        full::<Secret>(client, children_config(), without_managed_fields);
    let (services, service_events) = metadata::<Service>(client, children_config());
    let (network_policies, network_policy_events) =
        metadata::<NetworkPolicy>(client, children_config());
    let (resource_quotas, resource_quota_events) =
        metadata::<ResourceQuota>(client, children_config());
    let (limit_ranges, limit_range_events) = metadata::<LimitRange>(client, children_config());
    let (role_bindings, role_binding_events) = metadata::<RoleBinding>(client, children_config());
    let (ingresses, ingress_events) = metadata::<Ingress>(client, children_config());
    let (deployments, deployment_events) =
        full::<Deployment>(client, children_config(), without_managed_fields);
    let (stateful_sets, stateful_set_events) =
        full::<StatefulSet>(client, children_config(), without_managed_fields);
    let (jobs, job_events) = full::<Job>(client, children_config(), without_managed_fields);
    let pod_config = watcher::Config::default()
        .labels(labels::INSTALLATION)
        .any_semantic();
    let (pods, pod_events) = full::<Pod>(client, pod_config, |pod: &mut Pod| {
        pod.managed_fields_mut().clear();
        pod.spec = None;
    });
    let (profiles, profile_events) = full::<InstallationProfile>(
        client,
        watcher::Config::default().any_semantic(),
        without_managed_fields,
    );

    // A namespace wakes its installation by label, or by name: a namespace
    // of the same name that another owner holds has no label of ours.
    let prefix = config.namespace_prefix.clone();
    let namespace_of = move |ns: PartialObjectMeta<Namespace>| {
        let by_name = ns
            .name_any()
            .strip_prefix(prefix.as_str())
            .map(ObjectRef::new);
        installation_of(ns).or(by_name)
    };
    let mut controller = controller
        .watches_stream(namespace_events, namespace_of)
        .watches_stream(secret_events, installation_of)
        .watches_stream(service_events, installation_of)
        .watches_stream(network_policy_events, installation_of)
        .watches_stream(resource_quota_events, installation_of)
        .watches_stream(limit_range_events, installation_of)
        .watches_stream(role_binding_events, installation_of)
        .watches_stream(ingress_events, installation_of)
        .watches_stream(deployment_events, installation_of)
        .watches_stream(stateful_set_events, installation_of)
        .watches_stream(job_events, installation_of)
        .watches_stream(pod_events, installation_of)
        .watches_stream(profile_events, move |profile: InstallationProfile| {
            let name = profile.name_any();
            installations
                .state()
                .into_iter()
                .filter(|guard| {
                    guard
                        .0
                        .as_ref()
                        .is_ok_and(|ti| plan::profile_name(ti) == name)
                })
                .map(|guard| ObjectRef::from_obj(guard.as_ref()))
                .collect::<Vec<_>>()
        });

    let mut referenced_secrets = BTreeMap::new();
    for namespace in &config.allowed_secret_namespaces {
        let (reader, writer) = reflector::store();
        let events = reflector::reflector(
            writer,
            watcher(
                Api::<Secret>::namespaced(client.clone(), namespace),
                watcher::Config::default().any_semantic(),
            )
            .modify(without_managed_fields)
            .backoff(super::trigger_backoff::TriggerBackoff::default()),
        )
        .touched_objects();
        // Driven by the controller; a referenced Secret appearing does not
        // map to an installation here (a Stalled one looks again itself).
        controller = controller.watches_stream(events, |_: Secret| None::<ObjectRef<Guarded>>);
        referenced_secrets.insert(namespace.clone(), reader);
    }

    let caches = Caches {
        namespaces,
        secrets,
        services,
        network_policies,
        resource_quotas,
        limit_ranges,
        role_bindings,
        ingresses,
        deployments,
        stateful_sets,
        jobs,
        pods,
        profiles,
        referenced_secrets,
        applied: Mutex::new(HashMap::new()),
    };
    (controller, caches)
}

fn get<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    let mut key = ObjectRef::new(name);
    if let Some(namespace) = namespace {
        key = key.within(namespace);
    }
    store.get(&key)
}

fn metas_in<K>(store: &Store<K>, namespace: &str, installation: &str) -> Vec<ObjectMeta>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    store
        .state()
        .iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(namespace)
                && o.labels().get(labels::INSTALLATION).map(String::as_str) == Some(installation)
        })
        .map(|o| o.meta().clone())
        .collect()
}

/// What tells that an object changed since it was applied: its generation
/// where the kind has one (status updates do not bump it), else its
/// resourceVersion.
fn marker(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(generation) => format!("g{generation}"),
        None => format!("r{}", meta.resource_version.as_deref().unwrap_or_default()),
    }
}

pub fn desired_hash(object: &impl serde::Serialize) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(object)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

impl Caches {
    /// Waits until every store has been filled once.
    pub async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.namespaces.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.services.wait_until_ready(),
            self.network_policies.wait_until_ready(),
            self.resource_quotas.wait_until_ready(),
            self.limit_ranges.wait_until_ready(),
            self.role_bindings.wait_until_ready(),
            self.ingresses.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.stateful_sets.wait_until_ready(),
            self.jobs.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.profiles.wait_until_ready(),
        );
        for store in self.referenced_secrets.values() {
            let _ = store.wait_until_ready().await;
        }
    }

    pub fn profile(&self, name: &str) -> Option<InstallationProfile> {
        get(&self.profiles, None, name).map(|p| (*p).clone())
    }

    /// The namespace as its store shows it.
    pub fn namespace_state(&self, namespace: &str, owner_uid: &str) -> NamespaceState {
        let ns = get(&self.namespaces, None, namespace).map(|meta| Namespace {
            metadata: meta.metadata.clone(),
            ..Default::default()
        });
        observe::namespace_state(ns.as_ref(), owner_uid)
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        get(&self.secrets, Some(namespace), name).map(|s| (*s).clone())
    }

    /// A Secret of an allowed namespace; `None` when it does not exist (or
    /// the namespace is not watched).
    pub fn referenced_secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let store = self.referenced_secrets.get(namespace)?;
        get(store, Some(namespace), name).map(|s| (*s).clone())
    }

    /// Metadata of one child, from the store of its kind.
    pub fn child(&self, kind: &str, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let ns = Some(namespace);
        match kind {
            "Namespace" => get(&self.namespaces, None, name).map(|o| o.metadata.clone()),
            "Secret" => get(&self.secrets, ns, name).map(|o| o.metadata.clone()),
            "Service" => get(&self.services, ns, name).map(|o| o.metadata.clone()),
            "NetworkPolicy" => get(&self.network_policies, ns, name).map(|o| o.metadata.clone()),
            "ResourceQuota" => get(&self.resource_quotas, ns, name).map(|o| o.metadata.clone()),
            "LimitRange" => get(&self.limit_ranges, ns, name).map(|o| o.metadata.clone()),
            "RoleBinding" => get(&self.role_bindings, ns, name).map(|o| o.metadata.clone()),
            "Ingress" => get(&self.ingresses, ns, name).map(|o| o.metadata.clone()),
            "Deployment" => get(&self.deployments, ns, name).map(|o| o.metadata.clone()),
            "StatefulSet" => get(&self.stateful_sets, ns, name).map(|o| o.metadata.clone()),
            "Job" => get(&self.jobs, ns, name).map(|o| o.metadata.clone()),
            _ => None,
        }
    }

    /// Every labelled child of `installation` in `namespace`, by kind.
    pub fn children_of(
        &self,
        namespace: &str,
        installation: &str,
    ) -> Vec<(&'static str, ObjectMeta)> {
        let mut found = Vec::new();
        let mut add = |kind: &'static str, metas: Vec<ObjectMeta>| {
            found.extend(metas.into_iter().map(|m| (kind, m)));
        };
        add("Secret", metas_in(&self.secrets, namespace, installation));
        add("Service", metas_in(&self.services, namespace, installation));
        add(
            "NetworkPolicy",
            metas_in(&self.network_policies, namespace, installation),
        );
        add(
            "ResourceQuota",
            metas_in(&self.resource_quotas, namespace, installation),
        );
        add(
            "LimitRange",
            metas_in(&self.limit_ranges, namespace, installation),
        );
        add(
            "RoleBinding",
            metas_in(&self.role_bindings, namespace, installation),
        );
        add(
            "Ingress",
            metas_in(&self.ingresses, namespace, installation),
        );
        add(
            "Deployment",
            metas_in(&self.deployments, namespace, installation),
        );
        add(
            "StatefulSet",
            metas_in(&self.stateful_sets, namespace, installation),
        );
        add("Job", metas_in(&self.jobs, namespace, installation));
        found
    }

    /// Whether `desired` (of `kind`) is already in place as this process
    /// last applied it, unchanged since.
    pub fn unchanged(&self, kind: &str, namespace: &str, name: &str, desired: u64) -> bool {
        let Some(meta) = self.child(kind, namespace, name) else {
            return false;
        };
        if meta.deletion_timestamp.is_some() {
            return false;
        }
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.get(&key)
            == Some(&Applied {
                desired,
                marker: marker(&meta),
            })
    }

    /// Records an apply of `desired`, answered with `meta`.
    pub fn record_applied(&self, kind: &str, meta: &ObjectMeta, desired: u64) {
        let key = (
            kind.to_string(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.insert(
            key,
            Applied {
                desired,
                marker: marker(meta),
            },
        );
    }

    /// Whether this process has applied that object.
    pub fn was_applied(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.contains_key(&key)
    }

    /// Forgets what was applied in `namespace` (the installation is gone).
    pub fn forget_namespace(&self, namespace: &str) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.retain(|(_, ns, _), _| ns != namespace);
    }

    /// Everything the status needs, from the stores.
    pub fn observe(&self, namespace: &str, owner_uid: &str, installation: &str) -> Observed {
        let ns_state = self.namespace_state(namespace, owner_uid);
        if ns_state != NamespaceState::Ours {
            return Observed::nothing(ns_state);
        }
        let ns = Some(namespace);
        let pods: Vec<std::sync::Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == ns
                    && p.labels().get(labels::INSTALLATION).map(String::as_str)
                        == Some(installation)
            })
            .collect();
        let seed_failure = pods
            .iter()
            .filter(|p| p.labels().get(labels::COMPONENT).map(String::as_str) == Some(seed::NAME))
            .find_map(|p| observe::pod_failure(p));
        Observed {
            namespace: ns_state,
            app: get(&self.deployments, ns, app::NAME).map(|d| observe::deployment_state(&d)),
            database: get(&self.stateful_sets, ns, database::NAME)
                .map(|s| observe::stateful_set_state(&s)),
            filestore: get(&self.deployments, ns, filestore::NAME)
                .map(|d| observe::deployment_state(&d)),
            bucket_job: get(&self.jobs, ns, filestore::BUCKET_JOB).map(|j| observe::job_state(&j)),
            seed_job: get(&self.jobs, ns, seed::NAME).map(|j| observe::JobState {
                last_failure: seed_failure,
                ..observe::job_state(&j)
            }),
            ingress: get(&self.ingresses, ns, ingress::NAME).is_some(),
            problems: pods.iter().flat_map(|p| observe::pod_problems(p)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_the_marker_where_there_is_one() {
        let with_generation = ObjectMeta {
            generation: Some(3),
            resource_version: Some("10".into()),
            ..Default::default()
        };
        let without = ObjectMeta {
            resource_version: Some("10".into()),
            ..Default::default()
        };
        assert_eq!(marker(&with_generation), "g3");
        assert_eq!(marker(&without), "r10");
    }

    #[test]
    fn the_same_desired_object_hashes_the_same() {
        let a = serde_json::json!({"kind": "Service", "spec": {"ports": [1, 2]}});
        let b = serde_json::json!({"kind": "Service", "spec": {"ports": [1, 2]}});
        let c = serde_json::json!({"kind": "Service", "spec": {"ports": [2, 1]}});
        assert_eq!(desired_hash(&a), desired_hash(&b));
        assert_ne!(desired_hash(&a), desired_hash(&c));
    }
}
