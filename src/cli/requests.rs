//! `herald requests`: seed 001 requests from the command line.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use crate::dev::loadgen::LoadGen;
use crate::model::Channel;

#[derive(Subcommand, Debug)]
pub enum RequestsCommand {
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

pub async fn execute(command: RequestsCommand, api: &LoadGen) -> anyhow::Result<()> {
    match command {
        RequestsCommand::Send {
            count,
            channels,
            concurrency,
            wait_secs,
        } => {
            let report = api
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
        RequestsCommand::Show { id } => println!("{id}: {}", api.status(&id).await?),
    }
    Ok(())
}
