//! `herald-fanout`: turns a campaign into one delivery per customer. It consumes batches of
//! 1000 audience members from `herald.campaigns`, picks each customer's first channel with
//! the [`rules`](crate::campaigns::rules), renders the template and publishes to the channel topics.
//!
//! It never contacts anyone itself, and it never decides twice: a batch is marked done in
//! Redis only after all its deliveries are acknowledged, and a batch redelivered after a
//! crash is either skipped (done) or republished whole, the once-slots dropping the copies.
//! Before each batch it waits while the dispatchers are further behind than the broker can
//! hold, so a million-customer campaign cannot push unread work out of retention.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::cache::CampaignCache;
use super::render::{self, render_delivery};
use super::rules::{Choice, Rules, Situation};
use crate::kafka::{self, LagProbe, Topics};
use crate::model::{
    now_ms, Campaign, CampaignBatch, CampaignId, CampaignState, Channel, CustomerId, Delivery,
    Halt, LifecycleEvent, LifecycleKind, RequestId,
};
use crate::shutdown::sleep_unless_cancelled;
use crate::stats::Counters;
use crate::store::Redis;

mod program;
pub use program::{Args, Program};

#[derive(Debug, Clone)]
pub struct FanOutConfig {
    /// Largest per-partition lag of a dispatch group before fan-out pauses.
    pub max_lag: i64,
    /// Channels whose dispatch lag is watched.
    pub channels: Vec<Channel>,
}

#[derive(Debug, Default, Serialize)]
pub struct FanOutStats {
    pub batches: AtomicU64,
    pub batches_skipped: AtomicU64,
    pub published: AtomicU64,
    pub unreachable: AtomicU64,
    pub deferred: AtomicU64,
    pub paused_ms: AtomicU64,
    /// Batches of a campaign an operator paused, set aside for `resume`.
    pub batches_parked: AtomicU64,
    /// Customers of a cancelled (or expired) campaign ended so here, never published.
    pub cancelled: AtomicU64,
    /// Customers a frequency cap held back for good (`capped` on the report).
    pub capped: AtomicU64,
    /// The group's largest partition lag on the campaigns topic, from the program's lag watch.
    #[serde(skip)]
    pub consumer_lag: std::sync::atomic::AtomicI64,
}

impl Counters for FanOutStats {
    const NAME: &'static str = "fanout";
    const FAMILY: (&'static str, &'static str) = (
        "herald_fanout",
        "Campaign fan-out work by kind (paused_ms: time spent waiting on dispatch lag).",
    );
    const LABEL: &'static str = "what";
}

/// Why a customer got no first delivery; the DLQ record's body.
#[derive(Debug, Serialize)]
struct Unreachable<'a> {
    campaign: &'a CampaignId,
    customer: &'a CustomerId,
    reason: &'a str,
}

pub struct FanOut {
    pub stores: super::CampaignStores,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub rules: Arc<Rules>,
    pub lag: Arc<LagProbe>,
    pub config: FanOutConfig,
    pub stats: FanOutStats,
    campaigns: CampaignCache,
    health: Mutex<Option<(Instant, Vec<Channel>)>>,
}

impl FanOut {
    pub fn new(
        redis: &Redis,
        producer: FutureProducer,
        topics: Topics,
        rules: Arc<Rules>,
        lag: Arc<LagProbe>,
        config: FanOutConfig,
    ) -> Self {
        FanOut {
            stores: super::CampaignStores::new(redis),
            producer,
            topics,
            rules,
            lag,
            config,
            stats: FanOutStats::default(),
            campaigns: CampaignCache::default(),
            // Nothing read yet (not "read a minute ago": a host up for less than a minute
            // has no such instant, and the subtraction would panic).
            health: Mutex::new(None),
        }
    }

    /// Consumes campaign batches until `shutdown`; a batch under way is finished first.
    pub async fn run(
        self: Arc<Self>,
        consumer: StreamConsumer,
        shutdown: CancellationToken,
    ) -> Result<(), kafka::KafkaError> {
        let subscription = kafka::Subscription::new(consumer, &self.topics.campaigns())?;
        tracing::info!(topic = subscription.topic(), "fan-out consuming");
        while let Some(msg) = subscription.next(&shutdown).await {
            if !self.handle(&msg, &shutdown).await {
                break; // shutdown mid-batch: leave it uncommitted, it comes back
            }
            subscription.store(msg.partition(), msg.offset());
        }
        subscription.close().await;
        Ok(())
    }

    /// Counters for `/stats`.
    pub fn stats_json(&self) -> serde_json::Value {
        self.stats.json()
    }

