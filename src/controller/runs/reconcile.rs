//! One pass over a TestRun: resolve its installation and profile → check
//! it (suite or action, parameters, credentials) → build its Job (pure) →
//! create the Job by server-side apply → observe the Job and its pod's
//! termination message → status (pure) → write the status only when it
//! changed. Finished runs wait out the retention period, then are deleted
//! (their Job goes with them: it is owned by the run).

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Pod, Secret},
    },
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;

use super::{
    job::{self, JobError, JobInput, RUN_LABEL, RunKind},
    result::{self, JobState},
};
use crate::api::{
    DatabaseEngine, FilestoreType, Phase, ProfileRun, RunPhase, RunTarget, TestInstallation,
    TestRun, TestRunStatus, credentials, run_parameters,
};
use crate::controller::{
    build::secrets as build_secrets,
    config::forbidden_secret_namespace,
    context::Context,
    error::{Context as _, Result},
    metrics::RunLabels,
    plan,
};
use crate::events::{Event, EventType};

/// The field manager of what the run controller writes.
pub const FIELD_MANAGER: &str = "ephemera-runs";
/// Safety requeue of a waiting or running run; watch events normally wake it.
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue while a run's pod has not started.
const POD_WAIT_RETRY: Duration = Duration::from_secs(10);
/// Requeue while a profile is not in the cache yet.
const PROFILE_RETRY: Duration = Duration::from_secs(10);

/// What every run pass shares.
pub struct RunContext {
    pub ctx: Arc<Context>,
    pub installations: Store<DeserializeGuard<TestInstallation>>,
    pub runs: Store<TestRun>,
    /// How long finished runs are kept.
    pub retention: Duration,
}

pub async fn reconcile(run: Arc<TestRun>, rctx: Arc<RunContext>) -> Result<Action> {
    if run.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ctx = &rctx.ctx;
    let installation = rctx
        .installations
        .get(&ObjectRef::new(&run.spec.installation))
        .and_then(|guard| guard.0.as_ref().ok().cloned());
    if let Some(phase) = run.phase()
        && phase.is_finished()
    {
        if installation.is_none() && ctx.config.installation_selector.is_some() {
            // Another controller's run: its retention is that one's to keep.
            return Ok(Action::await_change());
        }
        return expire(&run, &rctx).await;
    }
    let Some(installation) = installation else {
        if ctx.config.installation_selector.is_some() {
            // Another controller's installation (or none): not ours to judge.
            return Ok(Action::await_change());
        }
        let status = if started(&run) {
            ended(
                &run,
                RunPhase::Failed,
                "InstallationGone",
                format!("installation {} is gone", run.spec.installation),
            )
        } else {
            waiting(
                &run,
                "InstallationNotFound",
                format!(
                    "waiting for installation {}, which does not exist",
                    run.spec.installation
                ),
            )
        };
        write_status(&rctx, &run, status).await?;
        return Ok(Action::requeue(RESYNC));
    };
    ensure_owner(ctx, &run, &installation).await?;
    let namespace = installation
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| plan::namespace_name(&ctx.config, &installation.name_any()));

    if installation.metadata.deletion_timestamp.is_some() {
        stop_job(ctx, &namespace, &run.name_any()).await?;
        let status = ended(
            &run,
            RunPhase::Cancelled,
            "InstallationGone",
            format!("installation {} is being deleted", run.spec.installation),
        );
        write_status(&rctx, &run, status).await?;
        return Ok(Action::await_change());
    }
    if run.spec.cancelled {
        stop_job(ctx, &namespace, &run.name_any()).await?;
        let status = ended(
            &run,
            RunPhase::Cancelled,
            "CancelledByUser",
            format!("{} was cancelled", what(&run)),
        );
        write_status(&rctx, &run, status).await?;
        return Ok(Action::await_change());
    }
    if let Some(newer) = newer_run_of_same_suite(&rctx.runs, &run) {
        stop_job(ctx, &namespace, &run.name_any()).await?;
        let mut status = ended(
            &run,
            RunPhase::Cancelled,
            "Superseded",
            format!("{} was replaced by the newer run {newer}", what(&run)),
        );
        status.superseded_by = Some(newer);
        write_status(&rctx, &run, status).await?;
        return Ok(Action::await_change());
    }
    // Older unfinished runs of the same suite end now, not at their next
    // event.
    for older in older_runs_of_same_suite(&rctx.runs, &run) {
        stop_job(ctx, &namespace, &older.name_any()).await?;
        let mut status = ended(
            &older,
            RunPhase::Cancelled,
            "Superseded",
            format!(
                "{} was replaced by the newer run {}",
                what(&older),
                run.name_any()
            ),
        );
        status.superseded_by = Some(run.name_any());
        write_status(&rctx, &older, status).await?;
    }

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = jobs
        .get_opt(&run.name_any())
        .await
        .request("get", format!("Job {namespace}/{}", run.name_any()))?;
    let Some(existing) = existing else {
        if started(&run) {
            let status = ended(
                &run,
                RunPhase::Failed,
                "JobDeleted",
                format!("the Job of {} was deleted before it finished", what(&run)),
            );
            write_status(&rctx, &run, status).await?;
            return Ok(Action::await_change());
        }
        return start(&rctx, &run, &installation, &namespace).await;
    };
    observe(&rctx, &run, &installation, &namespace, &existing).await
}

