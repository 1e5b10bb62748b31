//! Publishing flash-promo purchases as sales. The purchase script queues each first
//! purchase's `sale_completed` in the promo's outbox, atomically with the purchase; a
//! scheduler (herald-retry) publishes the outbox to `herald.sales` and then trims it. A crash
//! between the two publishes a sale again, which herald-events applies once (by `sale_id`);
//! nothing bought goes without its sale event.

use std::time::Duration;

use rdkafka::producer::FutureProducer;

use crate::kafka::Topics;
use crate::store::{PromoStore, PromoTask, StoreError};

/// Longer than a publish may take (the producer's 30 s), so two schedulers never drain one
/// outbox at once.
const DRAIN_LEASE: Duration = Duration::from_secs(120);
const DRAIN_BATCH: usize = 500;
/// Outboxes of promos that ended up to this long ago are still drained.
const AFTER_END: u64 = 3600 * 1000;

/// Publishes the outboxes of current promos; returns how many sale events went out.
pub async fn publish_outboxes(
    store: &PromoStore,
    producer: &FutureProducer,
    topics: &Topics,
    owner: &str,
    now_ms: u64,
) -> Result<usize, StoreError> {
    let mut published = 0;
    // Every promo with sale events waiting, however long ago it ended; and the promos of the
    // last hour, for outboxes written before the set existed.
    let mut ids = store.promos_with_outbox().await?;
    for id in store
        .current_promo_ids(now_ms.saturating_sub(AFTER_END))
        .await?
    {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for id in ids {
        if !store
            .claim_promo_task(&id, PromoTask::OutboxDrain, owner, DRAIN_LEASE)
            .await?
        {
            continue;
        }
        let events = store.outbox(&id, DRAIN_BATCH).await?;
        let records: Vec<(String, String, Vec<u8>)> = events
            .iter()
            .map(|e| (topics.sales(), id.to_string(), e.clone().into_bytes()))
            .collect();
        let failed = crate::kafka::publish_all(producer, &records).await;
        if failed > 0 {
            tracing::warn!(promo = %id, failed, "sale events not published; will retry");
            store.trim_outbox(&id, owner, 0).await?;
            continue;
        }
        if store.trim_outbox(&id, owner, events.len()).await? {
            published += events.len();
        } else {
            tracing::warn!(promo = %id, "outbox lease lost while publishing; the next drainer publishes again");
        }
    }
    Ok(published)
}
