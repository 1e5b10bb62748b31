//! `herald-events`: the shop's business events. Three consumers, each its own consumer group
//! so that none holds up another, and each restartable on its own:
//!
//! - [`Role::SaleEmail`] (`herald.sales`, group `{ns}-sale-email`): a transactional
//!   confirmation e-mail per sale, sent through the normal dispatch path (seed 003).
//! - [`Role::Loyalty`] (`herald.sales`, group `{ns}-loyalty`): loyalty points per sale by a
//!   configurable [`LoyaltyRule`] (seed 003).
//! - [`Role::UserEvents`] (`herald.user-events`, group `{ns}-user-events`): per-user
//!   aggregates (seed 004), which feed behavioural segments.
//! - [`Role::History`] (`herald.events`, group `{ns}-history`): each customer's message
//!   history, from the lifecycle events, for support and data-access requests.
//! - [`Role::Webhooks`] (`herald.events`, group `{ns}-webhooks`): the lifecycle events queued
//!   for the shop's webhook endpoints, and their delivery ([`crate::outgoing`]).
//!
//! Every consumer works the same way ([`run`]): messages are decoded as they arrive (what
//! cannot be used goes to a dead-letter topic with the reason, once), the usable ones are
//! applied to Redis in batches, and offsets are stored only after their batch is applied.
//! Kafka redelivers at least once; each effect is keyed in Redis by `sale_id` or
//! `event_id`, so a redelivered or re-published event changes nothing.

pub mod activity;
pub mod history;
pub mod outgoing;
pub mod program;
pub mod sales;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use activity::UserEvents;
pub use history::History;
pub use outgoing::Webhooks;
pub use sales::{Loyalty, LoyaltyRule, SaleEmail};

use crate::kafka::{self, Topics};
use crate::shutdown::sleep_unless_cancelled;
use crate::stats::Counters;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
}

/// One of the consumers `herald-events` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    /// Confirmation e-mails for sales.
    SaleEmail,
    /// Loyalty points for sales.
    Loyalty,
    /// Per-user aggregates of user events.
    UserEvents,
    /// Each customer's message history, from the lifecycle events.
    History,
    /// Outgoing webhooks: lifecycle events queued for, and delivered to, the shop's endpoints.
    Webhooks,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::SaleEmail,
        Role::Loyalty,
        Role::UserEvents,
        Role::History,
        Role::Webhooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SaleEmail => "sale-email",
            Role::Loyalty => "loyalty",
            Role::UserEvents => "user-events",
            Role::History => "history",
            Role::Webhooks => "webhooks",
        }
    }

    pub fn group(self, topics: &Topics) -> String {
        topics.group(self.as_str())
    }

    pub fn topic(self, topics: &Topics) -> String {
        match self {
            Role::SaleEmail | Role::Loyalty => topics.sales(),
            Role::UserEvents => topics.user_events(),
            Role::History | Role::Webhooks => topics.events(),
        }
    }

    /// Where what this consumer cannot use goes.
    pub fn dead_letter_topic(self, topics: &Topics) -> String {
        match self {
            Role::SaleEmail | Role::Loyalty | Role::History | Role::Webhooks => topics.dlq(),
            Role::UserEvents => topics.user_events_dlq(),
        }
    }
}

/// A consumer's counters.
#[derive(Debug, Default, Serialize)]
pub struct RoleStats {
    pub consumed: AtomicU64,
    /// Effects made now: e-mails queued, sales credited, events aggregated.
    pub applied: AtomicU64,
    /// Events whose effect was made before (redelivered or published twice).
    #[serde(rename = "duplicate")]
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    /// Batches that Redis or Kafka refused, to be tried again.
    #[serde(rename = "retried_batch")]
    pub retries: AtomicU64,
    pub consumer_lag: AtomicI64,
}

impl Counters for RoleStats {
    const NAME: &'static str = "events";
    const FAMILY: (&'static str, &'static str) = (
        "herald_business_events",
        "Sales and user events handled by herald-events, by consumer and result.",
    );
    const NOT_IN_FAMILY: &'static [&'static str] = &["consumer_lag"];
}

/// What applying a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub new: u64,
    pub duplicates: u64,
}

impl Applied {
    /// Tallies per-item outcomes (`true` = applied now).
    pub fn tally(outcomes: impl IntoIterator<Item = bool>) -> Self {
        let mut a = Applied::default();
        for new in outcomes {
            if new {
                a.new += 1;
            } else {
                a.duplicates += 1;
            }
        }
        a
    }
}

