//! The GitHub adapter: `ephemera github --listen ADDR --config FILE`.
//!
//! Pull-request labels and `/testenv` comment commands create, roll and
//! delete TestInstallations; one sticky comment and a GitHub Deployment per
//! installation report their state. The adapter never touches what an
//! installation is made of.
//!
//! - `webhook`: authenticated intake and the bounded queue
//! - `events`, `commands`, `naming`, `render`: pure decisions and text
//! - `actions`: what the worker does with the cluster for one intent
//! - `reporter`: watch installations, tell GitHub
//! - `client`: GitHub REST, App authentication, rate limits

pub mod actions;
pub mod client;
pub mod commands;
pub mod config;
pub mod events;
pub mod metrics;
pub mod naming;
pub mod render;
pub mod reporter;
pub mod signature;
pub mod webhook;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use kube::{Api, Client, api::ListParams};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::mpsc};
use tracing::Instrument;

use crate::{
    api::TestInstallation,
    telemetry::{self, Health},
};
pub use config::Config;

/// Field manager of every write the adapter makes.
pub const FIELD_MANAGER: &str = "ephemera-github";
/// The adapter's name in the shared notify memory.
pub const ADAPTER: &str = "github";

/// Keys the adapter sets on TestInstallations (as labels and annotations)
/// to find the pull request again.
pub mod annotations {
    /// `owner/name` (annotation); `owner.name` (label).
    pub const REPOSITORY: &str = "ephemera.dev/github-repository";
    /// The PR number (label and annotation).
    pub const PULL_NUMBER: &str = "ephemera.dev/github-pr";
    /// The label that asked for the installation.
    pub const LABEL: &str = "ephemera.dev/github-label";
    /// For fork PRs: the commit someone with write permission approved.
    pub const APPROVED_SHA: &str = "ephemera.dev/github-approved-sha";
    /// The PR's head commit when last seen (may be newer than the deployed one).
    pub const LATEST_HEAD: &str = "ephemera.dev/github-latest-head";
    /// Holds a deleted installation until its teardown is reported.
    pub const FINALIZER: &str = "ephemera.dev/github-report";
    /// The `instance` of the adapter that created it (label).
    pub const INSTANCE: &str = "ephemera.dev/github-instance";
}

/// Loads the config, connects to the cluster and serves until SIGTERM.
pub async fn serve(listen: SocketAddr, config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)
        .with_context(|| format!("GitHub adapter config {}", config_path.display()))?;
    let client = Client::try_default()
        .await
        .context("cannot build a Kubernetes client")?;
    let listener = telemetry::bind(listen).await?;
    run(listener, config, client, telemetry::shutdown_signal()).await
}

/// Runs the adapter on `listener` until `shutdown` resolves. Tests inject the
/// listener, the config and the client.
pub async fn run(
    listener: TcpListener,
    config: Config,
    client: Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let config = Arc::new(config);
    let github = Arc::new(client::GitHub::new(
        &config.api_base_url,
        &config.auth,
        metrics.clone(),
    )?);
    let installations: Api<TestInstallation> = Api::all(client.clone());
    installations
        .list(&ListParams::default().limit(1))
        .await
        .context("cannot list TestInstallations: are the CRDs installed, and may this account list them?")?;
    let ctx = Arc::new(actions::Ctx {
        config: config.clone(),
        github,
        installations,
        profiles: Api::all(client.clone()),
    });

    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let seen = webhook::seen_set();
    // Dropping `run` (a crash, an aborted task) stops both with it.
    let _worker = AbortOnDrop(tokio::spawn(work(
        ctx.clone(),
        rx,
        tx.clone(),
        seen.clone(),
        metrics.clone(),
    )));
    let health = Health::default();
    let _reporter = AbortOnDrop(tokio::spawn(reporter::run(
        ctx.clone(),
        client,
        health.clone(),
    )));

    let router = webhook::routes(webhook::Intake::new(config.clone(), tx, seen, metrics))
        .merge(telemetry::probe_routes(health.clone(), Arc::new(registry)));
    let addr = listener.local_addr()?;
    health.set_ready(true);
    tracing::info!(%addr, repositories = config.repositories.len(), "GitHub adapter serving");
    let served = telemetry::serve(listener, router, shutdown).await;
    served.context("serving HTTP")
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long an intent waits before it is tried again while its installation
/// is still being deleted, and how often.
const RETRY_WAIT: Duration = Duration::from_secs(2);
const RETRY_ATTEMPTS: u32 = 300;

/// The worker: one intent at a time, in delivery order, so events of one PR
/// never race each other. A delivery counts as handled only when its action
/// completed or its failure was answered.
async fn work(
    ctx: Arc<actions::Ctx>,
    mut rx: mpsc::Receiver<webhook::Job>,
    tx: mpsc::Sender<webhook::Job>,
    seen: webhook::SeenSet,
    metrics: metrics::Metrics,
) {
    let requeue = |job: webhook::Job, wait: Duration| {
        let tx = tx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if tx.send(job).await.is_ok() {
                metrics.queue_depth().inc();
            }
        });
    };
    while let Some(mut job) = rx.recv().await {
        metrics.queue_depth().dec();
        let span = tracing::info_span!("delivery", id = %job.delivery,
            repository = %job.intent.repository(), number = job.intent.number());
        let key = job.key().to_string();
        match actions::process(&ctx, &key, &job.intent)
            .instrument(span.clone())
            .await
        {
            Ok(actions::Outcome::Done) => metrics.processed("done"),
            Ok(actions::Outcome::RetryLater) if job.attempt < RETRY_ATTEMPTS => {
                metrics.processed("retry");
                job.attempt += 1;
                requeue(job, RETRY_WAIT);
            }
            Ok(actions::Outcome::RetryLater) => {
                metrics.processed("gave_up");
                tracing::error!("gave up waiting for the old installation to be deleted");
                webhook::forget(&seen, &job);
            }
            Err(err) if job.failures + 1 < ctx.config.delivery_attempts => {
                metrics.processed("retry");
                let wait = ctx
                    .config
                    .delivery_retry_wait
                    .saturating_mul(2u32.saturating_pow(job.failures.min(10)));
                tracing::warn!(parent: &span, error = format!("{err:#}"), ?wait,
                    "handling the delivery failed; trying again");
                job.failures += 1;
                requeue(job, wait);
            }
            Err(err) => {
                metrics.processed("failed");
                tracing::error!(parent: &span, error = format!("{err:#}"),
                    "handling the delivery failed; giving up");
                let answered = match &job.intent {
                    events::Intent::Comment(c) => actions::reply(
                        &ctx,
                        &key,
                        &c.repository,
                        c.number,
                        &format!(
                            "@{}: this command could not be carried out ({err}). Try again later.",
                            c.author
                        ),
                    )
                    .await
                    .is_ok(),
                    events::Intent::Pull(_) => false,
                };
                if !answered {
                    webhook::forget(&seen, &job);
                }
            }
        }
    }
}