/// Creates the Job of a run that has not started, or refuses the run.
async fn start(
    rctx: &RunContext,
    run: &TestRun,
    installation: &TestInstallation,
    namespace: &str,
) -> Result<Action> {
    let ctx = &rctx.ctx;
    if installation.phase() != Some(Phase::Ready) {
        let now = installation
            .phase()
            .map_or("Pending".to_string(), |p| p.to_string());
        let status = waiting(
            run,
            "InstallationNotReady",
            format!(
                "waiting for installation {} to be Ready (it is {now})",
                installation.name_any()
            ),
        );
        write_status(rctx, run, status).await?;
        // The installation's next event wakes it (`runs::run`).
        return Ok(Action::requeue(RESYNC));
    }
    let profile_name = plan::profile_name(installation);
    let Some(profile) = ctx.caches.profile(profile_name) else {
        let status = waiting(
            run,
            "ProfileNotFound",
            format!("waiting for profile {profile_name}, which does not exist"),
        );
        write_status(rctx, run, status).await?;
        return Ok(Action::requeue(PROFILE_RETRY));
    };
    let (kind, definition) = match find_definition(run, &profile.spec.tests, &profile.spec.actions)
    {
        Ok(found) => found,
        Err((reason, message)) => {
            let status = ended(
                run,
                RunPhase::Failed,
                reason,
                format!("profile {profile_name} {message}"),
            );
            return refuse(rctx, run, status).await;
        }
    };
    let parameters =
        match run_parameters::resolve_parameters(&definition.parameters, &run.spec.parameters) {
            Ok(parameters) => parameters,
            Err(err) => {
                let status = ended(run, RunPhase::Failed, "InvalidParameters", err.to_string());
                return refuse(rctx, run, status).await;
            }
        };
    let plan = match plan::plan(installation, &profile, &ctx.config) {
        Ok(plan) => plan,
        Err(err) => {
            let status = ended(
                run,
                RunPhase::Failed,
                "InstallationInvalid",
                err.to_string(),
            );
            return refuse(rctx, run, status).await;
        }
    };
    let version = installation
        .status
        .as_ref()
        .and_then(|s| s.version.clone())
        .unwrap_or_else(|| plan.version.clone());
    let input = JobInput {
        run,
        kind,
        definition,
        plan: &plan,
        version: &version,
        parameters: &parameters,
        has_database: !matches!(plan.database.engine, DatabaseEngine::None),
        has_filestore: matches!(
            plan.filestore.kind,
            FilestoreType::Minio | FilestoreType::S3
        ),
    };
    let job = match job::job(&input, owner_reference(run)) {
        Ok(job) => job,
        Err(err) => return refuse_job(rctx, run, &err).await,
    };
    // Never a namespace that can hold other Secrets, however configured.
    let allowed: Vec<String> = ctx
        .config
        .allowed_secret_namespaces
        .iter()
        .filter(|ns| {
            forbidden_secret_namespace(
                ns,
                ctx.config.own_namespace.as_deref(),
                &ctx.config.namespace_prefix,
            )
            .is_none()
        })
        .cloned()
        .collect();
    let shared = match job::shared_values(definition, &allowed, |ns, name, key| {
        let secret = ctx.caches.referenced_secret(ns, name)?;
        let bytes = secret.data?.get(key)?.0.clone();
        String::from_utf8(bytes).ok()
    }) {
        Ok(shared) => shared,
        Err(err) => return refuse_job(rctx, run, &err).await,
    };
    if !shared.is_empty() {
        let secret = job::env_secret(
            &run.name_any(),
            &installation.name_any(),
            namespace,
            &shared,
            owner_reference(run),
        );
        Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .patch(
                &run.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .request("apply", format!("Secret {namespace}/{}", run.name_any()))?;
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    jobs.patch(
        &run.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&job),
    )
    .await
    .request("apply", format!("Job {namespace}/{}", run.name_any()))?;
    let mut status = base(run);
    status.phase = Some(RunPhase::Pending);
    status.reason = Some("Started".into());
    status.message = Some(format!("{} started; waiting for its pod", what(run)));
    status.job_name = Some(run.name_any());
    status.namespace = Some(namespace.to_string());
    status.started_at = Some(Time(Timestamp::now()));
    status.read_only = definition.read_only;
    let kind_label = kind_label(kind);
    ctx.metrics
        .runs_started
        .get_or_create(&RunLabels {
            kind: kind_label.into(),
            result: String::new(),
        })
        .inc();
    publish(ctx, run, EventType::Normal, "Started", &status).await;
    write_status(rctx, run, status).await?;
    Ok(Action::requeue(RESYNC))
}

/// Follows a run whose Job exists.
async fn observe(
    rctx: &RunContext,
    run: &TestRun,
    installation: &TestInstallation,
    namespace: &str,
    existing: &Job,
) -> Result<Action> {
    let ctx = &rctx.ctx;
    let state = result::job_state(existing);
    let mut status = base(run);
    status.job_name = Some(run.name_any());
    status.namespace = Some(namespace.to_string());
    status.started_at = run
        .status
        .as_ref()
        .and_then(|s| s.started_at.clone())
        .or_else(|| existing.metadata.creation_timestamp.clone());
    match &state {
        JobState::Waiting => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            let stuck = pods
                .list(&ListParams::default().labels(&format!("{RUN_LABEL}={}", run.name_any())))
                .await
                .request(
                    "list",
                    format!("pods of Job {namespace}/{}", run.name_any()),
                )?
                .items
                .iter()
                .find_map(result::waiting_reason);
            status.phase = Some(RunPhase::Pending);
            status.reason = Some("Started".into());
            status.message = Some(match stuck {
                Some(why) => format!(
                    "{} started, but its container cannot run yet: {why}",
                    what(run)
                ),
                None => format!("{} started; waiting for its pod", what(run)),
            });
            write_status(rctx, run, status).await?;
            // Pod events do not wake a run: look again soon while it waits.
            return Ok(Action::requeue(POD_WAIT_RETRY));
        }
        JobState::Running => {
            status.phase = Some(RunPhase::Running);
            status.reason = Some("Running".into());
            status.message = Some(format!("{} is running", what(run)));
            write_status(rctx, run, status).await?;
            return Ok(Action::requeue(RESYNC));
        }
        JobState::Succeeded { .. } | JobState::Failed { .. } => {}
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pod_list = pods
        .list(&ListParams::default().labels(&format!("{RUN_LABEL}={}", run.name_any())))
        .await
        .request(
            "list",
            format!("pods of Job {namespace}/{}", run.name_any()),
        )?;
    let container = pod_list.items.iter().find_map(result::terminated);
    let finished = match &state {
        JobState::Succeeded { finished } | JobState::Failed { finished, .. } => finished.clone(),
        _ => None,
    }
    .unwrap_or_else(|| Time(Timestamp::now()));
    let took = status
        .started_at
        .as_ref()
        .map(|s| Duration::from_secs((finished.0.as_second() - s.0.as_second()).max(0) as u64));
    let profile = ctx.caches.profile(plan::profile_name(installation));
    let definition = profile.as_ref().and_then(|p| {
        find_definition(run, &p.spec.tests, &p.spec.actions)
            .ok()
            .map(|(kind, d)| (kind, d.clone()))
    });
    let timeout = definition
        .as_ref()
        .and_then(|(kind, d)| {
            d.timeout.clone().or(Some(
                match kind {
                    RunKind::Test => job::DEFAULT_TEST_TIMEOUT,
                    RunKind::Action => job::DEFAULT_ACTION_TIMEOUT,
                }
                .to_string(),
            ))
        })
        .unwrap_or_default();
    status.read_only = definition.as_ref().is_some_and(|(_, d)| d.read_only);
    let mut secrets = credential_values(ctx, namespace);
    if let Some(data) = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&run.name_any())
        .await
        .request("get", format!("Secret {namespace}/{}", run.name_any()))?
        .and_then(|s| s.data)
    {
        secrets.extend(
            data.values()
                .filter_map(|v| String::from_utf8(v.0.clone()).ok()),
        );
    }
    let (name, is_test) = match run.target() {
        RunTarget::Test(t) => (t, true),
        RunTarget::Action(a) => (a, false),
    };
    let Some(outcome) = result::outcome(name, is_test, &state, container, took, &timeout, &secrets)
    else {
        return Ok(Action::requeue(RESYNC));
    };
    status.phase = Some(outcome.phase);
    status.reason = Some(outcome.reason.into());
    status.message = Some(outcome.message);
    status.summary = outcome.summary;
    status.output = outcome.output;
    status.exit_code = outcome.exit_code;
    status.finished_at = Some(finished);
    write_status(rctx, run, status).await?;
    Ok(Action::requeue(rctx.retention))
}

