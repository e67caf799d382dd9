//! The controller: reconciles TestInstallations into running installations.
//!
//! Children are namespaced while their owner is cluster-scoped, so `.owns()`
//! cannot map them back (it looks the owner up in the child's namespace);
//! children are watched by the `ephemera.dev/installation` label instead.

pub mod allow_list;
pub mod applied;
pub mod apply;
pub mod baselines;
pub mod build;
pub mod cache;
pub mod changes;
pub mod config;
pub mod context;
pub mod error;
pub mod leader;
pub mod lifecycle;
pub mod links;
pub mod metrics;
pub mod namespace_index;
pub mod observe;
pub mod own_writes;
pub mod plan;
pub mod predicates;
pub mod reconcile;
pub mod refresh;
pub mod runs;
pub mod secret_values;
pub mod status;
pub mod store_filled;
pub mod summary;
pub mod trigger_backoff;
pub mod urgent;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    core::DeserializeGuard,
    runtime::{Controller, PredicateConfig, WatchStreamExt, controller, reflector, watcher},
};
use prometheus_client::registry::Registry;

use crate::{
    api::{Phase, TestInstallation},
    telemetry,
};
use config::ControllerConfig;
use context::Context;
use metrics::{Metrics, PhaseLabels};
use own_writes::OwnWrites;

type Guarded = DeserializeGuard<TestInstallation>;

/// Events of one installation closer together than this run one pass: the
/// burst of child events after an apply is looked at once.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Runs the controller until SIGTERM/Ctrl-C, serving probes and metrics on
/// `listen`.
pub async fn run(
    client: Client,
    mut config: ControllerConfig,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    if config.own_namespace.is_none() {
        config.own_namespace = config::own_namespace();
        config.check_secret_namespaces(config.own_namespace.as_deref())?;
    }
    let listener = telemetry::bind(listen).await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    run_with(
        client,
        config,
        listener,
        registry,
        metrics,
        telemetry::shutdown_signal(),
    )
    .await
}

