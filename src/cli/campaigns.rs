//! `herald campaigns`: follow, pause, resume and cancel campaigns.

use std::time::Duration;

use clap::Subcommand;

use crate::client::{campaign_summary, ApiClient};

#[derive(Subcommand, Debug)]
pub enum CampaignsCommand {
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

pub async fn execute(command: CampaignsCommand, api: &ApiClient) -> anyhow::Result<()> {
    match command {
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