/// The suite or action a run names, with its kind; or why there is none.
fn find_definition<'a>(
    run: &TestRun,
    tests: &'a [ProfileRun],
    actions: &'a [ProfileRun],
) -> Result<(RunKind, &'a ProfileRun), (&'static str, String)> {
    let names = |list: &[ProfileRun]| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match run.target() {
        RunTarget::Test(name) => tests
            .iter()
            .find(|t| t.name == name)
            .map(|t| (RunKind::Test, t))
            .ok_or_else(|| {
                (
                    "UnknownTest",
                    format!("has no test suite {name}; its suites: {}", names(tests)),
                )
            }),
        RunTarget::Action(name) => actions
            .iter()
            .find(|a| a.name == name)
            .map(|a| (RunKind::Action, a))
            .ok_or_else(|| {
                (
                    "UnknownAction",
                    format!("has no action {name}; its actions: {}", names(actions)),
                )
            }),
    }
}

/// A run whose Job cannot be made: Failed with the reason and why.
async fn refuse_job(rctx: &RunContext, run: &TestRun, err: &JobError) -> Result<Action> {
    let status = ended(
        run,
        RunPhase::Failed,
        err.reason(),
        format!("{} cannot start: {err}", what(run)),
    );
    refuse(rctx, run, status).await
}

