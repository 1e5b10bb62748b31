//! Kafka plumbing: topic names, producer and consumer set-up, dead letters, and the offset
//! tracker that lets a consumer work on many messages at once yet commit only what is done.
//!
//! Consumers follow rust-rdkafka's `at_least_once` example: auto-commit is on but only
//! offsets we store are committed, and we store an offset only once every message at or
//! below it has its outcome recorded.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};

use crate::model::{Channel, LifecycleEvent};

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client set-up failed: {0}")]
    Setup(#[source] rdkafka::error::KafkaError),
    #[error("publishing to {topic} failed: {source}")]
    Publish {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("could not encode message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("creating topic {topic} failed: {code}")]
    Admin { topic: String, code: String },
}

/// Herald's topic names under one namespace (`herald` by default: `herald.notify.email`...).
#[derive(Debug, Clone)]
pub struct Topics {
    ns: String,
}

impl Topics {
    pub fn new(namespace: &str) -> Self {
        Topics {
            ns: namespace.to_string(),
        }
    }

    pub fn notify(&self, channel: Channel) -> String {
        format!("{}.notify.{}", self.ns, channel)
    }
    pub fn events(&self) -> String {
        format!("{}.events", self.ns)
    }
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.ns)
    }
    pub fn campaigns(&self) -> String {
        format!("{}.campaigns", self.ns)
    }
    pub fn sales(&self) -> String {
        format!("{}.sales", self.ns)
    }
    pub fn user_events(&self) -> String {
        format!("{}.user-events", self.ns)
    }
    pub fn user_events_dlq(&self) -> String {
        format!("{}.user-events.dlq", self.ns)
    }

    /// Every topic the fleet uses; what a broker (or an admin job) must create.
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = Channel::ALL.iter().map(|c| self.notify(*c)).collect();
        all.extend([
            self.events(),
            self.dlq(),
            self.campaigns(),
            self.sales(),
            self.user_events(),
            self.user_events_dlq(),
        ]);
        all
    }

    pub fn dispatch_group(&self, channel: Channel) -> String {
        format!("{}-dispatch-{}", self.ns, channel)
    }

    /// The group of the campaign fan-out workers on [`Topics::campaigns`].
    pub fn fanout_group(&self) -> String {
        format!("{}-fanout", self.ns)
    }

    /// The group of the metrics aggregators on [`Topics::events`].
    pub fn metrics_group(&self) -> String {
        self.group("metrics")
    }

    /// A consumer group of the fleet by its role (`herald-loyalty`).
    pub fn group(&self, role: &str) -> String {
        format!("{}-{role}", self.ns)
    }
}

/// A producer that waits for the broker's acknowledgement before a send counts; a message
/// the broker has not acknowledged within 30 s is reported failed.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    producer_with_timeout(brokers, Duration::from_secs(30))
}

/// As [`producer`], with the delivery time-out given: the API uses a short one so that a
/// caller hears "unavailable" in seconds rather than waiting on a dead broker.
pub fn producer_with_timeout(
    brokers: &str,
    delivery_timeout: Duration,
) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // No linger: the API answers after the ack, so each wait shows in its latency; under load
        // librdkafka still batches whatever piles up while a request is in flight.
        .set("linger.ms", "0")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        )
        .set("compression.type", "lz4")
        .create()
        .map_err(KafkaError::Setup)
}

/// A group consumer that commits only offsets stored by the caller (see [`OffsetTracker`]).
pub fn consumer(brokers: &str, group: &str) -> Result<StreamConsumer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A killed instance's partitions move on within seconds, not the default 45 s.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .map_err(KafkaError::Setup)
}

/// Publishes one message and waits for the broker's acknowledgement.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<(), KafkaError> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(h) = headers.or_else(crate::telemetry::trace_headers) {
        record = record.headers(h);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(source, _)| KafkaError::Publish {
            topic: topic.to_string(),
            source,
        })
}

pub async fn publish_json<T: serde::Serialize>(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &T,
) -> Result<(), KafkaError> {
    let payload = serde_json::to_vec(value)?;
    publish(producer, topic, key, &payload, None).await
}

