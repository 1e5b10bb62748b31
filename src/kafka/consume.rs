//! The consumer loop every Herald consumer shares (dispatch, fan-out, metrics, events):
//! subscribe, receive with a back-off on errors, store an offset only once every message at
//! or below it is finished, and close with a bounded final commit.
//!
//! Consumers follow rust-rdkafka's `at_least_once` example: auto-commit is on but only
//! offsets we store are committed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use tokio_util::sync::CancellationToken;

use super::KafkaError;

/// How long a program waits for its final commit before it stops without it.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// One group consumer subscribed to one topic.
pub struct Subscription {
    consumer: Arc<StreamConsumer>,
    topic: String,
    offsets: InFlight,
}

impl Subscription {
    /// Subscribes `consumer` (from [`super::consumer`]) to `topic`.
    pub fn new(consumer: StreamConsumer, topic: &str) -> Result<Self, KafkaError> {
        consumer
            .subscribe(&[topic])
            .map_err(|source| KafkaError::Subscribe {
                topic: topic.to_string(),
                source,
            })?;
        Ok(Subscription {
            consumer: Arc::new(consumer),
            topic: topic.to_string(),
            offsets: InFlight::default(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message, or `None` once `shutdown` is cancelled. A consume error is logged
    /// and waited out briefly: the consumer never stops for one.
    pub async fn next(&self, shutdown: &CancellationToken) -> Option<OwnedMessage> {
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return None,
                m = self.consumer.recv() => m,
            };
            match received {
                Ok(m) => return Some(m.detach()),
                Err(e) => {
                    tracing::warn!(error = %e, topic = %self.topic, "kafka consume error");
                    if !crate::shutdown::sleep_unless_cancelled(
                        Duration::from_millis(200),
                        shutdown,
                    )
                    .await
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// Work on `msg` begins: no offset past it is stored until it is [`finished`](Self::finished).
    pub fn started(&self, msg: &OwnedMessage) {
        self.offsets
            .start(msg.topic(), msg.partition(), msg.offset());
    }

    /// Work on `msg` is done: stores the highest offset whose messages are all done. A
    /// message never finished (handed back on shutdown) holds its partition's offset.
    pub fn finished(&self, msg: &OwnedMessage) {
        self.offsets
            .finish(msg.topic(), msg.partition(), msg.offset(), |upto| {
                self.store(msg.partition(), upto)
            });
    }

    /// Stores `offset` of `partition` for commit: every message up to it is done. For
    /// consumers that finish in order (a batch at a time).
    pub fn store(&self, partition: i32, offset: i64) {
        if let Err(e) = self.consumer.store_offset(&self.topic, partition, offset) {
            // A partition taken away meanwhile: its new owner handles it again, harmlessly.
            tracing::debug!(error = %e, partition, "offset not stored");
        }
    }

    /// Commits the stored offsets and closes the consumer, giving up after a bound: with the
    /// broker gone, librdkafka's synchronous commit and close can block for good, and a
    /// program told to stop must stop. What was not committed is delivered again, and the
    /// Redis claims drop the copies.
    pub async fn close(self) {
        let consumer = self.consumer;
        let closing = tokio::task::spawn_blocking(move || {
            if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                tracing::warn!(error = %e, "final commit failed");
            }
            drop(consumer);
        });
        if tokio::time::timeout(CLOSE_LIMIT, closing).await.is_err() {
            tracing::warn!(limit = ?CLOSE_LIMIT, "broker unreachable: stopping without the final commit");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An [`OffsetTracker`] shared by concurrent handlers.
#[derive(Debug, Default)]
pub struct InFlight {
    tracker: Mutex<OffsetTracker>,
}

impl InFlight {
    pub fn start(&self, topic: &str, partition: i32, offset: i64) {
        lock(&self.tracker).start(topic, partition, offset);
    }

    /// Marks `offset` done and hands the offset that may now be committed to `store`, still
    /// under the lock: two handlers finishing together would otherwise store in either
    /// order, and a lower offset stored last holds the group one message behind for good
    /// (its lag never reaches 0, so an autoscaler never sees the topic drained).
    pub fn finish(&self, topic: &str, partition: i32, offset: i64, store: impl FnOnce(i64)) {
        let mut tracker = lock(&self.tracker);
        if let Some(upto) = tracker.finish(topic, partition, offset) {
            store(upto);
        }
    }
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
    fn a_handler_finishing_while_another_stores_cannot_store_behind_it() {
        use std::sync::mpsc::channel;
        let offsets = std::sync::Arc::new(InFlight::default());
        offsets.start("t", 0, 0);
        offsets.start("t", 0, 1);
        let stored = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (computed, a_computed) = channel();
        let (b_stored, stored_by_b) = channel::<()>();
        // A finishes offset 0 and is slow to store; B finishes offset 1 meanwhile.
        let a = {
            let (offsets, stored) = (offsets.clone(), stored.clone());
            std::thread::spawn(move || {
                offsets.finish("t", 0, 0, |upto| {
                    computed.send(()).unwrap();
                    let _ = stored_by_b.recv_timeout(Duration::from_millis(300));
                    lock(&stored).push(upto);
                })
            })
        };
        a_computed.recv().unwrap();
        let b = {
            let (offsets, stored) = (offsets.clone(), stored.clone());
            std::thread::spawn(move || {
                offsets.finish("t", 0, 1, |upto| {
                    lock(&stored).push(upto);
                    let _ = b_stored.send(());
                })
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(*lock(&stored), vec![0, 1], "stored in the order computed");
    }
}
