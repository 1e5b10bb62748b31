//! A campaign delivery: the customer's once-slot decides whether this dispatcher sends, the
//! provider sends, and the campaign's pending set waits for the receipt. A copy of the
//! message, redelivered or duplicated, finds the slot taken and is counted `deduplicated`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::claim::{answered, claim_until, next_owner, retry_store, Step, Stop};
use super::{Dispatcher, Handled};
use crate::kafka;
use crate::model::{now_ms, Channel, Delivery, Halt, LifecycleEvent, LifecycleKind, UncertainSend};
use crate::provider::{Outgoing, Provider, SendOutcome};
use crate::store::{OnceClaim, Renewal, SentOutcome, SlotClaim, SlotMark};

impl Dispatcher {
    /// A campaign delivery: the once-slot decides, the provider sends, the pending set waits
    /// for the receipt.
    pub(super) async fn handle_delivery(
        &self,
        msg: &OwnedMessage,
        d: Delivery,
        cancel: &CancellationToken,
    ) -> Handled {
        // Unique per handling; the process id tells an audit which process held a slot.
        let owner = next_owner();
        let claimed_at = Instant::now();
        // The provider can take it at once: the claim marks the slot `sending` itself and
        // the renewal before the first call is skipped (one script less per message).
        let send_now = self.providers.free_now();
        if let Some(handled) = self.claim_delivery(msg, &d, &owner, send_now, cancel).await {
            return handled;
        }
        if d.attempt == 0 {
            self.stats
                .fanout_to_call_ms
                .record_ms(now_ms().saturating_sub(d.fanned_out_ms));
        }
        let lease = self.config.lease;
        let key = d.idempotency_key();
        // Each renewal also marks the slot `sending`: from here a crash leaves it uncertain.
        // A claim that did so already needs none before the first call while its lease is
        // young (nobody else can have claimed the slot).
        let mut first_call_claimed = send_now;
        let out = Outgoing {
            key: &key,
            message: &d.message,
            email: d.email.as_ref(),
            whatsapp: d.whatsapp.as_ref(),
            promotion: Some((&d.campaign, &d.customer)),
        };
        // Set when an attempt got no answer after its request left and the channel's policy
        // (`skip`) ended the slot `uncertain` instead of letting another attempt go out.
        let ended_uncertain = AtomicBool::new(false);
        // Set when a renewal found the campaign cancelled or expired: the claim waited for the
        // provider's rate meanwhile, and the slot ended so, unsent.
        let ended_waiting: std::sync::Mutex<Option<Halt>> = std::sync::Mutex::new(None);
        // Boxed: the provider call's future (retries, the HTTP client) is most of this one.
        let sent = Box::pin(self.providers.send(&out, cancel, |after_uncertain| {
            let still_fresh =
                std::mem::take(&mut first_call_claimed) && claimed_at.elapsed() < lease / 4;
            let (d, owner, ended_uncertain) = (&d, &owner, &ended_uncertain);
            let ended_waiting = &ended_waiting;
            async move {
                if after_uncertain {
                    return match self.reclaim_uncertain(d, owner, cancel).await {
                        Reclaimed::SendAgain => true,
                        Reclaimed::Uncertain => {
                            ended_uncertain.store(true, Ordering::Relaxed);
                            false
                        }
                        Reclaimed::NotOurs => false,
                    };
                }
                if still_fresh {
                    return true;
                }
                match retry_store(cancel, || self.slot_store.renew_slot(d, owner, lease)).await {
                    Some(Renewal::Renewed) => true,
                    Some(Renewal::Halted(halt)) => {
                        *ended_waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(halt);
                        false
                    }
                    _ => false,
                }
            }
        }))
        .await;
        let ended = ended_waiting
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(halt) = ended {
            return self.held_back(&d, halt).await;
        }
        if ended_uncertain.load(Ordering::Relaxed) {
            return self.left_uncertain(&d, UNANSWERED).await;
        }
        let provider = self.providers.provider(sent.provider);
        Box::pin(self.record_delivery(&d, &owner, sent.outcome, provider, cancel)).await
    }

