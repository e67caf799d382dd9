//! Direct messages to the person who created an installation from chat: one
//! progress message edited in place, then Ready with the URL and credentials,
//! or the failure; hibernation and waking; an expiry warning; and the
//! deletion.
//!
//! Exactly one copy of each message, whatever fails: what was told is
//! remembered on the installation (the `notify` memory annotation), and
//! before each post the message's key is recorded there as `pending`. The
//! post carries the key as an invisible marker. After a crash, a lost answer
//! or an aborted step, a pending key is first looked up in the DM channel:
//! found, the message is adopted; not found, it is posted (once). A post is
//! never retried blind.
//!
//! The finalizer the handler puts on chat-created installations holds a
//! deleted installation until its deletion has been told; a requester who
//! cannot be told for `giveUpAfter` is given up on (log, metric, Event) and
//! the installation let go.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, Client, Resource, ResourceExt, api::PatchParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{
    ADAPTER, ANNOTATION_PLATFORM, ANNOTATION_USER_ID, FIELD_MANAGER, FINALIZER, LABEL_INSTANCE,
    SOURCE_CHAT,
    http::ApiError,
    messages,
    messenger::{MessageRef, Messenger, Platform},
    metrics::Metrics,
};
use crate::{
    adapters::{
        delivery::{self, Delivery},
        finalizer,
        notify::{recalled, remember_with},
    },
    api::{Phase, TestInstallation, credentials::Credentials, labels},
    events::{Event, EventType, Recorder, Reporter},
};

/// The longest wait between attempts to tell a deletion.
const DELETION_RETRY_SECS: u64 = 30;

/// What has been told about one installation (the memory annotation's JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Told {
    /// The direct-message channel with the requester.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dm: Option<String>,
    /// The progress message, edited in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<MessageRef>,
    /// Digest of the progress message's current text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_digest: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
    /// Digest of the failure reason last told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The `expiresAt` that was warned about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_warned: Option<String>,
    /// The generation whose hibernation was told (until waking is told).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hibernated: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The key of a message about to be posted whose outcome is not known
    /// (recorded before the post, cleared with the post's result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// One message that is owed, by what it tells. Its key (with the
/// installation's uid) marks the posted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Progress,
    Ready,
    Failed(String),
    Expiring(String),
    Hibernated(i64),
    Woken(i64),
    Deleted,
}

impl Notice {
    fn kind(&self) -> &'static str {
        match self {
            Notice::Progress => "progress",
            Notice::Ready => "ready",
            Notice::Failed(_) => "failed",
            Notice::Expiring(_) => "expiring",
            Notice::Hibernated(_) => "hibernated",
            Notice::Woken(_) => "woken",
            Notice::Deleted => "deleted",
        }
    }

    /// `<uid>/<kind>[:<detail>]`.
    pub fn key(&self, uid: &str) -> String {
        let detail = match self {
            Notice::Failed(d) | Notice::Expiring(d) => format!(":{d}"),
            Notice::Hibernated(g) | Notice::Woken(g) => format!(":{g}"),
            _ => String::new(),
        };
        format!("{uid}/{}{detail}", self.kind())
    }

    pub fn parse(key: &str) -> Option<Notice> {
        let (_, rest) = key.split_once('/')?;
        let (kind, detail) = rest.split_once(':').unwrap_or((rest, ""));
        Some(match kind {
            "progress" => Notice::Progress,
            "ready" => Notice::Ready,
            "failed" => Notice::Failed(detail.into()),
            "expiring" => Notice::Expiring(detail.into()),
            "hibernated" => Notice::Hibernated(detail.parse().ok()?),
            "woken" => Notice::Woken(detail.parse().ok()?),
            "deleted" => Notice::Deleted,
            _ => return None,
        })
    }

    /// Records in `told` that this notice was posted as `message`.
    pub fn record(&self, told: &mut Told, message: MessageRef) {
        match self {
            Notice::Progress => {
                told.progress = Some(message);
                // Its text is not known; the next step edits it.
                told.progress_digest = None;
            }
            Notice::Ready => told.ready = true,
            Notice::Failed(reason) => told.failed = Some(reason.clone()),
            Notice::Expiring(at) => told.expiry_warned = Some(at.clone()),
            Notice::Hibernated(generation) => told.hibernated = Some(*generation),
            Notice::Woken(_) => told.hibernated = None,
            Notice::Deleted => told.deleted = true,
        }
    }
}

