//! Status refreshes: what the workloads of a settled installation show
//! (rolled out, a pod failing, scaled to zero) is recorded in its status
//! without a pass.
//!
//! Once a pass has applied everything an installation's spec asks for (its
//! baseline is settled, see `baselines`), the events that follow are the
//! workloads catching up with it. A pass for them would only plan, find
//! nothing to apply and write the status; a refresh writes the same status
//! (`refresh`) from the stores, beside the controller's queue.
//! Whatever a refresh cannot take (the spec or profile changed, a step
//! follows from the new status, the status write failed) runs a pass.
//!
//! Requests are debounced like the controller's queue: the burst of events
//! of one rollout is one refresh. A refresh holds the installation's lock
//! (`Context::exclusive`), so it never runs beside a pass of it.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::{
    StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{context::Context, error::Result, lifecycle::ttl, plan, reconcile};
use crate::api::TestInstallation;

/// How many times a refresh looks again, a debounce apart, for a store
/// that does not show the last pass's status yet, before a pass takes over.
const STORE_BEHIND_TRIES: u32 = 10;

/// Handle to ask for a refresh.
#[derive(Clone, Debug)]
pub struct Refreshes(UnboundedSender<Request>);

#[derive(Debug)]
pub struct Request {
    installation: String,
    /// Earlier tries that found the store behind.
    behind: u32,
}

/// The receiving end, to hand to `run`.
pub struct Inbox(UnboundedReceiver<Request>, Refreshes);

pub fn channel() -> (Refreshes, Inbox) {
    let (tx, rx) = unbounded();
    let refreshes = Refreshes(tx);
    (refreshes.clone(), Inbox(rx, refreshes))
}

impl Refreshes {
    /// Asks for a refresh of `installation` (merged with any asked for
    /// within the debounce).
    pub fn request(&self, installation: &str) {
        self.send(installation, 0);
    }

    fn send(&self, installation: &str, behind: u32) {
        // Dropped when the controller has stopped: nothing to record.
        let _ = self.0.unbounded_send(Request {
            installation: installation.to_string(),
            behind,
        });
    }
}

/// Runs refreshes, `debounce` after the first request of each burst, at
/// most `parallel` at once, until `stop` (this process stops, or is no
/// longer the leader): none starts after it.
pub async fn run(
    inbox: Inbox,
    ctx: Arc<Context>,
    (debounce, parallel): (Duration, usize),
    stop: impl Future<Output = ()> + Clone + Send + 'static,
) {
    let Inbox(requests, refreshes) = inbox;
    let mut requests = std::pin::pin!(requests.take_until(stop.clone()));
    let pending = Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    while let Some(Request {
        installation: name,
        behind,
    }) = requests.next().await
    {
        if !pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone())
        {
            continue;
        }
        let (ctx, pending, permits) = (ctx.clone(), pending.clone(), permits.clone());
        let (refreshes, stop) = (refreshes.clone(), stop.clone());
        tokio::spawn(async move {
            let permit = async {
                tokio::time::sleep(debounce).await;
                permits.acquire_owned().await
            };
            let _permit = tokio::select! {
                () = stop => return,
                permit = permit => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            // Requests from here on are judged against this refresh's look
            // or come after it: they start a new burst.
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            if refresh_one(&name, &ctx, behind).await {
                refreshes.send(&name, behind + 1);
            }
        });
    }
}

/// Refreshes `name`; returns whether to look again later (the store does
/// not show the last pass's status yet).
async fn refresh_one(name: &str, ctx: &Context, behind: u32) -> bool {
    let _exclusive = ctx.exclusive(name).await;
    // After the lock: a pass that held it may have moved the installation on.
    let Some(guard) = ctx.installation(name) else {
        return false;
    };
    let Ok(installation) = &guard.0 else {
        return false;
    };
    match refresh(installation, ctx).await {
        Ok(Refreshed::Recorded) => {
            ctx.metrics.refreshes.inc();
        }
        Ok(Refreshed::Unchanged) => return false,
        // A pass would read the same store: look again in a moment.
        Ok(Refreshed::StoreBehind) if behind + 1 < STORE_BEHIND_TRIES => return true,
        Ok(Refreshed::StoreBehind | Refreshed::NeedsAPass) => ctx.run_a_pass(name),
        Err(err) => {
            ctx.metrics.refresh_errors.inc();
            // The pass that runs instead retries with backoff.
            tracing::debug!(installation = %name, %err, "status refresh failed; a pass takes over");
            ctx.caches.forget_observed(name);
            ctx.run_a_pass(name);
        }
    }
    false
}

/// What a status refresh did (see `refresh`).
#[derive(Debug, PartialEq, Eq)]
enum Refreshed {
    /// The status records what the workloads show now.
    Recorded,
    /// Nothing changed since the last look, whose status is written.
    Unchanged,
    /// The store does not show the status of the last pass yet.
    StoreBehind,
    /// A pass has to run: the spec, the profile or the lifetime changed
    /// since the last pass applied everything, or the new status moves the
    /// installation on to a step a pass takes.
    NeedsAPass,
}

/// Records in the status what the workloads of a settled installation show
/// now: the status of `reconcile::pass` without its reads and applies. Only the stores
/// are read; the one write is the status (with its transition Event).
async fn refresh(installation: &TestInstallation, ctx: &Context) -> Result<Refreshed> {
    let name = installation.name_any();
    let generation = installation.metadata.generation;
    let status_generation = installation
        .status
        .as_ref()
        .and_then(|s| s.observed_generation);
    if installation.metadata.deletion_timestamp.is_some() {
        // The urgent lane's.
        return Ok(Refreshed::Unchanged);
    }
    if status_generation != generation
        && ctx
            .caches
            .observed
            .is_settled_at(&name, generation.unwrap_or_default())
    {
        // The status is computed from the last one, and a pass would read
        // the same store.
        return Ok(Refreshed::StoreBehind);
    }
    let profile_name = plan::profile_name(installation);
    let Some(profile) = ctx.caches.profile(profile_name) else {
        return Ok(Refreshed::NeedsAPass);
    };
    let lifetime = ttl::lifetime(installation, Some((profile_name, &profile.spec.ttl)));
    if lifetime.problem.is_some() {
        return Ok(Refreshed::NeedsAPass);
    }
    let Ok(plan) = plan::plan(installation, &profile, &ctx.config) else {
        return Ok(Refreshed::NeedsAPass);
    };
    let uid = installation.uid().unwrap_or_default();
    let look = || ctx.caches.observe(&plan.namespace, &uid);
    let Some((observed, changed)) =
        ctx.caches
            .observed
            .look_again(&name, &reconcile::settled(installation, &profile), look)
    else {
        return Ok(Refreshed::NeedsAPass);
    };
    if !changed {
        // The pass or refresh that took the last look wrote its status (a
        // failed write forgets the look, see `refresh_one`, or retries the pass).
        return Ok(Refreshed::Unchanged);
    }
    let (outcome, moves_on) = reconcile::applied_outcome(installation, &plan, &observed);
    if moves_on {
        return Ok(Refreshed::NeedsAPass);
    }
    // The requeue the last pass set (the resync, or the expiry deadline)
    // still stands.
    reconcile::finish(ctx, installation, outcome, &lifetime, Timestamp::now()).await?;
    Ok(Refreshed::Recorded)
}
