//! The `herald-events` program: its flags and its set-up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    BatchConfig, History, Loyalty, LoyaltyRule, Role, RoleStats, SaleEmail, UserEvents, Webhooks,
};
use crate::config::{CommonArgs, HealthArgs};
use crate::health::Probes;
use crate::outgoing::sender::{Sender, SenderConfig};
use crate::program::{self, Connections};
use crate::store::HistoryLimits;

/// Consumes `herald.sales` in two independent groups, `herald-sale-email` (a confirmation
/// e-mail per sale, sent by the e-mail dispatchers) and `herald-loyalty` (points per sale),
/// `herald.user-events` in `herald-user-events` (per-user aggregates in Redis), and
/// `herald.events` in `herald-history` (each customer's message history) and in
/// `herald-webhooks` (the shop's outgoing webhooks, delivered by this program too). Each
/// sale and each `event_id` takes effect once, whatever Kafka redelivers; what cannot be
/// used goes to `herald.dlq` (sales) or `herald.user-events.dlq` with the reason. Run
/// several to scale; `--only` splits the consumers into separate deployments.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-events", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    /// Run only these consumers (repeat or comma-separate); all of them when unset.
    #[arg(long, env = "HERALD_EVENTS_ONLY", value_enum, value_delimiter = ',')]
    pub only: Vec<Role>,

    /// Loyalty points per unit of currency spent (rounded down per sale).
    #[arg(long, env = "HERALD_LOYALTY_POINTS_PER_UNIT", default_value = "1")]
    pub points_per_unit: rust_decimal::Decimal,

    /// Loyalty points per item bought, on top.
    #[arg(long, env = "HERALD_LOYALTY_POINTS_PER_ITEM", default_value_t = 0)]
    pub points_per_item: i64,

    /// How long a `sale_id` or `event_id` is remembered, in hours: a copy arriving later
    /// would take effect again. Keep it above the topics' retention.
    #[arg(long, env = "HERALD_EVENTS_DEDUP_HOURS", default_value_t = 24 * 30)]
    pub dedup_hours: u64,

    /// Events applied per Redis round trip at most.
    #[arg(long, env = "HERALD_EVENTS_BATCH", default_value_t = 2000)]
    pub batch: usize,

    /// How long an event may wait to be applied, in ms.
    #[arg(long, env = "HERALD_EVENTS_FLUSH_MS", default_value_t = 50)]
    pub flush_ms: u64,

    /// How long a customer's message history is kept after their latest event, in days.
    #[arg(long, env = "HERALD_HISTORY_RETENTION_DAYS", default_value_t = 90)]
    pub history_retention_days: u64,

    /// The most messages kept per customer; the oldest go first.
    #[arg(long, env = "HERALD_HISTORY_MESSAGES", default_value_t = 200)]
    pub history_messages: usize,

    #[command(flatten)]
    pub webhook_addresses: crate::outgoing::address::AddressArgs,

    /// How long an outgoing webhook (and its endpoint) may keep failing before it is given
    /// up on (the endpoint disabled), in hours.
    #[arg(long, env = "HERALD_WEBHOOK_RETRY_HOURS", default_value_t = 24)]
    pub webhook_retry_hours: u64,

    /// The longest wait between two attempts of an outgoing webhook, in ms (the first is 5 s,
    /// then doubling).
    #[arg(
        long,
        env = "HERALD_WEBHOOK_MAX_BACKOFF_MS",
        default_value_t = 3_600_000
    )]
    pub webhook_max_backoff_ms: u64,

    /// One outgoing webhook call's time-out, in ms.
    #[arg(long, env = "HERALD_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// How long delivered webhook messages are kept for a replay, in hours.
    #[arg(long, env = "HERALD_WEBHOOK_KEEP_HOURS", default_value_t = 24)]
    pub webhook_keep_hours: u64,
}

impl Args {
    /// The consumers to run: `--only`, or all of them.
    fn roles(&self) -> Vec<Role> {
        let mut roles = if self.only.is_empty() {
            Role::ALL.to_vec()
        } else {
            self.only.clone()
        };
        roles.sort();
        roles.dedup();
        roles
    }

    pub fn sender_config(&self) -> SenderConfig {
        let first_backoff =
            Duration::from_secs(5).min(Duration::from_millis(self.webhook_max_backoff_ms.max(1)));
        SenderConfig {
            retry_period: Duration::from_secs(self.webhook_retry_hours.max(1) * 3600),
            first_backoff,
            max_backoff: Duration::from_millis(self.webhook_max_backoff_ms.max(1)),
            timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            keep: Duration::from_secs(self.webhook_keep_hours.max(1) * 3600),
            ..SenderConfig::default()
        }
    }

    fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            messages: self.history_messages.max(1),
            retention: Duration::from_secs(self.history_retention_days.max(1) * 24 * 3600),
            ..HistoryLimits::default()
        }
    }
}

