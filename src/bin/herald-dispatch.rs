//! herald-dispatch: sends the notifications of one channel. Run several per channel to scale.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::config::{CommonArgs, HealthArgs, ProviderArgs};
use herald::dispatch::{DispatchConfig, DispatchStats, Dispatcher};
use herald::kafka::{self, Topics};
use herald::model::Channel;
use herald::provider::ProviderClient;
use herald::store::Store;

/// Consumes `herald.notify.<channel>` in the group `herald-dispatch-<channel>`, claims each
/// notification in Redis, calls the provider and records the outcome before committing.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    provider: ProviderArgs,

    #[command(flatten)]
    health: HealthArgs,

    /// The channel this instance sends: email, sms, whatsapp or push.
    #[arg(long, env = "HERALD_CHANNEL")]
    channel: Channel,

    /// Lease of a claim in milliseconds; a crashed instance's work is retried after it.
    #[arg(long, env = "HERALD_LEASE_MS", default_value_t = 30_000)]
    lease_ms: u64,

    /// Notifications worked on at once by this instance.
    #[arg(long, env = "HERALD_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,

    /// On SIGTERM, how long in-flight work may finish before it is handed back, in ms.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    shutdown_grace_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = herald::telemetry::init("herald-dispatch", args.common.log_format);
    let topics = Topics::new(&args.common.namespace);
    let store = Store::connect(&args.common.redis_url, &args.common.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", args.common.redis_url))?;
    let producer =
        kafka::producer(&args.common.kafka_brokers).context("creating the Kafka producer")?;
    let consumer = kafka::consumer(
        &args.common.kafka_brokers,
        &topics.dispatch_group(args.channel),
    )
    .context("creating the Kafka consumer")?;
    let provider = Arc::new(ProviderClient::new(&args.provider)?);
    let dispatcher = Arc::new(Dispatcher {
        store,
        producer,
        topics,
        provider,
        config: DispatchConfig {
            channel: args.channel,
            lease: Duration::from_millis(args.lease_ms),
            max_in_flight: args.max_in_flight,
            shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        },
        stats: DispatchStats::default(),
    });
    let shutdown = herald::shutdown::on_signal();
    let (stats, metrics, lag) = (dispatcher.clone(), dispatcher.clone(), dispatcher.clone());
    herald::health::spawn(
        args.health.health_addr,
        herald::health::Probes {
            ready: herald::health::redis_ready(dispatcher.store.clone()),
            stats: Arc::new(move || stats.stats_json()),
            metrics: Arc::new(move || metrics.prometheus()),
        },
        shutdown.clone(),
    );
    kafka::watch_lag(
        &args.common.kafka_brokers,
        dispatcher.topics.dispatch_group(args.channel),
        dispatcher.topics.notify(args.channel),
        shutdown.clone(),
        move |n| lag.stats.consumer_lag.store(n, Ordering::Relaxed),
    );
    dispatcher.run(consumer, shutdown).await?;
    // Work is committed or handed back; exit without waiting on a client stuck on a dead broker.
    telemetry.shutdown();
    std::process::exit(0)
}