/// One consumer's work: how to read a message and how to apply a batch of them.
pub trait Consume: Send + Sync + 'static {
    type Item: Send + Sync + 'static;

    fn role(&self) -> Role;

    /// The usable item in a message, or why it is not (its dead-letter reason).
    fn decode(&self, msg: &OwnedMessage) -> Result<Self::Item, String>;

    /// Applies a batch, each item at most once however often it is applied; an error
    /// means nothing is committed and the batch is applied again.
    fn apply(&self, items: &[Self::Item]) -> impl Future<Output = Result<Applied, String>> + Send;
}

#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Items applied per Redis round trip at most.
    pub max_batch: usize,
    /// How long an item may wait to be applied.
    pub flush_interval: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 2_000,
            flush_interval: Duration::from_millis(50),
        }
    }
}

/// Messages read but not yet committed: the items to apply, the dead letters being
/// published (`true` once acknowledged) and, per partition, the last offset read.
struct Pending<T> {
    items: Vec<T>,
    dead_letters: Vec<tokio::task::JoinHandle<bool>>,
    last_offsets: BTreeMap<i32, i64>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            items: Vec::new(),
            dead_letters: Vec::new(),
            last_offsets: BTreeMap::new(),
        }
    }
}

/// A batch being applied while the next one is read.
struct InFlight<T> {
    task: tokio::task::JoinHandle<(Vec<T>, Result<Applied, String>)>,
    last_offsets: BTreeMap<i32, i64>,
}

/// Everything a consumer's loop shares with its batches.
struct Batches<C: Consume> {
    work: Arc<C>,
    subscription: kafka::Subscription,
    stats: Arc<RoleStats>,
}

impl<C: Consume> Batches<C> {
    /// Applies a batch in the background once its dead letters are published.
    fn start(
        &self,
        items: Vec<C::Item>,
        dead_letters: Vec<tokio::task::JoinHandle<bool>>,
        last_offsets: BTreeMap<i32, i64>,
    ) -> InFlight<C::Item> {
        let work = self.work.clone();
        InFlight {
            task: tokio::spawn(async move {
                let published = futures::future::join_all(dead_letters).await;
                if !published.iter().all(|p| matches!(p, Ok(true))) {
                    return (
                        items,
                        Err("shutting down before every dead letter was published".into()),
                    );
                }
                let result = work.apply(&items).await;
                (items, result)
            }),
            last_offsets,
        }
    }

    /// Starts applying what is pending, once the batch before it is applied (batches are
    /// applied one after another, so offsets are stored in order). `false` when shutdown
    /// came while the batch before could not be applied.
    async fn flush(
        &self,
        pending: &mut Pending<C::Item>,
        in_flight: &mut Option<InFlight<C::Item>>,
        shutdown: &CancellationToken,
    ) -> bool {
        if !self.settle(in_flight, shutdown).await {
            return false;
        }
        if !pending.last_offsets.is_empty() {
            let Pending {
                items,
                dead_letters,
                last_offsets,
            } = std::mem::take(pending);
            *in_flight = Some(self.start(items, dead_letters, last_offsets));
        }
        true
    }

    /// Waits for the batch in flight, applying it again while Redis or Kafka refuse it;
    /// then stores its offsets. `false` if shutdown came first (its offsets stay unstored).
    async fn settle(
        &self,
        in_flight: &mut Option<InFlight<C::Item>>,
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(mut batch) = in_flight.take() else {
            return true;
        };
        loop {
            let (items, result) = match (&mut batch.task).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "batch task failed");
                    return false;
                }
            };
            match result {
                Ok(applied) => {
                    self.record(applied, &batch.last_offsets);
                    return true;
                }
                Err(e) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(role = self.work.role().as_str(), error = %e, items = items.len(), "batch not applied; will retry");
                    if !sleep_unless_cancelled(Duration::from_millis(500), shutdown).await {
                        return false;
                    }
                    // Its dead letters went (or shutdown stopped the retries above).
                    batch = self.start(items, Vec::new(), std::mem::take(&mut batch.last_offsets));
                }
            }
        }
    }

    fn record(&self, applied: Applied, last_offsets: &BTreeMap<i32, i64>) {
        let stats = &self.stats;
        stats.applied.fetch_add(applied.new, Ordering::Relaxed);
        stats
            .duplicates
            .fetch_add(applied.duplicates, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        for (partition, offset) in last_offsets {
            self.subscription.store(*partition, *offset);
        }
    }
}