/// Runs the controller until `shutdown` resolves, serving probes and the
/// metrics of `registry` (where `metrics` are registered) on `listener`.
pub async fn run_with(
    client: Client,
    config: ControllerConfig,
    listener: tokio::net::TcpListener,
    registry: Registry,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown)
        as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>);
    let health = telemetry::Health::default();
    let router = telemetry::probe_routes(health.clone(), Arc::new(registry));
    let server = tokio::spawn(telemetry::serve(listener, router, shutdown.clone()));

    let installations: Api<Guarded> = Api::all(client.clone());
    if let Err(err) = Api::<TestInstallation>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
    {
        anyhow::bail!(
            "cannot list TestInstallations ({err}); are the CRDs installed? `ephemera crd | kubectl apply --server-side -f -`"
        );
    }

    let leader = match &config.leader_election {
        None => None,
        Some(settings) => {
            // A standby is healthy: ready to take over.
            health.set_ready(true);
            match leader::acquire(client.clone(), settings, shutdown.clone()).await? {
                Some(leader) => Some(leader),
                None => {
                    let _ = server.await;
                    return Ok(());
                }
            }
        }
    };
    let stop = stop_on(shutdown.clone(), leader.as_ref().map(leader::Leader::lost));

    let concurrency = config.concurrency;
    let mut installations_config = watcher::Config::default().any_semantic();
    if let Some(selector) = &config.installation_selector {
        installations_config = installations_config.labels(selector);
    }
    let sweep_interval = crate::api::duration::parse_duration(&config.orphan_sweep_interval)?;
    let run_retention = crate::api::duration::parse_duration(&config.run_retention)?;
    // Passes run on spec, label, finalizer and deletion changes only, not
    // on status or annotation changes (see `predicates`).
    let (urgent, urgent_inbox) = urgent::channel();
    let (store, writer) = reflector::store();
    let own_writes = OwnWrites::default();
    // Other tasks wait on this flag, never on the store (see `store_filled`).
    let installation_watch =
        watcher(installations, installations_config).modify(|guard: &mut Guarded| {
            if let Ok(ti) = &mut guard.0 {
                cache::without_managed_fields(ti);
            }
        });
    let (installation_events, installations_filled) =
        store_filled::flag_fill(reflector::reflector(
            writer,
            trigger_backoff::paced(installation_watch, "TestInstallation", health.clone()),
        ));
    // Every installation event, once the store has it, also wakes that
    // installation's runs: the run controller reads this store, so it must
    // not be woken by a watch of its own that can run ahead of it.
    let (installation_touched, installations_touched) = futures::channel::mpsc::unbounded();
    let installation_events = installation_events
        .inspect_ok(move |event| {
            if let watcher::Event::Apply(guard)
            | watcher::Event::InitApply(guard)
            | watcher::Event::Delete(guard) = event
            {
                // Dropped when the run controller has stopped: nothing to wake.
                let _ = installation_touched.unbounded_send(guard.name_any());
            }
        })
        .applied_objects()
        .inspect_ok({
            let urgent = urgent.clone();
            move |guard| urgent.installation_seen(&guard.name_any())
        })
        .predicate_filter(
            predicates::installation_changes(),
            PredicateConfig::default(),
        )
        // After the predicate, which must see the new finalizers.
        .try_filter({
            let own_writes = own_writes.clone();
            move |guard| std::future::ready(!own_writes.is_echo(&guard.name_any(), guard))
        })
        // Deletions are the urgent lane's.
        .try_filter(|guard| std::future::ready(guard.meta().deletion_timestamp.is_none()));
    let controller = Controller::for_stream(installation_events, store.clone())
        .with_config(
            controller::Config::default()
                .concurrency(concurrency)
                .debounce(DEBOUNCE),
        )
        .trigger_backoff(trigger_backoff::TriggerBackoff::default());
    let (passes, pass_wakeups) = futures::channel::mpsc::unbounded();
    let (refreshes, refresh_inbox) = refresh::channel();
    let (controller, caches) = cache::watch_all(
        controller,
        (&client, &health),
        &config,
        (store.clone(), own_writes),
        (urgent.clone(), refreshes),
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        metrics.clone(),
        store.clone(),
        passes,
        caches,
        urgent,
    ));
    let urgent_lane = tokio::spawn(urgent::run(urgent_inbox, ctx.clone()));
    let refresher = tokio::spawn(refresh::run(
        refresh_inbox,
        ctx.clone(),
        (DEBOUNCE, usize::from(concurrency)),
        stop.clone(),
    ));
    let controller = controller
        .reconcile_on(pass_wakeups)
        .graceful_shutdown_on(stop.clone());

    let sweep_ctx = ctx.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_interval);
        loop {
            tick.tick().await;
            match lifecycle::sweep::sweep(&sweep_ctx.client, &sweep_ctx.recorder).await {
                Ok(report) => {
                    if !report.deleted.is_empty() {
                        tracing::info!(
                            count = report.deleted.len(),
                            "orphan sweep deleted namespaces"
                        );
                    }
                    sweep_ctx
                        .metrics
                        .unowned_namespaces
                        .set(report.unowned.len() as i64);
                }
                Err(err) => tracing::warn!(%err, "orphan sweep failed; will try again"),
            }
        }
    });

    let gauge_store = store.clone();
    let gauge_metrics = metrics.clone();
    let gauges = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let mut counts = std::collections::BTreeMap::new();
            for guard in gauge_store.state() {
                if let Ok(ti) = &guard.0 {
                    *counts
                        .entry(ti.phase().unwrap_or(Phase::Pending))
                        .or_insert(0i64) += 1;
                }
            }
            for phase in Phase::ALL {
                gauge_metrics
                    .installations
                    .get_or_create(&PhaseLabels {
                        phase: phase.to_string(),
                    })
                    .set(counts.get(&phase).copied().unwrap_or(0));
            }
        }
    });

    let runs = tokio::spawn(runs::run(
        ctx.clone(),
        health.clone(),
        store.clone(),
        installations_filled.clone(),
        installations_touched,
        run_retention,
        stop.clone(),
    ));

    health.set_ready(true);
    tracing::info!("controller started");
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .take_until(store_filled::stopped_before_filled(
            stop,
            installations_filled,
        ))
        .for_each(|result| {
            let health = health.clone();
            async move { observe_run(result, &health) }
        })
        .await;
    health.set_ready(false);
    let _ = runs.await;
    gauges.abort();
    sweeper.abort();
    urgent_lane.abort();
    refresher.abort();
    tracing::info!("controller stopped");
    if let Some(leader) = leader {
        if leader.is_lost() {
            server.abort();
            anyhow::bail!(
                "lost the leader lease; exiting so that a fresh process starts as a standby"
            );
        }
        leader.release().await;
    }
    let _ = server.await;
    Ok(())
}

/// Resolves on `shutdown`, or when this process stops being the leader.
fn stop_on(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    lost: Option<futures::future::BoxFuture<'static, ()>>,
) -> impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static {
    let lost = lost.unwrap_or_else(|| Box::pin(futures::future::pending()));
    let either = async move {
        tokio::select! {
            () = shutdown => {}
            () = lost => {}
        }
    };
    futures::FutureExt::shared(
        Box::pin(either) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    )
}

/// Watch failures make the process unready for a while (see
/// `telemetry::Health`); other results are only logged.
fn observe_run<T, E1: std::error::Error + 'static, E2: std::error::Error + 'static>(
    result: Result<T, controller::Error<E1, E2>>,
    health: &telemetry::Health,
) {
    match result {
        Ok(_) => {}
        Err(controller::Error::QueueError(err)) => {
            health.watch_failed();
            tracing::warn!(%err, "a watch failed; it is retried within a second");
        }
        Err(err) => tracing::debug!(%err, "reconcile stream event"),
    }
}
