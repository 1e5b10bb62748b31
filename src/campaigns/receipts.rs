//! Provider receipts applied to the once-slots: a confirmation ends the wait for it, a
//! failure sends the customer on to the next channel now, and each change is announced on
//! `herald.events`. A receipt for a delivery that already moved on changes nothing.

use std::collections::BTreeMap;

use futures::future::join_all;
use rdkafka::producer::FutureProducer;

use crate::kafka::{self, Topics};
use crate::model::{parse_delivery_key, LifecycleEvent, LifecycleKind, Receipt};
use crate::store::{ReceiptOutcome, ReceiptUpdate, SlotStore, StoreError};

/// Applies receipts and tells how many ended each way (`delivered`, `undelivered`, `early`,
/// `late`, `repeated`: posted before and applied then, `mismatched`: not the provider id
/// recorded at send time, `unknown`: keys that are not Herald delivery keys, `unreadable`:
/// a once-slot Redis holds as something else).
/// If Redis failed some of them, the events of those applied are still emitted (a retry of
/// the post finds them `repeated`, and emits nothing for them) and the error is returned.
pub async fn apply(
    store: &SlotStore,
    producer: &FutureProducer,
    topics: &Topics,
    receipts: &[Receipt],
) -> Result<BTreeMap<&'static str, u64>, StoreError> {
    let mut parsed = Vec::with_capacity(receipts.len());
    let mut unknown = 0u64;
    for r in receipts {
        match parse_delivery_key(&r.key) {
            Some((campaign, customer, channel)) => parsed.push(ReceiptUpdate {
                campaign,
                customer,
                channel,
                status: r.status,
                reason: r.reason.clone().unwrap_or_else(|| "failure receipt".into()),
                provider_id: r.provider_id.clone(),
            }),
            None => unknown += 1,
        }
    }
    let outcomes = if parsed.is_empty() {
        Vec::new()
    } else {
        store.apply_receipts(&parsed).await
    };
    let mut failed = None;
    let mut tally: BTreeMap<&'static str, u64> = BTreeMap::new();
    if unknown > 0 {
        tally.insert("unknown", unknown);
    }
    let mut events = Vec::new();
    for (outcome, r) in outcomes.into_iter().zip(&parsed) {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // Retrying cannot mend it: counted and logged, not answered 503 for ever.
            Err(StoreError::Corrupt { key, what }) => {
                tracing::error!(%key, %what, "receipt for an unreadable once-slot");
                *tally.entry("unreadable").or_default() += 1;
                continue;
            }
            Err(e) => {
                failed.get_or_insert(e);
                continue;
            }
        };
        *tally.entry(outcome.name()).or_default() += 1;
        let (kind, latency_ms) = match outcome {
            ReceiptOutcome::Delivered(latency) => (LifecycleKind::Delivered, latency),
            ReceiptOutcome::Undelivered => (LifecycleKind::Undelivered, None),
            _ => continue,
        };
        let detail = (kind == LifecycleKind::Undelivered).then(|| r.reason.clone());
        events.push(LifecycleEvent {
            latency_ms,
            ..LifecycleEvent::for_delivery(kind, &r.campaign, &r.customer, r.channel, detail)
        });
    }
    let topic = topics.events();
    join_all(
        events
            .iter()
            .map(|e| kafka::emit_event(producer, &topic, e)),
    )
    .await;
    match failed {
        Some(e) => Err(e),
        None => Ok(tally),
    }
}
