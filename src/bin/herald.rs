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
    /// Customers.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// Campaigns of personalised offers (`herald campaign ...` works too).
    #[command(subcommand, alias = "campaign")]
    Campaigns(CampaignsCommand),
    /// Publishes synthetic lifecycle events (sent, then delivered, per recipient) to a topic
    /// as fast as the broker takes them, for benchmarking `herald-metrics`.
    ProduceEvents {
        /// Kafka bootstrap servers.
        #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// Topic (the fleet's is NAMESPACE.events).
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Campaigns to spread the recipients over.
        #[arg(long, default_value_t = 4)]
        campaigns: u64,
    },
    /// Raw produce-then-consume throughput of a Kafka broker (for benchmarks).
    BrokerBench {
        /// Kafka bootstrap servers.
        #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// Topic to fill (it should be otherwise unused).
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Message size in bytes.
        #[arg(long, default_value_t = 250)]
        size: usize,
    },
}

#[derive(Subcommand, Debug)]
enum CustomersCommand {
    /// Store COUNT synthetic customers `PREFIX0..`, reachable on CHANNELS.
    Seed {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "cust")]
        prefix: String,
        #[arg(long, value_delimiter = ',', default_value = "email,push")]
        channels: Vec<Channel>,
        /// Batches of 1000 in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

#[derive(Subcommand, Debug)]
enum CampaignsCommand {
    /// Send a campaign to the synthetic customers `PREFIX0..PREFIX{COUNT-1}` and watch it.
    Send {
        /// Campaign id (posting the same id again resumes, never duplicates).
        #[arg(long)]
        id: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "cust")]
        prefix: String,
        /// Channel order.
        #[arg(long, value_delimiter = ',', default_value = "email,push")]
        channels: Vec<Channel>,
        /// Receipt time-out per channel before falling back, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
        /// Print the final report as JSON instead of a table (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Show a campaign's progress and counts.
    Show { id: String },
    /// Follow a campaign with a progress bar (rate, ETA) until it ends, then a summary table.
    Watch {
        id: String,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
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
        Command::Customers(CustomersCommand::Seed {
            count,
            prefix,
            channels,
            concurrency,
        }) => {
            load.seed_customers(&prefix, count, &channels, concurrency)
                .await
                .context("storing customers")?;
        }
        Command::Campaigns(CampaignsCommand::Send {
            id,
            count,
            prefix,
            channels,
            timeout_ms,
            wait_secs,
            json,
        }) => {
            let created = load
                .send_campaign(&id, &prefix, count, &channels, timeout_ms)
                .await
                .context("creating the campaign")?;
            eprintln!("campaign accepted: {created}");
            let report = load
                .watch_campaign(&id, Duration::from_secs(wait_secs))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", herald::loadgen::campaign_summary(&report));
            }
        }
        Command::Campaigns(CampaignsCommand::Watch { id, wait_secs }) => {
            let report = load
                .watch_campaign(&id, Duration::from_secs(wait_secs))
                .await?;
            print!("{}", herald::loadgen::campaign_summary(&report));
        }
        Command::Campaigns(CampaignsCommand::Show { id }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&load.campaign(&id).await?)?
            );
        }
        Command::ProduceEvents {
            kafka_brokers,
            topic,
            count,
            campaigns,
        } => {
            let rate = tokio::task::spawn_blocking(move || {
                herald::loadgen::produce_lifecycle_events(&kafka_brokers, &topic, count, campaigns)
            })
            .await??;
            println!("events_produced_per_sec {rate:.0}");
        }
        Command::BrokerBench {
            kafka_brokers,
            topic,
            count,
            size,
        } => {
            let (produced, consumed) = tokio::task::spawn_blocking(move || {
                herald::loadgen::broker_throughput(&kafka_brokers, &topic, count, size)
            })
            .await??;
            println!("broker_produce_per_sec {produced:.0}");
            println!("broker_consume_per_sec {consumed:.0}");
        }
    }
    Ok(())
}
