//! Delivers each endpoint's queue on its own task, so that one slow or failing endpoint
//! never holds up another: a few calls at once per endpoint, each with a time-out, no
//! redirect followed, and only to addresses the [`AddressPolicy`] allows. A failed call is
//! tried again after a back-off that doubles up to a ceiling, for the retry period; an
//! endpoint that failed for the whole period is disabled, and a `webhook.endpoint_disabled`
//! event says so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::address::{AddressPolicy, Guard};
use super::{signature, Endpoint, EndpointId};
use crate::kafka::{self, Topics};
use crate::model::{now_ms, LifecycleEvent, LifecycleKind, RequestId};
use crate::shutdown::sleep_unless_cancelled;
use crate::stats::Counters;
use crate::store::{Claimed, Retry, StoreError, WebhookStore};

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// How long a message (and an endpoint) may keep failing before it is given up on.
    pub retry_period: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// One call's time-out, connection included.
    pub timeout: Duration,
    /// How long delivered messages are kept for a replay.
    pub keep: Duration,
    /// Calls under way at once per endpoint.
    pub per_endpoint: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            retry_period: Duration::from_secs(24 * 3600),
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            keep: Duration::from_secs(24 * 3600),
            per_endpoint: 8,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct SenderStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub gave_up: AtomicU64,
    pub endpoints_disabled: AtomicU64,
}

impl Counters for SenderStats {
    const NAME: &'static str = "webhooks";
    const FAMILY: (&'static str, &'static str) = (
        "herald_webhook_deliveries",
        "Outgoing webhook calls by result (delivered, failed_attempts, gave_up, endpoints_disabled).",
    );
}

pub struct Sender {
    store: WebhookStore,
    producer: FutureProducer,
    topics: Topics,
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    config: SenderConfig,
    pub stats: SenderStats,
}

/// How long a claimed message stays invisible to other senders: longer than a call.
const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// How often the endpoints are read again (new ones get a task, deleted ones lose theirs).
const ENDPOINTS_EVERY: Duration = Duration::from_secs(1);

