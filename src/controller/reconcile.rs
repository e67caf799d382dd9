//! One reconcile pass of a TestInstallation: validate and resolve the
//! profile → build (pure) → server-side apply of what changed → prune →
//! observe (from the stores) → status (pure) → write the status only when it
//! changed → requeue at the next deadline.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{Namespace, ObjectReference, Secret},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::controller::Action,
};

use super::{
    apply,
    baselines::Settled,
    build::{
        self, BuildInput, ExternalSecrets, GeneratedSecrets,
        secrets::{CredentialsLost, Recovered, StoredSecrets},
    },
    changes,
    context::Context,
    error::{Context as _, Error, Result, gone_is_fine},
    lifecycle::{
        capacity::Admission,
        expiry::{self, Expiry},
        seed, ttl, upgrade,
    },
    observe::NamespaceState,
    plan::{self, Plan},
    secret_values::GENERATED_SECRETS,
    status::{self, Situation},
};
use crate::{
    api::{
        DatabaseEngine, FilestoreType, InstallationProfile, Phase, TestInstallation,
        TestInstallationStatus, credentials,
    },
    events::{Event, EventType},
};

/// Finalizer that keeps a TestInstallation until its namespace is gone, so a
/// new installation of the same name never meets a terminating namespace.
pub const FINALIZER: &str = "ephemera.dev/namespace-cleanup";

/// How often an installation is looked at with nothing else happening.
const RESYNC: Duration = Duration::from_secs(600);
/// Safety requeue while waiting on a namespace: its watch event is what
/// wakes the installation.
const WAIT_SAFETY: Duration = Duration::from_secs(300);
/// How soon a stalled installation is looked at again without a change.
const STALLED_RETRY: Duration = Duration::from_secs(60);
/// The next pass after a status change that the next step follows from
/// (long enough for the watch to bring the new status into the store).
const STATUS_STEP: Duration = Duration::from_millis(300);

pub async fn reconcile(
    guard: Arc<DeserializeGuard<TestInstallation>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let installation = match &guard.0 {
        Ok(installation) => installation,
        Err(invalid) => {
            tracing::warn!(error = %invalid, "skipping a TestInstallation that cannot be read");
            return Ok(Action::await_change());
        }
    };
    let name = installation.name_any();
    if installation.metadata.deletion_timestamp.is_some() {
        // Deletion is the urgent lane's (see `urgent`); nothing to do here.
        ctx.urgent.installation_seen(&name);
        return Ok(Action::await_change());
    }
    let _exclusive = ctx.exclusive(&name).await;
    let started = std::time::Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_installation(installation, &ctx).await;
    ctx.metrics.observe_duration(started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&name),
        Err(err) => {
            ctx.metrics
                .failures
                .get_or_create(&super::metrics::ErrorLabels {
                    error: err.metric_label(),
                })
                .inc();
        }
    }
    result
}

