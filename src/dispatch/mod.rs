//! `herald-dispatch --channel C`: consumes `herald.notify.C`, claims each notification in
//! Redis, calls the provider, records the outcome, and only then lets the offset be committed.
//!
//! Many messages are worked on at once (up to `max_in_flight`); the [`kafka::Subscription`] keeps
//! commits in order. The Redis claim, not Kafka, decides whether a customer is contacted:
//! a redelivered or duplicated message finds the request claimed or finished and is counted
//! `deduplicated`. A killed dispatcher leaves a lease that expires, and the message, never
//! committed, comes back to whoever owns the partition next.

mod claim;
pub mod delivery;
mod health;
pub mod program;
mod report;
pub mod request;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::stats::Counters;
use tokio_util::task::TaskTracker;

use crate::coalesce::Coalescer;
use crate::kafka::{self, Topics};
use crate::latency::LatencyHistogram;
use crate::model::{Channel, Delivery, LifecycleEvent, LifecycleKind, Notification, RequestId};
use crate::provider::ProviderChain;
use crate::store::{
    CustomerStore, OnceClaim, Redis, RequestStore, SentOutcome, SlotClaim, SlotMark, SlotStore,
    StoreError, SLOTS_PER_CALL,
};
use health::HealthReporter;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub channel: Channel,
    /// How long a claim stays valid without renewal; renewed before every provider call.
    pub lease: Duration,
    /// Messages worked on at once by this instance.
    pub max_in_flight: usize,
    /// After a shutdown signal, how long in-flight work may take before it is handed back.
    pub shutdown_grace: Duration,
    /// What an unanswered provider call of a seed 001 request leads to.
    pub request_uncertain: crate::model::UncertainSend,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
}

impl Counters for DispatchStats {
    const NAME: &'static str = "dispatch";
    const FAMILY: (&'static str, &'static str) = (
        "herald_dispatch_messages",
        "Messages this dispatcher handled, by result.",
    );
}

/// Counts of what this instance did; logged as progress and read by tests.
#[derive(Debug, Default, Serialize)]
pub struct DispatchStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub deduplicated: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub handed_back: AtomicU64,
    /// Claims of a slot whose previous owner died while its send was uncertain, sent again
    /// (policy `resend`).
    pub resent: AtomicU64,
    /// Such slots left `uncertain`, never sent again (policy `skip`).
    pub uncertain: AtomicU64,
    /// Sends the provider accepted after this dispatcher had lost the slot's lease: the
    /// new owner may have sent too.
    pub sent_after_lost_lease: AtomicU64,
    /// Deliveries of a campaign an operator paused (parked for `resume`) or cancelled.
    pub halted: AtomicU64,
    /// Messages being worked on now (a gauge, so not among the counters above).
    #[serde(skip)]
    pub in_flight: AtomicU64,
    /// The group's largest partition lag, refreshed by the program's lag watch.
    #[serde(skip)]
    pub consumer_lag: std::sync::atomic::AtomicI64,
    /// Campaign deliveries: time from fan-out to the first provider call (first channel only).
    #[serde(serialize_with = "serialize_histogram")]
    pub fanout_to_call_ms: LatencyHistogram,
    /// The uncertain window's tail: from the provider's acceptance until the slot is marked
    /// `sent`. A crash inside it (or inside the call before it) leaves the send uncertain.
    #[serde(serialize_with = "serialize_histogram")]
    pub accept_to_mark_ms: LatencyHistogram,
}

fn serialize_histogram<S: serde::Serializer>(
    h: &LatencyHistogram,
    s: S,
) -> Result<S::Ok, S::Error> {
    h.snapshot().serialize(s)
}

/// How the handling of one message ended, as far as its offset is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handled {
    /// Its outcome is recorded (or belongs to someone else): the offset may be committed.
    Done,
    /// Shutdown came first: leave the offset uncommitted so the message comes back.
    HandedBack,
}

