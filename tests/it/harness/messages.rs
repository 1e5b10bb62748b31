//! The fleet's Kafka side: consumer groups, copies of messages, what a topic holds; and
//! the once-slots the messages end in.

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::OwnedMessage;

use super::*;

impl Fleet {
    /// Waits until each `(group, topic)` has committed everything on its topic: what was
    /// published has been handled, so a test can then check that nothing more happens.
    pub async fn wait_caught_up(&self, groups: &[(String, String)], limit: Duration) {
        let probe = std::sync::Arc::new(herald::kafka::LagProbe::new(self.brokers()));
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (probe, groups) = (probe.clone(), groups.to_vec());
            let lags = tokio::task::spawn_blocking(move || {
                groups
                    .iter()
                    .map(|(g, t)| (g.clone(), probe.max_lag(g, t).unwrap_or(i64::MAX)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap();
            if lags.iter().all(|(_, lag)| *lag == 0) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumers still behind: {lags:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The dispatch group of `channel` with its topic, for [`Fleet::wait_caught_up`].
    pub fn dispatch_group(&self, channel: Channel) -> (String, String) {
        (
            self.topics.dispatch_group(channel),
            self.topics.notify(channel),
        )
    }

    /// Fan-out's group with its topic, for [`Fleet::wait_caught_up`].
    pub fn fanout_group(&self) -> (String, String) {
        (self.topics.fanout_group(), self.topics.campaigns())
    }

    /// Every recipient's once-slot of `campaign`, by customer id. Each read is retried: a
    /// test may just have crashed Redis, which broke this connection too.
    pub async fn slots(&self, campaign: &str, ids: &[String]) -> HashMap<String, Slot> {
        let campaign = herald::model::CampaignId::parse(campaign).unwrap();
        let mut slots = HashMap::new();
        for chunk in ids.chunks(500) {
            let read = futures::future::join_all(chunk.iter().map(|id| {
                let customer = herald::model::CustomerId::parse(id).unwrap();
                let campaign = &campaign;
                async move {
                    for _ in 0..50 {
                        if let Ok(slot) = self.store.slots.slot(campaign, &customer).await {
                            return (customer.to_string(), slot);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    panic!("cannot read the slot of {customer}");
                }
            }))
            .await;
            slots.extend(read);
        }
        slots
    }

    /// Copies each of `messages` onto `topic` once more, as a redelivery would.
    pub async fn publish_copies(&self, topic: &str, messages: &[OwnedMessage]) {
        use rdkafka::message::Message as _;
        let producer = kafka::producer(self.brokers()).unwrap();
        for m in messages {
            let key = String::from_utf8_lossy(m.key().unwrap()).to_string();
            kafka::publish(&producer, topic, &key, m.payload().unwrap(), None)
                .await
                .unwrap();
        }
    }

    /// Publishes a copy of each of the first `max` messages on `topics` right behind it, as
    /// Kafka does when it redelivers, until `stop`; returns how many were copied.
    pub fn duplicate_messages(
        &self,
        topics: Vec<String>,
        max: usize,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<usize> {
        use rdkafka::message::Message as _;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", format!("{}-duplicator", self.ns))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs).unwrap();
        let producer = kafka::producer(self.brokers()).unwrap();
        tokio::spawn(async move {
            let mut copied = 0;
            while copied < max {
                let m = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = consumer.recv() => m,
                };
                let Ok(m) = m else { continue };
                let (Some(key), Some(payload)) = (m.key(), m.payload()) else {
                    continue;
                };
                let key = String::from_utf8_lossy(key).to_string();
                if kafka::publish(&producer, m.topic(), &key, payload, None)
                    .await
                    .is_ok()
                {
                    copied += 1;
                }
            }
            copied
        })
    }

    /// Reads every message on `topic` from the start, waiting up to `limit` for at least `want`.
    pub async fn read_topic(&self, topic: &str, want: usize, limit: Duration) -> Vec<OwnedMessage> {
        use rdkafka::message::Message as _;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set(
                "group.id",
                format!("{}-reader-{}", self.ns, uuid::Uuid::new_v4()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while out.len() < want {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => out.push(m.detach()),
                Ok(Err(e)) => panic!("reading {topic}: {e}"),
                Err(_) => break,
            }
        }
        // Anything beyond `want` that is already there, so tests see extra copies too.
        while let Ok(Ok(m)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            out.push(m.detach());
        }
        out.sort_by_key(|m| (m.partition(), m.offset()));
        out
    }
}
