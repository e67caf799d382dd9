//! The run controller: turns TestRuns (a profile's test suite or action
//! against one installation) into Jobs in the installation's namespace and
//! their results into the run's status.
//!
//! It runs in the controller process next to the installation controller,
//! only while that process leads. It watches TestRuns, the Jobs labelled
//! `ephemera.dev/run` (a Job's events wake its run) and TestInstallations
//! (an installation that changes, say becomes Ready, wakes its unfinished
//! runs). A controller with an installation selector handles only the runs
//! of the installations it reconciles.

pub mod job;
pub mod reconcile;
pub mod result;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, controller, reflector::ObjectRef, reflector::Store, watcher},
};

use super::context::Context;
use crate::api::{RunPhase, TestInstallation, TestRun};
use reconcile::RunContext;

/// Runs the run controller until `stop` resolves.
pub async fn run(
    ctx: Arc<Context>,
    installations: Store<DeserializeGuard<TestInstallation>>,
    retention: Duration,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let stop = futures::FutureExt::shared(Box::pin(stop));
    // A run of an installation missing from a store that is still filling
    // would look orphaned. The store wakes only its last waiter (the
    // installation controller), so this one asks again each second.
    let store_ready = async {
        while tokio::time::timeout(Duration::from_secs(1), installations.wait_until_ready())
            .await
            .is_err()
        {}
    };
    tokio::select! {
        () = store_ready => {}
        () = stop.clone() => return,
    }
    let controller = Controller::new(
        Api::<TestRun>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let runs = controller.store();
    let wake_runs = runs.clone();
    let controller = controller
        .watches(
            Api::<Job>::all(client.clone()),
            watcher::Config::default().labels(job::RUN_LABEL),
            |job| {
                job.labels()
                    .get(job::RUN_LABEL)
                    .map(|run| ObjectRef::<TestRun>::new(run))
            },
        )
        .watches(
            Api::<DeserializeGuard<TestInstallation>>::all(client),
            watcher::Config::default(),
            move |installation| {
                let name = installation.name_any();
                wake_runs
                    .state()
                    .into_iter()
                    .filter(|run| run.spec.installation == name)
                    .filter(|run| !run.phase().is_some_and(RunPhase::is_finished))
                    .map(|run| ObjectRef::from_obj(run.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(controller::Config::default().concurrency(4))
        .graceful_shutdown_on(stop);
    let rctx = Arc::new(RunContext {
        ctx,
        installations,
        runs,
        retention,
    });
    tracing::info!("run controller started");
    controller
        .run(reconcile::reconcile, error_policy, rctx)
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
