//! Publishing a seed 001 request's notification to Kafka: by herald-ingest when
//! `POST /v1/requests/{id}/process` is called, and by herald-retry for a request that was
//! marked published but whose publish Kafka never acknowledged (the ingest died between the
//! two, or the broker did not answer in time). Publishing twice is harmless: the dispatcher's
//! claim sends a request once.

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::kafka::{self, KafkaError, Topics};
use crate::model::{now_ms, LifecycleEvent, LifecycleKind, Message, Notification, RequestId};
use crate::shutdown::sleep_unless_cancelled;
use crate::store::{RequestStore, StoreError};

/// How long after `/process` marks a request the reconciler may publish it again: longer than
/// the ingest's publish time-out, so a publish under way is not doubled needlessly.
pub const RECONCILE_AFTER: Duration = Duration::from_secs(30);

/// Publishes the request's notification and waits for Kafka's acknowledgement.
pub async fn publish_request(
    producer: &FutureProducer,
    topics: &Topics,
    id: &RequestId,
    message: Message,
) -> Result<(), KafkaError> {
    let channel = message.channel;
    let notification = Notification {
        id: id.clone(),
        message,
        published_at_ms: now_ms(),
    };
    kafka::publish_json(
        producer,
        &topics.notify(channel),
        id.as_str(),
        &notification,
    )
    .await?;
    // Off the caller's path: an answer must not wait on a metrics event.
    let event = LifecycleEvent::new(LifecycleKind::Accepted, id, channel, None);
    let (producer, topic) = (producer.clone(), topics.events());
    tokio::spawn(async move { kafka::emit_event(&producer, &topic, &event).await });
    Ok(())
}

/// Publishes the requests left marked but unacknowledged; returns how many went out.
pub async fn reconcile_once(
    store: &RequestStore,
    producer: &FutureProducer,
    topics: &Topics,
    lease: Duration,
) -> Result<usize, StoreError> {
    let mut published = 0;
    for (id, message) in store.claim_unpublished(100, lease).await? {
        match publish_request(producer, topics, &id, message).await {
            Ok(()) => {
                store.confirm_published(&id).await?;
                tracing::warn!(id = %id, "request published by the reconciler (its first publish was never acknowledged)");
                published += 1;
            }
            // Still listed: the next round tries again once the lease runs out.
            Err(e) => tracing::error!(id = %id, error = %e, "reconciler could not publish"),
        }
    }
    Ok(published)
}

/// Reconciles every `poll` until `shutdown`.
pub async fn run(
    store: RequestStore,
    producer: FutureProducer,
    topics: Topics,
    poll: Duration,
    shutdown: CancellationToken,
) {
    while sleep_unless_cancelled(poll, &shutdown).await {
        if let Err(e) = reconcile_once(&store, &producer, &topics, RECONCILE_AFTER).await {
            tracing::warn!(error = %e, "request reconciler round failed");
        }
    }
}
