//! herald-events: sales become confirmation e-mails and loyalty points; user events become
//! per-user aggregates.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::config::{CommonArgs, HealthArgs};
use herald::events::{
    self, BatchConfig, Loyalty, LoyaltyRule, Role, RoleStats, SaleEmail, UserEvents,
};
use herald::health::Probes;
use herald::kafka::{self, Topics};
use herald::store::Store;

/// Consumes `herald.sales` in two independent groups, `herald-sale-email` (a confirmation
/// e-mail per sale, sent by the e-mail dispatchers) and `herald-loyalty` (points per sale),
/// and `herald.user-events` in `herald-user-events` (per-user aggregates in Redis). Each
/// sale and each `event_id` takes effect once, whatever Kafka redelivers; what cannot be
/// used goes to `herald.dlq` (sales) or `herald.user-events.dlq` with the reason. Run
/// several to scale; `--only` splits the consumers into separate deployments.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    health: HealthArgs,

    /// Run only these consumers (repeat or comma-separate); all three when unset.
    #[arg(long, env = "HERALD_EVENTS_ONLY", value_enum, value_delimiter = ',')]
    only: Vec<Role>,

    /// Loyalty points per unit of currency spent (rounded down per sale).
    #[arg(long, env = "HERALD_LOYALTY_POINTS_PER_UNIT", default_value = "1")]
    points_per_unit: rust_decimal::Decimal,

    /// Loyalty points per item bought, on top.
    #[arg(long, env = "HERALD_LOYALTY_POINTS_PER_ITEM", default_value_t = 0)]
    points_per_item: i64,

    /// How long a `sale_id` or `event_id` is remembered, in hours: a copy arriving later
    /// would take effect again. Keep it above the topics' retention.
    #[arg(long, env = "HERALD_EVENTS_DEDUP_HOURS", default_value_t = 24 * 30)]
    dedup_hours: u64,

    /// Events applied per Redis round trip at most.
    #[arg(long, env = "HERALD_EVENTS_BATCH", default_value_t = 2000)]
    batch: usize,

    /// How long an event may wait to be applied, in ms.
    #[arg(long, env = "HERALD_EVENTS_FLUSH_MS", default_value_t = 50)]
    flush_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = herald::telemetry::init("herald-events", args.common.log_format);
    if args.points_per_unit.is_sign_negative() || args.points_per_item < 0 {
        anyhow::bail!("loyalty points per unit and per item must not be negative");
    }
    let roles: Vec<Role> = if args.only.is_empty() {
        Role::ALL.to_vec()
    } else {
        let mut r = args.only.clone();
        r.sort();
        r.dedup();
        r
    };
    let topics = Topics::new(&args.common.namespace);
    let brokers = &args.common.kafka_brokers;
    let store = Store::connect(&args.common.redis_url, &args.common.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", args.common.redis_url))?;
    let producer = kafka::producer(brokers).context("creating the Kafka producer")?;
    let dedup_window = Duration::from_secs(args.dedup_hours.max(1) * 3600);
    let batch = BatchConfig {
        max_batch: args.batch.max(1),
        flush_interval: Duration::from_millis(args.flush_ms.max(1)),
    };
    let shutdown = herald::shutdown::on_signal();

    let stats: Vec<(Role, Arc<RoleStats>)> = roles
        .iter()
        .map(|r| (*r, Arc::new(RoleStats::default())))
        .collect();
    let (for_json, for_prom, prom_topics) = (stats.clone(), stats.clone(), topics.clone());
    herald::health::spawn(
        args.health.health_addr,
        Probes {
            ready: herald::health::redis_ready(store.clone()),
            stats: Arc::new(move || {
                let map: serde_json::Map<String, serde_json::Value> = for_json
                    .iter()
                    .map(|(r, s)| (r.as_str().to_string(), serde_json::json!(&**s)))
                    .collect();
                serde_json::Value::Object(map)
            }),
            metrics: Arc::new(move || events::prometheus(&prom_topics, &for_prom)),
        },
        shutdown.clone(),
    );

    let mut running = tokio::task::JoinSet::new();
    for (role, stats) in stats {
        let group = role.group(&topics);
        let consumer = kafka::consumer(brokers, &group)
            .with_context(|| format!("creating the Kafka consumer of {group}"))?;
        let lag_stats = stats.clone();
        kafka::watch_lag(
            brokers,
            group,
            role.topic(&topics),
            shutdown.clone(),
            move |n| lag_stats.consumer_lag.store(n, Ordering::Relaxed),
        );
        let (producer, topics, batch, shutdown) = (
            producer.clone(),
            topics.clone(),
            batch.clone(),
            shutdown.clone(),
        );
        match role {
            Role::SaleEmail => {
                let work = Arc::new(SaleEmail {
                    store: store.clone(),
                    producer: producer.clone(),
                    topics: topics.clone(),
                    dedup_window,
                });
                running.spawn(events::run(
                    work, consumer, producer, topics, batch, stats, shutdown,
                ));
            }
            Role::Loyalty => {
                let work = Arc::new(Loyalty {
                    store: store.clone(),
                    rule: LoyaltyRule {
                        per_unit: args.points_per_unit,
                        per_item: args.points_per_item,
                    },
                    dedup_window,
                });
                running.spawn(events::run(
                    work, consumer, producer, topics, batch, stats, shutdown,
                ));
            }
            Role::UserEvents => {
                let work = Arc::new(UserEvents {
                    store: store.clone(),
                    dedup_window,
                });
                running.spawn(events::run(
                    work, consumer, producer, topics, batch, stats, shutdown,
                ));
            }
        }
    }
    let mut failure = None;
    while let Some(done) = running.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(anyhow::Error::from(e)),
            Err(e) => failure = Some(anyhow::Error::from(e).context("consumer task")),
        }
        // One consumer failing stops the process, so the orchestrator restarts all of it.
        shutdown.cancel();
    }
    telemetry.shutdown();
    if let Some(e) = failure {
        return Err(e);
    }
    // Applied or left uncommitted; exit without waiting on a client stuck on a dead broker.
    std::process::exit(0)
}
