//! TestRuns across a controller restart: a run whose Job ends while no
//! controller runs gets its result once when the next one starts, a run
//! created meanwhile is started then, nothing is started twice, and the
//! run metrics count each run once.

mod support;

use std::time::Duration;

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, RunPhase, TestInstallation,
    TestInstallationSpec, TestRun, TestRunSpec,
};
use k8s_openapi::api::{batch::v1::Job, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use support::{
    TEST_RUN_LABEL, client, install_crds, server::spawn_controller, unique_name, wait_for,
    wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn metrics_text(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the metric line that starts with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn create_run(client: &Client, installation: &str, test: &str) -> String {
    let name = unique_name("rr");
    let spec = TestRunSpec {
        installation: installation.into(),
        test: Some(test.into()),
        ..Default::default()
    };
    Api::<TestRun>::all(client.clone())
        .create(&PostParams::default(), &TestRun::new(&name, spec))
        .await
        .unwrap();
    name
}

async fn wait_phase(client: &Client, name: &str, phase: RunPhase) -> TestRun {
    let api: Api<TestRun> = Api::all(client.clone());
    wait_for(&format!("run {name} to be {phase}"), TIMEOUT, || async {
        let run = api.get(name).await.map_err(|e| e.to_string())?;
        (run.phase() == Some(phase))
            .then_some(run.clone())
            .ok_or(format!("{:#?}", run.status))
    })
    .await
}

async fn event_reasons(client: &Client, run: &str) -> Vec<String> {
    Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("TestRun") && r.name.as_deref() == Some(run)
            })
        })
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn runs_end_once_across_a_controller_restart() {
    let client = client().await;
    install_crds(&client).await;
    let selector = unique_name("rrsel");
    let profile = unique_name("rrp");
    let spec: InstallationProfileSpec = serde_json::from_value(json!({
        "image": "registry.example/team/app",
        "defaultVersion": "1.0.0",
        "tests": [
            { "name": "short", "image": "run.invalid/hang", "timeout": "6s" },
            { "name": "smoke", "image": "run.invalid/pass",
              "env": [{ "name": "EPHEMERA_FAKE_REPORT",
                        "value": "{\"summary\":{\"passed\":1,\"failed\":0,\"skipped\":0}}" }] }
        ]
    }))
    .unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();
    let inst = unique_name("rrinst");
    let mut ti = TestInstallation::new(
        &inst,
        TestInstallationSpec {
            profile: Some(profile.clone()),
            ..Default::default()
        },
    );
    ti.labels_mut()
        .insert(TEST_RUN_LABEL.into(), selector.clone());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap();

    let first = spawn_controller(&client, &selector);
    wait_until(&client, &inst, "Ready", |ti| {
        ti.phase() == Some(Phase::Ready)
    })
    .await;
    let timed = create_run(&client, &inst, "short").await;
    wait_phase(&client, &timed, RunPhase::Running).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &format!("ti-{inst}"));
    let job_uid = jobs.get(&timed).await.unwrap().uid();
    let text = metrics_text(first.port()).await;
    assert_eq!(
        metric(
            &text,
            "ephemera_controller_runs_started_total{kind=\"test\",result=\"\"}"
        ),
        1.0,
        "{text}"
    );
    first.stop().await;

    // While no controller runs: the Job hits its deadline, and a new run is
    // created.
    wait_for("the Job to fail at its deadline", TIMEOUT, || async {
        let job = jobs.get(&timed).await.map_err(|e| e.to_string())?;
        let failed = job
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True");
        failed.then_some(()).ok_or("not yet".to_string())
    })
    .await;
    let later = create_run(&client, &inst, "smoke").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = Api::<TestRun>::all(client.clone())
        .get(&later)
        .await
        .unwrap();
    assert_eq!(waiting.status, None, "nothing acts without a controller");
    assert_eq!(
        Api::<TestRun>::all(client.clone())
            .get(&timed)
            .await
            .unwrap()
            .phase(),
        Some(RunPhase::Running)
    );

    let second = spawn_controller(&client, &selector);
    let run = wait_phase(&client, &timed, RunPhase::Failed).await;
    assert_eq!(run.status.unwrap().reason.as_deref(), Some("Timeout"));
    assert_eq!(
        jobs.get(&timed).await.unwrap().uid(),
        job_uid,
        "the Job was never made again"
    );
    wait_phase(&client, &later, RunPhase::Succeeded).await;
    // Give a duplicate a chance to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reasons = event_reasons(&client, &timed).await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "Started").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "Failed").count(),
        1,
        "{reasons:?}"
    );
    let text = metrics_text(second.port()).await;
    assert_eq!(
        metric(
            &text,
            "ephemera_controller_runs_started_total{kind=\"test\",result=\"\"}"
        ),
        1.0,
        "only the run created while stopped starts here: {text}"
    );
    assert_eq!(
        metric(
            &text,
            "ephemera_controller_runs_finished_total{kind=\"test\",result=\"Failed\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "ephemera_controller_runs_finished_total{kind=\"test\",result=\"Succeeded\"}"
        ),
        1.0,
        "{text}"
    );

    Api::<TestInstallation>::all(client.clone())
        .delete(&inst, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the installation to be gone", TIMEOUT, || async {
        match Api::<TestInstallation>::all(client.clone())
            .get_opt(&inst)
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    second.stop().await;
    let _ = Api::<InstallationProfile>::all(client.clone())
        .delete(&profile, &DeleteParams::default())
        .await;
}