/// The chosen consumers, connected.
pub struct Program {
    args: Args,
    c: Connections,
    stats: Vec<(Role, Arc<RoleStats>)>,
    /// The outgoing webhooks' sender, with role `webhooks`.
    sender: Option<Arc<Sender>>,
}

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        if args.points_per_unit.is_sign_negative() || args.points_per_item < 0 {
            anyhow::bail!("loyalty points per unit and per item must not be negative");
        }
        let c = Connections::open(&args.common).await?;
        let stats = args
            .roles()
            .into_iter()
            .map(|r| (r, Arc::new(RoleStats::default())))
            .collect();
        let sender = if args.roles().contains(&Role::Webhooks) {
            let sender = Sender::new(
                crate::store::WebhookStore::new(&c.redis),
                c.producer.clone(),
                c.topics.clone(),
                args.webhook_addresses.policy(),
                args.sender_config(),
            )?;
            Some(Arc::new(sender))
        } else {
            None
        };
        Ok(Program {
            args: args.clone(),
            c,
            stats,
            sender,
        })
    }

    fn health(&self) -> Option<(std::net::SocketAddr, Probes)> {
        let (for_json, for_prom) = (self.stats.clone(), self.stats.clone());
        let topics = self.c.topics.clone();
        let sender = self.sender.clone();
        let prom_sender = self.sender.clone();
        let probes = Probes {
            ready: crate::health::redis_ready(self.c.redis.clone()),
            stats: Arc::new(move || {
                let mut map: serde_json::Map<String, serde_json::Value> = for_json
                    .iter()
                    .map(|(r, s)| (r.as_str().to_string(), serde_json::json!(&**s)))
                    .collect();
                if let Some(sender) = &sender {
                    map.insert("webhook_sender".into(), serde_json::json!(&sender.stats));
                }
                serde_json::Value::Object(map)
            }),
            metrics: Arc::new(move || {
                let mut families = super::prometheus(&topics, &for_prom);
                if let Some(sender) = &prom_sender {
                    families.push(sender.prometheus());
                }
                families
            }),
        };
        Some((self.args.health.health_addr?, probes))
    }

    /// Runs the chosen consumers until `shutdown`; one failing stops the others, so the
    /// orchestrator restarts the whole process.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        run(self.args, self.c, self.stats, self.sender, shutdown).await
    }
}

async fn run(
    args: Args,
    c: Connections,
    stats: Vec<(Role, Arc<RoleStats>)>,
    sender: Option<Arc<Sender>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut running = JoinSet::new();
    if let Some(sender) = sender {
        let delivering = shutdown.clone();
        running.spawn(async move {
            sender.run(delivering).await;
            Ok(())
        });
    }
    for (role, stats) in stats {
        let group = role.group(&c.topics);
        let consumer = program::consumer(&args.common, &group)?;
        let lag_stats = stats.clone();
        crate::kafka::watch_lag(
            &args.common.kafka_brokers,
            group,
            role.topic(&c.topics),
            shutdown.clone(),
            move |n| lag_stats.consumer_lag.store(n, Ordering::Relaxed),
        );
        let batch = BatchConfig {
            max_batch: args.batch.max(1),
            flush_interval: Duration::from_millis(args.flush_ms.max(1)),
        };
        let each = Loop {
            consumer,
            producer: c.producer.clone(),
            topics: c.topics.clone(),
            batch,
            stats,
            shutdown: shutdown.clone(),
        };
        let dedup_window = Duration::from_secs(args.dedup_hours.max(1) * 3600);
        let store = crate::store::EventStore::new(&c.redis);
        match role {
            Role::SaleEmail => {
                let work = SaleEmail {
                    store,
                    producer: c.producer.clone(),
                    topics: c.topics.clone(),
                    dedup_window,
                };
                each.spawn(work, &mut running)
            }
            Role::Loyalty => {
                let rule = LoyaltyRule {
                    per_unit: args.points_per_unit,
                    per_item: args.points_per_item,
                };
                each.spawn(
                    Loyalty {
                        store,
                        rule,
                        dedup_window,
                    },
                    &mut running,
                )
            }
            Role::UserEvents => each.spawn(
                UserEvents {
                    store,
                    dedup_window,
                },
                &mut running,
            ),
            Role::History => each.spawn(
                History {
                    store,
                    limits: args.history_limits(),
                },
                &mut running,
            ),
            // Its sender runs beside it (started above).
            Role::Webhooks => each.spawn(
                Webhooks {
                    store: crate::store::WebhookStore::new(&c.redis),
                },
                &mut running,
            ),
        };
    }
    let mut failure = None;
    while let Some(done) = running.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(anyhow::Error::from(e)),
            Err(e) => failure = Some(anyhow::Error::from(e).context("consumer task")),
        }
        shutdown.cancel();
    }
    failure.map_or(Ok(()), Err)
}

/// One consumer's loop, waiting for its work.
struct Loop {
    consumer: rdkafka::consumer::StreamConsumer,
    producer: rdkafka::producer::FutureProducer,
    topics: crate::kafka::Topics,
    batch: BatchConfig,
    stats: Arc<RoleStats>,
    shutdown: CancellationToken,
}

impl Loop {
    fn spawn<C: super::Consume>(
        self,
        work: C,
        running: &mut JoinSet<Result<(), super::EventsError>>,
    ) {
        running.spawn(super::run(
            Arc::new(work),
            self.consumer,
            self.producer,
            self.topics,
            self.batch,
            self.stats,
            self.shutdown,
        ));
    }
}
