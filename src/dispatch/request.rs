//! A seed 001 request: its record's claim is the gate before the provider call, and its
//! terminal status, once written, is never overwritten.

use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::claim::{claim_until, next_owner, retry_store, Step, Stop};
use super::{Dispatcher, Handled};
use crate::model::{LifecycleKind, Notification, RequestStatus};
use crate::provider::{Outgoing, SendOutcome};
use crate::store::Claim;

impl Dispatcher {
    /// A seed 001 request.
    pub(super) async fn handle_request(
        &self,
        msg: &OwnedMessage,
        notification: Notification,
        cancel: &CancellationToken,
    ) -> Handled {
        let id = &notification.id;
        // Unique per handling, so even two copies of one message in this process exclude each other.
        let owner = next_owner();
        let lease = self.config.lease;
        let claimed = claim_until(cancel, || async {
            Ok(match self.request_store.claim(id, &owner, lease).await? {
                Claim::Claimed => Step::Claimed,
                Claim::HeldByOther { retry_in } => Step::Held(retry_in),
                settled => Step::Settled(settled),
            })
        });
        match claimed.await {
            Ok(()) => {}
            Err(Stop::Cancelled) => return Handled::HandedBack,
            Err(Stop::Corrupt(reason)) => return self.dead_letter(msg, &reason, cancel).await,
            Err(Stop::Settled(Claim::AlreadyDone(status))) => {
                self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id = %id, %status, "duplicate delivery dropped");
                let detail = Some(status.as_str().to_string());
                self.emit(LifecycleKind::Deduplicated, id, detail).await;
                return Handled::Done;
            }
            Err(Stop::Settled(_)) => {
                return self
                    .dead_letter(msg, &format!("unknown request {id}"), cancel)
                    .await;
            }
        }
        self.emit(LifecycleKind::Processing, id, None).await;
        let out = Outgoing::transactional(id.as_str(), &notification.message);
        // An attempt that got no answer after its request left may have been delivered: by
        // default (`skip`) none follows it and the request ends `failed` with an `uncertain:`
        // reason; with `resend` the next goes out, counted (docs/operations.md, "The
        // uncertain send").
        let resend = self.config.request_uncertain == crate::model::UncertainSend::Resend;
        let unanswered = AtomicBool::new(false);
        let outcome = self
            .providers
            .send(&out, cancel, |after_uncertain| {
                let unanswered = &unanswered;
                let owner = &owner;
                async move {
                    if after_uncertain && resend {
                        self.stats.resent.fetch_add(1, Ordering::Relaxed);
                    } else if after_uncertain {
                        unanswered.store(true, Ordering::Relaxed);
                        return false;
                    }
                    retry_store(cancel, || self.request_store.renew(id, owner, lease))
                        .await
                        .unwrap_or(false)
                }
            })
            .await
            .outcome;
        let outcome = match outcome {
            SendOutcome::Abandoned { .. } if unanswered.load(Ordering::Relaxed) => {
                SendOutcome::Uncertain {
                    reason: "no answer after the request left".into(),
                }
            }
            other => other,
        };
        let (status, kind, detail) = match outcome {
            SendOutcome::Delivered { provider_id } => {
                (RequestStatus::Sent, LifecycleKind::Sent, provider_id)
            }
            SendOutcome::Failed { reason } | SendOutcome::Unavailable { reason, .. } => {
                (RequestStatus::Failed, LifecycleKind::Failed, reason)
            }
            SendOutcome::Uncertain { reason } => {
                self.stats.uncertain.fetch_add(1, Ordering::Relaxed);
                let reason = format!(
                    "uncertain: {reason}; it may have been delivered and is not sent again"
                );
                (RequestStatus::Failed, LifecycleKind::Failed, reason)
            }
            SendOutcome::Undeliverable { reason } => {
                let never = CancellationToken::new();
                let channel = notification.message.channel;
                let to = &notification.message.to;
                let _ = retry_store(&never, || {
                    self.customer_store.mark_undeliverable(channel, to, &reason)
                })
                .await;
                (RequestStatus::Failed, LifecycleKind::Failed, reason)
            }
            SendOutcome::Abandoned { .. } => {
                if cancel.is_cancelled() {
                    let _ = self.request_store.release(id, &owner).await;
                    self.stats.handed_back.fetch_add(1, Ordering::Relaxed);
                    return Handled::HandedBack;
                }
                // The lease moved to another owner, who will record the outcome.
                return Handled::Done;
            }
        };
        // The provider has answered: recording that must not be given up on shutdown,
        // or the next owner would send again.
        let never = CancellationToken::new();
        let _ = retry_store(&never, || self.request_store.finish(id, status, &detail)).await;
        match status {
            RequestStatus::Sent => self.stats.sent.fetch_add(1, Ordering::Relaxed),
            _ => self.stats.failed.fetch_add(1, Ordering::Relaxed),
        };
        if status == RequestStatus::Failed {
            tracing::warn!(id = %id, channel = %self.config.channel, reason = %detail, "notification failed");
        }
        self.emit(kind, id, Some(detail)).await;
        Handled::Done
    }
}