impl Sender {
    pub fn new(
        store: WebhookStore,
        producer: FutureProducer,
        topics: Topics,
        policy: AddressPolicy,
        config: SenderConfig,
    ) -> Result<Sender, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Guard(policy.clone())))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("herald-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            store,
            producer,
            topics,
            client,
            policy,
            config,
            stats: SenderStats::default(),
        })
    }

    /// Runs a task per enabled endpoint until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks: HashMap<EndpointId, CancellationToken> = HashMap::new();
        let mut last_prune = Instant::now();
        while !shutdown.is_cancelled() {
            match self.store.endpoints().await {
                Ok(endpoints) => {
                    let live: Vec<&Endpoint> = endpoints
                        .iter()
                        .filter(|e| e.disabled_ms.is_none())
                        .collect();
                    tasks.retain(|id, stop| {
                        let keep = live.iter().any(|e| &e.id == id);
                        if !keep {
                            stop.cancel();
                        }
                        keep
                    });
                    for e in live {
                        if !tasks.contains_key(&e.id) {
                            let stop = shutdown.child_token();
                            tokio::spawn(self.clone().serve(e.id.clone(), stop.clone()));
                            tasks.insert(e.id.clone(), stop);
                        }
                    }
                    if last_prune.elapsed() > Duration::from_secs(60) {
                        self.prune(&endpoints).await;
                        last_prune = Instant::now();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the webhook endpoints"),
            }
            if !sleep_unless_cancelled(ENDPOINTS_EVERY, &shutdown).await {
                break;
            }
        }
    }

    async fn prune(&self, endpoints: &[Endpoint]) {
        let older_than = now_ms().saturating_sub(self.config.keep.as_millis() as u64);
        for e in endpoints {
            if let Err(err) = self.store.prune_outgoing(&e.id, older_than).await {
                tracing::warn!(endpoint = %e.id, error = %err, "cannot prune kept webhook messages");
            }
        }
    }

    /// One endpoint's queue, until the endpoint goes or `stop`.
    async fn serve(self: Arc<Self>, id: EndpointId, stop: CancellationToken) {
        tracing::info!(endpoint = %id, "delivering webhooks");
        while !stop.is_cancelled() {
            let claimed = match self.next_round(&id).await {
                Ok(Some(round)) => round,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(endpoint = %id, error = %e, "webhook queue unavailable");
                    (None, Vec::new())
                }
            };
            let (endpoint, messages) = claimed;
            let Some(endpoint) = endpoint.filter(|_| !messages.is_empty()) else {
                if !sleep_unless_cancelled(Duration::from_millis(200), &stop).await {
                    return;
                }
                continue;
            };
            let this = &*self;
            stream::iter(messages)
                .for_each_concurrent(self.config.per_endpoint, |m| {
                    let endpoint = &endpoint;
                    async move { this.deliver(endpoint, m).await }
                })
                .await;
        }
    }

    /// The endpoint as it is now and its due messages; `None` when it was deleted or
    /// disabled.
    #[allow(clippy::type_complexity)]
    async fn next_round(
        &self,
        id: &EndpointId,
    ) -> Result<Option<(Option<Endpoint>, Vec<Claimed>)>, StoreError> {
        let Some(endpoint) = self.store.endpoint(id).await? else {
            return Ok(None);
        };
        if endpoint.disabled_ms.is_some() {
            return Ok(None);
        }
        let claimed = self
            .store
            .claim_outgoing(id, self.config.per_endpoint * 4, CLAIM_LEASE)
            .await?;
        Ok(Some((Some(endpoint), claimed)))
    }

    async fn deliver(&self, endpoint: &Endpoint, m: Claimed) {
        let outcome = self.call(endpoint, &m).await;
        let recorded = match &outcome {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                self.store.outgoing_delivered(&endpoint.id, &m.id).await
            }
            Err(why) => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(endpoint = %endpoint.id, message = %m.id, attempts = m.attempts + 1, %why, "webhook call failed");
                self.failed(endpoint, &m).await
            }
        };
        if let Err(e) = recorded {
            // The claim lapses and the message comes due again.
            tracing::warn!(endpoint = %endpoint.id, error = %e, "cannot record a webhook call");
        }
    }

    /// One call: 2xx is delivered; anything else (a redirect included) is a failure.
    async fn call(&self, endpoint: &Endpoint, m: &Claimed) -> Result<(), String> {
        let url = self
            .policy
            .check_url(&endpoint.url)
            .map_err(|e| e.to_string())?;
        let timestamp = now_ms() / 1000;
        let signed = signature(&endpoint.secret, &m.id, timestamp, m.body.as_bytes())
            .ok_or("the endpoint's secret is not a whsec_ secret")?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &m.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .body(m.body.clone())
            .send()
            .await
            // The URL may carry a receiver's token in its query: never in a log line.
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }

    async fn failed(&self, endpoint: &Endpoint, m: &Claimed) -> Result<(), StoreError> {
        let backoff = self.backoff(m.attempts);
        let retry = self
            .store
            .outgoing_failed(&endpoint.id, &m.id, backoff, self.config.retry_period)
            .await?;
        if retry == Retry::GaveUp {
            self.stats.gave_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(endpoint = %endpoint.id, message = %m.id, "webhook given up after the retry period");
        }
        let state = self.store.endpoint_state(&endpoint.id).await?;
        let failing_for = state
            .get("failing_since")
            .map(|since| now_ms().saturating_sub(*since));
        if failing_for.is_some_and(|ms| ms >= self.config.retry_period.as_millis() as u64) {
            self.disable(endpoint).await?;
        }
        Ok(())
    }

    /// The wait before attempt `attempts + 1`: doubling from the first back-off up to the
    /// ceiling, give or take a fifth so that an endpoint's retries do not come in step.
    fn backoff(&self, attempts: u64) -> Duration {
        let doubled = self
            .config
            .first_backoff
            .saturating_mul(1u32 << attempts.min(20) as u32);
        let base = doubled.min(self.config.max_backoff);
        base.mul_f64(rand::random_range(0.8..1.2))
    }

    async fn disable(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let Some(mut current) = self.store.endpoint(&endpoint.id).await? else {
            return Ok(());
        };
        if current.disabled_ms.is_some() {
            return Ok(());
        }
        current.disabled_ms = Some(now_ms());
        self.store.put_endpoint(&current).await?;
        self.stats
            .endpoints_disabled
            .fetch_add(1, Ordering::Relaxed);
        let why = format!(
            "failed for the whole retry period ({} s)",
            self.config.retry_period.as_secs()
        );
        let url = super::url_for_logs(&endpoint.url);
        tracing::warn!(endpoint = %endpoint.id, %url, %why, "webhook endpoint disabled");
        let event = LifecycleEvent {
            channel: None,
            ..LifecycleEvent::new(
                LifecycleKind::EndpointDisabled,
                &RequestId(endpoint.id.to_string()),
                crate::model::Channel::Email,
                Some(why),
            )
        };
        kafka::emit_event(&self.producer, &self.topics.events(), &event).await;
        Ok(())
    }

    pub fn stats_json(&self) -> serde_json::Value {
        self.stats.json()
    }

    /// `/metrics`: webhook calls by result, for the events program's health address.
    pub fn prometheus(&self) -> crate::prom::Family {
        self.stats.family(&[])
    }
}
