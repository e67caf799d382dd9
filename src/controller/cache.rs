//! Reflector stores of everything a reconcile pass reads: every kind the
//! controller creates (metadata only where that is enough), the pods, the
//! InstallationProfiles and the Secrets installations may reference. Each
//! store's watch also triggers a pass of the installation its object belongs
//! to, so a child deleted or edited by hand is repaired at once.
//!
//! A pass reads from these stores, never from the API server, except where a
//! store cannot be trusted to know an object yet (see `reconcile`).

use std::{
    collections::BTreeMap,
    fmt::Debug,
    hash::{Hash, Hasher},
    sync::Arc,
};

use futures::{Stream, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{LimitRange, Namespace, Pod, ResourceQuota, Secret, Service},
        networking::v1::{Ingress, NetworkPolicy},
        rbac::v1::RoleBinding,
    },
    apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta},
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
    applied::{Applied, AppliedMemory, Seen, Version},
    apply::FIELD_MANAGER,
    baselines::Baselines,
    build::{app, database, filestore, ingress, seed},
    config::ControllerConfig,
    namespace_index::{IndexedStore, NamespaceIndex},
    observe::{self, JobState, NamespaceState, Observed, PodState, WorkloadState},
    own_writes::OwnWrites,
    plan,
    predicates::{AppliedState, ChildEvent, Wake, child_event_wake},
    refresh::Refreshes,
    secret_values::SecretValues,
    summary::{self, Summary},
    trigger_backoff::paced,
    urgent::Lane,
};
use crate::{
    api::{InstallationProfile, TestInstallation, labels},
    telemetry::Health,
};

type Guarded = DeserializeGuard<TestInstallation>;

/// The stores, shared by every pass.
pub struct Caches {
    pub namespaces: Store<Summary<Namespace, ()>>,
    /// The installations' own Secrets (generated credentials, app env),
    /// with the values of the generated ones.
    pub secrets: Summaries<Secret, SecretValues>,
    pub services: Summaries<Service, ()>,
    pub network_policies: Summaries<NetworkPolicy, ()>,
    pub resource_quotas: Summaries<ResourceQuota, ()>,
    pub limit_ranges: Summaries<LimitRange, ()>,
    pub role_bindings: Summaries<RoleBinding, ()>,
    pub ingresses: Summaries<Ingress, ()>,
    pub deployments: Summaries<Deployment, WorkloadState>,
    pub stateful_sets: Summaries<StatefulSet, WorkloadState>,
    pub jobs: Summaries<Job, JobState>,
    pub pods: Summaries<Pod, PodState>,
    pub profiles: Store<InstallationProfile>,
    /// Secrets of `allowedSecretNamespaces`, by namespace.
    pub referenced_secrets: BTreeMap<String, Store<Secret>>,
    /// What this process last applied, to skip applies that change nothing.
    applied: AppliedMemory,
    /// The controller's own finalizer patches, whose echo runs no pass.
    pub own_writes: OwnWrites,
    /// What the last pass of each installation observed: a child's event
    /// that leaves this unchanged runs no pass.
    pub observed: Baselines,
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

/// A store of `K` fed by `events`, and the stream of touched objects
/// (deletions included) that triggers passes.
fn reflect<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    health: &Health,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let what = K::kind(&Default::default()).into_owned();
    let stream =
        reflector::reflector(writer, paced(events, what, health.clone())).touched_objects();
    (reader, stream)
}

/// `reflect` for a kind that lives in the installations' namespaces, with
/// its index by namespace (fed before the store).
fn reflect_indexed<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    health: &Health,
) -> (
    IndexedStore<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    let index = NamespaceIndex::default();
    let feed = index.clone();
    let (store, stream) = reflect(events.inspect_ok(move |event| feed.apply(event)), health);
    (IndexedStore { store, index }, stream)
}

/// Metadata-only stores: of the object, its (trimmed) metadata alone.
fn metadata<K>(
    (client, health): (&Client, &Health),
    config: watcher::Config,
) -> (
    Summaries<K, ()>,
    impl Stream<Item = Result<Summary<K, ()>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    reflect_indexed(
        summary::summarize(
            watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config),
            |object| Summary::of(object, |_| (), own_fields_of, trim_meta),
        ),
        health,
    )
}

pub fn without_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// A store of `K` kept as the state `S` a pass reads of each.
pub type Summaries<K, S> = IndexedStore<Summary<K, S>>;

