//! A campaign delivery: the customer's once-slot decides whether this dispatcher sends, the
//! provider sends, and the campaign's pending set waits for the receipt. A copy of the
//! message, redelivered or duplicated, finds the slot taken and is counted `deduplicated`.

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::{claim_until, retry_store, Dispatcher, Handled, Step};
use crate::kafka;
use crate::model::{now_ms, Delivery, LifecycleEvent, LifecycleKind};
use crate::provider::SendOutcome;
use crate::store::{OnceClaim, SentOutcome};

impl Dispatcher {
    /// A campaign delivery: the once-slot decides, the provider sends, the pending set waits
    /// for the receipt.
    pub(super) async fn handle_delivery(&self, d: Delivery, cancel: &CancellationToken) -> Handled {
        let owner = uuid::Uuid::new_v4().to_string();
        let lease = self.config.lease;
        let channel = d.message.channel;
        let trace = crate::telemetry::current_traceparent();
        let claimed = claim_until(cancel, || async {
            let claim = self.store.claim_once(&d, &owner, lease, trace.as_deref());
            Ok(match claim.await? {
                OnceClaim::Claimed => Step::Claimed,
                OnceClaim::Held { retry_in } => Step::Held(retry_in),
                OnceClaim::Duplicate(status) => Step::Settled(status),
            })
        });
        match claimed.await {
            Ok(()) => {}
            Err(None) => return Handled::HandedBack,
            Err(Some(status)) => {
                self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(campaign = %d.campaign, customer = %d.customer, %status, "duplicate delivery dropped");
                self.emit_delivery(LifecycleKind::Deduplicated, &d, Some(status))
                    .await;
                return Handled::Done;
            }
        }
        if d.attempt == 0 {
            self.stats
                .fanout_to_call_ms
                .record_ms(now_ms().saturating_sub(d.fanned_out_ms));
        }
        let key = d.idempotency_key();
        let outcome = self
            .provider
            .send(&key, &d.message, cancel, || async {
                retry_store(cancel, || self.store.renew_once(&d, &owner, lease))
                    .await
                    .unwrap_or(false)
            })
            .await;
        // The provider has answered: recording that must not be given up on shutdown.
        let never = CancellationToken::new();
        match outcome {
            SendOutcome::Delivered { provider_id } => {
                let recorded =
                    retry_store(&never, || self.store.mark_sent(&d, &owner, &provider_id)).await;
                if recorded == Some(SentOutcome::LostLease) {
                    return Handled::Done;
                }
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                self.emit_delivery(LifecycleKind::Sent, &d, Some(provider_id))
                    .await;
            }
            SendOutcome::Failed { reason } => {
                tracing::warn!(campaign = %d.campaign, customer = %d.customer, %channel, %reason, "delivery refused; next channel due");
                let _ =
                    retry_store(&never, || self.store.mark_undelivered(&d, &owner, &reason)).await;
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.emit_delivery(LifecycleKind::Undelivered, &d, Some(reason))
                    .await;
            }
            SendOutcome::Abandoned => {
                if cancel.is_cancelled() {
                    let _ = self.store.release_once(&d, &owner).await;
                    self.stats.handed_back.fetch_add(1, Ordering::Relaxed);
                    return Handled::HandedBack;
                }
            }
        }
        Handled::Done
    }

    async fn emit_delivery(&self, kind: LifecycleKind, d: &Delivery, detail: Option<String>) {
        let event =
            LifecycleEvent::for_delivery(kind, &d.campaign, &d.customer, d.message.channel, detail);
        kafka::emit_event(&self.producer, &self.topics.events(), &event).await;
    }
}
