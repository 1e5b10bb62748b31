//! herald-metrics: counts lifecycle events into Redis and shows them live.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::config::CommonArgs;
use herald::kafka::{self, Topics};
use herald::metrics::{Aggregator, AggregatorConfig};
use herald::store::Store;

/// Consumes `herald.events` in the group `herald-metrics` and keeps counters per campaign,
/// channel and outcome in Redis, each event counted once across restarts and redelivery.
/// Serves the live dashboard at `/`, JSON at `/v1/stats` and `/v1/stats/campaigns/{id}`,
/// Prometheus at `/metrics`, and `/healthz`, `/readyz`. Run several: they share the counts.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address of the dashboard, stats and `/metrics`.
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "0.0.0.0:9300")]
    http_addr: SocketAddr,

    /// Events counted per Redis round trip at most.
    #[arg(long, env = "HERALD_METRICS_BATCH", default_value_t = 5000)]
    batch: usize,

    /// How long an event may wait before it is counted, in ms.
    #[arg(long, env = "HERALD_METRICS_FLUSH_MS", default_value_t = 200)]
    flush_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = herald::telemetry::init("herald-metrics", args.common.log_format);
    let topics = Topics::new(&args.common.namespace);
    let store = Store::connect(&args.common.redis_url, &args.common.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", args.common.redis_url))?;
    let producer =
        kafka::producer(&args.common.kafka_brokers).context("creating the Kafka producer")?;
    let consumer = kafka::consumer(&args.common.kafka_brokers, &topics.metrics_group())
        .context("creating the Kafka consumer")?;
    let aggregator = Arc::new(Aggregator::new(
        store,
        producer,
        topics.clone(),
        AggregatorConfig {
            max_batch: args.batch.max(1),
            flush_interval: Duration::from_millis(args.flush_ms.max(1)),
            ..AggregatorConfig::default()
        },
    ));
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("listening on {}", args.http_addr))?;
    let shutdown = herald::shutdown::on_signal();
    let lag_target = aggregator.clone();
    kafka::watch_lag(
        &args.common.kafka_brokers,
        topics.metrics_group(),
        topics.events(),
        shutdown.clone(),
        move |lag| lag_target.stats.consumer_lag.store(lag, Ordering::Relaxed),
    );
    tokio::spawn(aggregator.clone().sample_rates(shutdown.clone()));
    let server = tokio::spawn(herald::metrics::serve(
        listener,
        aggregator.clone(),
        shutdown.clone(),
    ));
    let counted = aggregator.run(consumer, shutdown.clone()).await;
    shutdown.cancel();
    let served = server.await.context("dashboard task")?;
    telemetry.shutdown();
    counted?;
    served.context("serving the dashboard")?;
    // Counted or left uncommitted; exit without waiting on a client stuck on a dead broker.
    std::process::exit(0)
}