/// Workloads, Jobs and pods are stored as the state a pass reads of them
/// (see `summary`), with their metadata trimmed.
fn summarized<K, S>(
    (client, health): (&Client, &Health),
    config: watcher::Config,
    state: fn(&K) -> S,
    trim: fn(&mut K),
) -> (
    Summaries<K, S>,
    impl Stream<Item = Result<Summary<K, S>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    S: Clone + Debug + Send + Sync + 'static,
{
    reflect_indexed(
        summary::summarize(
            watcher(Api::<K>::all(client.clone()), config),
            move |object| Summary::of(object, state, own_fields_of, trim),
        ),
        health,
    )
}

/// A pod's metadata as stored: none of its managed fields or owners is the
/// controller's (cleared before `trim_meta` would digest any).
fn trim_pod_meta(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.metadata.owner_references = None;
    trim_meta(pod);
}

/// Starts a store for every kind a pass reads and wires each one's watch
/// into `controller` as a trigger. `installations` is the controller's own
/// store (profiles map to the installations that use them); `own_writes`
/// is shared with the filter of its own watch.
pub fn watch_all(
    controller: Controller<Guarded>,
    (client, health): (&Client, &Health),
    config: &ControllerConfig,
    (installations, own_writes): (Store<Guarded>, OwnWrites),
    (urgent, refreshes): (Lane, Refreshes),
) -> (Controller<Guarded>, Arc<Caches>) {
    // Every namespace, not only labelled ones: a pass must see a namespace
    // of the same name that is not its own.
    let (namespaces, namespace_events) = reflect(
        summary::summarize(
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            ),
            |namespace| Summary::of(namespace, |_| (), own_fields_of, trim_namespace_meta),
        ),
        health,
    );
    // A deletion waits in the urgent lane for its namespace to go away.
    let namespace_events =
        namespace_events.inspect_ok(move |ns| urgent.namespace_seen(&ns.name_any()));
    let (secrets, secret_events) = summarized::<Secret, _>(
        (client, health),
        children_config(),
        SecretValues::of,
        trim_meta,
    );
    let (services, service_events) = metadata::<Service>((client, health), children_config());
    let (network_policies, network_policy_events) =
        metadata::<NetworkPolicy>((client, health), children_config());
    let (resource_quotas, resource_quota_events) =
        metadata::<ResourceQuota>((client, health), children_config());
    let (limit_ranges, limit_range_events) =
        metadata::<LimitRange>((client, health), children_config());
    let (role_bindings, role_binding_events) =
        metadata::<RoleBinding>((client, health), children_config());
    let (ingresses, ingress_events) = metadata::<Ingress>((client, health), children_config());
    let (deployments, deployment_events) = summarized::<Deployment, _>(
        (client, health),
        children_config(),
        observe::deployment_state,
        trim_meta,
    );
    let (stateful_sets, stateful_set_events) = summarized::<StatefulSet, _>(
        (client, health),
        children_config(),
        observe::stateful_set_state,
        trim_meta,
    );
    let (jobs, job_events) = summarized::<Job, _>(
        (client, health),
        children_config(),
        observe::job_state,
        trim_meta,
    );
    let pod_config = watcher::Config::default()
        .labels(labels::INSTALLATION)
        .any_semantic();
    let (pods, pod_events) = summarized(
        (client, health),
        pod_config,
        observe::pod_state,
        trim_pod_meta,
    );
    let (profiles, profile_events) = reflect(
        watcher(
            Api::<InstallationProfile>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .modify(without_managed_fields),
        health,
    );

    let mut controller = controller;
    let mut referenced_secrets = BTreeMap::new();
    for namespace in &config.allowed_secret_namespaces {
        let (reader, writer) = reflector::store();
        let events = reflector::reflector(
            writer,
            watcher(
                Api::<Secret>::namespaced(client.clone(), namespace),
                watcher::Config::default().any_semantic(),
            )
            .modify(without_managed_fields),
        );
        let events =
            paced(events, format!("Secrets in {namespace}"), health.clone()).touched_objects();
        // Driven by the controller; a referenced Secret appearing does not
        // map to an installation here (a Stalled one looks again itself).
        controller = controller.watches_stream(events, |_: Secret| None::<ObjectRef<Guarded>>);
        referenced_secrets.insert(namespace.clone(), reader);
    }
    let caches = Arc::new(Caches {
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
        applied: AppliedMemory::default(),
        own_writes,
        observed: Baselines::default(),
    });

    // A child wakes its installation only when that can change something
    // (see `predicates::child_event_wake`).
    let waker = |kind: Option<&'static str>| {
        let (caches, installations) = (caches.clone(), installations.clone());
        let refreshes = refreshes.clone();
        move |child: &ObjectMeta, installation: &str| match caches.wake(
            kind,
            child,
            installation,
            &installations,
        ) {
            Wake::Nothing => None,
            Wake::Refresh => {
                refreshes.request(installation);
                None
            }
            Wake::Pass => Some(ObjectRef::new(installation)),
        }
    };
    // A child belongs to the installation whose namespace it is in (the
    // stores keep no labels of children; see `trim_meta`).
    let prefix = config.namespace_prefix.clone();
    let by_namespace = |kind: Option<&'static str>| {
        let wake = waker(kind);
        let prefix = prefix.clone();
        move |child: ObjectMeta| {
            let installation = installation_of_namespace(&prefix, child.namespace.as_deref()?)?;
            wake(&child, installation)
        }
    };
    // A namespace wakes its installation by label, or by name: a namespace
    // of the same name that another owner holds has no label of ours.
    let namespace_wake = waker(Some("Namespace"));
    let namespace_prefix = prefix.clone();
    let namespace_of = move |ns: PartialObjectMeta<Namespace>| {
        let name = ns.name_any();
        let by_name = installation_of_namespace(&namespace_prefix, &name).map(String::from);
        let installation = ns.labels().get(labels::INSTALLATION).cloned().or(by_name)?;
        namespace_wake(&ns.metadata, &installation)
    };
    let (secret_of, service_of, network_policy_of) = (
        by_namespace(Some("Secret")),
        by_namespace(Some("Service")),
        by_namespace(Some("NetworkPolicy")),
    );
    let (resource_quota_of, limit_range_of, ingress_of) = (
        by_namespace(Some("ResourceQuota")),
        by_namespace(Some("LimitRange")),
        by_namespace(Some("Ingress")),
    );
    let role_binding_of = by_namespace(Some("RoleBinding"));
    let (deployment_of, stateful_set_of, job_of, pod_of) = (
        by_namespace(Some("Deployment")),
        by_namespace(Some("StatefulSet")),
        by_namespace(Some("Job")),
        by_namespace(None),
    );
    let controller = controller
        .watches_stream(namespace_events.map_ok(Summary::into_partial), namespace_of)
        .watches_stream(
            secret_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<Secret>| secret_of(o.metadata),
        )
        .watches_stream(
            service_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<Service>| service_of(o.metadata),
        )
        .watches_stream(
            network_policy_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<NetworkPolicy>| network_policy_of(o.metadata),
        )
        .watches_stream(
            resource_quota_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<ResourceQuota>| resource_quota_of(o.metadata),
        )
        .watches_stream(
            limit_range_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<LimitRange>| limit_range_of(o.metadata),
        )
        .watches_stream(
            role_binding_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<RoleBinding>| role_binding_of(o.metadata),
        )
        .watches_stream(
            ingress_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<Ingress>| ingress_of(o.metadata),
        )
        .watches_stream(
            deployment_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<Deployment>| deployment_of(o.metadata),
        )
        .watches_stream(
            stateful_set_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<StatefulSet>| stateful_set_of(o.metadata),
        )
        .watches_stream(
            job_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<Job>| job_of(o.metadata),
        )
        .watches_stream(
            pod_events.map_ok(Summary::into_partial),
            move |o: PartialObjectMeta<Pod>| pod_of(o.metadata),
        )
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

