//! Shared by the chat and GitHub adapters: watch TestInstallations and
//! remember, on each installation, what an adapter has already told people,
//! so a restart neither repeats nor drops a message.
//!
//! The memory is one annotation per adapter, `ephemera.dev/notified-<adapter>`,
//! holding a small JSON value the adapter defines (typically the last phase
//! and generation it reported). The adapter decides what to say from the
//! installation and that memory, says it, then records the new memory.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{api::TestInstallation, telemetry::Health};

/// The annotation in which `adapter` keeps what it has told.
pub fn memory_annotation(adapter: &str) -> String {
    format!("ephemera.dev/notified-{adapter}")
}

/// What `adapter` recorded on this installation, if anything (an unreadable
/// value counts as nothing recorded).
pub fn recalled<T: DeserializeOwned>(installation: &TestInstallation, adapter: &str) -> Option<T> {
    let raw = installation
        .annotations()
        .get(&memory_annotation(adapter))?;
    serde_json::from_str(raw).ok()
}

/// Records `memory` for `adapter` on the installation (a merge patch of one
/// annotation, so it never conflicts with the spec or other adapters).
pub async fn remember<T: Serialize>(
    api: &Api<TestInstallation>,
    name: &str,
    adapter: &str,
    memory: &T,
) -> kube::Result<()> {
    remember_with(api, name, adapter, memory, &PatchParams::default()).await
}

/// [`remember`] with the adapter's own patch parameters (its field manager).
pub async fn remember_with<T: Serialize>(
    api: &Api<TestInstallation>,
    name: &str,
    adapter: &str,
    memory: &T,
    params: &PatchParams,
) -> kube::Result<()> {
    let value = serde_json::to_string(memory).map_err(kube::Error::SerdeError)?;
    let patch = serde_json::json!({
        "metadata": { "annotations": { memory_annotation(adapter): value } }
    });
    api.patch(name, params, &Patch::Merge(&patch)).await?;
    Ok(())
}

/// One change seen by the watch.
#[derive(Debug, Clone)]
pub enum InstallationEvent {
    /// Created or changed (also every existing installation once at start and
    /// after each re-list, so nothing is missed across restarts).
    Applied(Arc<TestInstallation>),
    /// Gone from the API server.
    Deleted(Arc<TestInstallation>),
}

/// Watches TestInstallations matching `label_selector` (e.g.
/// `ephemera.dev/source=chat`), re-listing with backoff on errors; the stream
/// never ends on its own. Every failure is recorded in `health`, so the
/// adapter is not ready while its watch cannot reach the API server.
pub fn installation_events(
    client: Client,
    label_selector: &str,
    health: Health,
) -> impl Stream<Item = InstallationEvent> + Send + 'static {
    let api: Api<TestInstallation> = Api::all(client);
    let config = watcher::Config::default().labels(label_selector);
    watcher(api, config)
        .backoff(super::backoff::WatchBackoff::default())
        .filter_map(move |event| {
            let health = health.clone();
            async move {
                match event {
                    Ok(watcher::Event::Apply(ti) | watcher::Event::InitApply(ti)) => {
                        Some(InstallationEvent::Applied(Arc::new(ti)))
                    }
                    Ok(watcher::Event::Delete(ti)) => {
                        Some(InstallationEvent::Deleted(Arc::new(ti)))
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                    Err(err) => {
                        health.watch_failed();
                        tracing::warn!(error = %err, "watching TestInstallations failed; retrying");
                        None
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Told {
        phase: String,
        generation: i64,
    }

    #[test]
    fn recalls_what_was_recorded_and_ignores_garbage() {
        let mut ti = TestInstallation::new("demo", Default::default());
        assert_eq!(recalled::<Told>(&ti, "chat"), None);
        ti.annotations_mut().insert(
            memory_annotation("chat"),
            r#"{"phase":"Ready","generation":2}"#.into(),
        );
        assert_eq!(
            recalled::<Told>(&ti, "chat"),
            Some(Told {
                phase: "Ready".into(),
                generation: 2
            })
        );
        assert_eq!(recalled::<Told>(&ti, "github"), None);
        ti.annotations_mut()
            .insert(memory_annotation("github"), "not json".into());
        assert_eq!(recalled::<Told>(&ti, "github"), None);
    }
}
