//! Tells pull requests about their installations: one sticky comment (found
//! by its hidden marker, edited in place), a GitHub Deployment per deployed
//! commit with statuses in_progress → success/failure → inactive, and
//! optionally a commit status.
//!
//! Driven by watching TestInstallations with `ephemera.dev/source=github`.
//! What was told is remembered on each installation (the shared notify
//! memory), so a restart neither repeats nor drops a report, and in this
//! process (`Memory`), which wins over the older annotation that a watch
//! event of a write racing our own memory patch carries. The finalizer
//! `ephemera.dev/github-report` holds a deleted installation until its
//! teardown is reported, even if the adapter was down when it was deleted.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{ResourceExt, api::PatchParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{
    ADAPTER, FIELD_MANAGER,
    actions::Ctx,
    annotations,
    render::{self, Report, Stage},
};
use crate::{
    adapters::{
        delivery::{self, Delivery},
        finalizer, notify,
    },
    api::{TestInstallation, labels},
};

/// What the adapter has told the PR about one installation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Told {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<u64>,
    /// Hash of the comment body last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_state: Option<String>,
    /// A deployment of an older commit still to be marked inactive
    /// (GitHub's `auto_inactive` skips transient environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<u64>,
    /// `<sha>:<state>` of the last commit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_status: Option<String>,
}

/// Reports every served installation through the shared delivery engine
/// (one step at a time per installation, installations concurrently);
/// watch failures make `health` unready for a while.
pub async fn run(ctx: Arc<Ctx>, client: kube::Client, health: crate::telemetry::Health) {
    let selector = format!("{}=github", labels::SOURCE);
    let reporter = Arc::new(Reporter {
        ctx,
        memory: Default::default(),
    });
    delivery::run(client, selector, reporter, health).await;
}

struct Reporter {
    ctx: Arc<Ctx>,
    // What this process told; the annotation is what survives a restart.
    memory: Mutex<Memory>,
}

impl Delivery for Reporter {
    async fn deliver(
        self: Arc<Self>,
        ti: Arc<TestInstallation>,
        gone: bool,
    ) -> anyhow::Result<Option<Instant>> {
        if !ours(&self.ctx, &ti) {
            // Another adapter's: not ours to report on or to let go.
            return Ok(None);
        }
        if !serves(&self.ctx, &ti) {
            // Made by this adapter for a repository it no longer serves: its
            // finalizer must not hold the installation's deletion for ever.
            if !gone && ti.metadata.deletion_timestamp.is_some() {
                tracing::info!(installation = %ti.name_any(),
                    "repository not served any more; releasing the finalizer");
                finalizer::release(
                    &self.ctx.installations,
                    &ti.name_any(),
                    annotations::FINALIZER,
                    &PatchParams::apply(FIELD_MANAGER),
                )
                .await?;
            }
            return Ok(None);
        }
        report(&self.ctx, &ti, gone, &self.memory).await?;
        if gone {
            lock(&self.memory).forget(&ti);
        }
        Ok(None)
    }
}

