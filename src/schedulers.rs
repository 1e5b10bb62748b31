//! The `herald-retry` program: the schedulers that work from Redis rather than from a
//! topic. It moves overdue confirmations to their next channel ([`campaigns::retry`]), opens
//! flash promos' windows ([`promos::activate`]) and publishes seed 001 requests whose publish
//! was never acknowledged ([`crate::publish`]); each claims its work under leases, so several
//! instances may run. It sits above both, so neither needs the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use crate::campaigns;
use crate::campaigns::retry::{Retrier, RetryConfig};
use crate::config::{CommonArgs, HealthArgs, RulesArgs};
use crate::health::Probes;
use crate::program::Connections;
use crate::promos;
use crate::store::{Redis, RequestStore};

/// Scans each campaign's pending confirmations in Redis; a deadline passed without a
/// receipt (or a refused send) is claimed atomically and republished to the customer's
/// next channel, or failed and dead-lettered when none is left. Also opens flash promos'
/// windows. Several may run.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-retry", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub rules: RulesArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    /// How often to scan when idle, in milliseconds.
    #[arg(long, env = "HERALD_RETRY_POLL_MS", default_value_t = 200)]
    pub poll_ms: u64,

    /// How long a claimed entry is hidden from other instances, in milliseconds; a crashed
    /// instance's claims come due again after it.
    #[arg(long, env = "HERALD_RETRY_CLAIM_LEASE_MS", default_value_t = 30_000)]
    pub claim_lease_ms: u64,

    /// How long a republished delivery may wait for a dispatcher before it is published
    /// again (covers a publish lost in a crash), in milliseconds.
    #[arg(long, env = "HERALD_RETRY_WATCH_MS", default_value_t = 60_000)]
    pub watch_ms: u64,

    /// How often flash promos whose window opened are looked for, in ms (0: this instance
    /// leaves promos to others).
    #[arg(long, env = "HERALD_PROMO_POLL_MS", default_value_t = 1000)]
    pub promo_poll_ms: u64,

    /// How often seed 001 requests marked published but never acknowledged by Kafka are
    /// looked for and published, in ms (0: never).
    #[arg(long, env = "HERALD_REQUEST_RECONCILE_MS", default_value_t = 1000)]
    pub request_reconcile_ms: u64,
}

/// The `herald-retry` program, connected and ready to scan.
pub struct Program {
    pub retrier: Arc<Retrier>,
    /// For the promo windows and the requests' publication this instance also watches.
    redis: Redis,
    /// How often promo windows are looked for; `None`: not by this instance.
    promo_poll: Option<Duration>,
    reconcile_poll: Option<Duration>,
    health: Option<SocketAddr>,
}

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        let rules = args.rules.load()?;
        let c = Connections::open(&args.common).await?;
        let config = RetryConfig {
            poll_interval: Duration::from_millis(args.poll_ms),
            claim_lease: Duration::from_millis(args.claim_lease_ms),
            watch: Duration::from_millis(args.watch_ms),
            ..RetryConfig::default()
        };
        let retrier = Retrier::new(&c.redis, c.producer, c.topics, Arc::new(rules), config);
        Ok(Program {
            retrier: Arc::new(retrier),
            redis: c.redis,
            promo_poll: (args.promo_poll_ms > 0)
                .then(|| Duration::from_millis(args.promo_poll_ms.max(10))),
            reconcile_poll: (args.request_reconcile_ms > 0)
                .then(|| Duration::from_millis(args.request_reconcile_ms.max(10))),
            health: args.health.health_addr,
        })
    }

    fn health(&self) -> Option<(SocketAddr, Probes)> {
        let r = &self.retrier;
        Some((
            self.health?,
            Probes::of(&self.redis, r, Retrier::stats_json, Retrier::prometheus),
        ))
    }

    /// Scans until `shutdown`.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let r = self.retrier;
        if let Some(poll) = self.promo_poll {
            let (producer, topics) = (r.producer.clone(), r.topics.clone());
            tokio::spawn(promos::activate::run(
                promos::PromoStores::new(&self.redis),
                producer,
                topics,
                poll,
                shutdown.clone(),
            ));
        }
        if let Some(poll) = self.reconcile_poll {
            let (producer, topics) = (r.producer.clone(), r.topics.clone());
            tokio::spawn(crate::publish::run(
                RequestStore::new(&self.redis),
                producer,
                topics,
                poll,
                shutdown.clone(),
            ));
        }
        r.run(shutdown).await;
        Ok(())
    }
}
