//! herald-retry: moves deliveries that stayed silent to the next channel. Several may run.

use clap::Parser;
use herald::schedulers::{Args, Program};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald::program::main(
        "herald-retry",
        args.common.log_format,
        |shutdown| async move { Program::from_args(&args).await?.run(shutdown).await },
    )
    .await
}
