//! `herald-dev generate-events`: realistic user events and sales for the demo and benchmarks.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use crate::cli::KafkaArgs;
use crate::dev::generate::{generate, GenerateConfig, GenerateReport};

/// Publish realistic user events and sales straight to the topics at RATE per second
/// for DURATION seconds: shoppers click, view, add to cart and buy (each purchase is
/// also a sale), with a share of invalid events and of copies, as the consumers must
/// expect. Prints what was published (`--json` for scripts).
#[derive(clap::Args, Debug)]
pub struct GenerateEvents {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Events per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Stop after this many events even if time is left.
    #[arg(long)]
    count: Option<u64>,
    /// Shoppers `PREFIX0..PREFIX{USERS-1}` (the same ids as `herald-dev seed-customers`).
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value = "cust")]
    prefix: String,
    /// Share of invalid events (0-1).
    #[arg(long, default_value_t = 0.01)]
    invalid_ratio: f64,
    /// Share of events published twice (0-1).
    #[arg(long, default_value_t = 0.01)]
    duplicate_ratio: f64,
    /// Random seed (the same seed draws the same shoppers and mistakes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn execute(command: GenerateEvents) -> anyhow::Result<()> {
    let GenerateEvents {
        kafka,
        rate,
        duration,
        count,
        users,
        prefix,
        invalid_ratio,
        duplicate_ratio,
        seed,
        json,
    } = command;
    for (name, ratio) in [("invalid", invalid_ratio), ("duplicate", duplicate_ratio)] {
        if !(0.0..=1.0).contains(&ratio) {
            anyhow::bail!("--{name}-ratio must be between 0 and 1, not {ratio}");
        }
    }
    let config = GenerateConfig {
        rate,
        duration: Duration::from_secs(duration),
        max_events: count,
        users: users.max(1),
        user_prefix: prefix,
        invalid_ratio,
        duplicate_ratio,
        seed,
    };
    let r = generate_with_progress(kafka, config).await?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "published {} records in {:.1}s ({:.0}/s): {} user events, {} sales, {} invalid user events, {} invalid sales, {} copies",
            r.published, r.elapsed_s, r.published_per_sec, r.user_events, r.sales,
            r.invalid_user_events, r.invalid_sales, r.duplicate_user_events + r.duplicate_sales
        );
    }
    Ok(())
}

/// Runs the generator on a blocking thread with a progress bar on a terminal (a line every
/// few seconds otherwise).
async fn generate_with_progress(
    kafka: KafkaArgs,
    config: GenerateConfig,
) -> anyhow::Result<GenerateReport> {
    let topics = kafka.topics();
    let planned = match (config.rate, config.max_events) {
        (0, Some(n)) => n,
        (0, None) => 0,
        (rate, max) => (rate * config.duration.as_secs()).min(max.unwrap_or(u64::MAX)),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(planned);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {human_pos}/{human_len} records {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let shown = bar.clone();
    let mut last_line = Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        generate(&kafka.kafka_brokers, &topics, config, |r| match &shown {
            Some(bar) => {
                bar.set_position(r.published);
                bar.set_message(format!(
                    "{} sales, {} invalid",
                    r.sales,
                    r.invalid_user_events + r.invalid_sales
                ));
            }
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                last_line = Instant::now();
                eprintln!(
                    "  [{:>5.1}s] published {} ({} user events, {} sales, {} invalid, {} copies)",
                    r.elapsed_s,
                    r.published,
                    r.user_events,
                    r.sales,
                    r.invalid_user_events + r.invalid_sales,
                    r.duplicate_user_events + r.duplicate_sales
                );
            }
            None => {}
        })
    })
    .await??;
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(report)
}
