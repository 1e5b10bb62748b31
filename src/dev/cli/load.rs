//! `herald-dev send-requests`, `seed-customers` and `send-campaign`: load on herald-ingest's
//! API for the demo, chaos runs and benchmarks.

use std::time::Duration;

use anyhow::Context;

use crate::client::{campaign_summary, ApiClient};
use crate::dev::loadgen;
use crate::model::{Channel, Location};

/// Create and process COUNT seed 001 requests, show progress, and wait until every one ends.
#[derive(clap::Args, Debug)]
pub struct SendRequests {
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
}

impl SendRequests {
    pub async fn execute(self, api: &ApiClient) -> anyhow::Result<()> {
        let wait = Duration::from_secs(self.wait_secs);
        let report =
            loadgen::send_requests(api, self.count, &self.channels, self.concurrency, wait)
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
        Ok(())
    }
}

/// The synthetic customers `PREFIX0..PREFIX{COUNT-1}` of demos and benchmarks.
#[derive(clap::Args, Debug)]
pub struct Synthetic {
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value = "cust")]
    pub prefix: String,
    /// Channels they are reachable on, in the order a campaign tries them.
    #[arg(long, value_delimiter = ',', default_value = "email,push")]
    pub channels: Vec<Channel>,
}

/// Store COUNT synthetic customers `PREFIX0..`, reachable on CHANNELS.
#[derive(clap::Args, Debug)]
pub struct SeedCustomers {
    #[command(flatten)]
    customers: Synthetic,
    /// Batches of 1000 in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Place the customers around this point (`LAT,LON`), for flash-promo segments.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    near: Option<Vec<f64>>,
    /// Radius of `--near`, in metres.
    #[arg(long, default_value_t = 1900.0)]
    radius_m: f64,
}

impl SeedCustomers {
    pub async fn execute(self, api: &ApiClient) -> anyhow::Result<()> {
        let area = match self.near.as_deref() {
            None => None,
            Some(&[lat, lon]) => Some((Location { lat, lon }, self.radius_m)),
            Some(_) => anyhow::bail!("--near takes LAT,LON"),
        };
        let Synthetic {
            count,
            prefix,
            channels,
        } = &self.customers;
        loadgen::seed_customers(api, prefix, *count, channels, area, self.concurrency)
            .await
            .context("storing customers")
    }
}

/// Send a campaign to the synthetic customers `PREFIX0..PREFIX{COUNT-1}` and watch it.
#[derive(clap::Args, Debug)]
pub struct SendCampaign {
    /// Campaign id (posting the same id again resumes, never duplicates).
    #[arg(long)]
    id: String,
    #[command(flatten)]
    audience: Synthetic,
    /// Receipt time-out per channel before falling back, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Stop watching after this many seconds.
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
    /// Print the final report as JSON instead of a table (for scripts).
    #[arg(long)]
    json: bool,
}

impl SendCampaign {
    pub async fn execute(self, api: &ApiClient) -> anyhow::Result<()> {
        let Synthetic {
            count,
            prefix,
            channels,
        } = &self.audience;
        let created =
            loadgen::send_campaign(api, &self.id, prefix, *count, channels, self.timeout_ms)
                .await
                .context("creating the campaign")?;
        eprintln!("campaign accepted: {created}");
        let report = api
            .watch_campaign(&self.id, Duration::from_secs(self.wait_secs))
            .await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", campaign_summary(&report));
        }
        Ok(())
    }
}
