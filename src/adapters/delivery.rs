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

/// What an adapter delivers for one installation.
pub trait Delivery: Send + Sync + 'static {
    /// Tells what is owed about `ti` (`gone`: deleted from the API server).
    /// Returns when to look again without a change, if ever.
    fn deliver(
        self: Arc<Self>,
        ti: Arc<TestInstallation>,
        gone: bool,
    ) -> impl Future<Output = anyhow::Result<Option<Instant>>> + Send;
}

type Step = (String, anyhow::Result<Option<Instant>>);

/// Starts a step for `name` with its newest object.
fn start<D: Delivery>(
    delivery: &Arc<D>,
    name: String,
    latest: &HashMap<String, Latest>,
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

struct Latest {
    ti: Arc<TestInstallation>,
    gone: bool,
}

/// Runs until the installation watch ends (it does not on its own); watch
/// failures are recorded in `health`.
pub async fn run<D: Delivery>(
    client: Client,
    label_selector: String,
    delivery: Arc<D>,
    health: Health,
) {
    let mut events = installation_events(client, &label_selector, health).boxed();
    let mut latest: HashMap<String, Latest> = HashMap::new();
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
                    Some(InstallationEvent::Applied(ti)) => (ti, false),
                    Some(InstallationEvent::Deleted(ti)) => (ti, true),
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