fn lock(memory: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this process has told, by installation uid: newer than the memory
/// annotation on a watch event that was written before our own last memory
/// patch (events come in order, but our patch's own event comes after the
/// events of writes that raced it, such as the controller's status updates).
#[derive(Debug, Default)]
struct Memory(HashMap<String, Recalled>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Recalled {
    told: Told,
    /// Whether `told` is on the installation (the annotation), so that a
    /// restart remembers it too.
    saved: bool,
}

impl Memory {
    /// What was told about `ti`: this process's memory if it has one, else
    /// the annotation (after a restart), else nothing.
    fn recall(&self, ti: &TestInstallation) -> Recalled {
        ti.uid()
            .and_then(|uid| self.0.get(&uid).cloned())
            .unwrap_or_else(|| Recalled {
                told: notify::recalled(ti, ADAPTER).unwrap_or_default(),
                saved: true,
            })
    }

    fn note(&mut self, ti: &TestInstallation, told: &Told, saved: bool) {
        if let Some(uid) = ti.uid() {
            self.0.insert(
                uid,
                Recalled {
                    told: told.clone(),
                    saved,
                },
            );
        }
    }

    fn forget(&mut self, ti: &TestInstallation) {
        if let Some(uid) = ti.uid() {
            self.0.remove(&uid);
        }
    }
}

/// Whether this adapter created the installation (its `instance` label;
/// installations from before that label belong to the `default` instance).
fn ours(ctx: &Ctx, ti: &TestInstallation) -> bool {
    match ti.labels().get(annotations::INSTANCE) {
        Some(instance) => *instance == ctx.config.instance,
        None => ctx.config.instance == "default",
    }
}

/// Whether the installation belongs to a repository this adapter serves
/// (several adapters may share a cluster).
fn serves(ctx: &Ctx, ti: &TestInstallation) -> bool {
    ti.annotations()
        .get(annotations::REPOSITORY)
        .is_some_and(|r| ctx.config.repository(r).is_some())
}

fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

pub fn environment(name: &str) -> String {
    format!("ephemera/{name}")
}

async fn report(
    ctx: &Ctx,
    ti: &TestInstallation,
    deleted: bool,
    memory: &Mutex<Memory>,
) -> anyhow::Result<()> {
    let name = ti.name_any();
    let annotations_map = ti.annotations();
    let repository = annotations_map
        .get(annotations::REPOSITORY)
        .cloned()
        .unwrap_or_default();
    let Some(number) = annotations_map
        .get(annotations::PULL_NUMBER)
        .and_then(|n| n.parse::<u64>().ok())
    else {
        anyhow::bail!("{name} has no {} annotation", annotations::PULL_NUMBER);
    };
    let before = lock(memory).recall(ti);
    let mut told = before.told.clone();
    let report = Report::of(ti, deleted);
    let result = tell(ctx, &repository, number, &report, &mut told).await;
    told.phase = Some(report.phase.clone());
    told.generation = ti.metadata.generation;
    // In memory first: whatever happens to the patches below, this process
    // never says it again.
    let unsaved = told != before.told || !before.saved;
    lock(memory).note(ti, &told, !unsaved);
    if deleted {
        return result;
    }
    let release = ti.metadata.deletion_timestamp.is_some()
        && result.is_ok()
        && ti.finalizers().iter().any(|f| f == annotations::FINALIZER);
    let saved = if unsaved {
        match notify::remember_with(
            &ctx.installations,
            &name,
            ADAPTER,
            &told,
            &PatchParams::apply(FIELD_MANAGER),
        )
        .await
        {
            Ok(()) => true,
            Err(kube::Error::Api(status)) if status.code == 404 => true,
            Err(err) => return Err(err.into()),
        }
    } else {
        true
    };
    if release {
        finalizer::release(
            &ctx.installations,
            &name,
            annotations::FINALIZER,
            &PatchParams::apply(FIELD_MANAGER),
        )
        .await?;
        tracing::info!(installation = %name, "teardown reported; finalizer released");
    }
    lock(memory).note(ti, &told, saved);
    result
}

/// Brings the comment, deployment and commit status in line with `report`,
/// recording in `told` every step that succeeded.
async fn tell(
    ctx: &Ctx,
    repository: &str,
    number: u64,
    report: &Report,
    told: &mut Told,
) -> anyhow::Result<()> {
    let github = &ctx.github;
    let body = render::sticky(report);
    let body_digest = digest(&body);
    if told.comment_digest.as_deref() != Some(body_digest.as_str()) {
        let known = match told.comment {
            Some(id) => Some(id),
            None => find_sticky(ctx, repository, number).await?,
        };
        let id = match known {
            Some(id) => match github.update_comment(repository, id, &body).await {
                Ok(()) => id,
                Err(err) if err.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                    github.create_comment(repository, number, &body).await?
                }
                Err(err) => return Err(err.into()),
            },
            None => github.create_comment(repository, number, &body).await?,
        };
        told.comment = Some(id);
        told.comment_digest = Some(body_digest);
    }

    let environment = environment(&report.name);
    let git_ref = report.sha.clone().or_else(|| report.version.clone());
    if report.stage != Stage::Removed
        && report.stage != Stage::Hibernated
        && let Some(git_ref) = &git_ref
        && told.deployment_ref.as_ref() != Some(git_ref)
    {
        let id = match github
            .find_deployment(repository, &environment, git_ref)
            .await?
        {
            Some(id) => id,
            None => {
                github
                    .create_deployment(
                        repository,
                        git_ref,
                        &environment,
                        &format!("Test installation {}", report.name),
                        &report.name,
                    )
                    .await?
            }
        };
        if let Some(old) = told.deployment.filter(|old| *old != id) {
            told.superseded = Some(old);
        }
        told.deployment = Some(id);
        told.deployment_ref = Some(git_ref.clone());
        told.deployment_state = None;
    }
    if let Some(old) = told.superseded {
        github
            .create_deployment_status(
                repository,
                old,
                "inactive",
                None,
                "Superseded by a newer commit",
            )
            .await?;
        told.superseded = None;
    }
    let state = report.stage.deployment_state();
    if let Some(id) = told.deployment
        && told.deployment_state.as_deref() != Some(state)
    {
        let url = (report.stage == Stage::Ready)
            .then_some(report.url.as_deref())
            .flatten();
        // A status whose answer was lost may be there already: never a
        // second copy of it.
        let latest = github.latest_deployment_state(repository, id).await?;
        if latest.as_deref() != Some(state) {
            github
                .create_deployment_status(repository, id, state, url, &report.description())
                .await?;
        }
        told.deployment_state = Some(state.to_string());
    }

    if ctx.config.commit_status
        && let (Some(sha), Some(state)) = (&report.sha, report.stage.commit_state())
    {
        let key = format!("{sha}:{state}");
        if told.commit_status.as_ref() != Some(&key) {
            github
                .create_commit_status(
                    repository,
                    sha,
                    state,
                    report
                        .url
                        .as_deref()
                        .filter(|_| report.stage == Stage::Ready),
                    &report.description(),
                    &environment,
                )
                .await?;
            told.commit_status = Some(key);
        }
    }
    Ok(())
}

/// The adapter's sticky comment on the PR, found by its marker.
async fn find_sticky(ctx: &Ctx, repository: &str, number: u64) -> anyhow::Result<Option<u64>> {
    let comments = ctx.github.list_comments(repository, number).await?;
    Ok(comments
        .into_iter()
        .find(|c| {
            c.user.login.eq_ignore_ascii_case(&ctx.config.bot_login)
                && c.body
                    .as_deref()
                    .is_some_and(|b| b.contains(render::MARKER))
        })
        .map(|c| c.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installation(uid: &str, told: Option<&Told>) -> TestInstallation {
        let mut ti = TestInstallation::new("webapp-pr-7", Default::default());
        ti.metadata.uid = Some(uid.into());
        if let Some(told) = told {
            ti.annotations_mut().insert(
                notify::memory_annotation(ADAPTER),
                serde_json::to_string(told).unwrap(),
            );
        }
        ti
    }

    fn told(state: &str) -> Told {
        Told {
            comment: Some(1),
            deployment: Some(2),
            deployment_state: Some(state.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_stale_annotation_never_wins_over_what_this_process_told() {
        let mut memory = Memory::default();
        // After a restart: the annotation, which is saved by definition.
        let fresh = installation("u1", Some(&told("in_progress")));
        assert_eq!(
            memory.recall(&fresh),
            Recalled {
                told: told("in_progress"),
                saved: true
            }
        );
        memory.note(&fresh, &told("success"), true);
        // A watch event written before our last memory patch still carries
        // the older annotation (or none at all).
        for stale in [
            installation("u1", Some(&told("in_progress"))),
            installation("u1", None),
        ] {
            assert_eq!(memory.recall(&stale).told, told("success"));
        }
        // A memory that could not be saved is saved on the next event.
        memory.note(&fresh, &told("failure"), false);
        assert!(!memory.recall(&fresh).saved);
        // Another installation of the same name (deleted and created again)
        // starts from its own annotation.
        assert_eq!(
            memory.recall(&installation("u2", None)).told,
            Told::default()
        );
        memory.forget(&fresh);
        assert_eq!(memory.recall(&fresh).told, told("in_progress"));
    }
}
