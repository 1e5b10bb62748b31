//! herald-dev: load, synthetic data and benchmarks for a local fleet (see `herald-dev --help`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herald::dev::cli::run(herald::dev::cli::Cli::parse()).await
}
