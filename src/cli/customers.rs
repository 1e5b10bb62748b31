//! `herald customers`: synthetic customers for demos and benchmarks.

use anyhow::Context;
use clap::Subcommand;

use super::Synthetic;
use crate::dev::loadgen::LoadGen;
use crate::model::Location;

#[derive(Subcommand, Debug)]
pub enum CustomersCommand {
    /// Store COUNT synthetic customers `PREFIX0..`, reachable on CHANNELS.
    Seed {
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
    },
}

pub async fn execute(command: CustomersCommand, api: &LoadGen) -> anyhow::Result<()> {
    let CustomersCommand::Seed {
        customers:
            Synthetic {
                count,
                prefix,
                channels,
            },
        concurrency,
        near,
        radius_m,
    } = command;
    let area = match near.as_deref() {
        None => None,
        Some([lat, lon]) => Some((
            Location {
                lat: *lat,
                lon: *lon,
            },
            radius_m,
        )),
        Some(_) => anyhow::bail!("--near takes LAT,LON"),
    };
    api.seed_customers(&prefix, count, &channels, area, concurrency)
        .await
        .context("storing customers")
}