/// Publishes many records at once, `(topic, key, payload)`, and waits for every
/// acknowledgement; returns how many were not acknowledged.
pub async fn publish_all(
    producer: &FutureProducer,
    records: &[(String, String, Vec<u8>)],
) -> usize {
    let trace = crate::telemetry::trace_headers();
    let acks = records.iter().map(|(topic, key, payload)| {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = &trace {
            record = record.headers(h.clone());
        }
        producer.send(record, Duration::from_secs(30))
    });
    futures::future::join_all(acks)
        .await
        .into_iter()
        .filter(|r| r.is_err())
        .count()
}

/// Publishes a lifecycle event (to `herald.events`). Events feed metrics and audit: the
/// producer retries for 30 s, after which the event is logged and dropped rather than
/// holding up the work it describes.
pub async fn emit_event(producer: &FutureProducer, topic: &str, event: &LifecycleEvent) {
    if let Err(e) = publish_json(producer, topic, event.id.as_str(), event).await {
        tracing::error!(id = %event.id, kind = ?event.kind, error = %e, "lifecycle event lost");
    }
}

/// Header names on a dead letter; `herald dlq` tooling reads them.
pub mod dlq_headers {
    pub const REASON: &str = "herald-dlq-reason";
    pub const SOURCE_TOPIC: &str = "herald-source-topic";
    pub const SOURCE_PARTITION: &str = "herald-source-partition";
    pub const SOURCE_OFFSET: &str = "herald-source-offset";
}

/// Copies a message that cannot be handled to the dead-letter topic, untouched, with why.
pub async fn dead_letter(
    producer: &FutureProducer,
    dlq_topic: &str,
    msg: &OwnedMessage,
    reason: &str,
) -> Result<(), KafkaError> {
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: dlq_headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_OFFSET,
            value: Some(&offset),
        });
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            headers = headers.insert(h);
        }
    }
    let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
    publish(
        producer,
        dlq_topic,
        &key,
        msg.payload().unwrap_or_default(),
        Some(headers),
    )
    .await
}

/// [`dead_letter`], retried every second while the broker refuses it: `true` once it is
/// published, `false` if `cancel` came first (the message must then stay uncommitted).
pub async fn dead_letter_patiently(
    producer: &FutureProducer,
    dlq_topic: &str,
    msg: &OwnedMessage,
    reason: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    loop {
        match dead_letter(producer, dlq_topic, msg, reason).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, "cannot publish to the dead-letter topic; retrying");
                if !crate::shutdown::sleep_unless_cancelled(Duration::from_secs(1), cancel).await {
                    return false;
                }
            }
        }
    }
}

/// Header naming the program that dead-lettered a record it made itself (no source message).
pub const DLQ_ORIGIN_HEADER: &str = "herald-origin";

/// Dead-letters work that never was a Kafka message of its own (a customer fan-out could
/// not reach, a fallback chain that ran out), with the reason and who gave up on it.
pub async fn dead_letter_record<T: serde::Serialize>(
    producer: &FutureProducer,
    dlq_topic: &str,
    key: &str,
    record: &T,
    reason: &str,
    origin: &str,
) -> Result<(), KafkaError> {
    let payload = serde_json::to_vec(record)?;
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: dlq_headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: DLQ_ORIGIN_HEADER,
            value: Some(origin),
        });
    publish(producer, dlq_topic, key, &payload, Some(headers)).await
}

/// One partition of a group's position: what it committed, the newest offset, the gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub committed: Option<i64>,
    pub high: i64,
    pub lag: i64,
}

/// Every consumer group of the fleet with the topic it reads.
pub fn fleet_groups(topics: &Topics) -> Vec<(String, String)> {
    let mut groups: Vec<(String, String)> = Channel::ALL
        .iter()
        .map(|c| (topics.dispatch_group(*c), topics.notify(*c)))
        .collect();
    groups.push((topics.fanout_group(), topics.campaigns()));
    groups.push((topics.metrics_group(), topics.events()));
    for role in crate::events::Role::ALL {
        groups.push((role.group(topics), role.topic(topics)));
    }
    groups
}

