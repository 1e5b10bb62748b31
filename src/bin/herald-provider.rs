//! herald-provider: a simulated external notification provider with fault injection.

use clap::Parser;
use herald::config::LogFormat;
use herald::dev::simulator::{self, SimulatorArgs};

/// A stand-in for the external provider (`POST /v1/notify` with `X-API-Key`) that can be
/// slow, fail, rate-limit and hang on demand; `GET /v1/stats` tells what it saw.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    sim: SimulatorArgs,

    /// Log format.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald::program::main("herald-provider", args.log_format, |shutdown| async move {
        Ok(simulator::run(args.sim, shutdown).await?)
    })
    .await
}
