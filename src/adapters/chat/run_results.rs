//! Results of runs started from chat: when a TestRun this adapter created
//! finishes, the person who started it gets one direct message with the
//! result, the counts and the (already redacted) output excerpt, and the
//! same result is posted once in the thread of the installation's progress
//! message (both platforms have threads: Mattermost `root_id`, Slack
//! `thread_ts`).
//!
//! Exactly once, the way the installation notices are (see `notifier`):
//! what was told is remembered in an annotation on the TestRun; before each
//! post its key is recorded there as pending, the post carries the key as an
//! invisible marker, and a pending key left by a crash or a lost answer is
//! looked up on the platform before anything is posted again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{
    ADAPTER, ANNOTATION_PLATFORM, ANNOTATION_USER_ID, ANNOTATION_USER_NAME, FIELD_MANAGER,
    LABEL_INSTANCE, SOURCE_CHAT,
    http::ApiError,
    messenger::{MessageRef, Messenger, Platform},
    metrics::Metrics,
    notifier::Told,
};
use crate::{
    adapters::{
        delivery::{self, Delivery},
        notify::memory_annotation,
        runs::result_line,
    },
    api::{RunPhase, TestInstallation, TestRun, labels},
    telemetry::Health,
};

/// The most of a run's output a message shows (its end).
const EXCERPT_CHARS: usize = 1500;

/// What has been told about one run (the memory annotation's JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunTold {
    /// The direct-message channel with the person who started the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dm: Option<String>,
    /// The result was sent by direct message.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub result: bool,
    /// The result was posted in the progress message's thread, or there is
    /// no thread to post it in.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub threaded: bool,
    /// The key of a post whose outcome is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// One message owed about a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNotice {
    /// The result, by direct message to the person who started the run.
    Result,
    /// The result, in the thread of the installation's progress message.
    Thread,
}

impl RunNotice {
    fn kind(self) -> &'static str {
        match self {
            RunNotice::Result => "run_result",
            RunNotice::Thread => "run_thread",
        }
    }

    /// `<run uid>/run_result` or `<run uid>/run_thread`.
    pub fn key(self, uid: &str) -> String {
        format!("{uid}/{}", self.kind())
    }

    pub fn parse(key: &str) -> Option<RunNotice> {
        match key.split_once('/')?.1 {
            "run_result" => Some(RunNotice::Result),
            "run_thread" => Some(RunNotice::Thread),
            _ => None,
        }
    }

    fn record(self, told: &mut RunTold) {
        match self {
            RunNotice::Result => told.result = true,
            RunNotice::Thread => told.threaded = true,
        }
    }
}

/// What is owed next about `run`, from the run and what was told alone.
pub fn owed(run: &TestRun, told: &RunTold) -> Option<RunNotice> {
    if !run.phase().is_some_and(RunPhase::is_finished) {
        return None;
    }
    if !told.result {
        Some(RunNotice::Result)
    } else if !told.threaded {
        Some(RunNotice::Thread)
    } else {
        None
    }
}

/// The result as people read it: the outcome in one line, the counts, and
/// the end of the output in a code block. `started_by` is named in the
/// installation's thread, where others read along.
pub fn result_text(run: &TestRun, started_by: Option<&str>) -> String {
    let status = run.status.clone().unwrap_or_default();
    let mark = match status.phase {
        Some(RunPhase::Succeeded) => "✅",
        Some(RunPhase::Failed) => "❌",
        _ => "⏹️",
    };
    let first = format!("{mark} {}", result_line(run));
    let mut lines = vec![match started_by {
        Some(who) if !who.is_empty() => {
            format!("{first} (started by {who}, run `{}`)", run.name_any())
        }
        _ => format!("{first} (run `{}`)", run.name_any()),
    }];
    if let Some(summary) = status.summary {
        lines.push(format!(
            "Passed: {} · Failed: {} · Skipped: {}",
            summary.passed, summary.failed, summary.skipped
        ));
    }
    if let Some(output) = status.output.as_deref().map(str::trim_end)
        && !output.is_empty()
    {
        lines.push(format!("```\n{}\n```", excerpt(output)));
    }
    lines.join("\n")
}

