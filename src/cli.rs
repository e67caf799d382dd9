//! Command-line interface: `ephemera <subcommand>`.

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "ephemera",
    version,
    about = "Ephemeral test installations on Kubernetes"
)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EPHEMERA_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller that turns TestInstallations into installations.
    Controller {
        /// Controller settings (YAML); defaults suit the local control plane.
        #[arg(long, env = "EPHEMERA_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, default_value = "127.0.0.1:8080", env = "EPHEMERA_LISTEN")]
        listen: std::net::SocketAddr,
        /// Before starting, bring the cluster's ephemera CRDs to the ones this
        /// binary was built with (never to an older version); Helm does not
        /// upgrade CRDs. Needs get/update on its CRDs.
        #[arg(long, env = "EPHEMERA_APPLY_CRDS")]
        apply_crds: bool,
    },
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crd,
    /// Print the version of this binary.
    Version,
    /// Serve Mattermost and Slack slash commands and tell requesters about
    /// their installations by direct message.
    Chat {
        /// Address to serve the command endpoints and probes on.
        #[arg(long, default_value = "0.0.0.0:8080", env = "EPHEMERA_CHAT_LISTEN")]
        listen: std::net::SocketAddr,
        /// The adapter's YAML configuration (see examples/chat-config.yaml).
        #[arg(long, env = "EPHEMERA_CHAT_CONFIG")]
        config: std::path::PathBuf,
    },
    /// Serve GitHub webhooks: PR labels and `/testenv` comments drive
    /// TestInstallations; a sticky comment and a Deployment report them.
    Github {
        /// Address to serve the webhook, probes and metrics on.
        #[arg(long, default_value = "0.0.0.0:8080", env = "EPHEMERA_GITHUB_LISTEN")]
        listen: std::net::SocketAddr,
        /// The adapter's YAML config (see examples/github-config.yaml).
        #[arg(long, env = "EPHEMERA_GITHUB_CONFIG")]
        config: std::path::PathBuf,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Controller {
            config,
            listen,
            apply_crds,
        } => {
            let config = match config {
                Some(path) => crate::controller::config::ControllerConfig::load(&path)?,
                None => crate::controller::config::ControllerConfig::default(),
            };
            let client = kube::Client::try_default().await.map_err(|err| {
                anyhow::anyhow!("cannot reach Kubernetes (KUBECONFIG or in-cluster config): {err}")
            })?;
            if apply_crds {
                for (name, outcome) in crate::api::crd_upgrade::apply_crds(&client).await? {
                    tracing::info!(crd = %name, %outcome, "CRD checked");
                }
            }
            crate::controller::run(client, config, listen).await
        }
        Command::Crd => {
            print!("{}", crate::api::crds_yaml());
            Ok(())
        }
        Command::Version => {
            println!("ephemera {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Chat { listen, config } => crate::adapters::chat::run(listen, &config).await,
        Command::Github { listen, config } => crate::adapters::github::serve(listen, &config).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_controller_arguments_parse() {
        let cli = Cli::try_parse_from([
            "ephemera",
            "controller",
            "--config",
            "/etc/ephemera/controller.yaml",
            "--listen",
            "0.0.0.0:8080",
            "--apply-crds",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Controller {
                apply_crds: true,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["ephemera", "controller"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Controller {
                apply_crds: false,
                ..
            }
        ));
    }
}
