//! The run controller: turns TestRuns (a profile's test suite or action
//! against one installation) into Jobs in the installation's namespace and
//! their results into the run's status.
//!
//! It runs in the controller process next to the installation controller,
//! only while that process leads. It watches TestRuns, the Jobs labelled
//! `ephemera.dev/run` (a Job's events wake its run), and hears of every
//! installation the installation controller's store takes in (an
//! installation that changes, say becomes Ready, wakes its unfinished
//! runs). A controller with an installation selector handles only the runs
//! of the installations it reconciles.

pub mod job;
pub mod reconcile;
pub mod result;

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller, WatchStreamExt, controller, reflector, reflector::ObjectRef, reflector::Store,
        watcher,
    },
};

use super::{
    context::Context,
    store_filled,
    trigger_backoff::{TriggerBackoff, paced},
};
use crate::{
    api::{RunPhase, TestInstallation, TestRun},
    telemetry::Health,
};
use reconcile::RunContext;

/// Runs the run controller until `stop` resolves. `installations_ready`
/// turns true once the `installations` store has been filled;
/// `installations_touched` names each installation the store has just
/// taken in (changed or deleted), whose unfinished runs then look again.
/// Its watches' failures are recorded in `health`.
pub async fn run(
    ctx: Arc<Context>,
    health: Health,
    installations: Store<DeserializeGuard<TestInstallation>>,
    mut installations_ready: tokio::sync::watch::Receiver<bool>,
    installations_touched: impl Stream<Item = String> + Send + 'static,
    retention: Duration,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let stop = futures::FutureExt::shared(Box::pin(stop));
    // A run of an installation missing from a store that is still filling
    // would look orphaned. Never `installations.wait_until_ready()`: that
    // could take the installation controller's only wake-up.
    tokio::select! {
        filled = store_filled::wait_filled(&mut installations_ready) => {
            if !filled {
                return;
            }
        }
        () = stop.clone() => return,
    }
    let (runs, writer) = reflector::store();
    let (run_events, runs_filled) = store_filled::flag_fill(reflector::reflector(
        writer,
        paced(
            watcher(
                Api::<TestRun>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            ),
            "TestRun",
            health.clone(),
        ),
    ));
    let controller = Controller::for_stream(run_events.applied_objects(), runs.clone())
        .trigger_backoff(TriggerBackoff::default());
    let wake_runs = runs.clone();
    let jobs = paced(
        watcher(
            Api::<Job>::all(client),
            watcher::Config::default().labels(job::RUN_LABEL),
        ),
        "Job of a TestRun",
        health,
    )
    .touched_objects();
    let controller = controller
        .watches_stream(jobs, |job| {
            job.labels()
                .get(job::RUN_LABEL)
                .map(|run| ObjectRef::<TestRun>::new(run))
        })
        .reconcile_on(installations_touched.flat_map(move |name| {
            let unfinished: Vec<ObjectRef<TestRun>> = wake_runs
                .state()
                .into_iter()
                .filter(|run| run.spec.installation == name)
                .filter(|run| !run.phase().is_some_and(RunPhase::is_finished))
                .map(|run| ObjectRef::from_obj(run.as_ref()))
                .collect();
            futures::stream::iter(unfinished)
        }))
        .with_config(controller::Config::default().concurrency(4))
        .graceful_shutdown_on(stop.clone());
    let rctx = Arc::new(RunContext {
        ctx,
        installations,
        runs,
        retention,
    });
    tracing::info!("run controller started");
    controller
        .run(reconcile::reconcile, error_policy, rctx)
        .take_until(store_filled::stopped_before_filled(stop, runs_filled))
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "run reconcile stream event");
            }
        })
        .await;
    tracing::info!("run controller stopped");
}

fn error_policy(
    run: Arc<TestRun>,
    error: &super::error::Error,
    rctx: Arc<RunContext>,
) -> kube::runtime::controller::Action {
    let name = format!("run/{}", run.name_any());
    let delay = rctx.ctx.next_backoff(&name);
    tracing::warn!(run = %run.name_any(), %error, retry_in = ?delay, "run reconcile failed");
    kube::runtime::controller::Action::requeue(delay)
}
