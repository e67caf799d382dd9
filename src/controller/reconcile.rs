//! One reconcile pass of a TestInstallation: validate and resolve the
//! profile → build (pure) → server-side apply → prune → observe → status
//! (pure) → write the status only when it changed → requeue at the next
//! deadline.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};

use super::{
    apply,
    build::{self, BuildInput, ExternalSecrets, GeneratedSecrets},
    changes,
    context::Context,
    error::{Result, gone_is_fine},
    lifecycle::{
        capacity::Admission,
        expiry::{self, Expiry},
        seed, upgrade,
    },
    observe::NamespaceState,
    plan::{self, Plan},
    status::{self, Situation},
};
use crate::api::{Phase, TestInstallation, TestInstallationStatus, credentials};

/// Finalizer that keeps a TestInstallation until its namespace is gone, so a
/// new installation of the same name never meets a terminating namespace.
pub const FINALIZER: &str = "ephemera.dev/namespace-cleanup";

/// How often an installation is looked at with nothing else happening.
const RESYNC: Duration = Duration::from_secs(600);
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
    let started = std::time::Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_installation(installation, &ctx).await;
    ctx.metrics.observe_duration(started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&installation.name_any()),
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

#[tracing::instrument(skip_all, fields(installation = %installation.name_any()))]
async fn reconcile_installation(installation: &TestInstallation, ctx: &Context) -> Result<Action> {
    let api: Api<TestInstallation> = Api::all(ctx.client.clone());
    let name = installation.name_any();
    ctx.caches.wait_until_ready().await;
    if installation.metadata.deletion_timestamp.is_some() {
        return cleanup(installation, ctx).await;
    }
    if !installation.finalizers().iter().any(|f| f == FINALIZER) {
        add_finalizer(&api, installation).await?;
    }

    let profile_name = plan::profile_name(installation);
    let Some(profile) = ctx.caches.profile(profile_name) else {
        let message = if installation.spec.profile.is_some() {
            format!(
                "InstallationProfile {profile_name:?} does not exist; create it or name another profile"
            )
        } else {
            "no profile named and no InstallationProfile \"default\" exists; create one or set spec.profile".to_string()
        };
        return stalled(ctx, installation, "ProfileNotFound", message).await;
    };
    let plan = match plan::plan(installation, &profile, &ctx.config) {
        Ok(plan) => plan,
        Err(err) => return stalled(ctx, installation, err.reason(), err.to_string()).await,
    };

    let uid = installation.uid().unwrap_or_default();
    match ctx.caches.namespace_state(&plan.namespace, &uid) {
        NamespaceState::Terminating => {
            let message = format!(
                "waiting for namespace {} of an earlier installation named {name} to be deleted",
                plan.namespace
            );
            return waiting(ctx, installation, "WaitingForPreviousNamespace", message).await;
        }
        NamespaceState::Foreign { owner } if owner.starts_with("TestInstallation ") => {
            let message = format!(
                "waiting for namespace {} of an earlier installation named {name} to be deleted",
                plan.namespace
            );
            return waiting(ctx, installation, "WaitingForPreviousNamespace", message).await;
        }
        NamespaceState::Foreign { owner } => {
            let message = format!(
                "namespace {} already exists and belongs to {owner}; ephemera will not take it over",
                plan.namespace
            );
            return stalled(ctx, installation, "NamespaceConflict", message).await;
        }
        NamespaceState::Absent | NamespaceState::Ours => {}
    }

    let external = match read_external_secrets(ctx, &plan) {
        Ok(external) => external,
        Err(message) => return stalled(ctx, installation, "SecretNotFound", message).await,
    };
    if let Admission::Queued { message } = ctx.admit(installation) {
        return waiting_for_capacity(ctx, installation, &plan, message).await;
    }

    let generated = read_generated_secrets(ctx, &plan.namespace).await?;
    let stage = upgrade::stage(installation, plan.upgrade_from.as_deref(), &plan.version);
    let app_version = stage.app_version(&plan.version).to_string();
    let input = BuildInput {
        plan: &plan,
        owner: owner_reference(installation),
        generated: &generated,
        external: &external,
        app_version: &app_version,
        seed: seed::job_wanted(installation, plan.seed.is_some()),
    };
    let children = match build::children(&input) {
        Ok(children) => children,
        Err(err) => return stalled(ctx, installation, err.reason(), err.to_string()).await,
    };

    changes::apply_namespace(
        &ctx.client,
        &ctx.caches,
        &build::namespace::namespace(&plan, input.owner.clone()),
    )
    .await?;
    changes::apply_changed(&ctx.client, &ctx.caches, &plan.namespace, &children).await?;
    let pruned =
        changes::prune(&ctx.client, &ctx.caches, &plan.namespace, &name, &children).await?;
    if !pruned.is_empty() {
        tracing::info!(?pruned, "removed objects no longer desired");
    }

    let observed = ctx.caches.observe(&plan.namespace, &uid, &name);
    let situation = Situation::Applied {
        plan: &plan,
        observed: &observed,
        app_version: &app_version,
        upgrade: &stage,
    };
    let now = Timestamp::now();
    let new_status = status::compute(installation, &situation, now);
    // Status changes do not run passes (see `predicates`), but some steps
    // follow from the status itself: seeding once the app is ready, the
    // upgrade once the old version is. Such a pass runs at once.
    let mut next = installation.clone();
    next.status = Some(new_status.clone());
    let next_stage = upgrade::stage(&next, plan.upgrade_from.as_deref(), &plan.version);
    let moves_on = seed::job_wanted(&next, plan.seed.is_some()) != input.seed
        || next_stage.app_version(&plan.version) != app_version;
    let requeue = if moves_on { STATUS_STEP } else { RESYNC };
    finish(ctx, installation, new_status, requeue, now).await
}

