//! herald-fanout: expands campaigns into one delivery per customer. Run several to scale.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use herald::campaigns::fanout::{FanOut, FanOutConfig};
use herald::campaigns::rules::Rules;
use herald::config::{CommonArgs, HealthArgs, RulesArgs};
use herald::health::Probes;
use herald::kafka::{self, LagProbe, Topics};
use herald::model::Channel;
use herald::store::Store;

/// Consumes campaign batches from `herald.campaigns` (group `herald-fanout`), picks each
/// customer's channel by the rules and publishes the deliveries, pausing while dispatchers
/// are too far behind.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    rules: RulesArgs,

    #[command(flatten)]
    health: HealthArgs,

    /// Pause fan-out while any dispatch group is this many messages behind on one partition.
    /// Keep it well under what the broker retains per partition.
    #[arg(long, env = "HERALD_FANOUT_MAX_LAG", default_value_t = 10_000)]
    max_lag: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = herald::telemetry::init("herald-fanout", args.common.log_format);
    let rules = Rules::load(args.rules.rules.as_deref()).context("loading the channel rules")?;
    let topics = Topics::new(&args.common.namespace);
    let store = Store::connect(&args.common.redis_url, &args.common.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", args.common.redis_url))?;
    let brokers = &args.common.kafka_brokers;
    let producer = kafka::producer(brokers).context("creating the Kafka producer")?;
    let consumer =
        kafka::consumer(brokers, &topics.fanout_group()).context("creating the Kafka consumer")?;
    let fanout = Arc::new(FanOut::new(
        store,
        producer,
        topics,
        Arc::new(rules),
        Arc::new(LagProbe::new(brokers)),
        FanOutConfig {
            max_lag: args.max_lag,
            channels: Channel::ALL.to_vec(),
        },
    ));
    let shutdown = herald::shutdown::on_signal();
    let (stats, metrics, lag) = (fanout.clone(), fanout.clone(), fanout.clone());
    herald::health::spawn(
        args.health.health_addr,
        Probes {
            ready: herald::health::redis_ready(fanout.store.clone()),
            stats: Arc::new(move || serde_json::json!({ "fanout": &stats.stats })),
            metrics: Arc::new(move || metrics.prometheus()),
        },
        shutdown.clone(),
    );
    let topics = Topics::new(&args.common.namespace);
    kafka::watch_lag(
        brokers,
        topics.fanout_group(),
        topics.campaigns(),
        shutdown.clone(),
        move |n| lag.stats.consumer_lag.store(n, Ordering::Relaxed),
    );
    fanout.run(consumer, shutdown).await?;
    // Work is committed or handed back; exit without waiting on a client stuck on a dead broker.
    telemetry.shutdown();
    std::process::exit(0)
}