pub struct Dispatcher {
    /// Campaign deliveries: their once-slots.
    pub slot_store: SlotStore,
    /// Seed 001's requests.
    pub request_store: RequestStore,
    /// Who cannot be reached on an address, learnt from the providers' answers.
    pub customer_store: CustomerStore,
    /// Tells the fleet this dispatcher's providers' health.
    health: HealthReporter,
    pub producer: FutureProducer,
    pub topics: Topics,
    /// The channel's providers, in order: failover within the channel.
    pub providers: Arc<ProviderChain>,
    pub config: DispatchConfig,
    pub stats: DispatchStats,
    /// The once-slot claims of the messages handled at once, sent to Redis together.
    claims: Coalescer<SlotClaim, Result<OnceClaim, StoreError>>,
    /// The providers' acceptances recorded at once, likewise.
    marks: Coalescer<SlotMark, Result<SentOutcome, StoreError>>,
}

/// Batches under way at once per kind: while they are, the next one fills.
const SLOT_BATCHES_IN_FLIGHT: usize = 2;

impl Dispatcher {
    /// A dispatcher, with its claim batches' task started on the current runtime.
    pub fn new(
        redis: &Redis,
        producer: FutureProducer,
        topics: Topics,
        providers: Arc<ProviderChain>,
        config: DispatchConfig,
    ) -> Self {
        let slot_store = SlotStore::new(redis);
        let claimer = slot_store.clone();
        let claims = Coalescer::spawn(SLOTS_PER_CALL, SLOT_BATCHES_IN_FLIGHT, move |batch| {
            let store = claimer.clone();
            async move { store.claim_slots(batch).await }
        });
        let marker = slot_store.clone();
        let marks = Coalescer::spawn(SLOTS_PER_CALL, SLOT_BATCHES_IN_FLIGHT, move |batch| {
            let store = marker.clone();
            async move { store.mark_sent_many(batch).await }
        });
        Dispatcher {
            slot_store,
            request_store: RequestStore::new(redis),
            customer_store: CustomerStore::new(redis),
            health: HealthReporter::new(redis, providers.clone(), config.channel),
            producer,
            topics,
            providers,
            config,
            stats: DispatchStats::default(),
            claims,
            marks,
        }
    }

    /// Consumes until `shutdown`, then finishes (or hands back) in-flight work and commits.
    pub async fn run(
        self: Arc<Self>,
        consumer: StreamConsumer,
        shutdown: CancellationToken,
    ) -> Result<(), DispatchError> {
        let subscription = Arc::new(kafka::Subscription::new(
            consumer,
            &self.topics.notify(self.config.channel),
        )?);
        tracing::info!(topic = subscription.topic(), channel = %self.config.channel, "dispatcher consuming");

        tokio::spawn(self.health.clone().run(shutdown.clone()));
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let tasks = TaskTracker::new();
        let work_cancel = CancellationToken::new();
        let mut progress = tokio::time::interval(Duration::from_secs(5));

        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let msg = tokio::select! {
                _ = progress.tick() => { self.log_progress(); continue }
                m = subscription.next(&shutdown) => match m { Some(m) => m, None => break },
            };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            subscription.started(&msg);
            let (me, subscription, cancel) =
                (self.clone(), subscription.clone(), work_cancel.clone());
            tasks.spawn(async move {
                match me.handle(&msg, &cancel).await {
                    Handled::Done => subscription.finished(&msg),
                    // Left in flight on purpose: nothing at or after it is committed by
                    // this instance, so its message is delivered again.
                    Handled::HandedBack => {}
                }
                me.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }

        tasks.close();
        tracing::info!(
            in_flight = tasks.len(),
            "stopping: waiting for in-flight notifications"
        );
        if tokio::time::timeout(self.config.shutdown_grace, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tasks.len(),
                "grace period over; handing the rest back"
            );
            work_cancel.cancel();
            tasks.wait().await;
        }
        if let Some(subscription) = Arc::into_inner(subscription) {
            subscription.close().await;
        }
        self.log_progress();
        Ok(())
    }

