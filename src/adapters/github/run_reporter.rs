//! Tells pull requests about their TestRuns where people look: a check run
//! on the tested commit when the adapter is a GitHub App (queued or
//! in_progress, then completed with a conclusion, the summary, the output
//! excerpt and a re-run button), else a commit status.
//!
//! Exactly once across restarts and lost answers: the check run's id and the
//! last state told are recorded on the TestRun (annotations), and before a
//! check run is created the commit's check runs of that name are searched
//! for one whose `external_id` is the run, which a create whose answer was
//! lost (or a crash before the id was recorded) left behind. Driven by the
//! shared delivery engine (one step at a time per run, runs concurrently,
//! failed steps retried with backoff; the client honours `Retry-After`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::{
    ADAPTER, FIELD_MANAGER,
    actions::Ctx,
    annotations,
    checks::{self, CheckState},
};
use crate::{
    adapters::{
        delivery::{self, Delivery},
        notify,
    },
    api::{TestRun, labels},
};

/// The id of the run's check run (annotation on the TestRun).
pub const CHECK_RUN: &str = "ephemera.dev/github-check-run";

/// What the adapter has told about one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_run: Option<u64>,
    /// The last state told ([`CheckState::key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Reports every TestRun this adapter instance started.
pub async fn run(ctx: Arc<Ctx>, client: kube::Client, health: crate::telemetry::Health) {
    let selector = format!(
        "{}=github,{}={}",
        labels::SOURCE,
        annotations::INSTANCE,
        ctx.config.instance
    );
    let reporter = Arc::new(RunReporter {
        ctx,
        memory: Mutex::default(),
    });
    delivery::run_watch::<TestRun, _>(client, selector, reporter, health).await;
}

struct RunReporter {
    ctx: Arc<Ctx>,
    /// What this process told, by run uid: newer than the annotation of a
    /// watch event written before our own memory patch.
    memory: Mutex<HashMap<String, RunTold>>,
}

impl RunReporter {
    fn recall(&self, run: &TestRun) -> RunTold {
        let mine = run.uid().and_then(|uid| self.lock().get(&uid).cloned());
        mine.unwrap_or_else(|| {
            let mut told: RunTold = recalled(run).unwrap_or_default();
            if told.check_run.is_none() {
                told.check_run = run
                    .annotations()
                    .get(CHECK_RUN)
                    .and_then(|id| id.parse().ok());
            }
            told
        })
    }

    fn note(&self, run: &TestRun, told: &RunTold) {
        if let Some(uid) = run.uid() {
            self.lock().insert(uid, told.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunTold>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn recalled(run: &TestRun) -> Option<RunTold> {
    let raw = run.annotations().get(&notify::memory_annotation(ADAPTER))?;
    serde_json::from_str(raw).ok()
}

impl Delivery<TestRun> for RunReporter {
    async fn deliver(
        self: Arc<Self>,
        run: Arc<TestRun>,
        gone: bool,
    ) -> anyhow::Result<Option<Instant>> {
        let ctx = &self.ctx;
        let notes = run.annotations();
        let (Some(repository), Some(sha)) = (
            notes.get(annotations::REPOSITORY),
            notes.get(labels::HEAD_SHA),
        ) else {
            return Ok(None);
        };
        if ctx.config.repository(repository).is_none() {
            return Ok(None);
        }
        let before = self.recall(&run);
        let state = CheckState::of(&run, gone);
        let key = state.key();
        if before.state.as_deref() == Some(key.as_str()) {
            if gone && let Some(uid) = run.uid() {
                self.lock().remove(&uid);
            }
            return Ok(None);
        }
        let mut told = before.clone();
        if ctx.github.is_app() {
            let body = checks::check_run_body(&run, sha, state);
            let name = checks::check_name(&run);
            let known = match told.check_run {
                Some(id) => Some(id),
                None => {
                    ctx.github
                        .find_check_run(repository, sha, &name, &run.name_any())
                        .await?
                }
            };
            let id = match known {
                Some(id) => {
                    let mut update = body;
                    // An update names no commit: the check run has one.
                    update.as_object_mut().map(|o| o.remove("head_sha"));
                    ctx.github.update_check_run(repository, id, &update).await?;
                    id
                }
                None => ctx.github.create_check_run(repository, &body).await?,
            };
            told.check_run = Some(id);
        } else {
            ctx.github
                .create_commit_status(
                    repository,
                    sha,
                    state.commit_state(),
                    notes.get(labels::PR_URL).map(String::as_str),
                    &checks::status_description(&run, state),
                    &checks::check_name(&run),
                )
                .await?;
        }
        told.state = Some(key);
        tracing::info!(run = %run.name_any(), state = ?told.state, check_run = ?told.check_run,
            "test run reported");
        if gone {
            if let Some(uid) = run.uid() {
                self.lock().remove(&uid);
            }
            return Ok(None);
        }
        self.note(&run, &told);
        let mut patch_notes = serde_json::Map::new();
        patch_notes.insert(
            notify::memory_annotation(ADAPTER),
            json!(serde_json::to_string(&told)?),
        );
        if let Some(id) = told.check_run {
            patch_notes.insert(CHECK_RUN.into(), json!(id.to_string()));
        }
        let patch = json!({ "metadata": { "annotations": patch_notes } });
        match ctx
            .runs
            .patch(
                &run.name_any(),
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
        Ok(None)
    }
}
