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
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::api::crds_yaml());
            Ok(())
        }
        Command::Version => {
            println!("ephemera {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Chat { listen, config } => crate::adapters::chat::run(listen, &config).await,
    }
}
