//! herald-retry: moves deliveries that stayed silent to the next channel. Several may run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::campaigns::retry::{Retrier, RetryConfig};
use herald::campaigns::rules::Rules;
use herald::config::{CommonArgs, HealthArgs, RulesArgs};
use herald::kafka::{self, Topics};
use herald::store::Store;

/// Scans each campaign's pending confirmations in Redis; a deadline passed without a
/// receipt (or a refused send) is claimed atomically and republished to the customer's
/// next channel, or failed and dead-lettered when none is left.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    rules: RulesArgs,

    #[command(flatten)]
    health: HealthArgs,

    /// How often to scan when idle, in milliseconds.
    #[arg(long, env = "HERALD_RETRY_POLL_MS", default_value_t = 200)]
    poll_ms: u64,

    /// How long a claimed entry is hidden from other instances, in milliseconds; a crashed
    /// instance's claims come due again after it.
    #[arg(long, env = "HERALD_RETRY_CLAIM_LEASE_MS", default_value_t = 30_000)]
    claim_lease_ms: u64,

    /// How long a republished delivery may wait for a dispatcher before it is published
    /// again (covers a publish lost in a crash), in milliseconds.
    #[arg(long, env = "HERALD_RETRY_WATCH_MS", default_value_t = 60_000)]
    watch_ms: u64,

    /// How often flash promos whose window opened are looked for, in ms.
    #[arg(long, env = "HERALD_PROMO_POLL_MS", default_value_t = 1000)]
    promo_poll_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = herald::telemetry::init("herald-retry", args.common.log_format);
    let rules = Rules::load(args.rules.rules.as_deref()).context("loading the channel rules")?;
    let store = Store::connect(&args.common.redis_url, &args.common.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", args.common.redis_url))?;
    let producer =
        kafka::producer(&args.common.kafka_brokers).context("creating the Kafka producer")?;
    let retrier = Arc::new(Retrier::new(
        store,
        producer,
        Topics::new(&args.common.namespace),
        Arc::new(rules),
        RetryConfig {
            poll_interval: Duration::from_millis(args.poll_ms),
            claim_lease: Duration::from_millis(args.claim_lease_ms),
            watch: Duration::from_millis(args.watch_ms),
            ..RetryConfig::default()
        },
    ));
    let shutdown = herald::shutdown::on_signal();
    let (stats, metrics) = (retrier.clone(), retrier.clone());
    herald::health::spawn(
        args.health.health_addr,
        herald::health::Probes {
            ready: herald::health::redis_ready(retrier.store.clone()),
            stats: Arc::new(move || stats.stats_json()),
            metrics: Arc::new(move || metrics.prometheus()),
        },
        shutdown.clone(),
    );
    // The same process opens flash promos' windows: both are schedulers over Redis.
    tokio::spawn(herald::promos::activate::run(
        retrier.store.clone(),
        retrier.producer.clone(),
        retrier.topics.clone(),
        Duration::from_millis(args.promo_poll_ms.max(10)),
        shutdown.clone(),
    ));
    retrier.run(shutdown).await;
    Ok(())
}
