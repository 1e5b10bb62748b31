//! `herald-metrics`: counts the lifecycle events of `herald.events` into Redis, per campaign,
//! channel and outcome, with a send-to-receipt latency histogram, and shows them as JSON
//! (`/v1/stats`), Prometheus (`/metrics`) and a live dashboard (`/`). See [`crate::store`]'s
//! metrics keys for how a run of events is counted exactly once.

pub mod access;
mod counts;
mod http;
pub mod program;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use counts::{latency_bucket, Counts, LatencySummary, LATENCY_BUCKETS_MS};
pub use http::{openapi_json, router, serve};

use crate::kafka::{self, Topics};
use crate::model::{now_ms, LifecycleEvent};
use crate::shutdown::sleep_unless_cancelled;
use crate::stats::Counters;
use crate::store::{
    Applied, CampaignStore, HealthStore, Increments, MetricsRun, MetricsStore, Redis,
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
}

#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Events counted per Redis round trip at most.
    pub max_batch: usize,
    /// How long an event may wait to be counted.
    pub flush_interval: Duration,
    /// How many recent event ids are remembered to drop a re-published copy.
    pub recent_ids: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            max_batch: 5_000,
            flush_interval: Duration::from_millis(200),
            recent_ids: 200_000,
        }
    }
}

/// The aggregator's own counters (not the fleet's: those are in Redis).
#[derive(Debug, Default, Serialize)]
pub struct AggregatorStats {
    pub consumed: AtomicU64,
    pub counted: AtomicU64,
    /// Copies of an event already seen (same `event_id`, another offset).
    pub duplicates: AtomicU64,
    /// Redelivered messages below the partition's watermark.
    pub already_counted: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    /// Largest per-partition lag of the group on `herald.events`, refreshed every few seconds.
    pub consumer_lag: AtomicI64,
}

impl Counters for AggregatorStats {
    const NAME: &'static str = "aggregator";
    const FAMILY: (&'static str, &'static str) = (
        "herald_metrics_events",
        "Events this aggregator read, by what became of them.",
    );
    // The series herald_metrics_events always had; flush errors have a metric of their own.
    const NOT_IN_FAMILY: &'static [&'static str] =
        &["consumed", "flushes", "flush_errors", "consumer_lag"];
}

pub struct Aggregator {
    pub store: MetricsStore,
    /// A campaign's record and state, for its report.
    pub campaign_store: CampaignStore,
    /// The providers dispatchers report, for the dashboard.
    pub health_store: HealthStore,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub config: AggregatorConfig,
    pub stats: AggregatorStats,
    rates: Mutex<RateWindow>,
}

/// One partition's events not yet counted, in offset order; `None` for a message that
/// counts for nothing (poison, duplicate) but whose offset must still move on.
#[derive(Default)]
struct PartitionRun {
    events: Vec<(i64, Option<LifecycleEvent>)>,
}

/// Event ids seen lately, to drop a copy published twice (at two offsets). Redelivery of
/// the same offset is handled exactly by the watermark; this window covers the rarer
/// producer-side duplicate, which arrives close to its original.
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        RecentIds {
            set: HashSet::with_capacity(cap.min(1 << 16)),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// `true` when the id is new.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// A partition's run as the store applies it.
fn metrics_run(topic: &str, partition: i32, run: &PartitionRun) -> Option<MetricsRun> {
    let (&(first, _), &(last, _)) = (run.events.first()?, run.events.last()?);
    Some(MetricsRun {
        partition: format!("{topic}:{partition}"),
        first,
        next: last + 1,
        increments: increments_of(run.events.iter().filter_map(|(_, e)| e.as_ref())),
    })
}

/// The increments a run of events makes.
pub fn increments_of<'a>(events: impl IntoIterator<Item = &'a LifecycleEvent>) -> Increments {
    let mut inc = Increments::new();
    for e in events {
        for (field, n) in counts::fields_of(e) {
            *inc.entry((e.campaign.clone(), field)).or_default() += n;
        }
    }
    inc
}

impl Aggregator {
    pub fn new(
        redis: &Redis,
        producer: FutureProducer,
        topics: Topics,
        config: AggregatorConfig,
    ) -> Self {
        Aggregator {
            store: MetricsStore::new(redis),
            campaign_store: CampaignStore::new(redis),
            health_store: HealthStore::new(redis),
            producer,
            topics,
            config,
            stats: AggregatorStats::default(),
            rates: Mutex::new(RateWindow::default()),
        }
    }

