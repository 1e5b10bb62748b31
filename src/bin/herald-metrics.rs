//! herald-metrics: counts lifecycle events into Redis and shows them live.

use clap::Parser;
use herald::metrics::program::{Args, Program};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald::program::main(
        "herald-metrics",
        args.common.log_format,
        |shutdown| async move { Program::from_args(&args).await?.run(shutdown).await },
    )
    .await
}