    /// An attempt of this send may have reached the provider (no answer after the request
    /// left): whether another goes out is the channel's `uncertain_send` policy, decided as for
    /// a dispatcher that died mid-call. The slot is handed back marked maybe-sent and claimed
    /// again by the same owner; the claim answers `resend` (counted `resent` on the slot and
    /// the campaign) or `uncertain` (ended, counted, never sent again).
    async fn reclaim_uncertain(
        &self,
        d: &Delivery,
        owner: &str,
        cancel: &CancellationToken,
    ) -> Reclaimed {
        let lease = self.config.lease;
        let released = retry_store(cancel, || self.slot_store.release_once(d, owner, true)).await;
        if released != Some(true) {
            // The lease went to another owner, who decides.
            return Reclaimed::NotOurs;
        }
        let trace = crate::telemetry::current_traceparent();
        let claimed = retry_store(cancel, || {
            self.slot_store
                .claim_slot(d, owner, lease, trace.as_deref(), true)
        })
        .await;
        match claimed {
            Some(OnceClaim::Resend) => {
                self.stats.resent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(campaign = %d.campaign, customer = %d.customer, "uncertain send (no answer): sending again with the same key");
                Reclaimed::SendAgain
            }
            Some(OnceClaim::Claimed) => Reclaimed::SendAgain,
            Some(OnceClaim::Duplicate(status)) if status == "delivered" => {
                // Its receipt came while the call went unanswered: it went out, and the claim
                // recorded it sent and delivered. Announced here, since nothing else will.
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                let proof = "receipt before the provider's answer".to_string();
                self.emit_delivery(LifecycleKind::Sent, d, Some(proof.clone()))
                    .await;
                self.emit_delivery(LifecycleKind::Delivered, d, Some(proof))
                    .await;
                Reclaimed::NotOurs
            }
            Some(OnceClaim::Duplicate(status)) if status == "failed" => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                let why = "failure receipt before the provider's answer".to_string();
                self.emit_delivery(LifecycleKind::Undelivered, d, Some(why))
                    .await;
                Reclaimed::NotOurs
            }
            Some(OnceClaim::Uncertain) => Reclaimed::Uncertain,
            _ => Reclaimed::NotOurs,
        }
    }

    /// A delivery the campaign's operator (pause, cancel) or its expiry held back: parked,
    /// or ended and announced.
    async fn held_back(&self, d: &Delivery, halt: Halt) -> Handled {
        self.stats.halted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(campaign = %d.campaign, customer = %d.customer, halt = halt.as_str(), "delivery held back");
        if let Some(kind) = halt.ended() {
            self.emit_delivery(kind, d, None).await;
        }
        Handled::Done
    }

    /// This attempt did not deliver: the slot says so (recorded whatever shutdown says, or
    /// the next owner would send again), and the next channel is due.
    async fn moved_on(&self, d: &Delivery, owner: &str, reason: String) {
        let never = CancellationToken::new();
        let _ = retry_store(&never, || {
            self.slot_store.mark_undelivered(d, owner, &reason)
        })
        .await;
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.emit_delivery(LifecycleKind::Undelivered, d, Some(reason))
            .await;
    }

    /// The slot ended `uncertain` (policy `skip`): counted and announced, never sent again.
    async fn left_uncertain(&self, d: &Delivery, why: &str) -> Handled {
        self.stats.uncertain.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(campaign = %d.campaign, customer = %d.customer, channel = %d.message.channel, why, "uncertain send left as is (policy skip)");
        self.emit_delivery(LifecycleKind::Uncertain, d, Some(why.into()))
            .await;
        Handled::Done
    }

    /// Takes the once-slot; `None` when this dispatcher holds it and must send, otherwise
    /// how the message was dealt with.
    async fn claim_delivery(
        &self,
        msg: &OwnedMessage,
        d: &Delivery,
        owner: &str,
        send_now: bool,
        cancel: &CancellationToken,
    ) -> Option<Handled> {
        let lease = self.config.lease;
        let trace = crate::telemetry::current_traceparent();
        let claimed = claim_until(cancel, || async {
            let claim = SlotClaim::of(d, owner, lease, trace.as_deref(), send_now);
            Ok(match answered(self.claims.call(claim).await, "claim")? {
                OnceClaim::Claimed => Step::Claimed,
                OnceClaim::Resend => {
                    self.stats.resent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(campaign = %d.campaign, customer = %d.customer, "uncertain send: sending again with the same key");
                    Step::Claimed
                }
                OnceClaim::Held { retry_in } => Step::Held(retry_in),
                OnceClaim::Duplicate(status) => Step::Settled(Settled::Duplicate(status)),
                OnceClaim::Uncertain => Step::Settled(Settled::Uncertain),
                OnceClaim::Halted(state) => Step::Settled(Settled::Halted(state)),
            })
        });
        match claimed.await {
            Ok(()) => None,
            Err(Stop::Cancelled) => Some(Handled::HandedBack),
            Err(Stop::Corrupt(reason)) => Some(self.dead_letter(msg, &reason, cancel).await),
            Err(Stop::Settled(Settled::Duplicate(status))) => {
                self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(campaign = %d.campaign, customer = %d.customer, %status, "duplicate delivery dropped");
                self.emit_delivery(LifecycleKind::Deduplicated, d, Some(status))
                    .await;
                Some(Handled::Done)
            }
            Err(Stop::Settled(Settled::Uncertain)) => Some(self.left_uncertain(d, DIED).await),
            Err(Stop::Settled(Settled::Halted(halt))) => Some(self.held_back(d, halt).await),
        }
    }

    /// Records what the provider said. That must not be given up on shutdown: the next
    /// owner would find the slot `sending` and count the send uncertain.
    async fn record_delivery(
        &self,
        d: &Delivery,
        owner: &str,
        outcome: SendOutcome,
        provider: &Provider,
        cancel: &CancellationToken,
    ) -> Handled {
        let never = CancellationToken::new();
        match outcome {
            SendOutcome::Delivered { provider_id } => {
                let accepted = Instant::now();
                let confirmed_id = provider_id.clone();
                let confirms = provider.confirms_on_accept();
                let recorded = retry_store(&never, || async {
                    let mark = SlotMark::of(d, owner, &provider_id, &provider.name, confirms);
                    answered(self.marks.call(mark).await, "mark")
                })
                .await;
                self.stats
                    .accept_to_mark_ms
                    .record_ms(accepted.elapsed().as_millis() as u64);
                let detail = if recorded == Some(SentOutcome::LostLease) {
                    // Sent, but another owner holds the slot now and may send again.
                    self.stats
                        .sent_after_lost_lease
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(campaign = %d.campaign, customer = %d.customer, "sent after the lease was lost");
                    format!("{provider_id} (after the lease was lost)")
                } else {
                    provider_id
                };
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                let sent = LifecycleEvent {
                    provider: Some(provider.name.clone()),
                    ..delivery_event(LifecycleKind::Sent, d, Some(detail))
                };
                kafka::emit_event(&self.producer, &self.topics.events(), &sent).await;
                // What no receipt will announce, for the metrics: an acceptance that is the
                // confirmation, or a receipt that came before the send was recorded (the
                // receipts path counts those `early` and announces nothing).
                match recorded {
                    Some(SentOutcome::Delivered) => {
                        // A receipt that beat the record of the send came about no time
                        // after the acceptance: left out, the latency histogram would lose
                        // exactly the fastest receipts (and count fewer than delivered). An
                        // acceptance that is the confirmation had no receipt to time.
                        let latency_ms = (!confirms).then_some(0);
                        self.emit_timed(
                            LifecycleKind::Delivered,
                            d,
                            Some(confirmed_id),
                            latency_ms,
                        )
                        .await;
                    }
                    Some(SentOutcome::Undelivered) if !confirms => {
                        let why = "failure receipt".to_string();
                        self.emit_delivery(LifecycleKind::Undelivered, d, Some(why))
                            .await;
                    }
                    _ => {}
                }
            }
            SendOutcome::Undeliverable { reason } => {
                // The address first: if we crash now, the next campaign still skips it.
                let channel = d.message.channel;
                let _ = retry_store(&never, || {
                    self.customer_store
                        .mark_undeliverable(channel, &d.message.to, &reason)
                })
                .await;
                if channel == Channel::Push {
                    // A push token that can never receive is dropped from the profile.
                    let _ = retry_store(&never, || {
                        self.customer_store
                            .forget_contact(&d.customer, channel, &d.message.to)
                    })
                    .await;
                }
                tracing::warn!(campaign = %d.campaign, customer = %d.customer, %channel, %reason, "address cannot receive; next channel due");
                self.moved_on(d, owner, reason).await;
            }
            SendOutcome::Uncertain { reason } if d.on_uncertain == UncertainSend::Skip => {
                tracing::debug!(campaign = %d.campaign, customer = %d.customer, %reason, "last attempt unanswered");
                if let Reclaimed::Uncertain = self.reclaim_uncertain(d, owner, cancel).await {
                    return self.left_uncertain(d, UNANSWERED).await;
                }
                // Someone else holds the slot now (or Redis is gone and the lease will lapse):
                // theirs to decide, by the same policy.
            }
            // At least once: an unanswered last attempt moves on like a failure.
            SendOutcome::Failed { reason }
            | SendOutcome::Unavailable { reason, .. }
            | SendOutcome::Uncertain { reason } => {
                tracing::warn!(campaign = %d.campaign, customer = %d.customer, channel = %d.message.channel, %reason, "delivery refused; next channel due");
                self.moved_on(d, owner, reason).await;
            }
            SendOutcome::Abandoned { maybe_sent } => {
                if cancel.is_cancelled() {
                    let _ = self.slot_store.release_once(d, owner, maybe_sent).await;
                    self.stats.handed_back.fetch_add(1, Ordering::Relaxed);
                    return Handled::HandedBack;
                }
            }
        }
        Handled::Done
    }

    async fn emit_delivery(&self, kind: LifecycleKind, d: &Delivery, detail: Option<String>) {
        self.emit_timed(kind, d, detail, None).await;
    }

    /// A delivery's lifecycle event, with the time from acceptance to receipt when known.
    async fn emit_timed(
        &self,
        kind: LifecycleKind,
        d: &Delivery,
        detail: Option<String>,
        latency_ms: Option<u64>,
    ) {
        let event = LifecycleEvent {
            latency_ms,
            ..delivery_event(kind, d, detail)
        };
        kafka::emit_event(&self.producer, &self.topics.events(), &event).await;
    }
}

fn delivery_event(kind: LifecycleKind, d: &Delivery, detail: Option<String>) -> LifecycleEvent {
    LifecycleEvent::for_delivery(kind, &d.campaign, &d.customer, d.message.channel, detail)
}

/// Why a send was left `uncertain`: its owner died mid-call.
const DIED: &str = "a dispatcher died while the provider call may have gone out";
/// Why a send was left `uncertain`: the call got no answer after its request left.
const UNANSWERED: &str = "the provider call got no answer after the request left (time-out or broken connection); it may have been delivered";

/// What claiming a slot again after an unanswered call decided.
enum Reclaimed {
    /// Ours again: call the provider (a counted resend, under `resend`).
    SendAgain,
    /// Ended `uncertain` (policy `skip`): never sent again.
    Uncertain,
    /// Settled by a receipt meanwhile, or another owner holds it: nothing more to do here.
    NotOurs,
}

/// Why a delivery needs no send from this dispatcher.
enum Settled {
    /// Handled already for this attempt, or moved on (the slot's status).
    Duplicate(String),
    /// Its previous owner died mid-send and the channel's policy is `skip`.
    Uncertain,
    /// The campaign is paused (the delivery is parked), cancelled or expired (it ended so).
    Halted(Halt),
}