pub fn error_policy(
    guard: Arc<DeserializeGuard<TestInstallation>>,
    error: &super::error::Error,
    ctx: Arc<Context>,
) -> Action {
    let name = guard.0.as_ref().map(|ti| ti.name_any()).unwrap_or_default();
    let delay = ctx.next_backoff(&name);
    tracing::warn!(installation = %name, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What a pass decided: the status to write and when to look again (the
/// expiry deadline may bring that forward).
pub(super) struct Outcome {
    status: TestInstallationStatus,
    requeue: Duration,
}

impl Outcome {
    fn of(installation: &TestInstallation, situation: &Situation, requeue: Duration) -> Self {
        Self {
            status: status::compute(installation, situation, Timestamp::now()),
            requeue,
        }
    }

    fn stalled(installation: &TestInstallation, reason: &str, message: String) -> Self {
        // Profiles are watched; Secrets outside the namespace are not, so
        // look again now and then.
        Self::of(
            installation,
            &Situation::Stalled { reason, message },
            STALLED_RETRY,
        )
    }

    fn waiting(installation: &TestInstallation, reason: &str, message: String) -> Self {
        Self::of(
            installation,
            &Situation::Waiting { reason, message },
            WAIT_SAFETY,
        )
    }
}

/// How long a pass waits for the caches to fill before it is put back.
const CACHES_PATIENCE: Duration = Duration::from_secs(5);

#[tracing::instrument(skip_all, fields(installation = %installation.name_any()))]
async fn reconcile_installation(installation: &TestInstallation, ctx: &Context) -> Result<Action> {
    // The runtime's span around it names what woke the pass.
    tracing::debug!("pass");
    let api: Api<TestInstallation> = Api::all(ctx.client.clone());
    // Bounded, so that a pass never holds up a shutdown while the caches
    // are still filling.
    if tokio::time::timeout(CACHES_PATIENCE, ctx.caches.wait_until_ready())
        .await
        .is_err()
    {
        tracing::debug!("caches still filling; looking again shortly");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Lifecycle first: what is recorded and asked decides expiry before
    // anything that can fail.
    let now = Timestamp::now();
    let known = ttl::lifetime(installation, None);
    if expiry::decide(
        known.expires_at(installation).map(|t| t.0),
        installation.spec.deletion_locked,
        now,
    ) == Expiry::Due
    {
        expire(ctx, installation).await?;
        return Ok(Action::await_change());
    }
    // A failed test on the resourceVersion (a stale read) is answered with
    // 422: retried with backoff, never taken as a permanent error.
    if !installation.finalizers().iter().any(|f| f == FINALIZER) {
        let name = installation.name_any();
        let mut patched = installation.clone();
        patched.finalizers_mut().push(FINALIZER.to_string());
        ctx.caches.own_writes.expect(&name, &patched);
        if let Err(err) = add_finalizer(&api, installation).await {
            ctx.caches.own_writes.forget(&name);
            return Err(err);
        }
    }

    let profile_name = plan::profile_name(installation);
    let profile = ctx.caches.profile(profile_name);
    let lifetime = ttl::lifetime(
        installation,
        profile.as_ref().map(|p| (profile_name, &p.spec.ttl)),
    );
    let Some(profile) = profile else {
        let message = if installation.spec.profile.is_some() {
            format!(
                "InstallationProfile {profile_name:?} does not exist; create it or name another profile"
            )
        } else {
            "no profile named and no InstallationProfile \"default\" exists; create one or set spec.profile".to_string()
        };
        let outcome = Outcome::stalled(installation, "ProfileNotFound", message);
        return finish(ctx, installation, outcome, &lifetime, now).await;
    };
    match pass(installation, ctx, &profile, &lifetime).await {
        Ok(outcome) => finish(ctx, installation, outcome, &lifetime, now).await,
        Err(err) => failed(ctx, installation, &lifetime, err, now).await,
    }
}

/// A pass that failed: a permanent error stalls the installation (with a
/// Warning Event), a transient one keeps it `Reconciling` and is retried
/// with backoff. Either way the expiry still holds.
async fn failed(
    ctx: &Context,
    installation: &TestInstallation,
    lifetime: &ttl::Lifetime,
    err: Error,
    now: Timestamp,
) -> Result<Action> {
    if err.is_permanent() {
        // Counted like the transient ones, which `reconcile` counts.
        ctx.metrics
            .failures
            .get_or_create(&super::metrics::ErrorLabels {
                error: err.metric_label(),
            })
            .inc();
        tracing::warn!(error = %err, "a permanent API error stalls the installation");
        let message = truncate(&err.message(), 1000);
        publish(
            ctx,
            installation,
            EventType::Warning,
            err.reason(),
            "Reconcile",
            &message,
        )
        .await;
        let outcome = Outcome::stalled(installation, err.reason(), message);
        return finish(ctx, installation, outcome, lifetime, now).await;
    }
    let message = truncate(
        &format!("retrying after a transient error: {}", err.message()),
        1000,
    );
    let mut outcome = Outcome::of(
        installation,
        &Situation::Retrying { message },
        STALLED_RETRY,
    );
    outcome.status.phase = installation.phase().or(outcome.status.phase);
    // The error goes to the backoff; writing the status is best effort.
    if let Err(write) = finish(ctx, installation, outcome, lifetime, now).await {
        tracing::debug!(error = %write, "could not record the transient error in the status");
    }
    Err(err)
}

/// Everything after the lifetime: plan, apply, observe, status.
async fn pass(
    installation: &TestInstallation,
    ctx: &Context,
    profile: &InstallationProfile,
    lifetime: &ttl::Lifetime,
) -> Result<Outcome> {
    let name = installation.name_any();
    if let Some(problem) = &lifetime.problem {
        return Ok(Outcome::stalled(
            installation,
            problem.reason(),
            problem.to_string(),
        ));
    }
    let plan = match plan::plan(installation, profile, &ctx.config) {
        Ok(plan) => plan,
        Err(err) => {
            return Ok(Outcome::stalled(
                installation,
                err.reason(),
                err.to_string(),
            ));
        }
    };

    let uid = installation.uid().unwrap_or_default();
    // What this pass saw; events that leave it as it is run no pass.
    let before = ctx.caches.observe(&plan.namespace, &uid);
    ctx.caches.record_observed(&name, &before);
    // The Namespace watch wakes the installation when a namespace it waits
    // for goes away; the requeue is only a safety net.
    let namespace_state = ctx.caches.namespace_state(&plan.namespace, &uid);
    // Nothing of this installation can be in a namespace this pass creates.
    let namespace_is_new = namespace_state == NamespaceState::Absent;
    match namespace_state {
        NamespaceState::Terminating => {
            let message = format!(
                "waiting for namespace {} of an earlier installation named {name} to be deleted",
                plan.namespace
            );
            return Ok(Outcome::waiting(
                installation,
                "WaitingForPreviousNamespace",
                message,
            ));
        }
        NamespaceState::Foreign { owner } if owner.starts_with("TestInstallation ") => {
            let message = format!(
                "waiting for namespace {} of an earlier installation named {name} to be deleted",
                plan.namespace
            );
            return Ok(Outcome::waiting(
                installation,
                "WaitingForPreviousNamespace",
                message,
            ));
        }
        NamespaceState::Foreign { owner } => {
            let message = format!(
                "namespace {} already exists and belongs to {owner}; ephemera will not take it over",
                plan.namespace
            );
            return Ok(Outcome::stalled(installation, "NamespaceConflict", message));
        }
        NamespaceState::Absent | NamespaceState::Ours => {}
    }

    let external = match read_external_secrets(ctx, &plan) {
        Ok(external) => external,
        Err(message) => return Ok(Outcome::stalled(installation, "SecretNotFound", message)),
    };
    if let Admission::Queued { message } = ctx.admit(installation) {
        // Woken when capacity frees up; the requeue is only a safety net.
        let mut outcome = Outcome::waiting(installation, "QuotaExceeded", message);
        outcome.requeue = Duration::from_secs(60);
        return Ok(outcome);
    }

    let created = installation
        .status
        .as_ref()
        .is_some_and(|s| s.credentials_secret.is_some());
    let (recovered, read_uids) = read_generated_secrets(ctx, &plan, created).await?;
    let generated = match recovered {
        Ok(recovered) => recovered.secrets,
        Err(lost) => {
            publish(
                ctx,
                installation,
                EventType::Warning,
                "CredentialsLost",
                "Restore",
                &lost.to_string(),
            )
            .await;
            return Ok(Outcome::stalled(
                installation,
                "CredentialsLost",
                lost.to_string(),
            ));
        }
    };
    let stage = upgrade::stage(installation, plan.upgrade_from.as_deref(), &plan.version);
    let app_version = stage.app_version(&plan.version).to_string();
    let input = BuildInput {
        plan: &plan,
        generated: &generated,
        external: &external,
        app_version: &app_version,
        seed: seed::job_wanted(installation, plan.seed.is_some()),
    };
    let children = match build::children(&input) {
        Ok(children) => children,
        Err(err) => {
            return Ok(Outcome::stalled(
                installation,
                err.reason(),
                err.to_string(),
            ));
        }
    };

    // From here on the pass looks again at its end (see `baselines`).
    let observing = ctx.caches.observed.observing(&name);
    let namespace_wait = changes::apply_namespace(
        &ctx.client,
        &ctx.caches,
        &build::namespace::namespace(&plan, owner_reference(installation)),
    )
    .await?;
    let changes::Changes {
        applied,
        sent,
        store_wait,
    } = changes::apply_changed(&ctx.client, &ctx.caches, &plan.namespace, &children).await?;
    // A generated Secret that had to be created again (missing when read,
    // or deleted between the read and the apply) is announced.
    for (secret, read_uid) in read_uids.iter().filter(|_| created) {
        let applied_uid = applied.uids.get(&format!("Secret/{secret}"));
        if applied_uid.is_some() && applied_uid != read_uid.as_ref() {
            let note = format!(
                "Secret {}/{secret} was missing; it is written again with the same generated values",
                plan.namespace
            );
            // The Secret as the related object keeps one Event per Secret
            // (the recorder folds Events of one key into a series).
            let secret_ref = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                namespace: Some(plan.namespace.clone()),
                name: Some(secret.to_string()),
                uid: applied_uid.cloned(),
                ..Default::default()
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "CredentialsRestored".into(),
                note: Some(note),
                action: "Restore".into(),
                secondary: Some(secret_ref),
            };
            if let Err(err) = ctx
                .recorder
                .publish(&event, &installation.object_ref(&()))
                .await
            {
                tracing::warn!(%err, "publishing an event failed");
            }
        }
    }
    for object in &applied.recreated {
        let note = format!(
            "{object} in namespace {} is being recreated: a field that changed cannot be updated in place",
            plan.namespace
        );
        publish(
            ctx,
            installation,
            EventType::Normal,
            "Recreating",
            "Apply",
            &note,
        )
        .await;
    }
    if sent > 0 {
        ctx.metrics.applying_reconciles.inc();
        ctx.metrics
            .store_wait
            .observe((namespace_wait + store_wait).as_secs_f64());
    }
    let changed = sent > 0 || !applied.recreated.is_empty();
    let pruned = changes::prune(
        &ctx.client,
        &ctx.caches,
        &plan.namespace,
        &name,
        &children,
        changed && !namespace_is_new,
    )
    .await?;
    if !pruned.deleted.is_empty() {
        tracing::info!(pruned = ?pruned.deleted, "removed objects no longer desired");
    }

    let applied_keys: Vec<(&str, &str, &str)> =
        std::iter::once(("Namespace", "", plan.namespace.as_str()))
            .chain(
                children
                    .iter()
                    .map(|c| (c.kind(), plan.namespace.as_str(), c.name())),
            )
            .collect();
    // Changes made while the pass ran woke no pass (see `baselines`).
    // Until the spec or the profile changes, what the workloads show next
    // is recorded by a refresh (see `refresh`), not by another pass.
    let (_, (outcome, moves_on_or_changed)) = observing.finish(|| {
        let observed = ctx.caches.observe(&plan.namespace, &uid);
        let changed_since = ctx.caches.shows_a_change_of(&applied_keys);
        let (outcome, moves_on) = applied_outcome(installation, &plan, &observed);
        let more_to_do = moves_on || changed_since;
        let settles = (!more_to_do).then(|| settled(installation, profile));
        (observed, (outcome, more_to_do), settles)
    });
    if moves_on_or_changed {
        return Ok(Outcome {
            requeue: STATUS_STEP,
            ..outcome
        });
    }
    Ok(outcome)
}

/// The status of an installation whose children are applied, as `observed`,
/// and whether a step follows from that status. Status changes do not run
/// passes (see `predicates`), but some steps follow from the status itself:
/// seeding once the app is ready, the upgrade once the old version is.
pub(super) fn applied_outcome(
    installation: &TestInstallation,
    plan: &Plan,
    observed: &super::observe::Observed,
) -> (Outcome, bool) {
    let stage = upgrade::stage(installation, plan.upgrade_from.as_deref(), &plan.version);
    let app_version = stage.app_version(&plan.version).to_string();
    let situation = Situation::Applied {
        plan,
        observed,
        app_version: &app_version,
        upgrade: &stage,
    };
    let outcome = Outcome::of(installation, &situation, RESYNC);
    let mut next = installation.clone();
    next.status = Some(outcome.status.clone());
    let next_stage = upgrade::stage(&next, plan.upgrade_from.as_deref(), &plan.version);
    let moves_on = seed::job_wanted(&next, plan.seed.is_some())
        != seed::job_wanted(installation, plan.seed.is_some())
        || next_stage.app_version(&plan.version) != app_version;
    (outcome, moves_on)
}

/// What a pass that applies everything for `installation` and `profile` as
/// they are now has settled (see `baselines`).
pub(super) fn settled(installation: &TestInstallation, profile: &InstallationProfile) -> Settled {
    Settled {
        generation: installation.metadata.generation.unwrap_or_default(),
        profile_version: profile.resource_version(),
    }
}

/// Records the lifetime in the status, carries out the expiry decision,
/// writes the status, and returns when to look again: at the deadline, or
/// after the outcome's requeue.
pub(super) async fn finish(
    ctx: &Context,
    installation: &TestInstallation,
    outcome: Outcome,
    lifetime: &ttl::Lifetime,
    now: Timestamp,
) -> Result<Action> {
    let Outcome {
        status: mut new_status,
        requeue,
    } = outcome;
    new_status.ttl = lifetime.recorded_text();
    new_status.expires_at = lifetime.expires_at(installation);
    let locked = installation.spec.deletion_locked;
    match expiry::decide(new_status.expires_at.as_ref().map(|t| t.0), locked, now) {
        Expiry::Due => {
            expire(ctx, installation).await?;
            Ok(Action::await_change())
        }
        Expiry::DueButLocked => {
            let expired = new_status
                .expires_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            new_status.message = Some(format!(
                "expired at {expired} but kept because deletionLocked is true; unlock it or raise ttl"
            ));
            write_status(ctx, installation, new_status).await?;
            Ok(Action::requeue(requeue))
        }
        Expiry::In(left) => {
            write_status(ctx, installation, new_status).await?;
            Ok(Action::requeue(left.min(requeue)))
        }
        Expiry::Unknown => {
            write_status(ctx, installation, new_status).await?;
            Ok(Action::requeue(requeue))
        }
    }
}

pub(super) async fn expire(ctx: &Context, installation: &TestInstallation) -> Result<()> {
    let name = installation.name_any();
    let ttl = installation
        .status
        .as_ref()
        .and_then(|s| s.ttl.clone())
        .or_else(|| installation.spec.ttl.clone())
        .unwrap_or_else(|| "its ttl".into());
    tracing::info!(installation = %name, %ttl, "deleting the installation: its ttl has passed");
    let note = format!("{name} reached the end of its ttl ({ttl}) and is being deleted");
    publish(
        ctx,
        installation,
        EventType::Normal,
        "Expired",
        "Expire",
        &note,
    )
    .await;
    let api: Api<TestInstallation> = Api::all(ctx.client.clone());
    gone_is_fine(api.delete(&name, &DeleteParams::default()).await)
}

/// Publishes an Event about the installation; a failure is only logged.
async fn publish(
    ctx: &Context,
    installation: &TestInstallation,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &installation.object_ref(&()))
        .await
    {
        tracing::warn!(%err, reason, "publishing an event failed");
    }
}

fn owner_reference(installation: &TestInstallation) -> OwnerReference {
    installation
        .controller_owner_ref(&())
        .expect("a stored TestInstallation has a name and uid")
}

async fn add_finalizer(api: &Api<TestInstallation>, installation: &TestInstallation) -> Result<()> {
    // A JSON patch with a test on the resourceVersion: never adds it twice.
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "test", "path": "/metadata/resourceVersion", "value": installation.resource_version() },
        if installation.finalizers().is_empty() {
            serde_json::json!({ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] })
        } else {
            serde_json::json!({ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER })
        }
    ]))
    .expect("static JSON patch");
    api.patch(
        &installation.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

/// Where a deletion stands after a pass of `cleanup`.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// The namespace is being deleted; its watch tells when it is gone.
    WaitingFor(String),
    /// The namespace is gone and the finalizer removed.
    Done,
}

