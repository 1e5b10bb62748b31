//! Kafka plumbing: topic names, producer and consumer set-up and publishing (here), the
//! shared consumer loop ([`consume`]), dead letters ([`dead_letter`]) and consumer lag
//! ([`lag`]).

use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Headers, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::model::{Channel, LifecycleEvent};

mod consume;
mod dead_letter;
pub mod groups;
mod lag;

pub use consume::{OffsetTracker, Subscription};
pub use dead_letter::{
    dead_letter, dead_letter_patiently, dead_letter_record, dlq_headers, DLQ_ORIGIN_HEADER,
};
pub use lag::{create_topics, lag_family, watch_lag, LagProbe, PartitionLag, TopicSettings};

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client set-up failed: {0}")]
    Setup(#[source] rdkafka::error::KafkaError),
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
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
/// the broker has not acknowledged within [`DELIVERY_TIMEOUT`] is reported failed. Messages wait up to
/// [`LINGER`] to go out in one request with others.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    producer_with(brokers, DELIVERY_TIMEOUT, LINGER)
}

/// How long a producer waits for the broker's acknowledgement unless told otherwise. Longer
/// than a broker lost with SIGKILL can hold an acks=all write: the controller fences it after
/// `broker.session.timeout.ms` (9 s), but the leaders of the partitions it followed keep it in
/// their in-sync sets for `replica.lag.time.max.ms` (30 s), and every write to them waits that
/// long: 30 s left no margin over that (ingest's 5 s producer did drop events there,
/// tests/it/kafka_cluster.rs); librdkafka's own default is 300 s.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a background program's message may wait for others to share its produce request
/// (librdkafka's own default). A dispatcher emits one lifecycle event per notification: with
/// no linger each went out nearly alone, and produce requests were 9% of a dispatcher's CPU
/// (its `rdk:broker` thread) and most of the broker's. Nobody waits on these acknowledgements
/// but the offset commit, which is seconds apart anyway.
pub const LINGER: Duration = Duration::from_millis(5);

/// A producer with the given delivery time-out and linger. The API uses a short time-out, so
/// that a caller hears "unavailable" in seconds rather than waiting on a dead broker, and no
/// linger: it answers after the acknowledgement, so each wait shows in its latency (under load
/// librdkafka still batches whatever piles up while a request is in flight).
pub fn producer_with(
    brokers: &str,
    delivery_timeout: Duration,
    linger: Duration,
) -> Result<FutureProducer, KafkaError> {
    crate::kafka_security::client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger.as_millis().to_string())
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        )
        .set("compression.type", "lz4")
        .create()
        .map_err(KafkaError::Setup)
}

/// A group consumer that commits only offsets stored by the caller (see [`Subscription`]).
pub fn consumer(brokers: &str, group: &str) -> Result<StreamConsumer, KafkaError> {
    crate::kafka_security::client_config(brokers)
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

/// Reads a header as text.
pub fn header<'a>(msg: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_namespace() {
        let t = Topics::new("herald");
        assert_eq!(t.notify(Channel::Email), "herald.notify.email");
        assert_eq!(t.all().len(), 10);
        assert!(t.all().contains(&"herald.user-events.dlq".to_string()));
        assert_eq!(t.dispatch_group(Channel::Sms), "herald-dispatch-sms");
    }
}