/// A run that will not start: the status, an event and the metric.
async fn refuse(rctx: &RunContext, run: &TestRun, status: TestRunStatus) -> Result<Action> {
    write_status(rctx, run, status).await?;
    Ok(Action::requeue(rctx.retention))
}

/// Every value of the installation's Secrets that must not show in a run's
/// output: passwords, keys and the database URL (user names are not).
fn credential_values(ctx: &Context, namespace: &str) -> Vec<String> {
    let keys: [(&str, &[&str]); 4] = [
        (
            credentials::SECRET_NAME,
            &[credentials::ADMIN_PASSWORD, credentials::USER_PASSWORD],
        ),
        ("database", &[build_secrets::DATABASE_PASSWORD_KEY, "url"]),
        (
            "filestore",
            &[
                build_secrets::FILESTORE_ACCESS_KEY,
                build_secrets::FILESTORE_SECRET_KEY,
            ],
        ),
        (
            build_secrets::GENERATED_SECRET,
            &[
                credentials::ADMIN_PASSWORD,
                credentials::USER_PASSWORD,
                "databasePassword",
                "filestoreAccessKey",
                "filestoreSecretKey",
            ],
        ),
    ];
    let mut values = Vec::new();
    for (secret, wanted) in keys {
        let Some(data) = ctx.caches.secret(namespace, secret).and_then(|s| s.data) else {
            continue;
        };
        for key in wanted {
            if let Some(v) = data
                .get(*key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
            {
                values.push(v);
            }
        }
    }
    values
}

/// `suite e2e` or `action sampledata`.
fn what(run: &TestRun) -> String {
    match run.target() {
        RunTarget::Test(t) => format!("suite {t}"),
        RunTarget::Action(a) => format!("action {a}"),
    }
}

fn kind_label(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Test => "test",
        RunKind::Action => "action",
    }
}

