//! The delivery engine both adapters use: watch TestInstallations, and for
//! each one run the adapter's [`Delivery`] (which decides what is owed and
//! says it), one step at a time per installation but concurrently across
//! installations, so one slow platform or a long rate-limit wait never
//! delays another installation's message.
//!
//! - A change that arrives while a step for the same installation runs is
//!   handled right after it, with the newest object.
//! - A failed step is retried with the shared backoff policy; a step may
//!   also ask to be run again at a given time (an expiry warning).
//! - Dropping the engine aborts every running step. That is safe because a
//!   delivery records its intent on the installation before each side
//!   effect and reconciles it after a restart (see `notify`).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
};

use backon::ExponentialBackoff;
use futures::StreamExt;
use kube::{Client, ResourceExt};
use tokio::{task::JoinSet, time::Instant};

use super::{
    backoff,
    notify::{InstallationEvent, installation_events},
};
use crate::{api::TestInstallation, telemetry::Health};

/// What an adapter delivers for one installation (or, with `K`, for one
/// object of another kind, such as a TestRun).
pub trait Delivery<K = TestInstallation>: Send + Sync + 'static {
    /// Tells what is owed about `ti` (`gone`: deleted from the API server).
    /// Returns when to look again without a change, if ever.
    fn deliver(
        self: Arc<Self>,
        ti: Arc<K>,
        gone: bool,
    ) -> impl Future<Output = anyhow::Result<Option<Instant>>> + Send;
}

type Step = (String, anyhow::Result<Option<Instant>>);

/// Starts a step for `name` with its newest object.
fn start<K: Send + Sync + 'static, D: Delivery<K>>(
    delivery: &Arc<D>,
    name: String,
    latest: &HashMap<String, Latest<K>>,
    running: &mut HashSet<String>,
    steps: &mut JoinSet<Step>,
) {
    let Some(entry) = latest.get(&name) else {
        return;
    };
    running.insert(name.clone());
    let step = delivery.clone().deliver(entry.ti.clone(), entry.gone);
    steps.spawn(async move { (name, step.await) });
}

struct Latest<K> {
    ti: Arc<K>,
    gone: bool,
}

/// A change the engine acts on: an object created or changed, or deleted.
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

/// Runs until the installation watch ends (it does not on its own); watch
/// failures are recorded in `health`.
pub async fn run<D: Delivery>(
    client: Client,
    label_selector: String,
    delivery: Arc<D>,
    health: Health,
) {
    let events = installation_events(client, &label_selector, health).map(|event| match event {
        InstallationEvent::Applied(ti) => Change::Applied(ti),
        InstallationEvent::Deleted(ti) => Change::Deleted(ti),
    });
    run_on(events, delivery).await;
}

/// Watches the cluster-scoped objects of kind `K` matching `label_selector`
/// (re-listing with backoff on errors; every object is seen once at start,
/// so nothing is missed across restarts) and runs `delivery` for them.
/// Watch failures are recorded in `health`.
pub async fn run_watch<K, D>(
    client: Client,
    label_selector: String,
    delivery: Arc<D>,
    health: Health,
) where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
    D: Delivery<K>,
{
    use kube::runtime::{WatchStreamExt, watcher};
    let api: kube::Api<K> = kube::Api::all(client);
    let config = watcher::Config::default().labels(&label_selector);
    let events = watcher(api, config)
        .backoff(backoff::WatchBackoff::default())
        .filter_map(move |event| {
            let health = health.clone();
            async move {
                match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        Some(Change::Applied(Arc::new(o)))
                    }
                    Ok(watcher::Event::Delete(o)) => Some(Change::Deleted(Arc::new(o))),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                    Err(err) => {
                        health.watch_failed();
                        tracing::warn!(error = %err, "watch failed; retrying");
                        None
                    }
                }
            }
        });
    run_on(events, delivery).await;
}

/// Runs `delivery` for every change of `events` until the stream ends.
pub async fn run_on<K, D>(events: impl futures::Stream<Item = Change<K>> + Send, delivery: Arc<D>)
where
    K: kube::Resource + Send + Sync + 'static,
    D: Delivery<K>,
{
    let mut events = events.boxed();
    let mut latest: HashMap<String, Latest<K>> = HashMap::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut wakeups: HashMap<String, Instant> = HashMap::new();
    let mut failures: HashMap<String, ExponentialBackoff> = HashMap::new();
    let mut steps: JoinSet<Step> = JoinSet::new();

    loop {
        let next_wakeup = wakeups.values().min().copied();
        tokio::select! {
            event = events.next() => {
                let (ti, gone) = match event {
                    Some(Change::Applied(ti)) => (ti, false),
                    Some(Change::Deleted(ti)) => (ti, true),
                    None => return,
                };
                let name = ti.name_any();
                latest.insert(name.clone(), Latest { ti, gone });
                wakeups.remove(&name);
                if running.contains(&name) {
                    dirty.insert(name);
                } else {
                    start(&delivery, name, &latest, &mut running, &mut steps);
                }
            }
            Some(joined) = steps.join_next(), if !steps.is_empty() => {
                let Ok((name, result)) = joined else {
                    // A step panicked; its installation is looked at again
                    // on its next change.
                    tracing::error!("a delivery step panicked");
                    continue;
                };
                running.remove(&name);
                match result {
                    Ok(next) => {
                        failures.remove(&name);
                        if latest.get(&name).is_some_and(|l| l.gone) && !dirty.contains(&name) {
                            latest.remove(&name);
                        } else if let Some(at) = next {
                            wakeups.insert(name.clone(), at);
                        }
                    }
                    Err(err) => {
                        let wait = failures
                            .entry(name.clone())
                            .or_insert_with(backoff::delivery)
                            .next()
                            .unwrap_or(std::time::Duration::from_secs(300));
                        tracing::warn!(installation = %name, error = %format!("{err:#}"), ?wait,
                            "delivery failed; will retry");
                        wakeups.insert(name.clone(), Instant::now() + wait);
                    }
                }
                if dirty.remove(&name) {
                    wakeups.remove(&name);
                    start(&delivery, name, &latest, &mut running, &mut steps);
                }
            }
            () = tokio::time::sleep_until(next_wakeup.unwrap_or_else(Instant::now)), if next_wakeup.is_some() => {
                let now = Instant::now();
                let due: Vec<String> = wakeups
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in due {
                    wakeups.remove(&name);
                    if running.contains(&name) {
                        dirty.insert(name);
                    } else {
                        start(&delivery, name, &latest, &mut running, &mut steps);
                    }
                }
            }
        }
    }
}