/// Applies the expiry decision to a freshly computed status, writes it, and
/// returns when to look again: at the deadline, or after `requeue`.
async fn finish(
    ctx: &Context,
    installation: &TestInstallation,
    mut new_status: TestInstallationStatus,
    requeue: Duration,
    now: Timestamp,
) -> Result<Action> {
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

async fn expire(ctx: &Context, installation: &TestInstallation) -> Result<()> {
    let name = installation.name_any();
    let ttl = installation
        .spec
        .ttl
        .clone()
        .unwrap_or_else(|| "the profile's default ttl".into());
    tracing::info!(installation = %name, %ttl, "deleting the installation: its ttl has passed");
    let event = Event {
        type_: EventType::Normal,
        reason: "Expired".into(),
        note: Some(format!(
            "{name} reached the end of its ttl ({ttl}) and is being deleted"
        )),
        action: "Expire".into(),
        secondary: None,
    };
    if let Err(err) = ctx
        .recorder
        .publish(&event, &installation.object_ref(&()))
        .await
    {
        tracing::warn!(%err, "publishing the expiry event failed");
    }
    let api: Api<TestInstallation> = Api::all(ctx.client.clone());
    gone_is_fine(api.delete(&name, &DeleteParams::default()).await)
}

/// Queued for capacity: Pending with `QuotaExceeded`; still expires.
async fn waiting_for_capacity(
    ctx: &Context,
    installation: &TestInstallation,
    plan: &Plan,
    message: String,
) -> Result<Action> {
    let now = Timestamp::now();
    let situation = Situation::Waiting {
        reason: "QuotaExceeded",
        message,
    };
    let mut new_status = status::compute(installation, &situation, now);
    new_status.expires_at = status::expires_at(installation, plan);
    // Woken when capacity frees up; the requeue is only a safety net.
    finish(ctx, installation, new_status, Duration::from_secs(60), now).await
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

/// Deletion: delete the namespace, wait until it is gone, then let the
/// TestInstallation go.
async fn cleanup(installation: &TestInstallation, ctx: &Context) -> Result<Action> {
    if !installation.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = installation.name_any();
    let namespace = plan::namespace_name(&ctx.config, &name);
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let uid = installation.uid().unwrap_or_default();
    // The namespace's own watch events wake the next pass: deletion takes
    // one pass to start it and one when it is gone.
    match ctx.caches.namespace_state(&namespace, &uid) {
        NamespaceState::Ours => {
            gone_is_fine(
                namespaces
                    .delete(&namespace, &DeleteParams::background())
                    .await
                    .map(|_| ()),
            )?;
            let message = format!("deleting namespace {namespace}");
            let status = status::compute(
                installation,
                &Situation::Terminating { message },
                Timestamp::now(),
            );
            write_status(ctx, installation, status).await?;
            Ok(Action::await_change())
        }
        NamespaceState::Terminating => {
            let message = format!("waiting for namespace {namespace} to be deleted");
            let status = status::compute(
                installation,
                &Situation::Terminating { message },
                Timestamp::now(),
            );
            write_status(ctx, installation, status).await?;
            Ok(Action::await_change())
        }
        NamespaceState::Absent | NamespaceState::Foreign { .. } => {
            remove_finalizer(ctx, installation).await?;
            ctx.caches.forget_namespace(&namespace);
            ctx.release(&name);
            Ok(Action::await_change())
        }
    }
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

async fn stalled(
    ctx: &Context,
    installation: &TestInstallation,
    reason: &str,
    message: String,
) -> Result<Action> {
    let status = status::compute(
        installation,
        &Situation::Stalled { reason, message },
        Timestamp::now(),
    );
    write_status(ctx, installation, status).await?;
    // Profiles are watched; Secrets outside the namespace are not, so look
    // again now and then.
    Ok(Action::requeue(Duration::from_secs(60)))
}

async fn waiting(
    ctx: &Context,
    installation: &TestInstallation,
    reason: &str,
    message: String,
) -> Result<Action> {
    let status = status::compute(
        installation,
        &Situation::Waiting { reason, message },
        Timestamp::now(),
    );
    write_status(ctx, installation, status).await?;
    // The namespace's watch wakes it; the requeue is only a safety net.
    Ok(Action::requeue(Duration::from_secs(30)))
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
        ctx.metrics.time_to_ready.observe(seconds.max(0.0));
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

/// The generated Secrets, from the store. One that this process applied
/// but the store does not show yet (its watch event is still on the way) is
/// read from the API server, so passwords are never generated twice.
async fn read_generated_secrets(ctx: &Context, namespace: &str) -> Result<GeneratedSecrets> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut found = Vec::new();
    for name in [
        credentials::SECRET_NAME,
        build::database::NAME,
        build::filestore::NAME,
    ] {
        let secret = match ctx.caches.secret(namespace, name) {
            Some(secret) => Some(secret),
            None if ctx.caches.was_applied("Secret", namespace, name) => api.get_opt(name).await?,
            None => None,
        };
        found.push(secret);
    }
    Ok(GeneratedSecrets::reuse_or_generate(
        found[0].as_ref(),
        found[1].as_ref(),
        found[2].as_ref(),
    ))
}
