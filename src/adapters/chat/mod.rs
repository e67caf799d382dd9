//! The chat adapter: Mattermost and Slack slash commands that create and
//! manage TestInstallations, and direct messages that tell the requester how
//! their installation is doing (`ephemera chat --listen ADDR --config FILE`).

pub mod auth;
pub mod command;
pub mod config;
pub mod handler;
mod http;
pub mod manage;
pub mod mattermost;
pub mod messages;
pub mod messenger;
pub mod metrics;
pub mod notifier;
pub mod run_results;
mod runs;
pub mod slack;

use std::{collections::HashMap, future::Future, net::SocketAddr, path::Path, sync::Arc};

use kube::{Api, Client, api::ListParams};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{
    api::TestInstallation,
    telemetry::{self, Health},
};
use config::Config;
use messenger::{Messenger, Platform};

/// The field manager of every write the chat adapter makes.
pub const FIELD_MANAGER: &str = "ephemera-chat";
/// Holds a chat-created installation until its deletion has been told.
pub const FINALIZER: &str = "ephemera.dev/chat-notify";
/// This adapter's name in the notify memory annotation.
pub const ADAPTER: &str = "chat";
/// Value of the `ephemera.dev/source` label on installations made from chat.
pub const SOURCE_CHAT: &str = "chat";

/// Label naming the adapter instance that created an installation.
pub const LABEL_INSTANCE: &str = "ephemera.dev/chat-instance";

pub const ANNOTATION_PLATFORM: &str = "ephemera.dev/chat-platform";
pub const ANNOTATION_USER_ID: &str = "ephemera.dev/chat-user-id";
pub const ANNOTATION_USER_NAME: &str = "ephemera.dev/chat-user-name";
pub const ANNOTATION_TEAM_ID: &str = "ephemera.dev/chat-team-id";
pub const ANNOTATION_CHANNEL: &str = "ephemera.dev/chat-channel";
/// The slash command's trigger, e.g. `/testenv`, for hints in messages.
pub const ANNOTATION_COMMAND: &str = "ephemera.dev/chat-command";
/// How the people in `spec.sharedWith` were named when they were added
/// (JSON: requester id → `@name`), for `status`.
pub const ANNOTATION_SHARED_NAMES: &str = "ephemera.dev/chat-shared-names";

/// `ephemera chat`: loads the config, connects to the cluster from the
/// environment (in-cluster or `KUBECONFIG`) and serves until SIGTERM.
pub async fn run(listen: SocketAddr, config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let client = Client::try_default()
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to Kubernetes: {err}"))?;
    let listener = telemetry::bind(listen).await?;
    serve(client, config, listener, telemetry::shutdown_signal()).await
}

/// Serves the command endpoints and probes on `listener` and sends direct
/// messages, until `shutdown` resolves. Refuses to start when a configured
/// secret is missing or empty.
pub async fn serve(
    client: Client,
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let secrets = config.resolve_secrets()?;
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let health = Health::default();

    let mut messengers = HashMap::new();
    if let (Some(mm), Some(s)) = (&config.mattermost, &secrets.mattermost) {
        messengers.insert(
            Platform::Mattermost,
            Arc::new(Messenger::Mattermost(mattermost::MattermostApi::new(
                &mm.url,
                s.bot_token.clone(),
            ))),
        );
    }
    if let (Some(slack), Some(s)) = (&config.slack, &secrets.slack) {
        messengers.insert(
            Platform::Slack,
            Arc::new(Messenger::Slack(slack::SlackApi::new(
                &slack.api_url,
                s.bot_token.clone(),
            ))),
        );
    }
    let run_results = run_results::RunResults::new(
        client.clone(),
        config.instance.clone(),
        messengers.clone(),
        metrics.clone(),
    );
    let notifier = notifier::Notifier::new(
        client.clone(),
        config.instance.clone(),
        messengers.clone(),
        metrics.clone(),
        config.expiry_warning,
        config.give_up_after,
    );

    let state = Arc::new(handler::AppState {
        client: client.clone(),
        config: Arc::new(config),
        secrets,
        replay: auth::ReplayGuard::new(2 * auth::SLACK_WINDOW_SECS, 100_000),
        create_locks: Default::default(),
        messengers,
        metrics,
    });
    let router =
        handler::routes(state).merge(telemetry::probe_routes(health.clone(), Arc::new(registry)));

    // Ready once the API server answers with the TestInstallation kind.
    Api::<TestInstallation>::all(client)
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|err| {
            anyhow::anyhow!("cannot list TestInstallations (are the CRDs installed?): {err}")
        })?;
    health.set_ready(true);

    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "chat adapter serving");
    let server = telemetry::serve(listener, router, shutdown);
    tokio::select! {
        result = server => result,
        () = notifier.run(health.clone()) => anyhow::bail!("the installation watch ended"),
        () = run_results.run(health) => anyhow::bail!("the TestRun watch ended"),
    }
}
