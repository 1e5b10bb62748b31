//! How far consumer groups are behind: probes for the producers of bulk work (which wait on
//! it), a watch that feeds each program's `/metrics`, and topic creation for real clusters.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaError, Topics};

/// One partition of a group's position: what it committed, the newest offset, the gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub committed: Option<i64>,
    pub high: i64,
    pub lag: i64,
}

/// How the fleet's topics are laid out on the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Bounds how many instances of one consumer group work at once.
    pub partitions: i32,
    /// Copies of each partition (1 on one broker; 3 on a cluster that may lose one).
    pub replication: i32,
    /// Copies that must hold a message before an `acks=all` producer hears it was written;
    /// `None` leaves the broker's default.
    pub min_insync_replicas: Option<i32>,
}

/// Creates the fleet's topics through the Kafka admin API; a topic that exists is left as it
/// is. Returns (created, already there).
pub async fn create_topics(
    brokers: &str,
    topics: &Topics,
    settings: TopicSettings,
) -> Result<(Vec<String>, Vec<String>), KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = crate::kafka_security::client_config(brokers)
        .create()
        .map_err(KafkaError::Setup)?;
    let names = topics.all();
    let min_isr = settings.min_insync_replicas.map(|n| n.to_string());
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            let topic = NewTopic::new(
                n,
                settings.partitions,
                TopicReplication::Fixed(settings.replication),
            );
            match &min_isr {
                Some(v) => topic.set("min.insync.replicas", v),
                None => topic,
            }
        })
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
        let c: BaseConsumer = crate::kafka_security::client_config(&self.brokers)
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
