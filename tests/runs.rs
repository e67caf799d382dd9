//! Test suites and actions (TestRuns) on the real control plane: a run
//! becomes a Job in the installation's namespace and its container's
//! termination message becomes the run's result. The fake node ends Job
//! pods of `run.invalid/pass|fail|hang` as named, reporting the container's
//! `EPHEMERA_FAKE_REPORT` (hack/kwok-run-stages.yaml).

mod support;

use std::{collections::BTreeMap, time::Duration};

use ephemera::api::{
    InstallationProfile, InstallationProfileSpec, Phase, RunPhase, RunSummary, TestInstallation,
    TestInstallationSpec, TestRun, TestRunSpec,
};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Container, Secret},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{TEST_RUN_LABEL, client, controller_with, unique_name, wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Finished runs of this test binary are deleted after this long.
const RETENTION: &str = "15s";

fn controller() -> &'static str {
    controller_with(|config| {
        config.run_retention = RETENTION.into();
        config.allowed_secret_namespaces = vec![shared_namespace().to_string()];
    })
}

/// This binary's shared-secrets namespace.
fn shared_namespace() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| unique_name("rshared"))
}

/// The profile every test here uses: suites and actions on the fake node's
/// images.
fn profile_spec() -> serde_json::Value {
    json!({
        "image": "registry.example/team/app",
        "defaultVersion": "1.0.0",
        "tests": [
            { "name": "smoke", "image": "run.invalid/pass",
              "args": ["--url", "{{ url }}"],
              "env": [{ "name": "EPHEMERA_FAKE_REPORT",
                        "value": "{\"summary\":{\"passed\":3,\"failed\":0,\"skipped\":1},\"output\":\"all good at {{ url }}\"}" }] },
            { "name": "broken", "image": "run.invalid/fail",
              "env": [{ "name": "EPHEMERA_FAKE_REPORT",
                        "value": "{\"summary\":{\"passed\":1,\"failed\":2,\"skipped\":0},\"output\":\"2 tests failed\"}" }] },
            { "name": "stuck", "image": "run.invalid/hang", "timeout": "3s" },
            { "name": "long", "image": "run.invalid/hang", "timeout": "10m" }
        ],
        "actions": [
            { "name": "echo", "image": "run.invalid/pass",
              "args": ["--text", "{{ params.text }}", "--page", "{{ params.page }}", "--mode", "{{ params.mode }}"],
              "env": [{ "name": "EPHEMERA_FAKE_REPORT", "value": "{{ params.text }}" }],
              "parameters": [
                  { "name": "text", "type": "string", "pattern": ".+" },
                  { "name": "team", "type": "string", "pattern": "[a-z0-9-]+", "default": "core" },
                  { "name": "page", "type": "integer", "minimum": 1, "maximum": 100, "default": "1" },
                  { "name": "mode", "type": "enum", "values": ["fast", "slow"], "default": "fast" }
              ] },
            { "name": "wait", "image": "run.invalid/hang" },
            { "name": "status", "image": "run.invalid/pass", "readOnly": true,
              "env": [
                  { "name": "USER_NAME", "credential": "user" },
                  { "name": "USER_PASSWORD", "credential": "userPassword" },
                  { "name": "SITE", "value": "{{ serviceUrl }}" }
              ] },
            { "name": "sneaky", "image": "run.invalid/pass", "readOnly": true,
              "env": [{ "name": "ADMIN_PASSWORD", "credential": "adminPassword" }] },
            { "name": "admin", "image": "run.invalid/pass",
              "env": [{ "name": "ADMIN_PASSWORD", "credential": "adminPassword" }] },
            { "name": "licensed", "image": "run.invalid/pass", "readOnly": true,
              "env": [{ "name": "LICENSE", "secretKeyRef":
                        { "namespace": shared_namespace(), "name": "license", "key": "key" } }] },
            { "name": "missing", "image": "missing.invalid/tool:1" },
            { "name": "elsewhere", "image": "run.invalid/pass",
              "env": [{ "name": "TOKEN", "secretKeyRef":
                        { "namespace": "kube-system", "name": "anything", "key": "token" } }] }
        ]
    })
}

