//! herald-events: sales become confirmation e-mails and loyalty points; user events become
//! per-user aggregates.

use clap::Parser;
use herald::events::program::{run, Args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_format = args.common.log_format;
    herald::program::main("herald-events", log_format, |shutdown| run(args, shutdown)).await
}
