//! The `herald-metrics` program: its flags and its set-up, shared by the binary and the
//! test harness.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Aggregator, AggregatorConfig};
use crate::config::CommonArgs;
use crate::program::{self, Connections};

/// Consumes `herald.events` in the group `herald-metrics` and keeps counters per campaign,
/// channel and outcome in Redis, each event counted once across restarts and redelivery.
/// Serves the live dashboard at `/`, JSON at `/v1/stats` and `/v1/stats/campaigns/{id}`,
/// Prometheus at `/metrics`, and `/healthz`, `/readyz`. Run several: they share the counts.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-metrics", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address of the dashboard, stats and `/metrics` (port 0: any free port). Loopback by
    /// default: they take no key, so they are for the internal network only.
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "127.0.0.1:9300")]
    pub http_addr: SocketAddr,

    /// Consumer group; every group counts the events on its own (the default suits one fleet).
    #[arg(long, env = "HERALD_METRICS_GROUP")]
    pub group: Option<String>,

    /// Events counted per Redis round trip at most.
    #[arg(long, env = "HERALD_METRICS_BATCH", default_value_t = 5000)]
    pub batch: usize,

    /// How long an event may wait before it is counted, in ms.
    #[arg(long, env = "HERALD_METRICS_FLUSH_MS", default_value_t = 200)]
    pub flush_ms: u64,
}

/// The aggregator connected, its listener bound.
pub struct Program {
    pub aggregator: Arc<Aggregator>,
    consumer: StreamConsumer,
    listener: TcpListener,
    group: String,
    brokers: String,
}

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        let c = Connections::open(&args.common).await?;
        let group = args
            .group
            .clone()
            .unwrap_or_else(|| c.topics.metrics_group());
        let consumer = program::consumer(&args.common, &group)?;
        let aggregator = Arc::new(Aggregator::new(
            c.store,
            c.producer,
            c.topics,
            AggregatorConfig {
                max_batch: args.batch.max(1),
                flush_interval: Duration::from_millis(args.flush_ms.max(1)),
                ..AggregatorConfig::default()
            },
        ));
        let listener = TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("listening on {}", args.http_addr))?;
        Ok(Program {
            aggregator,
            consumer,
            listener,
            group,
            brokers: args.common.kafka_brokers.clone(),
        })
    }

    /// Counts and serves until `shutdown`.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let agg = self.aggregator;
        let lag_target = agg.clone();
        crate::kafka::watch_lag(
            &self.brokers,
            self.group,
            agg.topics.events(),
            shutdown.clone(),
            move |lag| lag_target.stats.consumer_lag.store(lag, Ordering::Relaxed),
        );
        tokio::spawn(agg.clone().sample_rates(shutdown.clone()));
        let server = tokio::spawn(super::serve(self.listener, agg.clone(), shutdown.clone()));
        let counted = agg.run(self.consumer, shutdown.clone()).await;
        shutdown.cancel();
        let served = server.await.context("dashboard task")?;
        counted?;
        served.context("serving the dashboard")
    }
}

impl Program {
    /// Where the dashboard listens (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
