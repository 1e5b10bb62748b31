//! `herald campaigns`: send a campaign to synthetic customers and follow campaigns.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use super::Synthetic;
use crate::dev::loadgen::LoadGen;
use crate::dev::report::campaign_summary;

#[derive(Subcommand, Debug)]
pub enum CampaignsCommand {
    /// Send a campaign to the synthetic customers `PREFIX0..PREFIX{COUNT-1}` and watch it.
    Send {
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
    },
    /// Show a campaign's progress and counts.
    Show {
        /// The campaign's id.
        id: String,
    },
    /// Pause a running campaign: fan-out and new sends stop within seconds (calls under
    /// way finish); `resume` goes on where it stopped.
    Pause {
        /// The campaign's id.
        id: String,
    },
    /// Resume a paused campaign; each customer still hears once.
    Resume {
        /// The campaign's id.
        id: String,
    },
    /// Cancel a campaign for good: nothing is sent after the answer, and every delivery not
    /// yet sent ends `cancelled` (counted on the report).
    Cancel {
        /// The campaign's id.
        id: String,
    },
    /// Follow a campaign with a progress bar (rate, ETA) until it ends, then a summary table.
    Watch {
        id: String,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
}

pub async fn execute(command: CampaignsCommand, api: &LoadGen) -> anyhow::Result<()> {
    match command {
        CampaignsCommand::Send {
            id,
            audience:
                Synthetic {
                    count,
                    prefix,
                    channels,
                },
            timeout_ms,
            wait_secs,
            json,
        } => {
            let created = api
                .send_campaign(&id, &prefix, count, &channels, timeout_ms)
                .await
                .context("creating the campaign")?;
            eprintln!("campaign accepted: {created}");
            let report = api
                .watch_campaign(&id, Duration::from_secs(wait_secs))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", campaign_summary(&report));
            }
        }
        CampaignsCommand::Watch { id, wait_secs } => {
            let report = api
                .watch_campaign(&id, Duration::from_secs(wait_secs))
                .await?;
            print!("{}", campaign_summary(&report));
        }
        CampaignsCommand::Pause { id } => print_state(api.campaign_action(&id, "pause").await?),
        CampaignsCommand::Resume { id } => print_state(api.campaign_action(&id, "resume").await?),
        CampaignsCommand::Cancel { id } => print_state(api.campaign_action(&id, "cancel").await?),
        CampaignsCommand::Show { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&api.campaign(&id).await?)?
            );
        }
    }
    Ok(())
}

/// The campaign's state and status after an operator's action, one line.
fn print_state(report: serde_json::Value) {
    println!(
        "campaign {}: {} ({}), {} of {} recipients finished",
        report["id"].as_str().unwrap_or("?"),
        report["state"].as_str().unwrap_or("?"),
        report["status"].as_str().unwrap_or("?"),
        report["progress"]["outcomes"],
        report["recipients"],
    );
}
