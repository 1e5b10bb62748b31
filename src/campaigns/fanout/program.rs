//! The `herald-fanout` program: its flags and its set-up, shared by the binary and the test
//! harness.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdkafka::consumer::StreamConsumer;
use tokio_util::sync::CancellationToken;

use super::{FanOut, FanOutConfig};
use crate::config::{CommonArgs, HealthArgs, RulesArgs};
use crate::kafka::{self, LagProbe};
use crate::model::Channel;
use crate::program::{self, Connections};

/// Consumes campaign batches from `herald.campaigns` (group `herald-fanout`), picks each
/// customer's channel by the rules and publishes the deliveries, pausing while dispatchers
/// are too far behind. Run several to scale.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-fanout", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub rules: RulesArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    /// Pause fan-out while any dispatch group is this many messages behind on one partition.
    /// Keep it well under what the broker retains per partition.
    #[arg(long, env = "HERALD_FANOUT_MAX_LAG", default_value_t = 10_000)]
    pub max_lag: i64,
}

/// The `herald-fanout` program, connected and ready to consume.
pub struct Program {
    pub fanout: Arc<FanOut>,
    consumer: StreamConsumer,
    brokers: String,
    health: Option<std::net::SocketAddr>,
}

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        let rules = args.rules.load()?;
        let c = Connections::open(&args.common).await?;
        let consumer = program::consumer(&args.common, &c.topics.fanout_group())?;
        let lag = Arc::new(LagProbe::new(&args.common.kafka_brokers));
        let config = FanOutConfig {
            max_lag: args.max_lag,
            channels: Channel::ALL.to_vec(),
        };
        let fanout = FanOut::new(&c.redis, c.producer, c.topics, Arc::new(rules), lag, config);
        Ok(Program {
            fanout: Arc::new(fanout),
            consumer,
            brokers: args.common.kafka_brokers.clone(),
            health: args.health.health_addr,
        })
    }

    fn health(&self) -> Option<(std::net::SocketAddr, crate::health::Probes)> {
        let f = &self.fanout;
        let probes =
            crate::health::Probes::of(&f.stores.slots, f, FanOut::stats_json, FanOut::prometheus);
        Some((self.health?, probes))
    }

    /// Fans out until `shutdown`; a batch under way is finished or left uncommitted.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let f = self.fanout;
        let lag = f.clone();
        kafka::watch_lag(
            &self.brokers,
            f.topics.fanout_group(),
            f.topics.campaigns(),
            shutdown.clone(),
            move |n| lag.stats.consumer_lag.store(n, Ordering::Relaxed),
        );
        f.run(self.consumer, shutdown).await?;
        Ok(())
    }
}
