//! What every reconcile pass shares: the client, the config, the event
//! recorder, the metrics and the per-object error backoff.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::channel::mpsc::UnboundedSender;
use kube::{
    Client, ResourceExt,
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    cache::Caches,
    config::ControllerConfig,
    lifecycle::capacity::{self, Admission, Slot},
    metrics::Metrics,
    urgent::Lane,
};
use crate::{
    api::TestInstallation,
    events::{Recorder, Reporter},
};

pub struct Context {
    pub client: Client,
    pub config: ControllerConfig,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failures per installation, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The installations this controller reconciles.
    store: Store<DeserializeGuard<TestInstallation>>,
    /// Installations admitted by this process; together with the store this
    /// keeps two concurrent passes from both taking the last free slot.
    admitted: Mutex<HashSet<String>>,
    /// Runs a pass of an installation that no watch event wakes: a queued
    /// one when capacity frees up, or one a status refresh cannot take.
    passes: UnboundedSender<ObjectRef<DeserializeGuard<TestInstallation>>>,
    /// What a pass reads instead of asking the API server.
    pub caches: Arc<Caches>,
    /// Expiry and deletion, ahead of routine work.
    pub urgent: Lane,
    /// One lock per installation: a routine pass and the urgent lane never
    /// work on the same installation at once.
    exclusive: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: ControllerConfig,
        metrics: Metrics,
        store: Store<DeserializeGuard<TestInstallation>>,
        passes: UnboundedSender<ObjectRef<DeserializeGuard<TestInstallation>>>,
        caches: Arc<Caches>,
        urgent: Lane,
    ) -> Self {
        let reporter = Reporter {
            controller: "ephemera-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            failures: Mutex::new(HashMap::new()),
            store,
            admitted: Mutex::new(HashSet::new()),
            passes,
            caches,
            urgent,
            exclusive: Mutex::new(HashMap::new()),
        }
    }

    /// Holds `name` for one pass (routine or urgent), waiting while another
    /// holds it.
    pub async fn exclusive(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .exclusive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// The installation is gone: its lock is not needed any more.
    pub fn forget(&self, name: &str) {
        self.exclusive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// The installation as the store has it now.
    pub fn installation(&self, name: &str) -> Option<Arc<DeserializeGuard<TestInstallation>>> {
        self.store.get(&ObjectRef::new(name))
    }

    /// Whether `installation` may start now (see `lifecycle::capacity`).
    pub fn admit(&self, installation: &TestInstallation) -> Admission {
        let limits = (self.config.max_installations, self.config.max_per_requester);
        if limits == (None, None) {
            return Admission::Admitted;
        }
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        let name = installation.name_any();
        let mut slots: Vec<Slot> = self
            .store
            .state()
            .iter()
            .filter_map(|guard| guard.0.as_ref().ok())
            .filter(|ti| ti.name_any() != name)
            .map(|ti| {
                let started = ti.status.as_ref().is_some_and(|s| s.namespace.is_some());
                Slot::of(ti, started || admitted.contains(&ti.name_any()))
            })
            .collect();
        let started = installation
            .status
            .as_ref()
            .is_some_and(|s| s.namespace.is_some());
        slots.push(Slot::of(installation, started || admitted.contains(&name)));
        let decision = capacity::admit(&name, &slots, limits.0, limits.1);
        if decision == Admission::Admitted {
            admitted.insert(name);
        }
        decision
    }

    /// An installation is gone: its capacity is free for the queue.
    pub fn release(&self, name: &str) {
        self.admitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if self.config.max_installations.is_none() && self.config.max_per_requester.is_none() {
            return;
        }
        // Only the installations still waiting for a slot are looked at.
        for guard in self.store.state() {
            let Ok(ti) = &guard.0 else { continue };
            let queued = ti.metadata.deletion_timestamp.is_none()
                && ti.status.as_ref().is_none_or(|s| s.namespace.is_none());
            if queued && ti.name_any() != name {
                self.run_a_pass(&ti.name_any());
            }
        }
    }

    /// Runs a pass of `installation` soon.
    pub fn run_a_pass(&self, installation: &str) {
        // Dropped when the controller has stopped: no pass to run.
        let _ = self.passes.unbounded_send(ObjectRef::new(installation));
    }

    /// Records a failure of `name` and returns how long to wait before the
    /// next try: 1 s, 2 s, 4 s, ... up to 5 minutes.
    pub fn next_backoff(&self, name: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(name.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    pub fn reset_backoff(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// Delay after the `failures`-th consecutive failure.
pub fn backoff_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(30), Duration::from_secs(300));
    }
}