/// Creates the fleet's topics with `partitions` each through the Kafka admin API; a topic
/// that exists is left as it is. Returns (created, already there).
pub async fn create_topics(
    brokers: &str,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<(Vec<String>, Vec<String>), KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(KafkaError::Setup)?;
    let names = topics.all();
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let limit = Duration::from_secs(30);
    let opts = AdminOptions::new()
        .operation_timeout(Some(limit))
        .request_timeout(Some(limit));
    // Bounded on our side too: a broker without the admin API (herald-broker, which creates
    // its topics itself) never answers.
    let results = tokio::time::timeout(
        limit + Duration::from_secs(5),
        admin.create_topics(&new, &opts),
    )
    .await
    .map_err(|_| KafkaError::Admin {
        topic: names.join(","),
        code: "no answer from the broker's admin API".into(),
    })?
    .map_err(KafkaError::Setup)?;
    let (mut created, mut existing) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(name),
            Err((name, code)) => {
                return Err(KafkaError::Admin {
                    topic: name,
                    code: code.to_string(),
                })
            }
        }
    }
    Ok((created, existing))
}

/// Measures how far a consumer group is behind on a topic: the largest gap, over the
/// topic's partitions, between the newest offset and the group's committed one. Producers
/// of bulk work wait on it so they never outrun what the broker retains.
pub struct LagProbe {
    consumers: std::sync::Mutex<HashMap<String, std::sync::Arc<BaseConsumer>>>,
    brokers: String,
}

impl LagProbe {
    pub fn new(brokers: &str) -> Self {
        LagProbe {
            consumers: Default::default(),
            brokers: brokers.to_string(),
        }
    }

    fn consumer_for(&self, group: &str) -> Result<std::sync::Arc<BaseConsumer>, KafkaError> {
        let mut all = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = all.get(group) {
            return Ok(c.clone());
        }
        // Never subscribes, so it never joins (or disturbs) the group; it only reads its offsets.
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(KafkaError::Setup)?;
        let c = std::sync::Arc::new(c);
        all.insert(group.to_string(), c.clone());
        Ok(c)
    }

    /// The largest per-partition lag of `group` on `topic` (blocking; call from a blocking task).
    pub fn max_lag(&self, group: &str, topic: &str) -> Result<i64, KafkaError> {
        Ok(self
            .partition_lags(group, topic)?
            .iter()
            .map(|p| p.lag)
            .max()
            .unwrap_or(0))
    }

    /// `group`'s position on each partition of `topic` (blocking). A partition the group never
    /// committed counts from its low watermark, as `auto.offset.reset=earliest` reads it.
    pub fn partition_lags(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<PartitionLag>, KafkaError> {
        let c = self.consumer_for(group)?;
        let timeout = Duration::from_secs(5);
        let metadata = c
            .fetch_metadata(Some(topic), timeout)
            .map_err(KafkaError::Setup)?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = c
            .committed_offsets(tpl, timeout)
            .map_err(KafkaError::Setup)?;
        let mut lags = Vec::new();
        for e in committed.elements() {
            let (low, high) = c
                .fetch_watermarks(topic, e.partition(), timeout)
                .map_err(KafkaError::Setup)?;
            let committed = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            lags.push(PartitionLag {
                partition: e.partition(),
                committed,
                high,
                lag: high - committed.unwrap_or(low),
            });
        }
        Ok(lags)
    }
}

/// Keeps `set` fed with `group`'s largest lag on `topic`, every 5 s until `shutdown`, for
/// the program's `/metrics` (a failed probe leaves the last value).
pub fn watch_lag(
    brokers: &str,
    group: String,
    topic: String,
    shutdown: tokio_util::sync::CancellationToken,
    set: impl Fn(i64) + Send + 'static,
) {
    let probe = std::sync::Arc::new(LagProbe::new(brokers));
    tokio::spawn(async move {
        loop {
            let (p, g, t) = (probe.clone(), group.clone(), topic.clone());
            match tokio::task::spawn_blocking(move || p.max_lag(&g, &t)).await {
                Ok(Ok(lag)) => set(lag),
                Ok(Err(e)) => tracing::debug!(error = %e, "lag probe failed"),
                Err(e) => tracing::debug!(error = %e, "lag probe panicked"),
            }
            if !crate::shutdown::sleep_unless_cancelled(Duration::from_secs(5), &shutdown).await {
                return;
            }
        }
    });
}

/// The Prometheus family of a consumer group's lag.
pub fn lag_family(
    group: &str,
    topic: &str,
    lag: &std::sync::atomic::AtomicI64,
) -> crate::prom::Family {
    crate::prom::Family::new(
        "herald_consumer_lag",
        "Largest per-partition lag of the consumer group on its topic, in messages.",
    )
    .with(
        &[("group", group), ("topic", topic)],
        crate::prom::Value::Gauge(lag.load(std::sync::atomic::Ordering::Relaxed) as f64),
    )
}

/// Commits the stored offsets and closes the consumer, giving up after `limit`: with the
/// broker gone, librdkafka's synchronous commit and close can block for good, and a program
/// told to stop must stop. What was not committed is delivered again, and the Redis claims
/// drop the copies.
pub async fn close_consumer<C>(consumer: std::sync::Arc<C>, limit: Duration)
where
    C: Consumer + Send + Sync + 'static,
{
    let closing = tokio::task::spawn_blocking(move || {
        if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            tracing::warn!(error = %e, "final commit failed");
        }
        drop(consumer);
    });
    if tokio::time::timeout(limit, closing).await.is_err() {
        tracing::warn!(
            ?limit,
            "broker unreachable: stopping without the final commit"
        );
    }
}

