//! herald-ingest: the public HTTP API (seed 001 requests) in front of Kafka and Redis.

use clap::Parser;
use herald::api::program::{Args, Program};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald::program::main(
        "herald-ingest",
        args.common.log_format,
        |shutdown| async move { Program::from_args(&args).await?.run(shutdown).await },
    )
    .await
}