/// A profile and an installation of it (labelled for this binary's
/// controller); the installation is not waited for.
async fn installation(client: &Client, prefix: &str) -> (String, String) {
    let run = controller();
    let profile = unique_name(&format!("{prefix}p"));
    let spec: InstallationProfileSpec = serde_json::from_value(profile_spec()).unwrap();
    Api::<InstallationProfile>::all(client.clone())
        .create(
            &PostParams::default(),
            &InstallationProfile::new(&profile, spec),
        )
        .await
        .unwrap();
    let name = unique_name(prefix);
    let mut ti = TestInstallation::new(
        &name,
        TestInstallationSpec {
            profile: Some(profile.clone()),
            ..Default::default()
        },
    );
    ti.labels_mut().insert(TEST_RUN_LABEL.into(), run.into());
    Api::<TestInstallation>::all(client.clone())
        .create(&PostParams::default(), &ti)
        .await
        .unwrap();
    (name, profile)
}

async fn ready_installation(client: &Client, prefix: &str) -> (String, String) {
    let (name, profile) = installation(client, prefix).await;
    wait_until(client, &name, "Ready", |ti| {
        ti.phase() == Some(Phase::Ready)
    })
    .await;
    (name, profile)
}

async fn cleanup(client: &Client, installation: &str, profile: &str) {
    let _ = Api::<TestInstallation>::all(client.clone())
        .delete(installation, &DeleteParams::default())
        .await;
    let _ = Api::<InstallationProfile>::all(client.clone())
        .delete(profile, &DeleteParams::default())
        .await;
}

fn suite(installation: &str, test: &str) -> TestRunSpec {
    TestRunSpec {
        installation: installation.into(),
        test: Some(test.into()),
        ..Default::default()
    }
}

fn action(installation: &str, name: &str, parameters: &[(&str, &str)]) -> TestRunSpec {
    TestRunSpec {
        installation: installation.into(),
        action: Some(name.into()),
        parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

async fn start(client: &Client, spec: TestRunSpec) -> String {
    let name = unique_name("run");
    Api::<TestRun>::all(client.clone())
        .create(&PostParams::default(), &TestRun::new(&name, spec))
        .await
        .unwrap_or_else(|err| panic!("creating TestRun {name}: {err}"));
    name
}

/// Waits until run `name` passes `check`; the panic shows its last status.
async fn wait_run(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&TestRun) -> bool,
) -> TestRun {
    let api: Api<TestRun> = Api::all(client.clone());
    wait_for(&format!("run {name}: {what}"), TIMEOUT, || async {
        let run = api.get(name).await.map_err(|e| e.to_string())?;
        if check(&run) {
            Ok(run)
        } else {
            Err(format!("{:#?}", run.status))
        }
    })
    .await
}

async fn wait_phase(client: &Client, name: &str, phase: RunPhase) -> TestRun {
    wait_run(client, name, &format!("phase {phase}"), |r| {
        r.phase() == Some(phase)
    })
    .await
}

fn reason(run: &TestRun) -> &str {
    run.status
        .as_ref()
        .and_then(|s| s.reason.as_deref())
        .unwrap_or_default()
}

fn message(run: &TestRun) -> &str {
    run.status
        .as_ref()
        .and_then(|s| s.message.as_deref())
        .unwrap_or_default()
}

async fn job_of(client: &Client, installation: &str, run: &str) -> Option<Job> {
    Api::<Job>::namespaced(client.clone(), &format!("ti-{installation}"))
        .get_opt(run)
        .await
        .unwrap()
}

fn container(job: &Job) -> Container {
    job.spec.clone().unwrap().template.spec.unwrap().containers[0].clone()
}

async fn wait_job_gone(client: &Client, installation: &str, run: &str) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &format!("ti-{installation}"));
    wait_for(&format!("Job {run} to be gone"), TIMEOUT, || async {
        match jobs.get_opt(run).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(j) => Err(format!("{:?}", j.metadata.deletion_timestamp)),
        }
    })
    .await;
}

async fn event_reasons(client: &Client, run: &TestRun) -> Vec<String> {
    let events: Api<Event> = Api::all(client.clone());
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("TestRun") && r.name.as_deref() == Some(&run.name_any())
            })
        })
        .filter_map(|e| e.reason.clone())
        .collect()
}