/// The end of `output`, at most [`EXCERPT_CHARS`] characters, that cannot
/// close the code block it is shown in.
fn excerpt(output: &str) -> String {
    let count = output.chars().count();
    let tail: String = if count > EXCERPT_CHARS {
        let skipped: String = output.chars().skip(count - EXCERPT_CHARS).collect();
        format!("…{skipped}")
    } else {
        output.to_string()
    };
    tail.replace("```", "'''")
}

#[derive(Debug, thiserror::Error)]
enum ResultError {
    #[error(transparent)]
    Chat(#[from] ApiError),
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

/// Who to tell, and through what.
struct Audience {
    platform: Platform,
    messenger: Arc<Messenger>,
    user_id: String,
}

pub struct RunResults {
    client: Client,
    instance: String,
    messengers: HashMap<Platform, Arc<Messenger>>,
    metrics: Arc<Metrics>,
    /// By uid: what was told, newer than a stale event's annotation.
    told: Mutex<HashMap<String, RunTold>>,
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// What this adapter recorded on the run (unreadable counts as nothing).
pub fn recalled(run: &TestRun) -> Option<RunTold> {
    let raw = run.annotations().get(&memory_annotation(ADAPTER))?;
    serde_json::from_str(raw).ok()
}

impl RunResults {
    pub fn new(
        client: Client,
        instance: String,
        messengers: HashMap<Platform, Arc<Messenger>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            instance,
            messengers,
            metrics,
            told: Default::default(),
        }
    }

    fn api(&self) -> Api<TestRun> {
        Api::all(self.client.clone())
    }

    /// Watches this instance's chat runs and tells each finished one,
    /// through the delivery engine the installation notices use: one step
    /// at a time per run, runs concurrently (a slow platform or a long
    /// rate-limit wait for one person never delays another's result), failed
    /// steps retried with the shared backoff policy. Watch failures are
    /// recorded in `health`. Runs until the surrounding task is dropped
    /// (which aborts the steps: safe, see the module documentation).
    pub async fn run(self, health: Health) {
        let selector = format!(
            "{}={SOURCE_CHAT},{LABEL_INSTANCE}={}",
            labels::SOURCE,
            self.instance
        );
        let client = self.client.clone();
        delivery::run_watch::<TestRun, _>(client, selector, Arc::new(self), health).await;
    }

    fn audience(&self, platform: Option<&String>, user_id: Option<&String>) -> Option<Audience> {
        let platform = Platform::parse(platform?)?;
        Some(Audience {
            platform,
            messenger: self.messengers.get(&platform)?.clone(),
            user_id: user_id?.clone(),
        })
    }

    fn recall(&self, run: &TestRun) -> RunTold {
        let memory = self.told.lock().unwrap_or_else(|p| p.into_inner());
        run.uid()
            .and_then(|uid| memory.get(&uid).cloned())
            .or_else(|| recalled(run))
            .unwrap_or_default()
    }

    /// Tells what is owed about `run`.
    async fn tell(&self, run: &TestRun) -> Result<(), ResultError> {
        let mut told = self.recall(run);
        if owed(run, &told).is_none() && told.pending.is_none() {
            return Ok(());
        }
        let annotations = run.annotations();
        let Some(starter) = self.audience(
            annotations.get(ANNOTATION_PLATFORM),
            annotations.get(ANNOTATION_USER_ID),
        ) else {
            tracing::debug!(run = %run.name_any(), "no configured platform to tell; skipping");
            return Ok(());
        };
        let thread = self.thread_of(run).await?;
        self.resolve_pending(run, &starter, thread.as_ref(), &mut told)
            .await?;
        while let Some(notice) = owed(run, &told) {
            match notice {
                RunNotice::Result => {
                    let channel = self.dm(&starter, &mut told).await?;
                    let text = result_text(run, None);
                    self.post(run, &starter, &mut told, notice, |m, key| {
                        let channel = channel.clone();
                        let text = text.clone();
                        async move { m.post(&channel, &text, &key).await }
                    })
                    .await?;
                }
                RunNotice::Thread => {
                    let Some((audience, root)) = &thread else {
                        told.threaded = true;
                        self.commit(run, &told).await?;
                        continue;
                    };
                    let started_by = annotations.get(ANNOTATION_USER_NAME).map(String::as_str);
                    let text = result_text(run, started_by);
                    self.post(run, audience, &mut told, notice, |m, key| {
                        let root = root.clone();
                        let text = text.clone();
                        async move { m.reply(&root, &text, &key).await }
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// The installation's progress message and who can post under it, if
    /// the installation (still) has one.
    async fn thread_of(
        &self,
        run: &TestRun,
    ) -> Result<Option<(Audience, MessageRef)>, ResultError> {
        let installations: Api<TestInstallation> = Api::all(self.client.clone());
        let Some(ti) = installations.get_opt(&run.spec.installation).await? else {
            return Ok(None);
        };
        let Some(progress) =
            crate::adapters::notify::recalled::<Told>(&ti, ADAPTER).and_then(|told| told.progress)
        else {
            return Ok(None);
        };
        let annotations = ti.annotations();
        Ok(self
            .audience(
                annotations.get(ANNOTATION_PLATFORM),
                annotations.get(ANNOTATION_USER_ID),
            )
            .map(|audience| (audience, progress)))
    }

    /// Settles a post whose outcome is not known: adopted when the platform
    /// has it, owed again when not.
    async fn resolve_pending(
        &self,
        run: &TestRun,
        starter: &Audience,
        thread: Option<&(Audience, MessageRef)>,
        told: &mut RunTold,
    ) -> Result<(), ResultError> {
        let Some(key) = told.pending.clone() else {
            return Ok(());
        };
        let notice = RunNotice::parse(&key);
        let found = match (notice, thread) {
            (Some(RunNotice::Result), _) => {
                let channel = self.dm(starter, told).await?;
                starter.messenger.find(&channel, &key).await?
            }
            (Some(RunNotice::Thread), Some((audience, root))) => {
                audience.messenger.find_reply(root, &key).await?
            }
            _ => None,
        };
        if let (Some(_), Some(notice)) = (found, notice) {
            tracing::info!(run = %run.name_any(), key, "found a result message whose answer was lost; not posting it again");
            self.metrics.notification_outcome(
                starter.platform.as_str(),
                notice.kind(),
                "recovered",
            );
            notice.record(told);
        }
        told.pending = None;
        self.commit(run, told).await
    }

    async fn dm(&self, audience: &Audience, told: &mut RunTold) -> Result<String, ResultError> {
        if let Some(channel) = &told.dm {
            return Ok(channel.clone());
        }
        let channel = audience.messenger.open_dm(&audience.user_id).await;
        if channel.is_err() {
            self.metrics
                .notification(audience.platform.as_str(), "open_dm", false);
        }
        let channel = channel?;
        told.dm = Some(channel.clone());
        Ok(channel)
    }

    /// Records the key as pending, posts (with the key as marker), records
    /// the result; whatever stops it in between, `resolve_pending` settles.
    async fn post<F, Fut>(
        &self,
        run: &TestRun,
        audience: &Audience,
        told: &mut RunTold,
        notice: RunNotice,
        send: F,
    ) -> Result<(), ResultError>
    where
        F: FnOnce(Arc<Messenger>, String) -> Fut,
        Fut: std::future::Future<Output = Result<MessageRef, ApiError>>,
    {
        let key = notice.key(run.uid().as_deref().unwrap_or_default());
        told.pending = Some(key.clone());
        self.commit(run, told).await?;
        let result = send(audience.messenger.clone(), key).await;
        self.metrics
            .notification(audience.platform.as_str(), notice.kind(), result.is_ok());
        result?;
        told.pending = None;
        notice.record(told);
        self.commit(run, told).await
    }

    /// Records what was told, in memory first so that a failed save never
    /// makes this process say it again.
    async fn commit(&self, run: &TestRun, told: &RunTold) -> Result<(), ResultError> {
        if let Some(uid) = run.uid() {
            self.told
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid, told.clone());
        }
        let value = serde_json::to_string(told).map_err(kube::Error::SerdeError)?;
        let patch = serde_json::json!({
            "metadata": { "annotations": { memory_annotation(ADAPTER): value } }
        });
        match self
            .api()
            .patch(&run.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl Delivery<TestRun> for RunResults {
    async fn deliver(
        self: Arc<Self>,
        run: Arc<TestRun>,
        gone: bool,
    ) -> anyhow::Result<Option<Instant>> {
        if gone {
            if let Some(uid) = run.uid() {
                self.told
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&uid);
            }
            return Ok(None);
        }
        self.tell(&run).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RunSummary, TestRunSpec, TestRunStatus};

    fn finished(phase: RunPhase) -> TestRun {
        let mut run = TestRun::new(
            "demo-e2e-1",
            TestRunSpec {
                installation: "demo".into(),
                test: Some("e2e".into()),
                ..Default::default()
            },
        );
        run.status = Some(TestRunStatus {
            phase: Some(phase),
            message: Some("e2e passed: 3 passed, 1 failed, 0 skipped in 4s".into()),
            summary: Some(RunSummary {
                passed: 3,
                failed: 1,
                skipped: 0,
            }),
            output: Some("ok 1\nnot ok 2 ```x``` password=[redacted]\n".into()),
            ..Default::default()
        });
        run
    }

    #[test]
    fn a_finished_run_owes_the_dm_then_the_thread_then_nothing() {
        let mut run = finished(RunPhase::Failed);
        let mut told = RunTold::default();
        assert_eq!(owed(&run, &told), Some(RunNotice::Result));
        RunNotice::Result.record(&mut told);
        assert_eq!(owed(&run, &told), Some(RunNotice::Thread));
        RunNotice::Thread.record(&mut told);
        assert_eq!(owed(&run, &told), None);
        run.status.as_mut().unwrap().phase = Some(RunPhase::Running);
        assert_eq!(
            owed(&run, &RunTold::default()),
            None,
            "nothing until it ends"
        );
        for notice in [RunNotice::Result, RunNotice::Thread] {
            assert_eq!(RunNotice::parse(&notice.key("uid-1")), Some(notice));
        }
        assert_eq!(RunNotice::parse("uid/ready"), None);
        let text = serde_json::to_string(&told).unwrap();
        assert_eq!(serde_json::from_str::<RunTold>(&text).unwrap(), told);
    }

    #[test]
    fn the_result_has_the_line_the_counts_and_an_inert_excerpt() {
        let run = finished(RunPhase::Failed);
        let text = result_text(&run, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("❌ e2e on demo "), "{text}");
        assert!(lines[0].ends_with("(run `demo-e2e-1`)"), "{text}");
        assert_eq!(lines[1], "Passed: 3 · Failed: 1 · Skipped: 0");
        assert_eq!(lines[2], "```");
        assert_eq!(lines[4], "not ok 2 '''x''' password=[redacted]");
        assert_eq!(*lines.last().unwrap(), "```");
        assert_eq!(text.matches("```").count(), 2, "{text}");
        let threaded = result_text(&finished(RunPhase::Succeeded), Some("alice"));
        assert!(threaded.starts_with("✅ e2e on demo passed"), "{threaded}");
        assert!(
            threaded.contains("(started by alice, run `demo-e2e-1`)"),
            "{threaded}"
        );
        let long = "x".repeat(EXCERPT_CHARS * 2);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.starts_with('…'));
    }
}
