//! The `herald-dispatch` program: its flags and its set-up, shared by the binary and the
//! test harness.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use tokio_util::sync::CancellationToken;

use super::{DispatchConfig, Dispatcher};
use crate::config::{CommonArgs, HealthArgs, ProviderArgs, ProvidersArgs};
use crate::health::Probes;
use crate::model::Channel;
use crate::program::{self, Connections};
use crate::provider::ProvidersConfig;

/// Consumes `herald.notify.<channel>` in the group `herald-dispatch-<channel>`, claims each
/// notification in Redis, calls the provider and records the outcome before committing.
/// Run several per channel to scale.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-dispatch", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub provider: ProviderArgs,

    #[command(flatten)]
    pub providers: ProvidersArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    /// The channel this instance sends: email, sms, whatsapp or push.
    #[arg(long, env = "HERALD_CHANNEL")]
    pub channel: Channel,

    /// Lease of a claim in milliseconds; a crashed instance's work is retried after it.
    #[arg(long, env = "HERALD_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,

    /// Notifications worked on at once by this instance.
    #[arg(long, env = "HERALD_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,

    /// On SIGTERM, how long in-flight work may finish before it is handed back, in ms.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Seed 001 requests whose provider call got no answer after it left: `skip` (at most
    /// once: the request ends `failed`, its reason `uncertain: ...`) or `resend` (at least
    /// once: called again with the same key, counted `resent` on /stats).
    #[arg(long, env = "HERALD_REQUEST_UNCERTAIN_SEND", value_enum, default_value_t = crate::model::UncertainSend::Skip)]
    pub request_uncertain_send: crate::model::UncertainSend,
}

/// A dispatcher connected and ready to consume.
pub struct Program {
    pub dispatcher: Arc<Dispatcher>,
    consumer: StreamConsumer,
    brokers: String,
    health: Option<SocketAddr>,
}

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        let Connections {
            redis,
            producer,
            topics,
        } = Connections::open(&args.common).await?;
        let consumer = program::consumer(&args.common, &topics.dispatch_group(args.channel))?;
        let providers =
            ProvidersConfig::load(&args.providers)?.build_chain(args.channel, &args.provider)?;
        let config = DispatchConfig {
            channel: args.channel,
            lease: Duration::from_millis(args.lease_ms),
            max_in_flight: args.max_in_flight,
            shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
            request_uncertain: args.request_uncertain_send,
        };
        let dispatcher = Arc::new(Dispatcher::new(
            &redis,
            producer,
            topics,
            Arc::new(providers),
            config,
        ));
        Ok(Program {
            dispatcher,
            consumer,
            brokers: args.common.kafka_brokers.clone(),
            health: args.health.health_addr,
        })
    }

    fn health(&self) -> Option<(SocketAddr, Probes)> {
        let d = &self.dispatcher;
        let probes = Probes::of(
            &d.slot_store,
            d,
            Dispatcher::stats_json,
            Dispatcher::prometheus,
        );
        Some((self.health?, probes))
    }

    /// Dispatches until `shutdown`, then finishes or hands back in-flight work and commits.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let d = self.dispatcher;
        let lag = d.clone();
        let channel = d.config.channel;
        crate::kafka::watch_lag(
            &self.brokers,
            d.topics.dispatch_group(channel),
            d.topics.notify(channel),
            shutdown.clone(),
            move |n| lag.stats.consumer_lag.store(n, Ordering::Relaxed),
        );
        d.run(self.consumer, shutdown).await?;
        Ok(())
    }
}
