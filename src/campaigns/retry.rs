//! `herald-retry`: the fallback scheduler. It scans each active campaign's pending set for
//! deadlines that passed without a receipt (and for provider failures, due at once), claims
//! them atomically so that several instances never take the same one, and moves each to the
//! next channel the [`rules`](crate::campaigns::rules) allow, or ends it `failed` and dead-lettered
//! when none is left. It never calls the provider: it republishes to a channel topic and the
//! dispatchers' once-slot claim keeps the fallback single.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::cache::CampaignCache;
use super::control;
use super::render::{self, render_delivery};
use super::rules::{Choice, Rules, Situation};
use crate::kafka::{self, Topics};
use crate::model::{
    now_ms, Campaign, CampaignId, Channel, CustomerId, Halt, LifecycleEvent, LifecycleKind,
};
use crate::shutdown::sleep_unless_cancelled;
use crate::stats::Counters;
use crate::store::{Overdue, Redis, RepublishWait, StoreError};

#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// How often the pending sets are scanned when there was nothing to do.
    pub poll_interval: Duration,
    /// Overdue entries claimed per script call.
    pub batch: usize,
    /// How long a claimed entry stays invisible to other instances.
    pub claim_lease: Duration,
    /// How long a republished delivery may wait for a dispatcher before it is published again.
    pub watch: Duration,
    /// Entries handled at once.
    pub concurrency: usize,
}

/// The longest a delivery published but never claimed waits before it is published again
/// (the wait doubles from `watch` at each republish).
const LONGEST_REPUBLISH_WAIT: Duration = Duration::from_secs(30 * 60);

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            poll_interval: Duration::from_millis(200),
            batch: 500,
            claim_lease: Duration::from_secs(30),
            watch: Duration::from_secs(60),
            concurrency: 64,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct RetryStats {
    pub claimed: AtomicU64,
    pub fell_back: AtomicU64,
    pub republished: AtomicU64,
    pub deferred: AtomicU64,
    pub exhausted: AtomicU64,
    pub lost_race: AtomicU64,
    /// Scheduled campaigns this instance started.
    pub started: AtomicU64,
    /// Entries of a cancelled (or expired) campaign ended so as they came due.
    pub cancelled: AtomicU64,
    /// Waiting first deliveries a frequency cap held back when they came due.
    pub capped: AtomicU64,
}

impl Counters for RetryStats {
    const NAME: &'static str = "retry";
    const FAMILY: (&'static str, &'static str) = (
        "herald_retry_entries",
        "Overdue confirmations this instance handled, by result.",
    );
}

/// How often due scheduled campaigns are looked for: a start is at most this late.
const START_CHECK: Duration = Duration::from_millis(250);

/// The DLQ record of a delivery whose channels ran out.
#[derive(Debug, Serialize)]
struct Exhausted<'a> {
    campaign: &'a CampaignId,
    customer: &'a CustomerId,
    tried: &'a [Channel],
    reason: &'a str,
}

pub struct Retrier {
    pub stores: super::CampaignStores,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub rules: Arc<Rules>,
    pub config: RetryConfig,
    pub stats: RetryStats,
    /// Unique per process: the claim token that proves which instance holds an entry.
    token: String,
    campaigns: CampaignCache,
    /// When each campaign's pending sets were last swept for waiting deliveries to end.
    swept: std::sync::Mutex<std::collections::HashMap<CampaignId, Instant>>,
}

