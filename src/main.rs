use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ephemera::cli::Cli::parse();
    ephemera::telemetry::init_tracing(cli.log_format);
    match ephemera::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