/// Runs one consumer until `shutdown`: decode as messages come, apply in batches (one
/// applied while the next is read), store offsets only for what was applied or
/// dead-lettered.
pub async fn run<C: Consume>(
    work: Arc<C>,
    consumer: StreamConsumer,
    producer: FutureProducer,
    topics: Topics,
    config: BatchConfig,
    stats: Arc<RoleStats>,
    shutdown: CancellationToken,
) -> Result<(), EventsError> {
    let role = work.role();
    let topic = role.topic(&topics);
    let dlq = role.dead_letter_topic(&topics);
    let subscription = kafka::Subscription::new(consumer, &topic)?;
    tracing::info!(role = role.as_str(), %topic, "consuming");
    let batches = Batches {
        work,
        subscription,
        stats: stats.clone(),
    };
    let mut pending = Pending::default();
    let mut in_flight = None;
    let mut tick = tokio::time::interval(config.flush_interval);
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    loop {
        let full = pending.items.len() >= config.max_batch.max(1);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = progress.tick() => stats.log_progress(role.as_str()),
            _ = tick.tick(), if !full => {
                if !batches.flush(&mut pending, &mut in_flight, &shutdown).await {
                    break;
                }
            }
            // Full: apply before reading more (waiting out an outage here).
            _ = std::future::ready(()), if full => {
                if !batches.flush(&mut pending, &mut in_flight, &shutdown).await {
                    break;
                }
            }
            m = batches.subscription.next(&shutdown), if !full => match m {
                Some(msg) => {
                    stats.consumed.fetch_add(1, Ordering::Relaxed);
                    match batches.work.decode(&msg) {
                        Ok(item) => pending.items.push(item),
                        Err(reason) => {
                            let reason = format!("{}: {reason}", role.group(&topics));
                            tracing::warn!(%reason, partition = msg.partition(), offset = msg.offset(), "dead-lettering event");
                            pending.last_offsets.insert(msg.partition(), msg.offset());
                            pending.dead_letters.push(dead_letter(&producer, &dlq, msg, reason, &stats, &shutdown));
                            continue;
                        }
                    }
                    pending.last_offsets.insert(msg.partition(), msg.offset());
                }
                None => break,
            },
        }
    }
    // One last try for what was read; what cannot be applied now stays uncommitted, for
    // whoever reads next.
    let last_try = CancellationToken::new();
    last_try.cancel();
    if batches.settle(&mut in_flight, &last_try).await {
        batches.flush(&mut pending, &mut in_flight, &last_try).await;
        batches.settle(&mut in_flight, &last_try).await;
    }
    batches.subscription.close().await;
    stats.log_progress(role.as_str());
    Ok(())
}

/// Publishes a dead letter in the background (its batch waits for it before its offsets
/// are stored): awaiting each in turn would hold up the good events behind it.
fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    msg: OwnedMessage,
    reason: String,
    stats: &Arc<RoleStats>,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<bool> {
    let (producer, dlq, stats, shutdown) = (
        producer.clone(),
        dlq.to_string(),
        stats.clone(),
        shutdown.clone(),
    );
    tokio::spawn(async move {
        let published =
            kafka::dead_letter_patiently(&producer, &dlq, &msg, &reason, &shutdown).await;
        if published {
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
        published
    })
}

/// The Prometheus families of the consumers a process runs: what they handled, and each
/// group's lag in the fleet's `herald_consumer_lag`.
pub fn prometheus(topics: &Topics, roles: &[(Role, Arc<RoleStats>)]) -> Vec<crate::prom::Family> {
    let mut events = crate::prom::Family::new(RoleStats::FAMILY.0, RoleStats::FAMILY.1);
    let mut lag = crate::prom::Family::new(
        "herald_consumer_lag",
        "Largest per-partition lag of the consumer group on its topic, in messages.",
    );
    for (role, stats) in roles {
        stats.add_to(&mut events, &[("consumer", role.as_str())]);
        lag.push(
            &[
                ("group", &role.group(topics)),
                ("topic", &role.topic(topics)),
            ],
            crate::prom::Value::Gauge(stats.consumer_lag.load(Ordering::Relaxed) as f64),
        );
    }
    vec![events, lag]
}
