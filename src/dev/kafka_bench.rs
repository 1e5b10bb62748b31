//! Load straight to Kafka for the benchmarks: synthetic lifecycle events for
//! `herald-metrics`, raw broker throughput, and a fast producer the event generator shares.

use std::time::{Duration, Instant};

use crate::model::Channel;

/// Queues one record on a fast (unacknowledged) producer, waiting while its queue is full.
pub fn send_waiting(
    producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::error::RDKafkaErrorCode;
    use rdkafka::producer::BaseRecord;
    let mut rec = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Produces `count` records made by `record(i)` (key, payload) as fast as the broker takes
/// them; returns records per second. Blocking.
pub fn produce_fast(
    brokers: &str,
    topic: &str,
    count: u64,
    mut record: impl FnMut(u64) -> (String, Vec<u8>),
) -> Result<f64, rdkafka::error::KafkaError> {
    use rdkafka::producer::{Producer, ThreadedProducer};

    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        crate::kafka_security::client_config(brokers)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()?;
    let started = Instant::now();
    for i in 0..count {
        let (key, payload) = record(i);
        send_waiting(&producer, topic, &key, &payload)?;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// The lifecycle events of `count / 2` campaign recipients spread over `campaigns`
/// campaigns and the four channels (a `sent` then a `delivered` with a latency each), as
/// the fleet would publish them, for benchmarking `herald-metrics`. Returns events per
/// second produced. Blocking.
pub fn produce_lifecycle_events(
    brokers: &str,
    topic: &str,
    count: u64,
    campaigns: u64,
) -> Result<f64, rdkafka::error::KafkaError> {
    use crate::model::{CampaignId, CustomerId, LifecycleEvent, LifecycleKind};
    let campaign_ids: Vec<CampaignId> = (0..campaigns.max(1))
        .filter_map(|c| CampaignId::parse(&format!("bench-{c}")))
        .collect();
    produce_fast(brokers, topic, count, |i| {
        let recipient = i / 2;
        let campaign = &campaign_ids[(recipient % campaign_ids.len() as u64) as usize];
        let channel = Channel::ALL[(recipient % 4) as usize];
        let customer =
            CustomerId::parse(&format!("b{recipient}")).unwrap_or_else(|| unreachable!());
        let kind = if i % 2 == 0 {
            LifecycleKind::Sent
        } else {
            LifecycleKind::Delivered
        };
        let mut event = LifecycleEvent::for_delivery(kind, campaign, &customer, channel, None);
        if kind == LifecycleKind::Delivered {
            event.latency_ms = Some(50 + recipient % 3000);
        }
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        (event.id.0, payload)
    })
}

/// Raw broker throughput with the same client library and settings class: produce `count`
/// messages of `size` bytes to `topic` as fast as the broker takes them, then consume them
/// all from the start. Returns (produced per second, consumed per second). Blocking.
pub fn broker_throughput(
    brokers: &str,
    topic: &str,
    count: u64,
    size: usize,
) -> Result<(f64, f64), rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let payload = vec![b'x'; size];
    let produce_rate = produce_fast(brokers, topic, count, |i| (i.to_string(), payload.clone()))?;

    let consumer: BaseConsumer = crate::kafka_security::client_config(brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut seen = 0u64;
    let mut idle_since = Instant::now();
    while seen < count && idle_since.elapsed() < Duration::from_secs(10) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                seen += 1;
                idle_since = Instant::now();
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    let consume_rate = seen as f64 / started.elapsed().as_secs_f64();
    Ok((produce_rate, consume_rate))
}