    /// `/metrics`: batches and deliveries by result, and the consumer lag.
    pub fn prometheus(&self) -> Vec<crate::prom::Family> {
        vec![
            self.stats.family(&[]),
            kafka::lag_family(
                &self.topics.fanout_group(),
                &self.topics.campaigns(),
                &self.stats.consumer_lag,
            ),
        ]
    }

    /// `true` when the message is dealt with (its offset may be committed).
    async fn handle(&self, msg: &OwnedMessage, cancel: &CancellationToken) -> bool {
        let span = || tracing::info_span!("fanout.batch", offset = msg.offset());
        crate::telemetry::in_trace_of(msg, span, self.handle_in_span(msg, cancel)).await
    }

    async fn handle_in_span(&self, msg: &OwnedMessage, cancel: &CancellationToken) -> bool {
        let batch = match decode_batch(msg.payload()) {
            Ok(b) => b,
            Err(reason) => return self.dead_letter(msg, &reason, cancel).await,
        };
        let mut wait = Duration::from_millis(100);
        loop {
            match self.fan_out(&batch, cancel).await {
                Ok(Some(())) => return true,
                Ok(None) => return false,
                Err(BatchError::UnknownCampaign) => {
                    return self
                        .dead_letter(msg, &format!("unknown campaign {}", batch.campaign), cancel)
                        .await
                }
                Err(BatchError::Transient(e)) => {
                    tracing::warn!(campaign = %batch.campaign, batch = batch.batch, error = %e, retry_in = ?wait, "batch failed; retrying");
                    if !sleep_unless_cancelled(wait, cancel).await {
                        return false;
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Fans out one batch; `Ok(None)` if shutdown came first.
    async fn fan_out(
        &self,
        batch: &CampaignBatch,
        cancel: &CancellationToken,
    ) -> Result<Option<()>, BatchError> {
        let id = &batch.campaign;
        let replay = !batch.customers.is_empty();
        if !replay && self.stores.campaigns.is_batch_done(id, batch.batch).await? {
            self.stats.batches_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(()));
        }
        let campaign = self.campaign(id).await?;
        let hold = if campaign.expires_at_ms.is_some_and(|exp| now_ms() >= exp) {
            Hold::Ended(Halt::Expired)
        } else {
            self.operator_hold(batch).await?
        };
        if hold == Hold::Parked {
            self.stats.batches_parked.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(()));
        }
        if hold == Hold::Go && !self.wait_for_room(cancel).await {
            return Ok(None);
        }
        let ids = if replay {
            batch.customers.clone()
        } else {
            self.stores
                .campaigns
                .audience_batch(id, batch.batch)
                .await?
        };
        if let Hold::Ended(ending) = hold {
            return self.end_batch(batch, &ids, ending).await.map(Some);
        }
        let profiles = self
            .stores
            .customers
            .promotable_customers(&ids, &campaign.topic)
            .await?;
        let unhealthy = self.unhealthy().await;
        let now = now_ms();
        let mut sends = Vec::with_capacity(ids.len());
        let mut unreachable = Vec::new();
        for (customer_id, profile) in ids.iter().zip(&profiles) {
            let Some(customer) = profile else {
                unreachable.push((customer_id, "unknown customer"));
                continue;
            };
            let choice = self.rules.choose(&Situation {
                customer,
                campaign: &campaign,
                tried: &[],
                unhealthy: &unhealthy,
                now_ms: now,
            });
            match choice {
                Choice::Send(channel) => {
                    let rendered = render_delivery(
                        &campaign,
                        customer_id,
                        customer,
                        channel,
                        0,
                        &self.rules,
                        now,
                    );
                    match rendered {
                        Err(e) => {
                            tracing::warn!(campaign = %id, customer = %customer_id, error = %e, "template could not be rendered");
                            unreachable.push((customer_id, render::UNRENDERABLE));
                        }
                        Ok(d) if render::too_large(&d) => {
                            unreachable.push((customer_id, render::TOO_LARGE))
                        }
                        Ok(d) => sends.push((d, customer.time_zone.as_str())),
                    }
                }
                Choice::WaitUntil { channel, at_ms } => {
                    self.stores
                        .slots
                        .defer_first(id, customer_id, channel, at_ms)
                        .await?;
                    self.stats.deferred.fetch_add(1, Ordering::Relaxed);
                }
                Choice::NoChannel(reason) => unreachable.push((customer_id, reason)),
            }
        }
        let (sends, held) =
            super::caps::hold_back(&self.stores.campaigns, self.rules.caps(), &campaign, sends)
                .await?;
        self.publish_all(&sends).await?;
        self.emit_accepted(batch, &sends).await;
        self.settle_capped(&campaign, held).await?;
        for (customer, reason) in unreachable {
            self.fail_unreachable(id, customer, reason).await?;
        }
        // A replay is not a batch of the audience: its customers were counted fanned out before.
        if !replay {
            self.stores
                .campaigns
                .mark_batch_done(id, batch.batch, ids.len())
                .await?;
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(campaign = %id, batch = batch.batch, published = sends.len(), "batch fanned out");
        Ok(Some(()))
    }

    /// What the operator's state of the campaign asks of this batch. A paused campaign's
    /// batch is parked, unless the campaign was resumed or cancelled meanwhile (the park
    /// checks, and then the state is read again). A replayed dead letter is not a batch of
    /// the audience and is never parked: its deliveries are parked by the claims.
    async fn operator_hold(&self, batch: &CampaignBatch) -> Result<Hold, BatchError> {
        loop {
            match self
                .stores
                .campaigns
                .campaign_state(&batch.campaign)
                .await?
            {
                Some(CampaignState::Cancelled) => return Ok(Hold::Ended(Halt::Cancelled)),
                Some(CampaignState::Paused) if batch.customers.is_empty() => {
                    if self
                        .stores
                        .campaigns
                        .park_batch(&batch.campaign, batch.batch)
                        .await?
                    {
                        return Ok(Hold::Parked);
                    }
                }
                _ => return Ok(Hold::Go),
            }
        }
    }

    /// Customers a frequency cap held back: they wait for the cap's next window when the
    /// rules say `defer` (and the campaign has not expired by then), else end `capped`.
    async fn settle_capped(
        &self,
        campaign: &Campaign,
        held: Vec<super::caps::Held>,
    ) -> Result<(), BatchError> {
        if held.is_empty() {
            return Ok(());
        }
        let mut ended = Vec::new();
        for h in held {
            let in_time = campaign.expires_at_ms.is_none_or(|exp| h.until_ms < exp);
            if self.rules.caps().defer && in_time {
                self.stores
                    .slots
                    .defer_first(&campaign.id, &h.customer, h.channel, h.until_ms)
                    .await?;
                self.stats.deferred.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::debug!(campaign = %campaign.id, customer = %h.customer, reason = %h.reason, "capped");
                ended.push(h.customer);
            }
        }
        let capped = self
            .stores
            .campaigns
            .cap_unsent(&campaign.id, &ended)
            .await?;
        super::control::emit_count(
            &self.producer,
            &self.topics,
            &campaign.id,
            "capped",
            LifecycleKind::Capped,
            capped,
        )
        .await;
        self.stats.capped.fetch_add(capped, Ordering::Relaxed);
        Ok(())
    }

    /// A cancelled or expired campaign's batch: every customer not yet published ends so.
    async fn end_batch(
        &self,
        batch: &CampaignBatch,
        ids: &[CustomerId],
        ending: Halt,
    ) -> Result<(), BatchError> {
        let id = &batch.campaign;
        let cancelled = self.stores.campaigns.cancel_unsent(id, ids, ending).await?;
        let what = format!("batch:{}", batch.batch);
        super::control::emit_ended(&self.producer, &self.topics, id, &what, ending, cancelled)
            .await;
        if batch.customers.is_empty() {
            self.stores
                .campaigns
                .mark_batch_done(id, batch.batch, ids.len())
                .await?;
        }
        self.stats.cancelled.fetch_add(cancelled, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One `accepted` event per channel of the batch, carrying its count: per-recipient
    /// events would double the fan-out's Kafka traffic for a number metrics only sums.
    async fn emit_accepted(&self, batch: &CampaignBatch, sends: &[Delivery]) {
        let mut per_channel: BTreeMap<Channel, u64> = BTreeMap::new();
        for d in sends {
            *per_channel.entry(d.message.channel).or_default() += 1;
        }
        for (channel, count) in per_channel {
            let id = RequestId(format!(
                "{}:batch:{}:{}",
                batch.campaign, batch.batch, channel
            ));
            let event = LifecycleEvent {
                campaign: Some(batch.campaign.clone()),
                count: Some(count),
                ..LifecycleEvent::new(LifecycleKind::Accepted, &id, channel, None)
            };
            kafka::emit_event(&self.producer, &self.topics.events(), &event).await;
        }
    }

    async fn publish_all(&self, deliveries: &[Delivery]) -> Result<(), BatchError> {
        let records: Vec<(String, String, Vec<u8>)> = deliveries
            .iter()
            .map(|d| {
                Ok((
                    self.topics.notify(d.message.channel),
                    d.customer.to_string(),
                    serde_json::to_vec(d)?,
                ))
            })
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| BatchError::Transient(e.to_string()))?;
        let failed = kafka::publish_all(&self.producer, &records).await;
        if failed > 0 {
            return Err(BatchError::Transient(format!(
                "{failed} deliveries not acknowledged"
            )));
        }
        self.stats
            .published
            .fetch_add(deliveries.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn fail_unreachable(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
        reason: &str,
    ) -> Result<(), BatchError> {
        // DLQ first: if we crash before the slot is failed, the batch is redone and the
        // customer dead-lettered again, which is better than never.
        let record = Unreachable {
            campaign,
            customer,
            reason,
        };
        kafka::dead_letter_record(
            &self.producer,
            &self.topics.dlq(),
            customer.as_str(),
            &record,
            reason,
            "herald-fanout",
        )
        .await
        .map_err(|e| BatchError::Transient(e.to_string()))?;
        let code = match reason {
            "unknown customer" => "unknown_customer",
            render::TOO_LARGE => "too_large",
            render::UNRENDERABLE => "unrenderable",
            _ => "no_channel",
        };
        if self
            .stores
            .slots
            .fail_unreachable(campaign, customer, code, reason)
            .await?
        {
            self.stats.unreachable.fetch_add(1, Ordering::Relaxed);
            let id = RequestId(format!("{campaign}:{customer}"));
            let event = LifecycleEvent {
                campaign: Some(campaign.clone()),
                channel: None,
                ..LifecycleEvent::new(
                    LifecycleKind::DeadLettered,
                    &id,
                    Channel::Email,
                    Some(reason.to_string()),
                )
            };
            kafka::emit_event(&self.producer, &self.topics.events(), &event).await;
        }
        Ok(())
    }

    /// Waits while any watched dispatch group lags more than `max_lag`; `false` on shutdown.
    async fn wait_for_room(&self, cancel: &CancellationToken) -> bool {
        let started = Instant::now();
        loop {
            let probe = self.lag.clone();
            let checks: Vec<(String, String)> = self
                .config
                .channels
                .iter()
                .map(|c| (self.topics.dispatch_group(*c), self.topics.notify(*c)))
                .collect();
            let worst = tokio::task::spawn_blocking(move || {
                checks
                    .iter()
                    .map(|(group, topic)| probe.max_lag(group, topic))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|lags| lags.into_iter().max().unwrap_or(0))
            })
            .await;
            match worst {
                Ok(Ok(lag)) if lag <= self.config.max_lag => break,
                Ok(Ok(lag)) => tracing::debug!(lag, "dispatchers behind; fan-out paused"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read dispatch lag; pausing"),
                Err(e) => tracing::warn!(error = %e, "lag probe failed; pausing"),
            }
            if !sleep_unless_cancelled(Duration::from_millis(100), cancel).await {
                return false;
            }
        }
        self.stats
            .paused_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        true
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Arc<Campaign>, BatchError> {
        self.campaigns
            .get(&self.stores.campaigns, id)
            .await?
            .ok_or(BatchError::UnknownCampaign)
    }

    /// Channels with an open provider circuit, re-read at most once a second.
    async fn unhealthy(&self) -> Vec<Channel> {
        if let Some((read, channels)) = lock(&self.health).as_ref() {
            if read.elapsed() < Duration::from_secs(1) {
                return channels.clone();
            }
        }
        let now = self
            .stores
            .health
            .unhealthy_channels()
            .await
            .unwrap_or_default();
        *lock(&self.health) = Some((Instant::now(), now.clone()));
        now
    }

    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        reason: &str,
        cancel: &CancellationToken,
    ) -> bool {
        tracing::warn!(
            reason,
            offset = msg.offset(),
            "dead-lettering campaign message"
        );
        kafka::dead_letter_patiently(&self.producer, &self.topics.dlq(), msg, reason, cancel).await
    }
}

/// What an operator's state of the campaign asks of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Go,
    Parked,
    /// Cancelled or expired: its customers end so.
    Ended(Halt),
}

#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("unknown campaign")]
    UnknownCampaign,
    #[error("{0}")]
    Transient(String),
}

impl From<crate::store::StoreError> for BatchError {
    fn from(e: crate::store::StoreError) -> Self {
        BatchError::Transient(e.to_string())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message of `herald.campaigns`, or why it is dead-lettered.
pub fn decode_batch(payload: Option<&[u8]>) -> Result<CampaignBatch, String> {
    let payload = payload.ok_or("empty message")?;
    serde_json::from_slice(payload).map_err(|e| format!("undecodable campaign batch: {e}"))
}
