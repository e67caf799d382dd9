//! The direct floor: the controller's own build output for each
//! installation, applied by a plain client (server-side apply, one
//! installation's objects one after another, `parallelism` installations at
//! a time), and the same readiness waited for through a watch: every
//! Deployment and StatefulSet rolled out.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use ephemera::{
    api::{InstallationProfile, TestInstallation, TestInstallationSpec, labels},
    controller::{
        build::{self, BuildInput, ExternalSecrets, GeneratedSecrets},
        config::ControllerConfig,
        observe, plan,
    },
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Namespace,
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};

const FIELD_MANAGER: &str = "ephemera-bench-direct";

/// Label on the direct namespaces (and nothing else), so that no orphan
/// sweep takes them for an installation's.
pub const DIRECT_LABEL: &str = "ephemera.dev/bench-direct";

/// One installation's objects: its namespace, then its children in apply
/// order, with no ownerReference (there is no TestInstallation to own them).
pub struct Installation {
    pub namespace: Namespace,
    pub children: Vec<DynamicObject>,
    /// Workloads that must be rolled out: (kind, name).
    pub workloads: BTreeSet<(String, String)>,
    pub resources: Vec<kube::api::ApiResource>,
}

pub fn build_installation(
    name: &str,
    profile: &InstallationProfile,
    config: &ControllerConfig,
    run: &str,
) -> Installation {
    let installation = TestInstallation::new(
        name,
        TestInstallationSpec {
            profile: Some(profile.name_any()),
            ..Default::default()
        },
    );
    let plan = plan::plan(&installation, profile, config).expect("the bench profile plans");
    let owner = OwnerReference {
        api_version: "ephemera.dev/v1alpha1".into(),
        kind: "TestInstallation".into(),
        name: name.into(),
        uid: "direct".into(),
        ..Default::default()
    };
    let generated = GeneratedSecrets::reuse_or_generate(None, None, None);
    let external = ExternalSecrets::default();
    let input = BuildInput {
        plan: &plan,
        generated: &generated,
        external: &external,
        app_version: &plan.version,
        seed: false,
    };
    let desired = build::children(&input).expect("the bench profile builds");
    let mut namespace = build::namespace::namespace(&plan, owner);
    namespace.metadata.owner_references = None;
    let ns_labels = namespace.labels_mut();
    ns_labels.remove(labels::MANAGED_BY_KEY);
    ns_labels.remove(labels::INSTALLATION);
    ns_labels.insert(DIRECT_LABEL.into(), run.into());
    let workloads = desired
        .iter()
        .filter(|d| d.kind() == "Deployment" || d.kind() == "StatefulSet")
        .map(|d| (d.kind().to_string(), d.name().to_string()))
        .collect();
    let resources = desired.iter().map(|d| d.resource.clone()).collect();
    let children = desired.into_iter().map(|d| d.object).collect();
    Installation {
        namespace,
        children,
        workloads,
        resources,
    }
}

/// Applies every installation, `parallelism` at a time.
pub async fn apply_all(client: &Client, installations: &[Installation], parallelism: usize) {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    futures::stream::iter(installations)
        .map(|installation| {
            let client = client.clone();
            let params = params.clone();
            async move {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let ns = installation.namespace.name_any();
                namespaces
                    .patch(&ns, &params, &Patch::Apply(&installation.namespace))
                    .await
                    .unwrap_or_else(|err| panic!("applying namespace {ns}: {err}"));
                for (object, resource) in installation.children.iter().zip(&installation.resources)
                {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &ns, resource);
                    api.patch(&object.name_any(), &params, &Patch::Apply(object))
                        .await
                        .unwrap_or_else(|err| {
                            panic!(
                                "applying {} {ns}/{}: {err}",
                                resource.kind,
                                object.name_any()
                            )
                        });
                }
            }
        })
        .buffer_unordered(parallelism.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// Waits until the workloads of every (namespace, workloads) are rolled
/// out; returns the moment each namespace became ready.
pub async fn wait_ready(
    client: &Client,
    installations: &[(String, BTreeSet<(String, String)>)],
    started: Instant,
) -> BTreeMap<String, f64> {
    let wanted: BTreeMap<String, BTreeSet<(String, String)>> =
        installations.iter().cloned().collect();
    let selector = format!("{}={}", labels::MANAGED_BY_KEY, labels::MANAGED_BY_VALUE);
    let config = watcher::Config::default().labels(&selector);
    let deployments = watcher(Api::<Deployment>::all(client.clone()), config.clone())
        .default_backoff()
        .applied_objects()
        .map_ok(|d| {
            let ns = d.namespace().unwrap_or_default();
            (
                ns,
                ("Deployment".to_string(), d.name_any()),
                observe::deployment_state(&d).rolled_out(),
            )
        });
    let stateful_sets = watcher(Api::<StatefulSet>::all(client.clone()), config)
        .default_backoff()
        .applied_objects()
        .map_ok(|s| {
            let ns = s.namespace().unwrap_or_default();
            (
                ns,
                ("StatefulSet".to_string(), s.name_any()),
                observe::stateful_set_state(&s).rolled_out(),
            )
        });
    let mut events = futures::stream::select(deployments.boxed(), stateful_sets.boxed());
    let mut rolled_out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut ready = BTreeMap::new();
    while ready.len() < wanted.len() {
        let Some(event) = events.next().await else {
            panic!("the workload watch ended");
        };
        let Ok((ns, workload, done)) = event else {
            continue;
        };
        let Some(needed) = wanted.get(&ns) else {
            continue;
        };
        let set = rolled_out.entry(ns.clone()).or_default();
        if done {
            set.insert(workload);
        } else {
            set.remove(&workload);
        }
        if !ready.contains_key(&ns) && needed.is_subset(set) {
            ready.insert(ns, started.elapsed().as_secs_f64());
        }
    }
    ready
}