/// How often a cancelled or expired campaign's pending sets are scanned again (a scan reads
/// every entry; what comes due is ended as it comes anyway).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Retrier {
    pub fn new(
        redis: &Redis,
        producer: FutureProducer,
        topics: Topics,
        rules: Arc<Rules>,
        config: RetryConfig,
    ) -> Self {
        Retrier {
            stores: super::CampaignStores::new(redis),
            producer,
            topics,
            rules,
            config,
            stats: RetryStats::default(),
            token: uuid::Uuid::new_v4().to_string(),
            campaigns: CampaignCache::default(),
            swept: Default::default(),
        }
    }

    /// Scans until `shutdown`. Work already claimed is finished first (it is quick).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(token = %self.token, "retry scheduler running");
        let mut last_retire = Instant::now();
        let mut last_progress = Instant::now();
        let mut last_start = Instant::now();
        while !shutdown.is_cancelled() {
            if last_start.elapsed() >= START_CHECK {
                self.start_scheduled().await;
                last_start = Instant::now();
            }
            let handled = match self.scan_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "scan failed");
                    0
                }
            };
            if last_retire.elapsed() > Duration::from_secs(5) {
                self.reconcile_states().await;
                self.retire_finished().await;
                last_retire = Instant::now();
            }
            if last_progress.elapsed() > Duration::from_secs(5) {
                self.log_progress();
                last_progress = Instant::now();
            }
            if handled == 0 && !sleep_unless_cancelled(self.config.poll_interval, &shutdown).await {
                break;
            }
        }
        self.log_progress();
    }

    /// Starts the scheduled campaigns whose time has come.
    async fn start_scheduled(&self) {
        let lease = self.config.claim_lease;
        match control::start_due(&self.stores.campaigns, &self.producer, &self.topics, lease).await
        {
            Ok(0) => {}
            Ok(n) => {
                self.stats.started.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot start scheduled campaigns"),
        }
    }

    /// Completes operators' state changes a crash may have cut short.
    async fn reconcile_states(&self) {
        let Ok(active) = self.stores.campaigns.active_campaigns().await else {
            return;
        };
        {
            // A campaign that retired is swept no more.
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            swept.retain(|id, _| active.contains(id));
        }
        for id in active {
            let expires_at_ms = match self.campaigns.get(&self.stores.campaigns, &id).await {
                Ok(def) => def.and_then(|c| c.expires_at_ms),
                Err(_) => continue,
            };
            let sweep = self.sweep_due(&id);
            let done = control::reconcile(
                &self.stores.campaigns,
                &self.producer,
                &self.topics,
                &id,
                expires_at_ms,
                sweep,
            )
            .await;
            match done {
                Ok(()) if sweep => {
                    let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
                    swept.insert(id, Instant::now());
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "cannot reconcile the campaign's state")
                }
            }
        }
    }

    /// Whether the campaign's pending sets are due for another sweep.
    fn sweep_due(&self, id: &CampaignId) -> bool {
        let swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        swept.get(id).is_none_or(|at| at.elapsed() >= SWEEP_EVERY)
    }

    /// One pass over every active campaign; returns how many entries were handled.
    pub async fn scan_once(&self) -> Result<usize, StoreError> {
        let mut handled = 0;
        for campaign in self.stores.campaigns.active_campaigns().await? {
            let due = self
                .stores
                .slots
                .claim_overdue(
                    &campaign,
                    &self.token,
                    self.config.batch,
                    self.config.claim_lease,
                    RepublishWait {
                        first: self.config.watch,
                        longest: LONGEST_REPUBLISH_WAIT,
                    },
                )
                .await?;
            if due.is_empty() {
                continue;
            }
            handled += due.len();
            self.stats
                .claimed
                .fetch_add(due.len() as u64, Ordering::Relaxed);
            let Some(def) = self
                .campaigns
                .get(&self.stores.campaigns, &campaign)
                .await?
            else {
                tracing::warn!(campaign = %campaign, "pending entries of an unknown campaign");
                continue;
            };
            let unhealthy = self
                .stores
                .health
                .unhealthy_channels()
                .await
                .unwrap_or_default();
            stream::iter(due)
                .for_each_concurrent(self.config.concurrency, |o| {
                    let (def, unhealthy) = (&def, &unhealthy);
                    async move {
                        if let Err(e) = self.handle(def, &o, unhealthy).await {
                            // The claim lapses and the entry comes due again.
                            tracing::warn!(campaign = %def.id, customer = %o.customer, error = %e, "fallback deferred");
                        }
                    }
                })
                .await;
        }
        Ok(handled)
    }

    /// Handles an overdue entry in a span that continues its first attempt's trace.
    async fn handle(
        &self,
        campaign: &Campaign,
        o: &Overdue,
        unhealthy: &[Channel],
    ) -> Result<(), RetryError> {
        let span = tracing::info_span!("retry.overdue", customer = %o.customer, status = %o.status);
        if let Some(tp) = &o.trace {
            crate::telemetry::continue_traceparent(tp, &span);
        }
        self.handle_in_span(campaign, o, unhealthy)
            .instrument(span)
            .await
    }

    async fn handle_in_span(
        &self,
        campaign: &Campaign,
        o: &Overdue,
        unhealthy: &[Channel],
    ) -> Result<(), RetryError> {
        let customer = self
            .stores
            .customers
            .promotable_customers(std::slice::from_ref(&o.customer), &campaign.topic)
            .await?
            .pop()
            .flatten();
        if let Some(kind) = Halt::from_script(&o.status).and_then(Halt::ended) {
            // Ended by the claim: the campaign was cancelled, or expired, while this waited.
            let channel = o.channel.unwrap_or(Channel::Email);
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            self.emit(kind, &campaign.id, &o.customer, channel, None)
                .await;
            return Ok(());
        }
        if o.status == "queued" {
            // Published before but never claimed (lost publish, or quiet hours over): again.
            let (Some(channel), Some(profile)) = (o.channel, customer.as_ref()) else {
                return Ok(());
            };
            let rendered = render_delivery(
                campaign,
                &o.customer,
                profile,
                channel,
                o.attempt,
                &self.rules,
                now_ms(),
            );
            let Ok(d) = rendered else {
                return self.exhaust(campaign, o, render::UNRENDERABLE).await;
            };
            // A first delivery that waited (quiet hours, a cap's next window) counts against
            // the caps when it goes, not when it was put off.
            let d = if o.attempt == 0 {
                let zone = profile.time_zone.as_str();
                let (mut passed, held) = super::caps::hold_back(
                    &self.stores.campaigns,
                    self.rules.caps(),
                    campaign,
                    vec![(d, zone)],
                )
                .await?;
                if let Some(h) = held.first() {
                    if self
                        .stores
                        .slots
                        .cap_queued(&campaign.id, &o.customer, &h.reason)
                        .await?
                    {
                        self.stats.capped.fetch_add(1, Ordering::Relaxed);
                        self.emit(
                            LifecycleKind::Capped,
                            &campaign.id,
                            &o.customer,
                            channel,
                            Some(h.reason.clone()),
                        )
                        .await;
                    }
                    return Ok(());
                }
                match passed.pop() {
                    Some(d) => d,
                    None => return Ok(()),
                }
            } else {
                d
            };
            kafka::publish_json(
                &self.producer,
                &self.topics.notify(channel),
                d.customer.as_str(),
                &d,
            )
            .await?;
            self.stats.republished.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let choice = match customer.as_ref() {
            None => Choice::NoChannel("customer profile no longer exists"),
            Some(profile) => self.rules.choose(&Situation {
                customer: profile,
                campaign,
                tried: &o.tried,
                unhealthy,
                now_ms: now_ms(),
            }),
        };
        match (choice, customer) {
            (Choice::Send(next), Some(profile)) => {
                let rendered = render_delivery(
                    campaign,
                    &o.customer,
                    &profile,
                    next,
                    o.attempt + 1,
                    &self.rules,
                    now_ms(),
                );
                let Ok(d) = rendered else {
                    return self.exhaust(campaign, o, render::UNRENDERABLE).await;
                };
                if !self
                    .stores
                    .slots
                    .advance(&campaign.id, o, &self.token, next, 0, self.config.watch)
                    .await?
                {
                    self.stats.lost_race.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                self.stats.fell_back.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(campaign = %campaign.id, customer = %o.customer, from = ?o.channel, to = %next, "falling back");
                // If this publish is lost, the entry (kept pending for `watch`) republishes it.
                kafka::publish_json(
                    &self.producer,
                    &self.topics.notify(next),
                    d.customer.as_str(),
                    &d,
                )
                .await?;
                self.emit(
                    LifecycleKind::FellBack,
                    &campaign.id,
                    &o.customer,
                    next,
                    o.channel.map(|c| format!("from {c}")),
                )
                .await;
            }
            (Choice::WaitUntil { channel, at_ms }, Some(_)) => {
                if self
                    .stores
                    .slots
                    .advance(
                        &campaign.id,
                        o,
                        &self.token,
                        channel,
                        at_ms,
                        self.config.watch,
                    )
                    .await?
                {
                    self.stats.deferred.fetch_add(1, Ordering::Relaxed);
                }
            }
            (Choice::NoChannel(why), _) => self.exhaust(campaign, o, why).await?,
            (_, None) => {
                self.exhaust(campaign, o, "customer profile no longer exists")
                    .await?
            }
        }
        Ok(())
    }

    /// No channel left: dead-letter it, then end it `failed`.
    async fn exhaust(&self, campaign: &Campaign, o: &Overdue, why: &str) -> Result<(), RetryError> {
        let reason = format!("fallback exhausted: {why} (tried {})", join(&o.tried));
        let record = Exhausted {
            campaign: &campaign.id,
            customer: &o.customer,
            tried: &o.tried,
            reason: &reason,
        };
        // Dead-letter first: a crash before `fail_overdue` repeats the DLQ record rather
        // than losing it.
        kafka::dead_letter_record(
            &self.producer,
            &self.topics.dlq(),
            o.customer.as_str(),
            &record,
            &reason,
            "herald-retry",
        )
        .await?;
        if self
            .stores
            .slots
            .fail_overdue(&campaign.id, o, &self.token, "exhausted", &reason)
            .await?
        {
            self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
            let channel = o.channel.unwrap_or(Channel::Email);
            self.emit(
                LifecycleKind::Failed,
                &campaign.id,
                &o.customer,
                channel,
                Some(reason),
            )
            .await;
        } else {
            self.stats.lost_race.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn emit(
        &self,
        kind: LifecycleKind,
        campaign: &CampaignId,
        customer: &CustomerId,
        channel: Channel,
        detail: Option<String>,
    ) {
        let event = LifecycleEvent::for_delivery(kind, campaign, customer, channel, detail);
        kafka::emit_event(&self.producer, &self.topics.events(), &event).await;
    }

    async fn retire_finished(&self) {
        let Ok(active) = self.stores.campaigns.active_campaigns().await else {
            return;
        };
        for id in active {
            match self.stores.campaigns.retire_if_finished(&id).await {
                Ok(true) => {
                    tracing::info!(campaign = %id, "campaign finished");
                    self.campaigns.forget(&id);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check campaign completion"),
            }
        }
    }

    /// `/metrics`: overdue entries by what became of them.
    pub fn prometheus(&self) -> Vec<crate::prom::Family> {
        vec![self.stats.family(&[])]
    }

    pub fn stats_json(&self) -> serde_json::Value {
        self.stats.json()
    }

    fn log_progress(&self) {
        self.stats.log_progress(&self.token);
    }
}

fn join(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, thiserror::Error)]
enum RetryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
}
