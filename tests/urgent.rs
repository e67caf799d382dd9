//! Expiry and deletion go ahead of routine work (the urgent lane): with the
//! controller's queue full of routine passes behind a concurrency of 1, an
//! installation whose ttl runs out is deleted at its deadline, and a deleted
//! installation lets go of its namespace, while most of the queue is still
//! waiting.

mod support;

use std::time::{Duration, Instant};

use ephemera::{
    api::{InstallationProfile, InstallationProfileSpec, Phase, TestInstallation},
    controller::config::ControllerConfig,
};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    TEST_RUN_LABEL, chart::RunningController, client, delete_installations_and_wait, install_crds,
    unique_name, wait_until,
};

/// Installations whose routine passes fill the queue.
const ROUTINE: usize = 100;
/// How long after the queue filled up the shortened ttl runs out.
const DEADLINE_AFTER: i64 = 8;
/// The expiry may be this late (the API server's timestamps are whole
/// seconds, and the lane's own work takes a moment).
const LATENESS_ALLOWED: Duration = Duration::from_secs(3);

async fn create(client: &Client, name: &str, run: &str, profile: &str, ttl: Option<&str>) {
    let mut ti = TestInstallation::new(
        name,
        serde_json::from_value(json!({ "profile": profile, "ttl": ttl })).unwrap(),
    );
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap();
}

/// How many of the routine installations are not Ready yet.
async fn routine_not_ready(api: &Api<TestInstallation>, selector: &str, prefix: &str) -> usize {
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|ti| ti.name_any().starts_with(prefix) && ti.phase() != Some(Phase::Ready))
        .count()
}

#[tokio::test]
async fn expiry_and_deletion_do_not_wait_for_a_full_queue() {
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("urgent");
    let selector = format!("{TEST_RUN_LABEL}={run}");
    let _cleanup = support::RemoveOnDrop {
        selector: selector.clone(),
        profile: run.clone(),
    };
    let config = ControllerConfig {
        installation_selector: Some(selector.clone()),
        concurrency: 1,
        ..Default::default()
    };
    let controller = RunningController::start_with(client.clone(), config).await;
    let spec: InstallationProfileSpec = serde_json::from_value(json!({
        "image": "registry.example/team/app", "defaultVersion": "1.0.0"
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&run, spec),
        )
        .await
        .unwrap();

    // Two installations settle first: one to expire, one to delete.
    let expiring = format!("{run}-expiring");
    let deleted = format!("{run}-deleted");
    create(&client, &expiring, &run, &run, Some("1h")).await;
    create(&client, &deleted, &run, &run, None).await;
    let mut created = None;
    for name in [&expiring, &deleted] {
        let ti = wait_until(&client, name, "Ready", |ti| {
            ti.phase() == Some(Phase::Ready)
        })
        .await;
        if name == &expiring {
            created = ti.metadata.creation_timestamp.map(|t| t.0);
        }
    }
    let created = created.expect("a creation timestamp");

    // The queue fills with routine work.
    let prefix = format!("{run}-routine-");
    futures::stream::iter(0..ROUTINE)
        .map(|i| {
            let (client, prefix, run) = (client.clone(), prefix.clone(), run.clone());
            async move { create(&client, &format!("{prefix}{i}"), &run, &run, None).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    // A shorter ttl is always taken: it runs out DEADLINE_AFTER seconds
    // from now.
    let age = created.duration_until(Timestamp::now()).as_secs();
    let ttl = age + DEADLINE_AFTER;
    let deadline = created
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(ttl))
        .unwrap();
    let api: Api<TestInstallation> = Api::all(client.clone());
    api.patch(
        &expiring,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "ttl": format!("{ttl}s") } })),
    )
    .await
    .unwrap();
    api.delete(&deleted, &Default::default()).await.unwrap();
    let delete_asked = Instant::now();

    let mut expired: Option<(Duration, usize)> = None;
    let mut released: Option<(Duration, usize)> = None;
    let watching = Instant::now();
    while expired.is_none() || released.is_none() {
        if watching.elapsed() > Duration::from_secs(120) {
            let left = api.get_opt(&deleted).await.unwrap();
            let namespace = Api::<Namespace>::all(client.clone())
                .get_opt(&format!("ti-{deleted}"))
                .await
                .unwrap();
            panic!(
                "after 2 minutes: expired {expired:?}, deleted {released:?}; the deleted one: {:?} {:?}; its namespace: {:?}",
                left.as_ref().map(|ti| ti.finalizers().to_vec()),
                left.and_then(|ti| ti.status).map(|s| s.message),
                namespace.map(|ns| (ns.metadata.deletion_timestamp, ns.status)),
            );
        }
        if expired.is_none() {
            let ti = api.get_opt(&expiring).await.unwrap();
            if ti.is_none_or(|ti| ti.metadata.deletion_timestamp.is_some()) {
                let late = deadline.duration_until(Timestamp::now());
                let late = Duration::from_millis(late.as_millis().max(0) as u64);
                expired = Some((late, routine_not_ready(&api, &selector, &prefix).await));
            }
        }
        if released.is_none() && api.get_opt(&deleted).await.unwrap().is_none() {
            released = Some((
                delete_asked.elapsed(),
                routine_not_ready(&api, &selector, &prefix).await,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (late, waiting_at_expiry) = expired.unwrap();
    let (deletion, waiting_at_deletion) = released.unwrap();
    eprintln!(
        "expiry {late:?} late with {waiting_at_expiry}/{ROUTINE} routine installations not Ready; \
         deletion done in {deletion:?} with {waiting_at_deletion}/{ROUTINE} not Ready"
    );
    assert!(
        waiting_at_expiry > 0,
        "the queue drained before the deadline, so this proved nothing; raise ROUTINE"
    );
    assert!(
        late <= LATENESS_ALLOWED,
        "the expiry was {late:?} late: it waited behind routine work"
    );
    assert!(
        waiting_at_deletion > 0,
        "the deletion finished only after the queue drained ({deletion:?})"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt(&format!("ti-{deleted}"))
            .await
            .unwrap()
            .is_none(),
        "the deleted installation's namespace is still there"
    );

    delete_installations_and_wait(&client, &[selector], Duration::from_secs(300)).await;
    controller.stop().await;
}
