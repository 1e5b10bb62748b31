//! herald-broker: an in-memory Kafka-protocol broker for local runs and tests.

use clap::Parser;
use herald::config::LogFormat;
use herald::dev::broker::{run, Args};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald::program::main("herald-broker", LogFormat::Text, |shutdown| {
        run(args, shutdown)
    })
    .await
}
