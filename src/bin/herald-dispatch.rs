//! herald-dispatch: sends the notifications of one channel. Run several per channel to scale.

use clap::Parser;
use herald::dispatch::program::{Args, Program};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    herald::program::main(
        "herald-dispatch",
        args.common.log_format,
        |shutdown| async move { Program::from_args(&args).await?.run(shutdown).await },
    )
    .await
}
