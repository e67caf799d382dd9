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
    /// Serve GitHub webhooks: PR labels and `/testenv` comments drive
    /// TestInstallations; a sticky comment and a Deployment report them.
    Github {
        /// Address to serve the webhook, probes and metrics on.
        #[arg(long, env = "EPHEMERA_LISTEN")]
        listen: std::net::SocketAddr,
        /// The adapter's YAML config (see docs/github.md).
        #[arg(long, env = "EPHEMERA_GITHUB_CONFIG")]
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
        Command::Github { listen, config } => crate::adapters::github::serve(listen, &config).await,
    }
}
