//! herald-fanout: expands campaigns into one delivery per customer. Run several to scale.

use clap::Parser;
use herald::campaigns::fanout::{Args, Program};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald::program::main(
        "herald-fanout",
        args.common.log_format,
        |shutdown| async move { Program::from_args(&args).await?.run(shutdown).await },
    )
    .await
}