/// What the requester of a live (not deleted) installation is owed next,
/// decided from the installation and what was told alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owed {
    /// The progress message, posted or edited to the current state.
    Progress,
    /// A new message.
    Notice(Notice),
    Nothing,
}

pub fn owed(ti: &TestInstallation, told: &Told) -> Owed {
    let generation = ti.metadata.generation.unwrap_or_default();
    match ti.phase() {
        None | Some(Phase::Pending | Phase::Provisioning | Phase::Upgrading) if !told.ready => {
            Owed::Progress
        }
        Some(Phase::Ready) if !told.ready => Owed::Notice(Notice::Ready),
        Some(Phase::Ready) if told.hibernated.is_some() => Owed::Notice(Notice::Woken(generation)),
        Some(Phase::Hibernated) if told.ready && told.hibernated.is_none() => {
            Owed::Notice(Notice::Hibernated(generation))
        }
        Some(Phase::Failed) => {
            let reason = digest(&messages::failure_reason(ti));
            if told.failed.as_deref() == Some(reason.as_str()) {
                Owed::Nothing
            } else {
                Owed::Notice(Notice::Failed(reason))
            }
        }
        _ => Owed::Nothing,
    }
}

#[derive(Debug, thiserror::Error)]
enum NotifyError {
    #[error(transparent)]
    Chat(#[from] ApiError),
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    NotYet(String),
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Short digest to tell texts apart without storing them.
fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

pub struct Notifier {
    client: Client,
    instance: String,
    api: Api<TestInstallation>,
    messengers: HashMap<Platform, Arc<Messenger>>,
    metrics: Arc<Metrics>,
    expiry_warning: Duration,
    give_up_after: Duration,
    recorder: Recorder,
    /// By uid: what was told, newer than a stale event's annotation. Only
    /// the installation's own step (one at a time) touches its entry.
    told: std::sync::Mutex<HashMap<String, Told>>,
}

/// Who to tell about one installation, and through what.
struct Audience {
    platform: Platform,
    messenger: Arc<Messenger>,
    user_id: String,
}

impl Delivery for Notifier {
    async fn deliver(
        self: Arc<Self>,
        ti: Arc<TestInstallation>,
        gone: bool,
    ) -> anyhow::Result<Option<Instant>> {
        if gone {
            self.on_deleted(&ti).await;
            return Ok(None);
        }
        Ok(self.notify(&ti).await?)
    }
}

/// How long to wait before warning about an expiry `left_secs` away, when
/// the warning is due `warning` ahead; `None`: warn now. Saturating, and at
/// most a day (the installation is looked at again then), so no deadline or
/// setting, however large, overflows a clock.
fn wait_before_warning(left_secs: i64, warning: Duration) -> Option<Duration> {
    const LOOK_AGAIN_AFTER_SECS: i64 = 86_400;
    let warning = i64::try_from(warning.as_secs()).unwrap_or(i64::MAX);
    let wait = left_secs.saturating_sub(warning);
    (wait > 0).then(|| Duration::from_secs(wait.min(LOOK_AGAIN_AFTER_SECS) as u64))
}

impl Notifier {
    pub fn new(
        client: Client,
        instance: String,
        messengers: HashMap<Platform, Arc<Messenger>>,
        metrics: Arc<Metrics>,
        expiry_warning: Duration,
        give_up_after: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: "ephemera-chat".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            api: Api::all(client.clone()),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            instance,
            messengers,
            metrics,
            expiry_warning,
            give_up_after,
            told: Default::default(),
        }
    }

    /// Runs until the surrounding task is dropped; watch failures make
    /// `health` unready for a while.
    pub async fn run(self, health: crate::telemetry::Health) {
        let selector = format!(
            "{}={SOURCE_CHAT},{LABEL_INSTANCE}={}",
            labels::SOURCE,
            self.instance
        );
        delivery::run(self.client.clone(), selector, Arc::new(self), health).await;
    }

    fn audience(&self, ti: &TestInstallation) -> Option<Audience> {
        let platform = Platform::parse(ti.annotations().get(ANNOTATION_PLATFORM)?)?;
        let user_id = ti.annotations().get(ANNOTATION_USER_ID)?.clone();
        let messenger = self.messengers.get(&platform)?.clone();
        Some(Audience {
            platform,
            messenger,
            user_id,
        })
    }

    fn recall(&self, ti: &TestInstallation) -> Told {
        let memory = self.told.lock().unwrap_or_else(|p| p.into_inner());
        ti.uid()
            .and_then(|uid| memory.get(&uid).cloned())
            .or_else(|| recalled(ti, ADAPTER))
            .unwrap_or_default()
    }

    /// Tells what is new about `ti`; returns when to look again, if ever.
    async fn notify(&self, ti: &TestInstallation) -> Result<Option<Instant>, NotifyError> {
        let mut told = self.recall(ti);
        let Some(audience) = self.audience(ti) else {
            tracing::debug!(installation = %ti.name_any(), "no configured platform to tell; skipping");
            if ti.metadata.deletion_timestamp.is_some() {
                finalizer::release(&self.api, &ti.name_any(), FINALIZER, &patch_params()).await?;
            }
            return Ok(None);
        };
        let now = Timestamp::now();

        if let Some(deleted_at) = &ti.metadata.deletion_timestamp {
            if let Err(err) = self.tell_deletion(ti, &audience, &mut told).await {
                let waited = (now.as_second() - deleted_at.0.as_second()).max(0) as u64;
                let left = self.give_up_after.as_secs().saturating_sub(waited);
                if left > 0 {
                    // Tried again soon enough that the bound holds, whatever
                    // the general backoff would wait by now.
                    let wait = Duration::from_secs(left.min(DELETION_RETRY_SECS));
                    tracing::warn!(installation = %ti.name_any(), error = %err, ?wait,
                        "telling the requester about the deletion failed; will retry");
                    return Ok(Some(Instant::now() + wait));
                }
                self.give_up(ti, &audience, &err).await;
            }
            finalizer::release(&self.api, &ti.name_any(), FINALIZER, &patch_params()).await?;
            return Ok(None);
        }

        self.resolve_pending(ti, &audience, &mut told).await?;
        let flavor = audience.platform.flavor();
        match owed(ti, &told) {
            Owed::Progress => {
                // Back on its way after a failure: a later failure, even for
                // the same reason, is news again.
                told.failed = None;
                self.show_progress(ti, &audience, &mut told, messages::progress(ti, flavor))
                    .await?;
            }
            Owed::Notice(Notice::Ready) => {
                let credentials = self.credentials(ti).await?;
                if told.progress.is_some() {
                    // Cosmetic: the credentials never wait for it.
                    let text = messages::progress_done(ti, flavor);
                    if let Err(err) = self.show_progress(ti, &audience, &mut told, text).await {
                        tracing::warn!(installation = %ti.name_any(), error = %err,
                            "editing the progress message failed; sending Ready anyway");
                    }
                }
                let text = messages::ready(ti, &credentials, flavor, now);
                self.tell(ti, &audience, &mut told, Notice::Ready, &text)
                    .await?;
            }
            Owed::Notice(notice @ Notice::Failed(_)) => {
                if told.progress.is_some() && !told.ready {
                    let text = messages::progress_failed(ti, flavor);
                    if let Err(err) = self.show_progress(ti, &audience, &mut told, text).await {
                        tracing::warn!(installation = %ti.name_any(), error = %err,
                            "editing the progress message failed; telling the failure anyway");
                    }
                }
                let text = messages::failed(ti, flavor);
                self.tell(ti, &audience, &mut told, notice, &text).await?;
            }
            Owed::Notice(notice) => {
                let text = match notice {
                    Notice::Woken(_) => messages::woken(ti, flavor),
                    _ => messages::hibernated(ti, flavor),
                };
                self.tell(ti, &audience, &mut told, notice, &text).await?;
            }
            Owed::Nothing => {}
        }

        let next = self
            .warn_before_expiry(ti, &audience, &mut told, now)
            .await?;

        // A memory that could not be saved earlier is saved now.
        if recalled::<Told>(ti, ADAPTER).as_ref() != Some(&told) {
            self.commit(ti, &told).await?;
        }
        Ok(next)
    }

    async fn tell_deletion(
        &self,
        ti: &TestInstallation,
        audience: &Audience,
        told: &mut Told,
    ) -> Result<(), NotifyError> {
        self.resolve_pending(ti, audience, told).await?;
        let flavor = audience.platform.flavor();
        if told.progress.is_some() && !told.ready && told.failed.is_none() {
            let text = messages::progress_deleted(ti, flavor);
            if let Err(err) = self.show_progress(ti, audience, told, text).await {
                tracing::warn!(installation = %ti.name_any(), error = %err,
                    "editing the progress message failed; telling the deletion anyway");
            }
        }
        if !told.deleted {
            let text = messages::deleted(ti, flavor);
            self.tell(ti, audience, told, Notice::Deleted, &text)
                .await?;
        }
        Ok(())
    }

    /// A requester who could not be told for `give_up_after`: logged, counted
    /// and recorded as an Event on the installation, which is then let go.
    async fn give_up(&self, ti: &TestInstallation, audience: &Audience, err: &NotifyError) {
        let name = ti.name_any();
        tracing::warn!(installation = %name, error = %err, after = ?self.give_up_after,
            "cannot tell the requester about the deletion; giving up and letting the installation go");
        self.metrics
            .notification_outcome(audience.platform.as_str(), "deleted", "given_up");
        let event = Event {
            type_: EventType::Warning,
            reason: "NotificationGivenUp".into(),
            note: Some(format!(
                "the requester could not be told about the deletion within {}s: {err}",
                self.give_up_after.as_secs()
            )),
            action: "NotifyDeletion".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &ti.object_ref(&())).await {
            tracing::warn!(installation = %name, error = %err, "cannot record the give-up Event");
        }
    }

    /// Settles a message whose post was started but whose outcome is not
    /// known (a crash, an aborted step or a lost answer): if the channel has
    /// it, it is adopted; if not, it was never posted and is owed again.
    async fn resolve_pending(
        &self,
        ti: &TestInstallation,
        audience: &Audience,
        told: &mut Told,
    ) -> Result<(), NotifyError> {
        let Some(key) = told.pending.clone() else {
            return Ok(());
        };
        let channel = self.dm(audience, told).await?;
        let found = audience.messenger.find(&channel, &key).await?;
        if let (Some(message), Some(notice)) = (found, Notice::parse(&key)) {
            tracing::info!(installation = %ti.name_any(), key, "found a message whose answer was lost; not posting it again");
            self.metrics.notification_outcome(
                audience.platform.as_str(),
                notice.kind(),
                "recovered",
            );
            notice.record(told, message);
        }
        told.pending = None;
        self.commit(ti, told).await
    }

    async fn warn_before_expiry(
        &self,
        ti: &TestInstallation,
        audience: &Audience,
        told: &mut Told,
        now: Timestamp,
    ) -> Result<Option<Instant>, NotifyError> {
        let Some(expires) = ti.status.as_ref().and_then(|s| s.expires_at.as_ref()) else {
            return Ok(None);
        };
        if ti.spec.deletion_locked || ti.phase() == Some(Phase::Terminating) {
            return Ok(None);
        }
        let key = expires.0.to_string();
        if told.expiry_warned.as_deref() == Some(key.as_str()) {
            return Ok(None);
        }
        let left = expires.0.as_second() - now.as_second();
        if left <= 0 {
            return Ok(None);
        }
        if let Some(wait) = wait_before_warning(left, self.expiry_warning) {
            return Ok(Some(Instant::now() + wait));
        }
        let text = messages::expiry_warning(ti, audience.platform.flavor(), now);
        self.tell(ti, audience, told, Notice::Expiring(key), &text)
            .await?;
        Ok(None)
    }

    /// Posts the progress message the first time, then edits it in place
    /// (edits are idempotent, so they are simply repeated on failure).
    async fn show_progress(
        &self,
        ti: &TestInstallation,
        audience: &Audience,
        told: &mut Told,
        text: String,
    ) -> Result<(), NotifyError> {
        let new_digest = digest(&text);
        if told.progress_digest.as_deref() == Some(new_digest.as_str()) {
            return Ok(());
        }
        match told.progress.clone() {
            Some(message) => {
                let result = audience.messenger.update(&message, &text).await;
                self.metrics
                    .notification(audience.platform.as_str(), "progress", result.is_ok());
                result?;
            }
            None => {
                self.tell(ti, audience, told, Notice::Progress, &text)
                    .await?;
            }
        }
        told.progress_digest = Some(new_digest);
        self.commit(ti, told).await
    }

    /// The direct-message channel with the requester (opening it is
    /// idempotent on both platforms).
    async fn dm(&self, audience: &Audience, told: &mut Told) -> Result<String, NotifyError> {
        if let Some(channel) = &told.dm {
            return Ok(channel.clone());
        }
        let opened = audience.messenger.open_dm(&audience.user_id).await;
        if opened.is_err() {
            self.metrics
                .notification(audience.platform.as_str(), "open_dm", false);
        }
        let channel = opened?;
        told.dm = Some(channel.clone());
        Ok(channel)
    }

    /// Posts one notice: its key is recorded as pending on the installation
    /// first, then the message (marked with the key) is posted, then the
    /// result recorded. Whatever stops it in between, [`Self::resolve_pending`]
    /// settles it without a second copy.
    async fn tell(
        &self,
        ti: &TestInstallation,
        audience: &Audience,
        told: &mut Told,
        notice: Notice,
        text: &str,
    ) -> Result<(), NotifyError> {
        let channel = self.dm(audience, told).await?;
        let key = notice.key(ti.uid().as_deref().unwrap_or_default());
        told.pending = Some(key.clone());
        self.commit(ti, told).await?;
        let result = audience.messenger.post(&channel, text, &key).await;
        self.metrics
            .notification(audience.platform.as_str(), notice.kind(), result.is_ok());
        // On an error the key stays pending: the next attempt looks first.
        let message = result?;
        told.pending = None;
        notice.record(told, message);
        if notice == Notice::Progress {
            told.progress_digest = Some(digest(text));
        }
        self.commit(ti, told).await
    }

    /// Records what was told, in memory first so that a failed save never
    /// makes this process say it again.
    async fn commit(&self, ti: &TestInstallation, told: &Told) -> Result<(), NotifyError> {
        if let Some(uid) = ti.uid() {
            self.told
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid, told.clone());
        }
        match remember_with(&self.api, &ti.name_any(), ADAPTER, told, &patch_params()).await {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn credentials(&self, ti: &TestInstallation) -> Result<Credentials, NotifyError> {
        let reference = ti
            .status
            .as_ref()
            .and_then(|s| s.credentials_secret.as_ref())
            .ok_or_else(|| NotifyError::NotYet("status.credentialsSecret is not set".into()))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &reference.namespace);
        let secret = secrets.get(&reference.name).await?;
        Credentials::from_secret(&secret).ok_or_else(|| {
            NotifyError::NotYet(format!(
                "Secret {}/{} lacks some of the credential keys",
                reference.namespace, reference.name
            ))
        })
    }

    /// The installation is gone from the API server. Only without the
    /// finalizer (removed by hand, or given up) can its deletion still be
    /// untold: tell now, there is no later chance.
    async fn on_deleted(&self, ti: &TestInstallation) {
        let mut told = self.recall(ti);
        if let Some(uid) = ti.uid() {
            self.told
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
        }
        if told.deleted || told.pending.is_some() {
            return;
        }
        if let Some(audience) = self.audience(ti) {
            let text = messages::deleted(ti, audience.platform.flavor());
            let key = Notice::Deleted.key(ti.uid().as_deref().unwrap_or_default());
            let sent = match self.dm(&audience, &mut told).await {
                Ok(channel) => audience
                    .messenger
                    .post(&channel, &text, &key)
                    .await
                    .map(drop),
                Err(err) => {
                    tracing::warn!(installation = %ti.name_any(), error = %err, "telling about a deletion failed");
                    return;
                }
            };
            if let Err(err) = sent {
                tracing::warn!(installation = %ti.name_any(), error = %err, "telling about a deletion failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_warning_wait_saturates_and_is_bounded() {
        let hour = Duration::from_secs(3600);
        assert_eq!(wait_before_warning(7200, hour), Some(hour));
        assert_eq!(wait_before_warning(3600, hour), None);
        assert_eq!(wait_before_warning(10, hour), None);
        assert_eq!(wait_before_warning(i64::MIN, hour), None);
        assert_eq!(wait_before_warning(10, Duration::MAX), None);
        assert_eq!(wait_before_warning(i64::MIN, Duration::MAX), None);
        // A deadline at the end of time: look again in a day.
        assert_eq!(
            wait_before_warning(i64::MAX, Duration::ZERO),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            wait_before_warning(i64::MAX, hour),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn memory_is_compact_json_and_round_trips() {
        let told = Told {
            dm: Some("D1".into()),
            progress: Some(MessageRef {
                channel: "D1".into(),
                id: "p1".into(),
            }),
            progress_digest: Some(digest("x")),
            ready: true,
            ..Default::default()
        };
        let text = serde_json::to_string(&told).unwrap();
        assert!(
            !text.contains("deleted") && !text.contains("failed"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Told>(&text).unwrap(), told);
        assert_eq!(serde_json::from_str::<Told>("{}").unwrap(), Told::default());
    }

    #[test]
    fn notice_keys_round_trip_and_record_what_was_posted() {
        let message = MessageRef {
            channel: "D1".into(),
            id: "m1".into(),
        };
        for notice in [
            Notice::Progress,
            Notice::Ready,
            Notice::Failed("abc".into()),
            Notice::Expiring("2026-01-01T00:00:00Z".into()),
            Notice::Hibernated(4),
            Notice::Woken(5),
            Notice::Deleted,
        ] {
            let key = notice.key("uid-1");
            assert_eq!(Notice::parse(&key), Some(notice.clone()), "{key}");
            let mut told = Told {
                hibernated: Some(1),
                ..Default::default()
            };
            let before = told.clone();
            notice.record(&mut told, message.clone());
            assert_ne!(told, before, "{notice:?} records something");
        }
        assert_eq!(Notice::parse("garbage"), None);
        let mut told = Told {
            hibernated: Some(4),
            ..Default::default()
        };
        Notice::Woken(5).record(&mut told, message.clone());
        assert_eq!(told.hibernated, None);
        Notice::Progress.record(&mut told, message.clone());
        assert_eq!(told.progress, Some(message));
        assert_eq!(
            told.progress_digest, None,
            "an adopted progress message is edited again"
        );
    }

    #[test]
    fn what_is_owed_follows_the_phase_and_what_was_told() {
        let mut ti = TestInstallation::new("demo", Default::default());
        ti.metadata.generation = Some(3);
        let at = |ti: &mut TestInstallation, phase: Phase| {
            ti.status = Some(crate::api::TestInstallationStatus {
                phase: Some(phase),
                message: Some("why".into()),
                ..Default::default()
            });
        };
        let told = Told::default();
        assert_eq!(owed(&ti, &told), Owed::Progress);
        at(&mut ti, Phase::Ready);
        assert_eq!(owed(&ti, &told), Owed::Notice(Notice::Ready));
        let ready = Told {
            ready: true,
            ..Default::default()
        };
        assert_eq!(owed(&ti, &ready), Owed::Nothing);
        at(&mut ti, Phase::Hibernated);
        assert_eq!(owed(&ti, &ready), Owed::Notice(Notice::Hibernated(3)));
        let asleep = Told {
            hibernated: Some(3),
            ..ready.clone()
        };
        assert_eq!(owed(&ti, &asleep), Owed::Nothing);
        at(&mut ti, Phase::Ready);
        assert_eq!(owed(&ti, &asleep), Owed::Notice(Notice::Woken(3)));
        at(&mut ti, Phase::Failed);
        let Owed::Notice(Notice::Failed(reason)) = owed(&ti, &ready) else {
            panic!("a failure is owed");
        };
        let failed = Told {
            failed: Some(reason),
            ..ready
        };
        assert_eq!(owed(&ti, &failed), Owed::Nothing, "told once per reason");
        at(&mut ti, Phase::Provisioning);
        assert_eq!(owed(&ti, &Told::default()), Owed::Progress);
    }
}