fn started(run: &TestRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.job_name.is_some())
}

/// The status fields every pass keeps.
fn base(run: &TestRun) -> TestRunStatus {
    let old = run.status.clone().unwrap_or_default();
    TestRunStatus {
        observed_generation: run.metadata.generation,
        job_name: old.job_name,
        namespace: old.namespace,
        started_at: old.started_at,
        read_only: old.read_only,
        ..Default::default()
    }
}

fn waiting(run: &TestRun, reason: &str, message: String) -> TestRunStatus {
    let mut status = base(run);
    status.phase = Some(RunPhase::Pending);
    status.reason = Some(reason.into());
    status.message = Some(message);
    status
}

fn ended(run: &TestRun, phase: RunPhase, reason: &str, message: String) -> TestRunStatus {
    let mut status = base(run);
    status.phase = Some(phase);
    status.reason = Some(reason.into());
    status.message = Some(message);
    status.finished_at = Some(Time(Timestamp::now()));
    status
}

/// The newest run of the same suite on the same installation, if it is
/// newer than `run`: a suite runs once per installation at a time.
fn newer_run_of_same_suite(runs: &Store<TestRun>, run: &TestRun) -> Option<String> {
    same_suite(runs, run)
        .into_iter()
        .filter(|other| order(other) > order(run))
        .max_by_key(|r| order(r))
        .map(|r| r.name_any())
}

fn older_runs_of_same_suite(runs: &Store<TestRun>, run: &TestRun) -> Vec<Arc<TestRun>> {
    same_suite(runs, run)
        .into_iter()
        .filter(|other| order(other) < order(run))
        .filter(|other| !other.phase().is_some_and(RunPhase::is_finished))
        .collect()
}

fn same_suite(runs: &Store<TestRun>, run: &TestRun) -> Vec<Arc<TestRun>> {
    let RunTarget::Test(suite) = run.target() else {
        return vec![];
    };
    runs.state()
        .into_iter()
        .filter(|other| other.name_any() != run.name_any())
        .filter(|other| other.spec.installation == run.spec.installation)
        .filter(|other| other.target() == RunTarget::Test(suite))
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Creation order: time (seconds), then name.
fn order(run: &TestRun) -> (i64, String) {
    (
        run.metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        run.name_any(),
    )
}

/// Deletes a run's Job (and, in the background, its pod).
async fn stop_job(ctx: &Context, namespace: &str, name: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(err) => Err(err).request("delete", format!("Job {namespace}/{name}")),
    }
}

/// The run belongs to its installation, so the garbage collector deletes
/// it with the installation.
async fn ensure_owner(ctx: &Context, run: &TestRun, installation: &TestInstallation) -> Result<()> {
    let uid = installation.uid().unwrap_or_default();
    if run.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    let mut owners = run.owner_references().to_vec();
    owners.push(OwnerReference {
        api_version: TestInstallation::api_version(&()).into_owned(),
        kind: TestInstallation::kind(&()).into_owned(),
        name: installation.name_any(),
        uid,
        controller: None,
        block_owner_deletion: None,
    });
    let patch = json!({ "metadata": {
        "ownerReferences": owners,
        "resourceVersion": run.resource_version(),
    } });
    let api: Api<TestRun> = Api::all(ctx.client.clone());
    match api
        .patch(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile: the next pass sees the new version.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(err) => Err(err).request("patch", format!("TestRun {}", run.name_any())),
    }
}

