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

use super::access::MetricsAccess;
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

    /// Address of the dashboard, stats and `/metrics` (port 0: any free port).
    #[arg(long, env = "HERALD_METRICS_ADDR", default_value = "127.0.0.1:9300")]
    pub http_addr: SocketAddr,

    /// The service key file (`herald keys create`): the dashboard, stats and `/metrics` take
    /// a key with `stats:read` (as a bearer token, or once at /login). Required unless
    /// `--open-on-loopback`.
    #[arg(long, env = "HERALD_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// Serve everyone without a key: allowed only when listening on a loopback address.
    #[arg(long, env = "HERALD_METRICS_OPEN_ON_LOOPBACK")]
    pub open_on_loopback: bool,

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
    access: Arc<MetricsAccess>,
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
            &c.redis,
            c.producer,
            c.topics,
            AggregatorConfig {
                max_batch: args.batch.max(1),
                flush_interval: Duration::from_millis(args.flush_ms.max(1)),
                ..AggregatorConfig::default()
            },
        ));
        let access = Arc::new(access(args)?);
        let listener = TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("listening on {}", args.http_addr))?;
        Ok(Program {
            aggregator,
            access,
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
        let keys = self.access.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            while crate::shutdown::sleep_unless_cancelled(Duration::from_secs(2), &stop).await {
                keys.reload_keys();
            }
        });
        let server = tokio::spawn(super::serve(
            self.listener,
            agg.clone(),
            self.access,
            shutdown.clone(),
        ));
        let counted = agg.run(self.consumer, shutdown.clone()).await;
        shutdown.cancel();
        let served = server.await.context("dashboard task")?;
        counted?;
        served.context("serving the dashboard")
    }
}

/// Who may read: a key file, or nobody's key on loopback when asked.
fn access(args: &Args) -> anyhow::Result<MetricsAccess> {
    if let Some(path) = &args.api_keys_file {
        let keys = crate::auth::KeyStore::open(path).context("HERALD_API_KEYS_FILE")?;
        return MetricsAccess::with_keys(keys);
    }
    anyhow::ensure!(
        args.open_on_loopback,
        "no key store: set HERALD_API_KEYS_FILE (a key with stats:read reads the dashboard and \
         /metrics), or pass --open-on-loopback to serve everyone on a loopback address"
    );
    anyhow::ensure!(
        args.http_addr.ip().is_loopback(),
        "--open-on-loopback serves everyone without a key: listen on a loopback address, not {}",
        args.http_addr
    );
    tracing::warn!("--open-on-loopback: the dashboard, stats and /metrics take no key");
    MetricsAccess::open()
}

impl Program {
    /// Where the dashboard listens (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