/// Deletion: delete the namespace recorded in the status (the one this
/// installation created, whatever the prefix is today), and once it is gone
/// let the TestInstallation go. Run by the urgent lane.
pub(super) async fn cleanup(installation: &TestInstallation, ctx: &Context) -> Result<Cleanup> {
    if !installation.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Cleanup::Done);
    }
    let name = installation.name_any();
    let namespace = namespace_to_delete(installation, &ctx.config);
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let uid = installation.uid().unwrap_or_default();
    let state = ctx.caches.namespace_state(&namespace, &uid);
    if state == NamespaceState::Ours {
        gone_is_fine(
            namespaces
                .delete(&namespace, &DeleteParams::background())
                .await
                .map(|_| ()),
        )?;
    }
    match state {
        NamespaceState::Ours | NamespaceState::Terminating => {
            let message = format!("deleting namespace {namespace}");
            let status = status::compute(
                installation,
                &Situation::Terminating { message },
                Timestamp::now(),
            );
            write_status(ctx, installation, status).await?;
            Ok(Cleanup::WaitingFor(namespace))
        }
        NamespaceState::Absent | NamespaceState::Foreign { .. } => {
            remove_finalizer(ctx, installation).await?;
            ctx.caches.forget_namespace(&namespace);
            ctx.caches.forget_observed(&name);
            ctx.caches.own_writes.forget(&name);
            ctx.metrics.forget_ready(&uid);
            ctx.release(&name);
            ctx.forget(&name);
            Ok(Cleanup::Done)
        }
    }
}