    /// Consumes `herald.events` until `shutdown`, counting every event once.
    pub async fn run(
        self: Arc<Self>,
        consumer: StreamConsumer,
        shutdown: CancellationToken,
    ) -> Result<(), MetricsError> {
        let consumer = kafka::Subscription::new(consumer, &self.topics.events())?;
        tracing::info!(topic = consumer.topic(), "metrics aggregator consuming");
        let mut runs: BTreeMap<i32, PartitionRun> = BTreeMap::new();
        let mut recent = RecentIds::new(self.config.recent_ids);
        let mut pending = 0usize;
        let mut tick = tokio::time::interval(self.config.flush_interval);
        let mut progress = tokio::time::interval(Duration::from_secs(10));
        loop {
            if pending >= self.config.max_batch {
                // Full: count before reading more, waiting out a Redis outage here.
                while !self.flush(&consumer, &mut runs).await {
                    if !sleep_unless_cancelled(Duration::from_millis(500), &shutdown).await {
                        break;
                    }
                }
                pending = runs.values().map(|r| r.events.len()).sum();
                if shutdown.is_cancelled() {
                    break;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = progress.tick() => self.log_progress(),
                _ = tick.tick() => {
                    self.flush(&consumer, &mut runs).await;
                    pending = runs.values().map(|r| r.events.len()).sum();
                }
                m = consumer.next(&shutdown) => {
                    let Some(msg) = m else { break };
                    let event = self.decode(&msg, &mut recent, &shutdown).await;
                    runs.entry(msg.partition()).or_default().events.push((msg.offset(), event));
                    pending += 1;
                }
            }
        }
        // What cannot be counted now stays uncommitted and is counted by whoever reads next.
        self.flush(&consumer, &mut runs).await;
        consumer.close().await;
        self.log_progress();
        Ok(())
    }

    /// The event to count, or `None` for a copy already seen or a poison message (sent to
    /// the dead-letter topic with its reason).
    async fn decode(
        &self,
        msg: &OwnedMessage,
        recent: &mut RecentIds,
        shutdown: &CancellationToken,
    ) -> Option<LifecycleEvent> {
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        let parsed = event_of(msg.payload());
        match parsed {
            Ok(event) if recent.insert(&event.event_id) => {
                crate::telemetry::follow_event(msg, &event);
                Some(event)
            }
            Ok(_) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(reason) => {
                self.dead_letter(msg, &reason, shutdown).await;
                None
            }
        }
    }

    async fn dead_letter(&self, msg: &OwnedMessage, reason: &str, shutdown: &CancellationToken) {
        tracing::warn!(
            reason,
            offset = msg.offset(),
            partition = msg.partition(),
            "dead-lettering event"
        );
        if kafka::dead_letter_patiently(&self.producer, &self.topics.dlq(), msg, reason, shutdown)
            .await
        {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts every partition's run in one Redis round trip; `true` when all were counted.
    /// What fails stays for the next flush, its offset unstored.
    async fn flush(
        &self,
        consumer: &kafka::Subscription,
        runs: &mut BTreeMap<i32, PartitionRun>,
    ) -> bool {
        let topic = self.topics.events();
        runs.retain(|_, r| !r.events.is_empty());
        // Each pass counts what no other reader has; a partition found partly counted is
        // trimmed to its watermark and goes again in the next pass.
        while !runs.is_empty() {
            let (partitions, batch): (Vec<i32>, Vec<MetricsRun>) = runs
                .iter()
                .filter_map(|(p, run)| Some((*p, metrics_run(&topic, *p, run)?)))
                .unzip();
            let applied = match self.store.apply_metrics_runs(&batch, now_ms()).await {
                Ok(applied) => applied,
                Err(e) => {
                    self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "counting failed; will retry");
                    return false;
                }
            };
            self.stats.flushes.fetch_add(1, Ordering::Relaxed);
            for (partition, outcome) in partitions.iter().zip(applied) {
                let Some(run) = runs.get_mut(partition) else {
                    continue;
                };
                let Some(&(last, _)) = run.events.last() else {
                    continue;
                };
                match outcome {
                    Applied::Counted => {
                        let n = run.events.iter().filter(|(_, e)| e.is_some()).count();
                        self.stats.counted.fetch_add(n as u64, Ordering::Relaxed);
                        run.events.clear();
                    }
                    Applied::AlreadyCountedUpTo(mark) => {
                        let before = run.events.len();
                        run.events.retain(|(offset, _)| *offset >= mark);
                        let dropped = (before - run.events.len()) as u64;
                        self.stats
                            .already_counted
                            .fetch_add(dropped, Ordering::Relaxed);
                        tracing::debug!(partition, mark, dropped, "skipping events counted before");
                        if !run.events.is_empty() {
                            continue;
                        }
                    }
                }
                // Everything up to `last` is counted (here or by another reader): commit it.
                consumer.store(*partition, last);
            }
            runs.retain(|_, r| !r.events.is_empty());
        }
        true
    }

    fn log_progress(&self) {
        self.stats.log_progress("herald-metrics");
    }

    /// Samples the fleet's totals every second for the rates the dashboard shows.
    pub async fn sample_rates(self: Arc<Self>, shutdown: CancellationToken) {
        while sleep_unless_cancelled(Duration::from_secs(1), &shutdown).await {
            match self.store.metrics_totals().await {
                Ok(totals) => lock(&self.rates).push(Instant::now(), totals),
                Err(e) => tracing::debug!(error = %e, "cannot sample totals"),
            }
        }
    }

    /// Per-second rate of each counter field over the last ten seconds.
    pub fn rates(&self) -> BTreeMap<String, f64> {
        lock(&self.rates).rates()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Snapshots of the totals over a short window, for rates that any number of
/// `herald-metrics` instances can show alike (they all read the same Redis).
#[derive(Default)]
struct RateWindow {
    samples: VecDeque<(Instant, BTreeMap<String, u64>)>,
}

const RATE_WINDOW: Duration = Duration::from_secs(10);

impl RateWindow {
    fn push(&mut self, at: Instant, totals: BTreeMap<String, u64>) {
        self.samples.push_back((at, totals));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn rates(&self) -> BTreeMap<String, f64> {
        let (Some((t0, first)), Some((t1, last))) = (self.samples.front(), self.samples.back())
        else {
            return BTreeMap::new();
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return BTreeMap::new();
        }
        last.iter()
            .filter(|(field, _)| !field.starts_with("lat:"))
            .map(|(field, n)| {
                let before = first.get(field).copied().unwrap_or(0);
                (field.clone(), n.saturating_sub(before) as f64 / secs)
            })
            .collect()
    }
}

/// A message of `herald.events`, or why it is dead-lettered.
pub fn event_of(payload: Option<&[u8]>) -> Result<LifecycleEvent, String> {
    let payload = payload.ok_or("empty message")?;
    serde_json::from_slice(payload).map_err(|e| format!("undecodable lifecycle event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CampaignId, Channel, CustomerId, LifecycleKind};

    fn delivery(kind: LifecycleKind, channel: Channel) -> LifecycleEvent {
        LifecycleEvent::for_delivery(
            kind,
            &CampaignId::parse("c1").unwrap(),
            &CustomerId::parse("u1").unwrap(),
            channel,
            None,
        )
    }

    #[test]
    fn a_run_adds_up_per_campaign_field_with_batch_counts() {
        let mut accepted = delivery(LifecycleKind::Accepted, Channel::Email);
        accepted.count = Some(1000);
        let events = [
            accepted,
            delivery(LifecycleKind::Sent, Channel::Email),
            delivery(LifecycleKind::Sent, Channel::Email),
            delivery(LifecycleKind::FellBack, Channel::Sms),
        ];
        let inc = increments_of(&events);
        let c1 = Some(CampaignId::parse("c1").unwrap());
        assert_eq!(inc[&(c1.clone(), "accepted:email".to_string())], 1000);
        assert_eq!(inc[&(c1.clone(), "sent:email".to_string())], 2);
        assert_eq!(inc[&(c1, "fallback:sms".to_string())], 1);
    }

    #[test]
    fn recent_ids_forget_the_oldest_beyond_the_cap() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"), "a copy is caught");
        assert!(r.insert("b"));
        assert!(r.insert("c"), "a is forgotten to make room");
        assert!(r.insert("a"));
        assert!(!r.insert("c"));
    }

    #[test]
    fn rates_come_from_the_oldest_and_newest_samples() {
        let mut w = RateWindow::default();
        let t0 = Instant::now();
        w.push(t0, BTreeMap::from([("sent:email".to_string(), 100)]));
        w.push(
            t0 + Duration::from_secs(2),
            BTreeMap::from([
                ("sent:email".to_string(), 300),
                ("lat:email:count".to_string(), 5),
            ]),
        );
        let r = w.rates();
        assert_eq!(r["sent:email"], 100.0);
        assert!(!r.contains_key("lat:email:count"));
    }
}