/// The state a summary keeps.
fn state<K, S: Clone>(summary: Arc<Summary<K, S>>) -> S {
    summary.state.clone()
}

/// The installation whose namespace `namespace` is: every installation has
/// a namespace of its own, named `<prefix><installation>`.
fn installation_of_namespace<'a>(prefix: &str, namespace: &'a str) -> Option<&'a str> {
    namespace
        .strip_prefix(prefix)
        .filter(|name| !name.is_empty())
}

/// The metadata of every object of `store` in `namespace`: the stores hold
/// only the controller's labelled children (`children_selector`), and an
/// installation's namespace is its own.
fn metas_in<K>(store: &IndexedStore<K>, namespace: &str) -> Vec<ObjectMeta>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    store
        .in_namespace(namespace)
        .iter()
        .map(|o| o.meta().clone())
        .collect()
}

/// Whether a managed-fields entry is the controller's own apply.
fn own_apply(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(FIELD_MANAGER)
        && entry.operation.as_deref() == Some("Apply")
        && entry.subresource.is_none()
}

/// What a pass reads of a stored child's metadata: its name, uid,
/// versions, owners and deletion (the digest of the controller's own apply
/// entry is kept apart, see `Summary::own_fields`). Annotations, labels and
/// managed fields are dropped (labels only select, server-side; a child's
/// installation is the one of its namespace): there are over a dozen
/// objects to an installation, and a label map of even one entry takes half
/// a kilobyte.
fn trim_meta<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.annotations = None;
    meta.labels = None;
    meta.managed_fields = None;
}