/// The namespace an installation's deletion removes: the one recorded in its
/// status, else (it never got that far) the one it would have had.
pub fn namespace_to_delete(
    installation: &TestInstallation,
    config: &super::config::ControllerConfig,
) -> String {
    installation
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| plan::namespace_name(config, &installation.name_any()))
}

async fn remove_finalizer(ctx: &Context, installation: &TestInstallation) -> Result<()> {
    let api: Api<TestInstallation> = Api::all(ctx.client.clone());
    let Some(index) = installation
        .finalizers()
        .iter()
        .position(|f| f == FINALIZER)
    else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER },
        { "op": "remove", "path": format!("/metadata/finalizers/{index}") }
    ]))
    .expect("static JSON patch");
    gone_is_fine(
        api.patch(
            &installation.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await,
    )
}

/// Writes the status when it differs from the stored one, and publishes an
/// Event when the phase changed.
async fn write_status(
    ctx: &Context,
    installation: &TestInstallation,
    status: TestInstallationStatus,
) -> Result<()> {
    let previous = installation.status.clone().unwrap_or_default();
    if previous == status {
        return Ok(());
    }
    let api: Api<TestInstallation> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "apiVersion": "ephemera.dev/v1alpha1",
        "kind": "TestInstallation",
        "status": status,
    });
    api.patch_status(
        &installation.name_any(),
        &apply::apply_params(),
        &Patch::Apply(&patch),
    )
    .await?;
    if previous.phase != status.phase {
        publish_transition(ctx, installation, previous.phase, &status).await;
    }
    if previous.ready_at.is_none()
        && let (Some(ready), Some(created)) =
            (&status.ready_at, &installation.metadata.creation_timestamp)
    {
        let seconds = ready.0.duration_since(created.0).as_secs_f64();
        ctx.metrics
            .observe_ready(&installation.uid().unwrap_or_default(), seconds);
    }
    Ok(())
}

