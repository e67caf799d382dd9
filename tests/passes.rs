//! How many reconcile passes an installation costs, counted by the
//! controller's own `reconciles` metric: to Ready (one to apply, one when
//! the workloads have rolled out, little more), none while nothing changes,
//! and few to delete (the namespace's watch, not a timer, says when it is
//! gone).

mod support;

use std::time::{Duration, Instant};

use ephemera::{
    api::{InstallationProfile, InstallationProfileSpec, Phase, TestInstallation},
    controller::config::ControllerConfig,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use support::{
    TEST_RUN_LABEL, chart::RunningController, client, install_crds, unique_name, wait_for,
    wait_until,
};

/// Passes to Ready: the first applies everything, the next ones follow the
/// rollouts of the app and the database (which may finish apart).
const PASSES_TO_READY: u64 = 3;
/// Passes to delete: the namespace is deleted, then the finalizer removed
/// when the namespace's watch says it is gone.
const PASSES_TO_DELETE: u64 = 3;
const IDLE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn an_installation_costs_few_passes_and_none_while_idle() {
    let client = client().await;
    install_crds(&client).await;
    let run = unique_name("passes");
    let selector = format!("{TEST_RUN_LABEL}={run}");
    let _cleanup = support::RemoveOnDrop {
        selector: selector.clone(),
        profile: run.clone(),
    };
    let config = ControllerConfig {
        installation_selector: Some(selector.clone()),
        ..Default::default()
    };
    let controller = RunningController::start_with(client.clone(), config).await;
    let passes = || controller.metrics.reconciles.get();
    // An app with a database and a filestore: three rollouts and a Job.
    let spec: InstallationProfileSpec = serde_json::from_value(json!({
        "image": "registry.example/team/app", "defaultVersion": "1.0.0",
        "filestore": { "type": "minio" },
        "env": [{ "name": "DATABASE_URL", "value": "{{ database.url }}" }]
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&run, spec),
        )
        .await
        .unwrap();

    let name = format!("{run}-app");
    let mut ti = TestInstallation::new(
        &name,
        serde_json::from_value(json!({ "profile": run })).unwrap(),
    );
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.clone());
    let api: Api<TestInstallation> = Api::all(client.clone());
    let before = passes();
    api.create(&PostParams::default(), &ti).await.unwrap();
    wait_until(&client, &name, "Ready", |ti| {
        ti.phase() == Some(Phase::Ready)
    })
    .await;
    let to_ready = passes() - before;

    tokio::time::sleep(IDLE).await;
    let idle = passes() - before - to_ready;

    let deleting = Instant::now();
    let at_delete = passes();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_for(
        "the installation to be gone",
        Duration::from_secs(120),
        || async {
            match api.get_opt(&name).await {
                Ok(None) => Ok(()),
                other => Err(format!("{:?}", other.map(|ti| ti.map(|ti| ti.status)))),
            }
        },
    )
    .await;
    let to_delete = passes() - at_delete;
    eprintln!(
        "passes: {to_ready} to Ready, {idle} in {IDLE:?} idle, {to_delete} to delete (in {:?})",
        deleting.elapsed()
    );
    assert!(
        (1..=PASSES_TO_READY).contains(&to_ready),
        "{to_ready} passes to Ready"
    );
    assert_eq!(idle, 0, "passes while nothing changed");
    assert!(
        (1..=PASSES_TO_DELETE).contains(&to_delete),
        "{to_delete} passes to delete"
    );
    controller.stop().await;
}
