//! herald: the operators' command line.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::loadgen::LoadGen;
use herald::model::Channel;

/// Operate a Herald fleet.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Base URL of herald-ingest.
    #[arg(
        long,
        global = true,
        env = "HERALD_API_URL",
        default_value = "http://127.0.0.1:5000"
    )]
    api: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Seed 001 requests.
    #[command(subcommand)]
    Requests(RequestsCommand),
}

#[derive(Subcommand, Debug)]
enum RequestsCommand {
    /// Create and process COUNT requests, show progress, and wait until every one ends.
    Send {
        /// How many requests.
        #[arg(long, default_value_t = 300)]
        count: u64,
        /// Channels to spread them over (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "email,sms,push")]
        channels: Vec<Channel>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Give up waiting for outcomes after this many seconds.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
    },
    /// Show one request's status.
    Show { id: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let load = LoadGen::new(&cli.api);
    match cli.command {
        Command::Requests(RequestsCommand::Send {
            count,
            channels,
            concurrency,
            wait_secs,
        }) => {
            let report = load
                .run(
                    count,
                    &channels,
                    concurrency,
                    Duration::from_secs(wait_secs),
                )
                .await
                .context("sending requests")?;
            println!(
                "final status counts ({:.1}s in all):",
                report.total_time.as_secs_f64()
            );
            for (status, n) in &report.statuses {
                println!("  {status:<11} {n}");
            }
            if report.http_5xx > 0 {
                println!("  HTTP 5xx    {}", report.http_5xx);
            }
        }
        Command::Requests(RequestsCommand::Show { id }) => {
            println!("{id}: {}", load.status(&id).await?);
        }
    }
    Ok(())
}