fn owner_reference(run: &TestRun) -> OwnerReference {
    run.controller_owner_ref(&()).unwrap_or_default()
}

/// Writes `status` when it differs from the run's, with the event and
/// metric of a run that ends.
async fn write_status(rctx: &RunContext, run: &TestRun, mut status: TestRunStatus) -> Result<()> {
    let old = run.status.clone().unwrap_or_default();
    // Times of a state that did not change stay as first written.
    if old.phase == status.phase && old.reason == status.reason {
        status.finished_at = old.finished_at.clone().or(status.finished_at);
    }
    if old == status {
        return Ok(());
    }
    let ctx = &rctx.ctx;
    let api: Api<TestRun> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": TestRun::api_version(&()),
        "kind": TestRun::kind(&()),
        "status": status,
    });
    api.patch_status(
        &run.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .request("patch status", format!("TestRun {}", run.name_any()))?;
    if let Some(phase) = status.phase
        && phase.is_finished()
        && !old.phase.is_some_and(RunPhase::is_finished)
    {
        let kind = match run.target() {
            RunTarget::Test(_) => RunKind::Test,
            RunTarget::Action(_) => RunKind::Action,
        };
        ctx.metrics
            .runs_finished
            .get_or_create(&RunLabels {
                kind: kind_label(kind).into(),
                result: phase.to_string(),
            })
            .inc();
        let type_ = if phase == RunPhase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, run, type_, phase.as_str(), &status).await;
    }
    Ok(())
}

async fn publish(
    ctx: &Context,
    run: &TestRun,
    type_: EventType,
    reason: &str,
    status: &TestRunStatus,
) {
    let note: String = status
        .message
        .clone()
        .unwrap_or_default()
        .chars()
        .take(1000)
        .collect();
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Run".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
        tracing::warn!(%err, reason, "publishing an event failed");
    }
}

/// When a finished run ended, in Unix seconds. A run finished by someone
/// else may have no end time: its age then counts from its creation (or
/// from `now`), never from the epoch.
fn ended_at(run: &TestRun, now: Timestamp) -> i64 {
    run.status
        .as_ref()
        .and_then(|s| s.finished_at.as_ref())
        .or(run.metadata.creation_timestamp.as_ref())
        .map_or_else(|| now.as_second(), |t| t.0.as_second())
}

/// Deletes a finished run once its retention period is over.
async fn expire(run: &TestRun, rctx: &RunContext) -> Result<Action> {
    let age = Timestamp::now().as_second() - ended_at(run, Timestamp::now());
    let retention = rctx.retention.as_secs() as i64;
    if age < retention {
        return Ok(Action::requeue(Duration::from_secs(
            (retention - age).max(1) as u64,
        )));
    }
    let api: Api<TestRun> = Api::all(rctx.ctx.client.clone());
    match api
        .delete(&run.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(err) => Err(err).request("delete", format!("TestRun {}", run.name_any())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: serde_json::Value, created: Option<&str>) -> TestRun {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ephemera.dev/v1alpha1", "kind": "TestRun",
            "metadata": { "name": "r", "creationTimestamp": created },
            "spec": { "installation": "i", "test": "e2e" },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_run_without_an_end_time_is_as_old_as_it_is_never_as_old_as_the_epoch() {
        let now: Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let ended = run(
            serde_json::json!({ "phase": "Succeeded", "finishedAt": "2026-12-02T11:00:00Z" }),
            Some("2026-12-02T10:00:00Z"),
        );
        assert_eq!(now.as_second() - ended_at(&ended, now), 3600);
        let no_end = run(
            serde_json::json!({ "phase": "Succeeded" }),
            Some("2026-12-02T10:00:00Z"),
        );
        assert_eq!(now.as_second() - ended_at(&no_end, now), 7200);
        let nothing = run(serde_json::json!({ "phase": "Failed" }), None);
        assert_eq!(now.as_second() - ended_at(&nothing, now), 0);
    }
}
