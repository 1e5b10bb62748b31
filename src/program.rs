//! What every long-running program shares: logs and traces, the shutdown signal, its
//! connections to Redis and Kafka, and one exit sequence. Each program's own set-up lives
//! beside its work (`api::program`, `dispatch::program`, `campaigns::fanout::Program`,
//! `schedulers::Program`, `events::program`, `metrics::program`) and is used by its binary and
//! by the test harness alike.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::config::{CommonArgs, LogFormat};
use crate::health::Probes;
use crate::kafka::{self, Topics};
use crate::store::Redis;

/// Redis, a producer and the topic names of one namespace. A program builds from `redis` the
/// domain stores its workers use, and hands each worker only those.
#[derive(Clone)]
pub struct Connections {
    pub redis: Redis,
    pub producer: FutureProducer,
    pub topics: Topics,
}

impl Connections {
    /// A background program's connections: its producer lingers ([`kafka::LINGER`]).
    pub async fn open(common: &CommonArgs) -> anyhow::Result<Self> {
        Self::open_with_producer(common, kafka::DELIVERY_TIMEOUT, kafka::LINGER).await
    }

    /// As [`Connections::open`], with a producer for callers that wait: it reports a message
    /// failed when the broker has not acknowledged it within `delivery_timeout`, and sends at
    /// once (no linger).
    pub async fn open_with_delivery_timeout(
        common: &CommonArgs,
        delivery_timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        Self::open_with_producer(common, delivery_timeout, std::time::Duration::ZERO).await
    }

    async fn open_with_producer(
        common: &CommonArgs,
        delivery_timeout: std::time::Duration,
        linger: std::time::Duration,
    ) -> anyhow::Result<Self> {
        crate::kafka_security::install(&common.kafka_security)?;
        let redis = Redis::open(&common.redis_target(), &common.namespace)
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis at {}",
                    crate::config::redacted_url(&common.redis_url)
                )
            })?
            .with_retention(common.retention());
        let redis = match common.campaign_shards {
            Some(n) => redis.with_campaign_shards(n),
            None => redis,
        };
        let producer = kafka::producer_with(&common.kafka_brokers, delivery_timeout, linger)
            .context("creating the Kafka producer")?;
        Ok(Connections {
            redis,
            producer,
            topics: Topics::new(&common.namespace),
        })
    }
}

/// A consumer in `group` that commits only the offsets the program stores.
pub fn consumer(common: &CommonArgs, group: &str) -> anyhow::Result<StreamConsumer> {
    kafka::consumer(&common.kafka_brokers, group)
        .with_context(|| format!("creating the Kafka consumer of {group}"))
}

/// A long-running program of the fleet: its flags, how it is set up, and how it runs.
/// The binaries call [`main`]; the test harness calls `from_args` and `run` itself.
pub trait Program: Sized + Send + 'static {
    /// Its flags; their command name (`herald-dispatch`...) names it in logs and traces.
    type Args: clap::Parser + Send + 'static;

    /// Connects to what the program needs; a bad flag or an unreachable Redis fails here,
    /// before any work is taken.
    fn from_args(args: &Self::Args) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// Where it serves `/healthz`, `/readyz`, `/stats` and `/metrics`, and what they show;
    /// `None` for a program that serves its own or none.
    fn health(&self) -> Option<(SocketAddr, Probes)> {
        None
    }

    /// Works until `shutdown`, then finishes or hands back what is under way.
    fn run(self, shutdown: CancellationToken) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A program's `main`: parse its flags, start the runtime, logs and traces, set it up and
/// run it until SIGTERM or SIGINT, then the one exit sequence of every program. On success
/// the process exits at once with 0: its work is committed or handed back, and a Kafka
/// client stuck on a dead broker must not hold it up. An error is returned, and the
/// binary's `main` prints it and exits with 1.
pub fn main<P: Program>() -> anyhow::Result<()> {
    let command = P::Args::command();
    // The program's name in logs and traces: the command name its flags declare.
    let name: &'static str = Box::leak(command.get_name().to_string().into_boxed_str());
    let matches = command.get_matches();
    let args = match P::Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    // Every program's flags have `--log-format` but the broker's, which logs text.
    let log_format = matches
        .try_get_one::<LogFormat>("log_format")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let telemetry = crate::telemetry::init(name, log_format);
        let shutdown = crate::shutdown::on_signal();
        let result = match P::from_args(&args).await {
            Ok(program) => {
                if let Some((addr, probes)) = program.health() {
                    crate::health::spawn(Some(addr), probes, shutdown.clone());
                }
                program.run(shutdown).await
            }
            Err(e) => Err(e),
        };
        telemetry.shutdown();
        result
    })?;
    std::process::exit(0)
}