async fn publish_transition(
    ctx: &Context,
    installation: &TestInstallation,
    from: Option<Phase>,
    status: &TestInstallationStatus,
) {
    let Some(to) = status.phase else { return };
    let type_ = if to == Phase::Failed {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let note = status.message.clone().unwrap_or_default();
    let event = Event {
        type_,
        reason: to.to_string(),
        note: Some(truncate(&note, 1000)),
        action: from.map_or("Create".to_string(), |from| format!("{from}To{to}")),
        secondary: None,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &installation.object_ref(&()))
        .await
    {
        tracing::warn!(%err, "publishing an event failed");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Reads the Secrets the plan references (only from allowed namespaces,
/// which `plan` checked) from their stores. `Err(message)` when one is
/// missing.
fn read_external_secrets(
    ctx: &Context,
    plan: &Plan,
) -> std::result::Result<ExternalSecrets, String> {
    let mut external = ExternalSecrets::default();
    for (namespace, name) in plan.referenced_secrets() {
        let Some(secret) = ctx.caches.referenced_secret(&namespace, &name) else {
            return Err(format!(
                "referenced secret {namespace}/{name} does not exist"
            ));
        };
        let data: BTreeMap<String, String> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
            .collect();
        external.0.insert((namespace, name), data);
    }
    Ok(external)
}

/// The generated values, recovered from the installation's Secrets (see
/// `GeneratedSecrets::recover`), and the UID of each generated Secret in use
/// as read (`None`: missing). Read from the store; one that this process
/// applied but the store does not show yet (its watch event is still on the
/// way) is read from the API server, so passwords are never generated twice.
async fn read_generated_secrets(
    ctx: &Context,
    plan: &Plan,
    created: bool,
) -> Result<(
    std::result::Result<Recovered, CredentialsLost>,
    BTreeMap<&'static str, Option<String>>,
)> {
    let namespace = &plan.namespace;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut found = Vec::new();
    for name in GENERATED_SECRETS {
        let secret = match ctx.caches.secret(namespace, name) {
            Some(secret) => Some(secret),
            None if ctx.caches.was_applied("Secret", namespace, name) => {
                tracing::debug!(%namespace, name, "a generated Secret applied earlier is not in the store yet; reading it");
                api.get_opt(name)
                    .await
                    .request("read", format!("Secret {namespace}/{name}"))?
            }
            None => None,
        };
        found.push(secret);
    }
    // In the order of `GENERATED_SECRETS`.
    let [copy, creds, db, fs]: [Option<Secret>; 4] =
        found.try_into().expect("four generated Secrets");
    let database = matches!(
        plan.database.engine,
        DatabaseEngine::Postgres | DatabaseEngine::Mysql
    );
    let filestore = plan.filestore.kind == FilestoreType::Minio;
    let uid = |secret: &Option<Secret>| secret.as_ref().and_then(|s| s.uid());
    let mut read_uids = BTreeMap::from([(credentials::SECRET_NAME, uid(&creds))]);
    if database {
        read_uids.insert(build::database::NAME, uid(&db));
    }
    if filestore {
        read_uids.insert(build::filestore::NAME, uid(&fs));
    }
    let stored = StoredSecrets {
        generated: copy.as_ref(),
        credentials: creds.as_ref(),
        database: db.as_ref(),
        filestore: fs.as_ref(),
    };
    Ok((
        GeneratedSecrets::recover(stored, created, database, filestore),
        read_uids,
    ))
}