/// Reads a header as text.
pub fn header<'a>(msg: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Tracks in-flight offsets per partition so that the stored offset never passes a message
/// whose work is unfinished, however the concurrent work completes.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), PartitionOffsets>,
}

#[derive(Debug, Default)]
struct PartitionOffsets {
    in_flight: BTreeSet<i64>,
    highest_started: i64,
}

impl OffsetTracker {
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self
            .partitions
            .entry((topic.to_string(), partition))
            .or_default();
        p.in_flight.insert(offset);
        p.highest_started = p.highest_started.max(offset);
    }

    /// Marks `offset` done and returns the offset to hand to `store_offset` (librdkafka commits
    /// that offset + 1), or `None` when an earlier message is still in flight and nothing new
    /// can be committed.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        let was_lowest = p.in_flight.first() == Some(&offset);
        p.in_flight.remove(&offset);
        if !was_lowest {
            return None;
        }
        match p.in_flight.first() {
            Some(&lowest) => Some(lowest - 1),
            None => Some(p.highest_started),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_completion_commits_only_the_contiguous_prefix() {
        let mut t = OffsetTracker::default();
        for o in 10..=13 {
            t.start("t", 0, o);
        }
        assert_eq!(t.finish("t", 0, 12), None, "11 and 10 are still in flight");
        assert_eq!(t.finish("t", 0, 11), None);
        assert_eq!(
            t.finish("t", 0, 10),
            Some(12),
            "13 still in flight: commit up to 12"
        );
        assert_eq!(t.finish("t", 0, 13), Some(13));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_tracked_apart() {
        let mut t = OffsetTracker::default();
        t.start("t", 0, 5);
        t.start("t", 1, 7);
        assert_eq!(t.finish("t", 1, 7), Some(7));
        assert_eq!(t.finish("t", 0, 5), Some(5));
    }

    #[test]
    fn an_abandoned_message_holds_the_commit_back_for_good() {
        let mut t = OffsetTracker::default();
        for o in 1..=3 {
            t.start("t", 0, o);
        }
        // 1 is handed back: never finished, so it stays in flight.
        assert_eq!(t.finish("t", 0, 2), None);
        assert_eq!(
            t.finish("t", 0, 3),
            None,
            "must not commit past the handed-back message"
        );
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn topic_names_follow_the_namespace() {
        let t = Topics::new("herald");
        assert_eq!(t.notify(Channel::Email), "herald.notify.email");
        assert_eq!(t.all().len(), 10);
        assert!(t.all().contains(&"herald.user-events.dlq".to_string()));
        assert_eq!(t.dispatch_group(Channel::Sms), "herald-dispatch-sms");
    }
}
