//! Direct messages to the person who created an installation from chat: one
//! progress message edited in place, then Ready with the URL and credentials,
//! or the failure; an expiry warning; and the deletion.
//!
//! What was told is remembered on the installation (the `notify` memory
//! annotation) and in memory, and each message is remembered right after it
//! is sent, so a restart neither repeats nor drops one. The finalizer the
//! handler puts on chat-created installations holds a deleted installation
//! until its deletion has been told, even when the adapter was down.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
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
    adapters::notify::{InstallationEvent, installation_events, recalled, remember_with},
    api::{Phase, TestInstallation, credentials::Credentials, labels},
};

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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
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
    /// By uid: what was told, newer than a stale event's annotation.
    told: HashMap<String, Told>,
    /// By name: the latest object seen, for wake-ups.
    latest: HashMap<String, Arc<TestInstallation>>,
    /// By name: when to look at an installation again (expiry warning, retry).
    wakeups: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
}

/// Who to tell about one installation, and through what.
struct Audience {
    platform: Platform,
    messenger: Arc<Messenger>,
    user_id: String,
}

impl Notifier {
    pub fn new(
        client: Client,
        instance: String,
        messengers: HashMap<Platform, Arc<Messenger>>,
        metrics: Arc<Metrics>,
        expiry_warning: Duration,
    ) -> Self {
        Self {
            api: Api::all(client.clone()),
            client,
            instance,
            messengers,
            metrics,
            expiry_warning,
            told: HashMap::new(),
            latest: HashMap::new(),
            wakeups: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    /// Runs until the surrounding task is dropped.
    pub async fn run(mut self) {
        let selector = format!(
            "{}={SOURCE_CHAT},{LABEL_INSTANCE}={}",
            labels::SOURCE,
            self.instance
        );
        let mut events = installation_events(self.client.clone(), &selector).boxed();
        loop {
            let next = self.wakeups.values().min().copied();
            tokio::select! {
                event = events.next() => match event {
                    Some(InstallationEvent::Applied(ti)) => self.on_applied(ti).await,
                    Some(InstallationEvent::Deleted(ti)) => self.on_deleted(&ti).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.on_wakeups().await;
                }
            }
        }
    }

    async fn on_applied(&mut self, ti: Arc<TestInstallation>) {
        let name = ti.name_any();
        self.latest.insert(name.clone(), ti.clone());
        self.wakeups.remove(&name);
        self.handle(&ti).await;
    }

    async fn on_wakeups(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .wakeups
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.wakeups.remove(&name);
            if let Some(ti) = self.latest.get(&name).cloned() {
                self.handle(&ti).await;
            }
        }
    }

    async fn handle(&mut self, ti: &TestInstallation) {
        let name = ti.name_any();
        match self.notify(ti).await {
            Ok(next) => {
                self.failures.remove(&name);
                if let Some(at) = next {
                    self.wakeups.insert(name, at);
                }
            }
            Err(err) => {
                let attempts = self.failures.entry(name.clone()).or_default();
                *attempts += 1;
                let delay = Duration::from_secs(2u64.saturating_pow(*attempts).min(300));
                tracing::warn!(installation = %name, error = %err, ?delay, "telling the requester failed; will retry");
                self.wakeups.insert(name, Instant::now() + delay);
            }
        }
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
        ti.uid()
            .and_then(|uid| self.told.get(&uid).cloned())
            .or_else(|| recalled(ti, ADAPTER))
            .unwrap_or_default()
    }

    /// Tells what is new about `ti`; returns when to look again, if ever.
    async fn notify(&mut self, ti: &TestInstallation) -> Result<Option<Instant>, NotifyError> {
        let mut told = self.recall(ti);
        let Some(audience) = self.audience(ti) else {
            tracing::debug!(installation = %ti.name_any(), "no configured platform to tell; skipping");
            if ti.metadata.deletion_timestamp.is_some() {
                self.remove_finalizer(ti).await?;
            }
            return Ok(None);
        };
        let flavor = audience.platform.flavor();
        let now = Timestamp::now();

        if ti.metadata.deletion_timestamp.is_some() {
            if told.progress.is_some() && !told.ready && told.failed.is_none() {
                let text = messages::progress_deleted(ti, flavor);
                self.show_progress(ti, &audience, &mut told, text).await?;
            }
            if !told.deleted {
                self.say(
                    &audience,
                    &mut told,
                    "deleted",
                    &messages::deleted(ti, flavor),
                )
                .await?;
                told.deleted = true;
                self.commit(ti, &told).await?;
            }
            self.remove_finalizer(ti).await?;
            return Ok(None);
        }

        match ti.phase() {
            None | Some(Phase::Pending | Phase::Provisioning | Phase::Upgrading) if !told.ready => {
                // Back on its way after a failure: a later failure, even for
                // the same reason, is news again.
                told.failed = None;
                self.show_progress(ti, &audience, &mut told, messages::progress(ti, flavor))
                    .await?;
            }
            Some(Phase::Ready) if !told.ready => {
                let credentials = self.credentials(ti).await?;
                if told.progress.is_some() {
                    self.show_progress(
                        ti,
                        &audience,
                        &mut told,
                        messages::progress_done(ti, flavor),
                    )
                    .await?;
                }
                let text = messages::ready(ti, &credentials, flavor, now);
                self.say(&audience, &mut told, "ready", &text).await?;
                told.ready = true;
                self.commit(ti, &told).await?;
            }
            Some(Phase::Failed) => {
                let reason = digest(&messages::failure_reason(ti));
                if told.failed.as_deref() != Some(reason.as_str()) {
                    if told.progress.is_some() && !told.ready {
                        self.show_progress(
                            ti,
                            &audience,
                            &mut told,
                            messages::progress_failed(ti, flavor),
                        )
                        .await?;
                    }
                    self.say(
                        &audience,
                        &mut told,
                        "failed",
                        &messages::failed(ti, flavor),
                    )
                    .await?;
                    told.failed = Some(reason);
                    self.commit(ti, &told).await?;
                }
            }
            _ => {}
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

    async fn warn_before_expiry(
        &mut self,
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
        let warn_in = left - self.expiry_warning.as_secs() as i64;
        if warn_in > 0 {
            return Ok(Some(Instant::now() + Duration::from_secs(warn_in as u64)));
        }
        let text = messages::expiry_warning(ti, audience.platform.flavor(), now);
        self.say(audience, told, "expiring", &text).await?;
        told.expiry_warned = Some(key);
        self.commit(ti, told).await?;
        Ok(None)
    }

    /// Posts the progress message the first time, then edits it in place.
    async fn show_progress(
        &mut self,
        ti: &TestInstallation,
        audience: &Audience,
        told: &mut Told,
        text: String,
    ) -> Result<(), NotifyError> {
        let new_digest = digest(&text);
        if told.progress_digest.as_deref() == Some(new_digest.as_str()) {
            return Ok(());
        }
        let kind = "progress";
        match told.progress.clone() {
            Some(message) => {
                let result = audience.messenger.update(&message, &text).await;
                self.metrics
                    .notification(audience.platform.as_str(), kind, result.is_ok());
                result?;
            }
            None => {
                let message = self.say(audience, told, kind, &text).await?;
                told.progress = Some(message);
            }
        }
        told.progress_digest = Some(new_digest);
        self.commit(ti, told).await
    }

    /// Posts `text` in the direct-message channel with the requester.
    async fn say(
        &self,
        audience: &Audience,
        told: &mut Told,
        kind: &'static str,
        text: &str,
    ) -> Result<MessageRef, NotifyError> {
        let platform = audience.platform.as_str();
        let channel = match &told.dm {
            Some(channel) => channel.clone(),
            None => {
                let opened = audience.messenger.open_dm(&audience.user_id).await;
                if opened.is_err() {
                    self.metrics.notification(platform, kind, false);
                }
                let channel = opened?;
                told.dm = Some(channel.clone());
                channel
            }
        };
        let result = audience.messenger.post(&channel, text).await;
        self.metrics.notification(platform, kind, result.is_ok());
        Ok(result?)
    }

    /// Records what was told, in memory first so that a failed save never
    /// makes this process say it again.
    async fn commit(&mut self, ti: &TestInstallation, told: &Told) -> Result<(), NotifyError> {
        if let Some(uid) = ti.uid() {
            self.told.insert(uid, told.clone());
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

    /// Removes this adapter's finalizer; the resourceVersion makes the merge
    /// patch of the list fail instead of overwriting a concurrent change.
    async fn remove_finalizer(&self, ti: &TestInstallation) -> Result<(), NotifyError> {
        if !ti.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let rest: Vec<&String> = ti.finalizers().iter().filter(|f| *f != FINALIZER).collect();
        let patch = json!({
            "metadata": { "finalizers": rest, "resourceVersion": ti.resource_version() }
        });
        match self
            .api
            .patch(
                &ti.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn on_deleted(&mut self, ti: &TestInstallation) {
        let name = ti.name_any();
        self.latest.remove(&name);
        self.wakeups.remove(&name);
        self.failures.remove(&name);
        let mut told = self.recall(ti);
        if let Some(uid) = ti.uid() {
            self.told.remove(&uid);
        }
        if told.deleted {
            return;
        }
        // Only without the finalizer (removed by hand, or an installation
        // from before it existed): tell now, there is no later chance.
        if let Some(audience) = self.audience(ti) {
            let text = messages::deleted(ti, audience.platform.flavor());
            if let Err(err) = self.say(&audience, &mut told, "deleted", &text).await {
                tracing::warn!(installation = %name, error = %err, "telling about a deletion failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