/// A namespace as stored: `trim_meta`, but with the installation label,
/// which tells an installation's namespace from one of the same name that
/// another owner holds.
fn trim_namespace_meta(namespace: &mut PartialObjectMeta<Namespace>) {
    let installation = namespace.labels_mut().remove(labels::INSTALLATION);
    trim_meta(namespace);
    if let Some(installation) = installation {
        namespace
            .labels_mut()
            .insert(labels::INSTALLATION.to_string(), installation);
    }
}

/// A digest of the field set (and apiVersion) of the controller's own apply
/// entry in `meta`, if there is one: `marker` needs to know only whether
/// the set changed, and the set itself, parsed into JSON maps (every field
/// of a pod template), was most of the memory a store of children took.
fn own_fields_of(meta: &ObjectMeta) -> Option<u64> {
    let entry = meta
        .managed_fields
        .iter()
        .flatten()
        .find(|e| own_apply(e))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    entry.api_version.hash(&mut hasher);
    serde_json::to_string(&entry.fields_v1)
        .unwrap_or_default()
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// What tells that an object changed since it was applied: the fields the
/// controller owns by its apply (`own_fields`; someone else writing one of
/// them takes it over; status updates and other managers' own fields leave
/// it alone); without that entry, the generation where the kind has one
/// (status updates do not bump it), else the resourceVersion.
fn marker(meta: &ObjectMeta, own_fields: Option<u64>) -> String {
    if let Some(digest) = own_fields {
        return format!("f{digest:x}");
    }
    match meta.generation {
        Some(generation) => format!("g{generation}"),
        None => format!("r{}", meta.resource_version.as_deref().unwrap_or_default()),
    }
}

/// A child as its store keeps it: trimmed metadata, and the digest of the
/// controller's own apply entry.
pub struct StoredChild {
    pub meta: ObjectMeta,
    own_fields: Option<u64>,
}

impl StoredChild {
    fn of<K, S>(summary: &Summary<K, S>) -> Self {
        Self {
            meta: summary.metadata.clone(),
            own_fields: summary.own_fields,
        }
    }

    fn version(&self) -> Version<'_> {
        version(&self.meta, self.own_fields)
    }
}