    /// Ready when Redis answers: without it nothing can be claimed.
    pub async fn ready(&self) -> Result<(), String> {
        self.slot_store.ping().await.map_err(|e| e.to_string())
    }

    fn log_progress(&self) {
        self.stats.log_progress(self.config.channel.as_str());
    }

    /// Handles one message in a span that continues the trace its headers carry.
    async fn handle(&self, msg: &OwnedMessage, cancel: &CancellationToken) -> Handled {
        let span = || {
            tracing::info_span!(
                "dispatch.handle",
                channel = %self.config.channel,
                partition = msg.partition(),
                offset = msg.offset()
            )
        };
        crate::telemetry::in_trace_of(msg, span, self.handle_in_span(msg, cancel)).await
    }

    /// The handlers' futures are boxed: unboxed, the spawned future of every message was
    /// 12.6 KB (3.3 KB now), copied whole on each move (`perf`: memmove 7.3% -> 5.0% of the
    /// dispatcher's samples).
    async fn handle_in_span(&self, msg: &OwnedMessage, cancel: &CancellationToken) -> Handled {
        match self.decode(msg) {
            Ok(Work::Request(n)) => Box::pin(self.handle_request(msg, n, cancel)).await,
            Ok(Work::Delivery(d)) => Box::pin(self.handle_delivery(msg, d, cancel)).await,
            Err(reason) => self.dead_letter(msg, &reason, cancel).await,
        }
    }

    fn decode(&self, msg: &OwnedMessage) -> Result<Work, String> {
        decode_work(msg.payload(), self.config.channel)
    }

    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        reason: &str,
        cancel: &CancellationToken,
    ) -> Handled {
        tracing::warn!(
            reason,
            topic = msg.topic(),
            offset = msg.offset(),
            "dead-lettering message"
        );
        if !kafka::dead_letter_patiently(&self.producer, &self.topics.dlq(), msg, reason, cancel)
            .await
        {
            return Handled::HandedBack;
        }
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
        let id = RequestId(format!("dlq:{key}"));
        self.emit(LifecycleKind::DeadLettered, &id, Some(reason.to_string()))
            .await;
        Handled::Done
    }

    async fn emit(&self, kind: LifecycleKind, id: &RequestId, detail: Option<String>) {
        let event = LifecycleEvent::new(kind, id, self.config.channel, detail);
        kafka::emit_event(&self.producer, &self.topics.events(), &event).await;
    }
}

/// What a message of `channel`'s topic holds, or why it is dead-lettered.
pub fn decode_work(payload: Option<&[u8]>, channel: Channel) -> Result<Work, String> {
    let payload = payload.ok_or("empty message")?;
    // Campaign deliveries are nearly all the traffic: decoded once; only what is not one is
    // probed (a delivery's error, or a seed 001 request).
    let work = match serde_json::from_slice::<Delivery>(payload) {
        Ok(d) => Work::Delivery(d),
        Err(delivery) => {
            let probe: KindProbe = serde_json::from_slice(payload)
                .map_err(|e| format!("undecodable notification: {e}"))?;
            if probe.campaign.is_some() {
                return Err(format!("undecodable campaign delivery: {delivery}"));
            }
            Work::Request(
                serde_json::from_slice(payload)
                    .map_err(|e| format!("undecodable notification: {e}"))?,
            )
        }
    };
    let carried = match &work {
        Work::Request(n) => n.message.channel,
        Work::Delivery(d) => d.message.channel,
    };
    if carried != channel {
        return Err(format!("notification for {carried} on the {channel} topic"));
    }
    Ok(work)
}

/// What a channel topic carries: seed 001 requests and campaign deliveries.
pub enum Work {
    Request(Notification),
    Delivery(Delivery),
}

/// Tells the two apart without decoding either: only deliveries name a campaign.
#[derive(serde::Deserialize)]
struct KindProbe {
    campaign: Option<serde::de::IgnoredAny>,
}