#[tokio::test]
async fn a_suite_started_early_waits_for_ready_then_succeeds_with_its_summary() {
    let client = client().await;
    let (inst, profile) = installation(&client, "rpass").await;
    // Started before the installation is Ready: it waits, and the
    // installation's Ready wakes it.
    let name = start(&client, suite(&inst, "smoke")).await;
    let run = wait_phase(&client, &name, RunPhase::Succeeded).await;
    let status = run.status.clone().unwrap();
    assert_eq!(reason(&run), "Completed");
    assert_eq!(
        status.summary,
        Some(RunSummary {
            passed: 3,
            failed: 0,
            skipped: 1
        })
    );
    assert!(
        message(&run).starts_with("smoke passed: 3 passed, 0 failed, 1 skipped in "),
        "{}",
        message(&run)
    );
    let url = format!("https://{inst}.ephemera.localhost");
    assert_eq!(status.output, Some(format!("all good at {url}")));
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(status.namespace, Some(format!("ti-{inst}")));
    assert_eq!(status.job_name.as_deref(), Some(name.as_str()));
    assert!(status.started_at.is_some() && status.finished_at.is_some());
    assert!(!status.read_only);

    // The run belongs to its installation; the Job to the run.
    let owner = &run.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("TestInstallation", inst.as_str())
    );
    let job = job_of(&client, &inst, &name).await.expect("the run's Job");
    let job_owner = &job.owner_references()[0];
    assert_eq!(
        (job_owner.kind.as_str(), job_owner.name.as_str()),
        ("TestRun", name.as_str())
    );
    assert_eq!(job.labels()["ephemera.dev/installation"], inst);
    assert_eq!(job.labels()["ephemera.dev/run"], name);
    let spec = job.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    let pod = spec.template.spec.clone().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(container(&job).args, Some(vec!["--url".to_string(), url]));

    wait_for("Started and Succeeded events", TIMEOUT, || async {
        let reasons = event_reasons(&client, &run).await;
        (reasons.contains(&"Started".to_string()) && reasons.contains(&"Succeeded".to_string()))
            .then_some(())
            .ok_or(reasons)
    })
    .await;
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn a_failing_suite_fails_with_its_counts_and_exit_code() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rfail").await;
    let name = start(&client, suite(&inst, "broken")).await;
    let run = wait_phase(&client, &name, RunPhase::Failed).await;
    let status = run.status.clone().unwrap();
    assert_eq!(reason(&run), "TestsFailed");
    assert_eq!(status.exit_code, Some(1));
    assert_eq!(status.summary.map(|s| s.failed), Some(2));
    assert!(
        message(&run).starts_with("broken failed: 1 passed, 2 failed, 0 skipped"),
        "{}",
        message(&run)
    );
    assert_eq!(status.output.as_deref(), Some("2 tests failed"));

    // Unknown suites and actions are refused, naming what exists.
    let unknown = start(&client, suite(&inst, "nope")).await;
    let run = wait_phase(&client, &unknown, RunPhase::Failed).await;
    assert_eq!(reason(&run), "UnknownTest");
    assert!(
        message(&run).contains("smoke, broken, stuck, long"),
        "{}",
        message(&run)
    );
    let unknown = start(&client, action(&inst, "nope", &[])).await;
    let run = wait_phase(&client, &unknown, RunPhase::Failed).await;
    assert_eq!(reason(&run), "UnknownAction");
    assert!(job_of(&client, &inst, &unknown).await.is_none());
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn a_hanging_suite_is_stopped_at_its_timeout() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rhang").await;
    let name = start(&client, suite(&inst, "stuck")).await;
    let run = wait_phase(&client, &name, RunPhase::Failed).await;
    assert_eq!(reason(&run), "Timeout");
    assert!(message(&run).contains("3s"), "{}", message(&run));
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn cancelling_a_run_deletes_its_job() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rcancel").await;
    let name = start(&client, suite(&inst, "long")).await;
    wait_phase(&client, &name, RunPhase::Running).await;
    assert!(job_of(&client, &inst, &name).await.is_some());
    Api::<TestRun>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "cancelled": true } })),
        )
        .await
        .unwrap();
    let run = wait_phase(&client, &name, RunPhase::Cancelled).await;
    assert_eq!(reason(&run), "CancelledByUser");
    assert!(run.status.unwrap().finished_at.is_some());
    wait_job_gone(&client, &inst, &name).await;
    // A cancelled run cannot be resumed (CEL).
    let err = Api::<TestRun>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "cancelled": false } })),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be resumed"), "{err}");
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn a_new_run_of_a_suite_supersedes_the_old_one_while_actions_run_side_by_side() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rsuper").await;
    let first = start(&client, suite(&inst, "long")).await;
    wait_phase(&client, &first, RunPhase::Running).await;
    // Runs are ordered by creation time (to the second), then by name.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = start(&client, suite(&inst, "long")).await;
    let old = wait_phase(&client, &first, RunPhase::Cancelled).await;
    assert_eq!(reason(&old), "Superseded");
    assert_eq!(
        old.status.unwrap().superseded_by.as_deref(),
        Some(second.as_str())
    );
    wait_phase(&client, &second, RunPhase::Running).await;
    wait_job_gone(&client, &inst, &first).await;
    assert!(job_of(&client, &inst, &second).await.is_some());

    let a = start(&client, action(&inst, "wait", &[])).await;
    let b = start(&client, action(&inst, "wait", &[])).await;
    wait_phase(&client, &a, RunPhase::Running).await;
    wait_phase(&client, &b, RunPhase::Running).await;
    let a_now = Api::<TestRun>::all(client.clone()).get(&a).await.unwrap();
    assert_eq!(
        a_now.phase(),
        Some(RunPhase::Running),
        "actions never supersede"
    );
    // The suite's run is not touched by the actions either.
    let second_now = Api::<TestRun>::all(client.clone())
        .get(&second)
        .await
        .unwrap();
    assert_eq!(second_now.phase(), Some(RunPhase::Running));
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn parameters_are_checked_by_type_and_pass_as_one_inert_argument() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rparam").await;
    let refused = [
        (vec![("text", "x"), ("page", "abc")], "whole number"),
        (vec![("text", "x"), ("page", "0")], "between 1 and 100"),
        (vec![("text", "x"), ("page", "101")], "between 1 and 100"),
        (vec![("text", "x"), ("mode", "turbo")], "one of fast, slow"),
        (vec![("text", "x"), ("team", "; rm -rf /")], "must match"),
        (vec![("text", "x"), ("team", "$(id)")], "must match"),
        (vec![("text", "a\nb")], "control characters"),
        (
            vec![("text", "x"), ("colour", "red")],
            "unknown parameter --colour",
        ),
        (vec![], "--text is required"),
    ];
    let mut names = Vec::new();
    for (params, _) in &refused {
        names.push(start(&client, action(&inst, "echo", params)).await);
    }
    for (name, (params, expected)) in names.iter().zip(&refused) {
        let run = wait_phase(&client, name, RunPhase::Failed).await;
        assert_eq!(reason(&run), "InvalidParameters", "{params:?}");
        assert!(
            message(&run).contains(expected),
            "{params:?}: {}",
            message(&run)
        );
        assert!(
            job_of(&client, &inst, name).await.is_none(),
            "{params:?} got a Job"
        );
    }

    // What passes is one argv element and one env value, as typed.
    for hostile in [
        "; rm -rf /",
        "$(id)",
        "`id` && echo {{ url }}",
        "a b 'c' \"d\"",
    ] {
        let name = start(
            &client,
            action(
                &inst,
                "echo",
                &[("text", hostile), ("page", "7"), ("mode", "slow")],
            ),
        )
        .await;
        let run = wait_phase(&client, &name, RunPhase::Succeeded).await;
        assert_eq!(
            run.status.as_ref().unwrap().output.as_deref(),
            Some(hostile)
        );
        let job = job_of(&client, &inst, &name).await.unwrap();
        let c = container(&job);
        assert_eq!(
            c.args.unwrap(),
            ["--text", hostile, "--page", "7", "--mode", "slow"]
                .map(String::from)
                .to_vec()
        );
        assert_eq!(c.command, None, "no shell is put in front");
        let env = c.env.unwrap();
        assert_eq!(env[0].value.as_deref(), Some(hostile));
    }
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn credentials_the_container_echoes_are_redacted_and_read_only_runs_get_no_write_credentials()
{
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rcred").await;
    let secret = Api::<Secret>::namespaced(client.clone(), &format!("ti-{inst}"))
        .get("credentials")
        .await
        .unwrap();
    let password = String::from_utf8(secret.data.unwrap()["adminPassword"].0.clone()).unwrap();
    // A suite whose container prints the admin password (the fake node
    // reports literal env values, so the profile carries it).
    let mut spec = profile_spec();
    spec["tests"].as_array_mut().unwrap().push(json!({
        "name": "leak", "image": "run.invalid/fail",
        "env": [{ "name": "EPHEMERA_FAKE_REPORT",
                  "value": format!("login admin/{password} failed; again: {password}") }]
    }));
    Api::<InstallationProfile>::all(client.clone())
        .patch(
            &profile,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "tests": spec["tests"] } })),
        )
        .await
        .unwrap();
    let leak = wait_for(
        "the profile with the leak suite in the cache",
        TIMEOUT,
        || async {
            let name = start(&client, suite(&inst, "leak")).await;
            let run = wait_run(&client, &name, "finished", |r| {
                r.phase().is_some_and(RunPhase::is_finished)
            })
            .await;
            (reason(&run) != "UnknownTest")
                .then_some(run)
                .ok_or("stale profile")
        },
    )
    .await;
    let status = leak.status.clone().unwrap();
    assert_eq!(reason(&leak), "TestsFailed");
    assert_eq!(
        status.output.as_deref(),
        Some("login admin/[redacted] failed; again: [redacted]")
    );
    let text = serde_json::to_string(&leak).unwrap();
    assert!(
        !text.contains(&password),
        "the password is in the run: {text}"
    );

    // Read-only: only the user's login, by reference.
    let ro = start(&client, action(&inst, "status", &[])).await;
    let run = wait_phase(&client, &ro, RunPhase::Succeeded).await;
    assert!(run.status.unwrap().read_only);
    let job = job_of(&client, &inst, &ro).await.unwrap();
    let env = container(&job).env.unwrap();
    let refs: Vec<(String, String, String)> = env
        .iter()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), r.name.clone(), r.key.clone()))
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            ("USER_NAME".into(), "credentials".into(), "user".into()),
            (
                "USER_PASSWORD".into(),
                "credentials".into(),
                "userPassword".into()
            ),
        ]
    );
    assert!(!serde_json::to_string(&job).unwrap().contains(&password));
    // A read-only action that asks for the admin password is refused
    // before any Job exists; the same credential in a writing action works.
    let sneaky = start(&client, action(&inst, "sneaky", &[])).await;
    let run = wait_phase(&client, &sneaky, RunPhase::Failed).await;
    assert_eq!(reason(&run), "WriteCredentialInReadOnlyRun");
    assert!(job_of(&client, &inst, &sneaky).await.is_none());
    let admin = start(&client, action(&inst, "admin", &[])).await;
    wait_phase(&client, &admin, RunPhase::Succeeded).await;
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn runs_go_with_their_installation() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rgone").await;
    let name = start(&client, suite(&inst, "long")).await;
    wait_phase(&client, &name, RunPhase::Running).await;
    wait_run(&client, &name, "owned by its installation", |r| {
        !r.owner_references().is_empty()
    })
    .await;
    cleanup(&client, &inst, &profile).await;
    let runs: Api<TestRun> = Api::all(client.clone());
    wait_for(
        "the run to be deleted with its installation",
        TIMEOUT,
        || async {
            match runs.get_opt(&name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(r) => Err(format!("{:?}", r.status)),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn finished_runs_are_deleted_after_the_retention_period() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rkeep").await;
    let name = start(&client, suite(&inst, "smoke")).await;
    let run = wait_phase(&client, &name, RunPhase::Succeeded).await;
    let finished = run.status.unwrap().finished_at.unwrap().0;
    let runs: Api<TestRun> = Api::all(client.clone());
    wait_for("the finished run to be deleted", TIMEOUT, || async {
        match runs.get_opt(&name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(r) => Err(format!("{:?}", r.status)),
        }
    })
    .await;
    let kept = k8s_openapi::jiff::Timestamp::now().as_second() - finished.as_second();
    assert!(
        kept >= 15,
        "deleted after {kept}s, before the retention of {RETENTION}"
    );
    wait_job_gone(&client, &inst, &name).await;
    // A running run is not affected by retention.
    let long = start(&client, suite(&inst, "long")).await;
    wait_phase(&client, &long, RunPhase::Running).await;
    tokio::time::sleep(Duration::from_secs(17)).await;
    assert_eq!(
        runs.get_opt(&long).await.unwrap().and_then(|r| r.phase()),
        Some(RunPhase::Running)
    );
    cleanup(&client, &inst, &profile).await;
}

#[tokio::test]
async fn shared_secrets_reach_a_run_through_its_own_secret_and_only_from_allowed_namespaces() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rshare").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": shared_namespace() } })).unwrap(),
        )
        .await;
    let license = unique_name("lic-value");
    let _ = Api::<Secret>::namespaced(client.clone(), shared_namespace())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "license" },
                "stringData": { "key": license }
            }))
            .unwrap(),
        )
        .await;
    let name = wait_for("a licensed run to succeed", TIMEOUT, || async {
        let name = start(&client, action(&inst, "licensed", &[])).await;
        let run = wait_run(&client, &name, "finished", |r| {
            r.phase().is_some_and(RunPhase::is_finished)
        })
        .await;
        // The shared Secret may reach the controller's cache after the run.
        (run.phase() == Some(RunPhase::Succeeded))
            .then_some(name)
            .ok_or(format!("{:?}", run.status))
    })
    .await;
    let job = job_of(&client, &inst, &name).await.unwrap();
    let env = container(&job).env.unwrap();
    let r = env[0]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .clone()
        .unwrap();
    assert_eq!(
        (r.name.as_str(), r.key.as_str()),
        (name.as_str(), "LICENSE")
    );
    assert!(!serde_json::to_string(&job).unwrap().contains(&license));
    let copy = Api::<Secret>::namespaced(client.clone(), &format!("ti-{inst}"))
        .get(&name)
        .await
        .unwrap();
    assert_eq!(copy.data.clone().unwrap()["LICENSE"].0, license.as_bytes());
    assert_eq!(copy.owner_references()[0].name, name);

    let refused = start(&client, action(&inst, "elsewhere", &[])).await;
    let run = wait_phase(&client, &refused, RunPhase::Failed).await;
    assert_eq!(reason(&run), "SecretNamespaceNotAllowed");
    assert!(job_of(&client, &inst, &refused).await.is_none());
    cleanup(&client, &inst, &profile).await;
    let _ = namespaces
        .delete(shared_namespace(), &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_run_whose_image_cannot_be_pulled_says_so_while_it_waits() {
    let client = client().await;
    let (inst, profile) = ready_installation(&client, "rpull").await;
    let name = start(&client, action(&inst, "missing", &[])).await;
    let run = wait_run(&client, &name, "the pull failure in its message", |r| {
        message(r).contains("ImagePullBackOff")
    })
    .await;
    assert_eq!(run.phase(), Some(RunPhase::Pending));
    assert!(
        message(&run).contains("missing.invalid/tool:1"),
        "{}",
        message(&run)
    );
    cleanup(&client, &inst, &profile).await;
}

/// The cloud bot's other verbs live on the installation: `spec.restartedAt`
/// rolls the app's pods, the profile's links show in its status.
#[tokio::test]
async fn restarted_at_rolls_the_app_once_and_profile_links_are_rendered() {
    let client = client().await;
    let (inst, profile) = installation(&client, "rrestart").await;
    Api::<InstallationProfile>::all(client.clone())
        .patch(
            &profile,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "links": [
                { "name": "logs", "url": "https://logs.example/?ns={{ namespace }}&q={{ name }}" },
                { "name": "site", "url": "https://{{ host }}/admin?back={{ url }}" }
            ] } })),
        )
        .await
        .unwrap();
    let ti = wait_until(&client, &inst, "Ready with two links", |ti| {
        ti.phase() == Some(Phase::Ready) && ti.status.as_ref().is_some_and(|s| s.links.len() == 2)
    })
    .await;
    let links = ti.status.unwrap().links;
    assert_eq!(
        links[0].url,
        format!("https://logs.example/?ns=ti-{inst}&q={inst}")
    );
    assert_eq!(
        links[1].url,
        format!("https://{inst}.ephemera.localhost/admin?back=https://{inst}.ephemera.localhost")
    );

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &format!("ti-{inst}"));
    let annotation = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("ephemera.dev/restarted-at").cloned())
    };
    assert_eq!(annotation(&deployments.get("app").await.unwrap()), None);
    let restart = |at: &'static str| {
        let client = client.clone();
        let inst = inst.clone();
        async move {
            Api::<TestInstallation>::all(client)
                .patch(
                    &inst,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "restartedAt": at } })),
                )
                .await
                .unwrap();
        }
    };
    restart("2026-12-02T08:00:00Z").await;
    let rolled = wait_for("the restart annotation on the app", TIMEOUT, || async {
        let d = deployments.get("app").await.map_err(|e| e.to_string())?;
        (annotation(&d).as_deref() == Some("2026-12-02T08:00:00Z"))
            .then_some(d.clone())
            .ok_or(format!("{:?}", annotation(&d)))
    })
    .await;
    // The same value again (and any unrelated change) writes nothing.
    restart("2026-12-02T08:00:00Z").await;
    Api::<TestInstallation>::all(client.clone())
        .patch(
            &inst,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = deployments.get("app").await.unwrap();
    assert_eq!(after.metadata.generation, rolled.metadata.generation);
    cleanup(&client, &inst, &profile).await;
}