/// What of `meta` (and `own_fields`) tells which version of the object it
/// is.
fn version(meta: &ObjectMeta, own_fields: Option<u64>) -> Version<'_> {
    Version {
        marker: marker(meta, own_fields),
        uid: meta.uid.as_deref().unwrap_or_default(),
        generation: meta.generation,
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
    /// Waits until every store has been filled once. A kube-runtime store
    /// wakes only one of several waiters (passes, the urgent lane), so each
    /// waiter asks again every 200 ms; a store that is ready answers at once.
    pub async fn wait_until_ready(&self) {
        while tokio::time::timeout(std::time::Duration::from_millis(200), self.wait_once())
            .await
            .is_err()
        {}
    }

    async fn wait_once(&self) {
        let _ = futures::join!(
            self.namespaces.wait_until_ready(),
            self.secrets.store.wait_until_ready(),
            self.services.store.wait_until_ready(),
            self.network_policies.store.wait_until_ready(),
            self.resource_quotas.store.wait_until_ready(),
            self.limit_ranges.store.wait_until_ready(),
            self.role_bindings.store.wait_until_ready(),
            self.ingresses.store.wait_until_ready(),
            self.deployments.store.wait_until_ready(),
            self.stateful_sets.store.wait_until_ready(),
            self.jobs.store.wait_until_ready(),
            self.pods.store.wait_until_ready(),
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

    /// One of the installation's Secrets: its metadata and, for a
    /// generated one, its data.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let stored = self.secrets.get(namespace, name)?;
        Some(Secret {
            metadata: stored.metadata.clone(),
            data: stored.state.to_data(),
            ..Default::default()
        })
    }

    /// A Secret of an allowed namespace; `None` when it does not exist (or
    /// the namespace is not watched).
    pub fn referenced_secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let store = self.referenced_secrets.get(namespace)?;
        get(store, Some(namespace), name).map(|s| (*s).clone())
    }

    /// Metadata of one child, from the store of its kind.
    pub fn child(&self, kind: &str, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.stored(kind, namespace, name).map(|child| child.meta)
    }

    /// One child as the store of its kind keeps it.
    fn stored(&self, kind: &str, namespace: &str, name: &str) -> Option<StoredChild> {
        fn one<K, S: Clone>(
            store: &Summaries<K, S>,
            namespace: &str,
            name: &str,
        ) -> Option<StoredChild>
        where
            Summary<K, S>: Resource<DynamicType = ()> + Clone,
        {
            store.get(namespace, name).map(|s| StoredChild::of(&s))
        }
        match kind {
            "Namespace" => get(&self.namespaces, None, name).map(|s| StoredChild::of(&s)),
            "Secret" => one(&self.secrets, namespace, name),
            "Service" => one(&self.services, namespace, name),
            "NetworkPolicy" => one(&self.network_policies, namespace, name),
            "ResourceQuota" => one(&self.resource_quotas, namespace, name),
            "LimitRange" => one(&self.limit_ranges, namespace, name),
            "RoleBinding" => one(&self.role_bindings, namespace, name),
            "Ingress" => one(&self.ingresses, namespace, name),
            "Deployment" => one(&self.deployments, namespace, name),
            "StatefulSet" => one(&self.stateful_sets, namespace, name),
            "Job" => one(&self.jobs, namespace, name),
            _ => None,
        }
    }

    /// Every labelled child in the installation's `namespace`, by kind.
    pub fn children_of(&self, namespace: &str) -> Vec<(&'static str, ObjectMeta)> {
        let mut found = Vec::new();
        let mut add = |kind: &'static str, metas: Vec<ObjectMeta>| {
            found.extend(metas.into_iter().map(|m| (kind, m)));
        };
        add("Secret", metas_in(&self.secrets, namespace));
        add("Service", metas_in(&self.services, namespace));
        add("NetworkPolicy", metas_in(&self.network_policies, namespace));
        add("ResourceQuota", metas_in(&self.resource_quotas, namespace));
        add("LimitRange", metas_in(&self.limit_ranges, namespace));
        add("RoleBinding", metas_in(&self.role_bindings, namespace));
        add("Ingress", metas_in(&self.ingresses, namespace));
        add("Deployment", metas_in(&self.deployments, namespace));
        add("StatefulSet", metas_in(&self.stateful_sets, namespace));
        add("Job", metas_in(&self.jobs, namespace));
        found
    }

    /// Whether `desired` (of `kind`) is already in place as this process
    /// last applied it, unchanged since.
    pub fn unchanged(&self, kind: &str, namespace: &str, name: &str, desired: u64) -> bool {
        let Some(stored) = self.stored(kind, namespace, name) else {
            return false;
        };
        if stored.meta.deletion_timestamp.is_some() {
            return false;
        }
        self.applied
            .get(kind, namespace, name)
            .is_some_and(|applied| {
                applied.desired == desired && applied.seen_in(&stored.version()) != Seen::Changed
            })
    }

    /// Records an apply of `desired`, answered with `meta`.
    pub fn record_applied(&self, kind: &str, meta: &ObjectMeta, desired: u64) {
        self.applied.record(
            kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            Applied::new(desired, &version(meta, own_fields_of(meta))),
        );
    }

    /// Whether this process has applied that object.
    pub fn was_applied(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.applied.get(kind, namespace, name).is_some()
    }

    /// How the stored object stands to this process' last apply of it
    /// (`None`: not stored, or never applied).
    fn seen(&self, kind: &str, namespace: &str, name: &str) -> Option<Seen> {
        let stored = self.stored(kind, namespace, name)?;
        let applied = self.applied.get(kind, namespace, name)?;
        Some(applied.seen_in(&stored.version()))
    }

    /// Whether the store shows the object as this process last applied it,
    /// changed by someone else, or gone.
    fn applied_state(&self, kind: &str, namespace: &str, name: &str) -> AppliedState {
        if self.child(kind, namespace, name).is_none() {
            AppliedState::Gone
        } else if let Some(Seen::AsApplied | Seen::NotYet) = self.seen(kind, namespace, name) {
            // An event older than the last apply is followed by the
            // apply's own.
            AppliedState::AsApplied
        } else {
            AppliedState::Changed
        }
    }

    /// Whether the stores show any of `applied` (kind, namespace, name)
    /// changed by someone else or gone.
    pub fn shows_a_change_of(&self, applied: &[(&str, &str, &str)]) -> bool {
        applied.iter().any(|&(kind, namespace, name)| {
            self.applied_state(kind, namespace, name) != AppliedState::AsApplied
        })
    }

    /// Whether the store shows the object as this process last applied it
    /// (its own write has come back through the watch).
    fn shows_applied(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.seen(kind, namespace, name) == Some(Seen::AsApplied)
    }

    /// Waits (briefly) until the stores show the objects just applied, so
    /// that what the pass observes next is what it applied and their watch
    /// events, coming in later, change nothing it saw. Returns how long it
    /// waited.
    pub async fn catch_up(&self, applied: &[(&str, &str, &str)]) -> std::time::Duration {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
        let started = std::time::Instant::now();
        while !applied
            .iter()
            .all(|&(kind, ns, name)| self.shows_applied(kind, ns, name))
        {
            if started.elapsed() > PATIENCE {
                let behind: Vec<String> = applied
                    .iter()
                    .filter(|&&(kind, ns, name)| !self.shows_applied(kind, ns, name))
                    .map(|(kind, ns, name)| format!("{kind} {ns}/{name}"))
                    .collect();
                tracing::info!(
                    ?behind,
                    "the stores did not show every applied object in time"
                );
                return started.elapsed();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    /// Records what a pass of `installation` observed.
    pub fn record_observed(&self, installation: &str, observed: &Observed) {
        self.observed.record(installation, observed);
    }

    /// What an event of `child` (of `kind`, `None` for pods) makes the
    /// controller do for `installation` (see `predicates::child_event_wake`).
    fn wake(
        &self,
        kind: Option<&str>,
        child: &ObjectMeta,
        installation: &str,
        installations: &Store<Guarded>,
    ) -> Wake {
        let Some(guard) = installations.get(&ObjectRef::new(installation)) else {
            // Not one of ours (or not in the store yet): the controller
            // skips unknown installations anyway.
            return Wake::Nothing;
        };
        let Ok(ti) = &guard.0 else {
            return Wake::Nothing;
        };
        if self.observed.is_observing(installation) {
            // The running pass's last look will see this event's object,
            // and whether what it applied was changed (see `baselines`).
            return Wake::Nothing;
        }
        let name = child.name.clone().unwrap_or_default();
        let (namespace, child_namespace) = match kind {
            Some("Namespace") => (name.clone(), String::new()),
            _ => {
                let ns = child.namespace.clone().unwrap_or_default();
                (ns.clone(), ns)
            }
        };
        let applied = kind.map(|kind| self.applied_state(kind, &child_namespace, &name));
        let observed = self
            .observe(&namespace, &ti.uid().unwrap_or_default())
            .as_the_status_sees_it();
        let observed_changed = self.observed.changed(installation, &observed);
        let settled = self
            .observed
            .is_settled_at(installation, ti.metadata.generation.unwrap_or_default());
        child_event_wake(&ChildEvent {
            installation_deleting: ti.metadata.deletion_timestamp.is_some(),
            applied,
            observed_changed,
            settled,
        })
    }

    /// Forgets what was applied in `namespace` (the installation is gone).
    pub fn forget_namespace(&self, namespace: &str) {
        self.applied.forget_namespace(namespace);
    }

    /// Forgets what the passes of `installation` observed (it is gone).
    pub fn forget_observed(&self, installation: &str) {
        self.observed.forget(installation);
    }

    /// Everything the status needs, from the stores.
    pub fn observe(&self, namespace: &str, owner_uid: &str) -> Observed {
        let ns_state = self.namespace_state(namespace, owner_uid);
        if ns_state != NamespaceState::Ours {
            return Observed::nothing(ns_state);
        }
        let pods = self.pods.in_namespace(namespace);
        let seed_failure = pods
            .iter()
            .filter(|p| p.state.component == seed::NAME)
            .find_map(|p| p.state.failure.clone());
        Observed {
            namespace: ns_state,
            app: self.deployments.get(namespace, app::NAME).map(state),
            database: self.stateful_sets.get(namespace, database::NAME).map(state),
            filestore: self.deployments.get(namespace, filestore::NAME).map(state),
            bucket_job: self.jobs.get(namespace, filestore::BUCKET_JOB).map(state),
            seed_job: self.jobs.get(namespace, seed::NAME).map(|j| JobState {
                last_failure: seed_failure,
                ..j.state.clone()
            }),
            ingress: self.ingresses.get(namespace, ingress::NAME).is_some(),
            problems: pods.iter().flat_map(|p| p.state.problems.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use kube::core::PartialObjectMetaExt;

    #[test]
    fn a_stored_pod_keeps_its_problems_failure_and_read_labels_only() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "app-1", "namespace": "ti-a",
                "labels": {(labels::COMPONENT): "app", (labels::INSTALLATION): "a", "pod-template-hash": "5d8f"},
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app", "uid": "u1"}]
            },
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            "status": {
                "phase": "Failed", "hostIP": "10.0.0.1",
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}
                ],
                "containerStatuses": [
                    {"name": "app", "image": "registry.example/app:1", "imageID": "sha256:1", "ready": false, "restartCount": 3,
                     "state": {"terminated": {"exitCode": 2, "reason": "Error", "message": "boom"}},
                     "lastState": {"terminated": {"exitCode": 1}}},
                    {"name": "sidecar", "image": "registry.example/side:1", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
                ]
            }
        }))
        .unwrap();
        let stored: Summary<Pod, _> = Summary::of(
            pod.clone(),
            observe::pod_state,
            own_fields_of,
            trim_pod_meta,
        );
        assert_eq!(stored.state.problems.len(), 2);
        assert_eq!(stored.state, observe::pod_state(&pod));
        assert!(stored.state.failure.is_some());
        assert_eq!(stored.state.component, "app");
        assert!(stored.annotations().is_empty() && stored.labels().is_empty());
        assert!(stored.metadata.owner_references.is_none());
    }

    #[test]
    fn a_stored_workload_keeps_its_rollout_state_and_trimmed_metadata() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "app", "generation": 3,
                "annotations": { "deployment.kubernetes.io/revision": "1" },
                "labels": { (labels::INSTALLATION): "a", "app.kubernetes.io/version": "1.2.3" }
            },
            "spec": {
                "replicas": 2, "progressDeadlineSeconds": 600, "selector": {},
                "template": {
                    "metadata": { "labels": { "a": "b" } },
                    "spec": { "containers": [{
                        "name": "app", "image": "registry.example/app:1.2.3",
                        "env": [{ "name": "DATABASE_URL", "value": "postgres://x" }],
                        "args": ["--serve"]
                    }] }
                }
            },
            "status": { "readyReplicas": 2 }
        }))
        .unwrap();
        let stored: Summary<Deployment, _> = Summary::of(
            deployment.clone(),
            observe::deployment_state,
            own_fields_of,
            trim_meta,
        );
        assert_eq!(stored.state, observe::deployment_state(&deployment));
        assert_eq!(
            stored.state.image.as_deref(),
            Some("registry.example/app:1.2.3")
        );
        assert_eq!(stored.metadata.generation, Some(3));
        assert!(stored.annotations().is_empty() && stored.labels().is_empty());
    }

    /// A store holding `objects`, as a watch would have filled it.
    fn filled<K>(objects: Vec<K>) -> IndexedStore<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer) = reflector::store();
        let index = NamespaceIndex::default();
        let events = std::iter::once(watcher::Event::Init)
            .chain(objects.into_iter().map(watcher::Event::InitApply))
            .chain(std::iter::once(watcher::Event::InitDone));
        for event in events {
            index.apply(&event);
            writer.apply_watcher_event(&event);
        }
        IndexedStore { store, index }
    }

    fn caches_with(deployments: Summaries<Deployment, WorkloadState>) -> Caches {
        Caches {
            namespaces: reflector::store().0,
            secrets: filled(vec![]),
            services: filled(vec![]),
            network_policies: filled(vec![]),
            resource_quotas: filled(vec![]),
            limit_ranges: filled(vec![]),
            role_bindings: filled(vec![]),
            ingresses: filled(vec![]),
            deployments,
            stateful_sets: filled(vec![]),
            jobs: filled(vec![]),
            pods: filled(vec![]),
            profiles: reflector::store().0,
            referenced_secrets: BTreeMap::new(),
            applied: AppliedMemory::default(),
            own_writes: OwnWrites::default(),
            observed: Baselines::default(),
        }
    }

    /// The app Deployment at `generation`, with the controller's own apply
    /// entry (the same set of fields whatever the image).
    fn app_deployment(generation: i64, image: &str, rolled_out: bool) -> Deployment {
        let ready = if rolled_out { 1 } else { 0 };
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "app", "namespace": "ti-a", "uid": "u1", "generation": generation,
                "managedFields": [{
                    "manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "apps/v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": { "f:spec": { "f:template": { "f:spec": { "f:containers": {} } } } }
                }]
            },
            "spec": {
                "replicas": 1, "selector": {},
                "template": { "spec": { "containers": [{ "name": "app", "image": image }] } }
            },
            "status": {
                "observedGeneration": generation, "replicas": 1, "updatedReplicas": ready,
                "readyReplicas": ready, "availableReplicas": ready,
                "conditions": [{ "type": "Available", "status": "True" }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_store_that_lags_behind_an_apply_does_not_show_it() {
        // The watch has not yet brought the new image: the store still holds
        // the old Deployment, rolled out, with the same fields owned.
        let old = app_deployment(1, "registry.example/app:1", true);
        let stored = Summary::of(old, observe::deployment_state, own_fields_of, trim_meta);
        assert!(stored.state.rolled_out());
        let caches = caches_with(filled(vec![stored]));
        let answer = app_deployment(2, "registry.example/app:2", false);
        caches.record_applied("Deployment", &answer.metadata, 2);
        assert_eq!(caches.seen("Deployment", "ti-a", "app"), Some(Seen::NotYet));
        assert!(!caches.shows_applied("Deployment", "ti-a", "app"));
        // Nothing to apply again: the desired state is the one applied.
        assert!(caches.unchanged("Deployment", "ti-a", "app", 2));
        assert!(!caches.unchanged("Deployment", "ti-a", "app", 3));

        // The watch catches up.
        let new = app_deployment(2, "registry.example/app:2", false);
        let caches = caches_with(filled(vec![Summary::of(
            new,
            observe::deployment_state,
            own_fields_of,
            trim_meta,
        )]));
        caches.record_applied("Deployment", &answer.metadata, 2);
        assert!(caches.shows_applied("Deployment", "ti-a", "app"));
    }

    #[test]
    fn a_stored_namespace_keeps_only_its_installation_label() {
        let mut namespace = ObjectMeta {
            name: Some("ti-a".into()),
            labels: Some(
                [
                    (labels::INSTALLATION.to_string(), "a".to_string()),
                    (
                        "kubernetes.io/metadata.name".to_string(),
                        "ti-a".to_string(),
                    ),
                ]
                .into(),
            ),
            annotations: Some([("note".to_string(), "x".to_string())].into()),
            ..Default::default()
        }
        .into_response_partial::<Namespace>();
        trim_namespace_meta(&mut namespace);
        assert_eq!(
            namespace.labels().keys().collect::<Vec<_>>(),
            [labels::INSTALLATION]
        );
        assert!(namespace.annotations().is_empty());
    }

    #[test]
    fn a_child_belongs_to_the_installation_of_its_namespace() {
        assert_eq!(installation_of_namespace("ti-", "ti-pr-42"), Some("pr-42"));
        assert_eq!(installation_of_namespace("ti-", "ti-"), None);
        assert_eq!(installation_of_namespace("ti-", "kube-system"), None);
        assert_eq!(installation_of_namespace("", "pr-42"), Some("pr-42"));
    }

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
        assert_eq!(marker(&with_generation, None), "g3");
        assert_eq!(marker(&without, None), "r10");
    }

    #[test]
    fn the_controllers_own_fields_are_the_marker_where_it_applied() {
        let entry =
            |manager: &str, operation: &str, fields: serde_json::Value| ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some(operation.into()),
                api_version: Some("v1".into()),
                fields_v1: Some(FieldsV1(fields)),
                ..Default::default()
            };
        let own = entry(
            FIELD_MANAGER,
            "Apply",
            serde_json::json!({"f:spec": {"f:hard": {}}}),
        );
        let applied = ObjectMeta {
            resource_version: Some("10".into()),
            managed_fields: Some(vec![own.clone()]),
            ..Default::default()
        };
        // The quota controller's status update: a new resourceVersion and
        // another manager's entry, the same marker.
        let status_updated = ObjectMeta {
            resource_version: Some("11".into()),
            managed_fields: Some(vec![
                own.clone(),
                entry(
                    "kube-controller-manager",
                    "Update",
                    serde_json::json!({"f:status": {}}),
                ),
            ]),
            ..Default::default()
        };
        let marker_of = |meta: &ObjectMeta| marker(meta, own_fields_of(meta));
        assert_eq!(marker_of(&applied), marker_of(&status_updated));
        // Someone else wrote a field the controller owned: it is no longer
        // the controller's.
        let taken_over = ObjectMeta {
            resource_version: Some("12".into()),
            managed_fields: Some(vec![entry(
                FIELD_MANAGER,
                "Apply",
                serde_json::json!({"f:spec": {}}),
            )]),
            ..Default::default()
        };
        assert_ne!(marker_of(&applied), marker_of(&taken_over));
        // Stored: no managed fields, the own entry's digest apart, marking
        // the same as the whole set.
        let stored: Summary<ResourceQuota, ()> = Summary::of(
            status_updated.into_response_partial::<ResourceQuota>(),
            |_| (),
            own_fields_of,
            trim_meta,
        );
        assert!(stored.metadata.managed_fields.is_none());
        let child = StoredChild::of(&stored);
        assert_eq!(child.version().marker, marker_of(&applied));
        assert_ne!(child.version().marker, marker_of(&taken_over));
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
