//! Opening a promo's window: its segment, minus the customers a promo already reached that
//! day in their time zone, becomes a campaign fanned out in batches of 1000. Run by every
//! `herald-retry`; one instance claims each promo under a lease, and a rerun after a crash
//! finds the same campaign and the same daily caps, so nobody is notified twice.

use std::time::Duration;

use rdkafka::producer::FutureProducer;

use super::{segment, FlashPromo, Window};
use crate::campaigns::LaunchError;
use crate::kafka::Topics;
use crate::model::{Campaign, CampaignId, CustomerId, PromoId};
use crate::store::{PromoTask, StoreError};

use super::PromoStores;

/// How long one scheduler may take to activate a promo before another may try.
const ACTIVATION_LEASE: Duration = Duration::from_secs(60);

/// What activating one promo did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub promo: PromoId,
    pub campaign: CampaignId,
    /// Customers within the radius.
    pub near: usize,
    /// Of those, the ones the other criteria admit.
    pub segment: usize,
    /// Of those, already notified of a promo today.
    pub capped: usize,
    /// Notified now: the campaign's recipients.
    pub audience: usize,
}

/// The customer's local date at `now_ms` (`2026-11-24`), the unit of the daily cap.
pub fn local_date(time_zone: &str, now_ms: u64) -> String {
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    jiff::Timestamp::from_millisecond(now_ms as i64)
        .map(|t| t.to_zoned(tz).date().to_string())
        .unwrap_or_default()
}

/// Activates every promo whose window has opened; returns what each activation did.
pub async fn activate_due(
    stores: &PromoStores,
    producer: &FutureProducer,
    topics: &Topics,
    owner: &str,
    now_ms: u64,
) -> Result<Vec<Activation>, StoreError> {
    let mut done = Vec::new();
    for id in stores.promos.due_promo_ids(now_ms).await? {
        if !stores
            .promos
            .claim_promo_task(&id, PromoTask::Activation, owner, ACTIVATION_LEASE)
            .await?
        {
            continue;
        }
        let Some(record) = stores.promos.promo(&id).await? else {
            stores
                .promos
                .finish_promo_activation(&id, owner, &[("activation", "missing".into())])
                .await?;
            continue;
        };
        if record.activation.contains_key("activation") {
            // Recorded already: by a scheduler that stopped before taking it off the
            // schedule, or the same promo was posted again (which schedules it again).
            stores.promos.unschedule_promo(&id).await?;
            continue;
        }
        let promo: FlashPromo = match serde_json::from_str(&record.json) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(promo = %id, error = %e, "unreadable promo; not activated");
                stores
                    .promos
                    .finish_promo_activation(
                        &id,
                        owner,
                        &[("activation", format!("unreadable: {e}"))],
                    )
                    .await?;
                continue;
            }
        };
        if promo.window(now_ms) == Window::Ended {
            stores
                .promos
                .finish_promo_activation(
                    &id,
                    owner,
                    &[("activation", "ended before activation".into())],
                )
                .await?;
            continue;
        }
        match activate(stores, producer, topics, &promo, now_ms).await? {
            Some(a) => {
                tracing::info!(promo = %id, campaign = %a.campaign, near = a.near, segment = a.segment, capped = a.capped, audience = a.audience, "flash promo activated");
                let finished = stores
                    .promos
                    .finish_promo_activation(
                        &id,
                        owner,
                        &[
                            ("activation", "done".into()),
                            ("activated_ms", now_ms.to_string()),
                            ("campaign", a.campaign.to_string()),
                            ("near", a.near.to_string()),
                            ("segment", a.segment.to_string()),
                            ("capped", a.capped.to_string()),
                            ("audience", a.audience.to_string()),
                        ],
                    )
                    .await?;
                if !finished {
                    // The lease ran out mid-activation and another scheduler took it over: it
                    // records the activation (the launch is idempotent by campaign id).
                    tracing::warn!(promo = %id, "activation lease lost; the scheduler holding it finishes");
                }
                done.push(a);
            }
            // Not queued: the lease runs out and a scheduler tries again.
            None => tracing::warn!(promo = %id, "promo batches not queued; will retry"),
        }
    }
    Ok(done)
}

/// Activates promos as their windows open, and publishes their purchases' sale events,
/// until `shutdown`, checking every `poll`.
pub async fn run(
    stores: PromoStores,
    producer: FutureProducer,
    topics: Topics,
    poll: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let owner = uuid::Uuid::new_v4().to_string();
    tracing::info!(%owner, "flash promo scheduler running");
    loop {
        let now = crate::model::now_ms();
        if let Err(e) = activate_due(&stores, &producer, &topics, &owner, now).await {
            tracing::warn!(error = %e, "flash promo activation failed; will retry");
        }
        if let Err(e) =
            super::outbox::publish_outboxes(&stores.promos, &producer, &topics, &owner, now).await
        {
            tracing::warn!(error = %e, "flash promo sale events not published; will retry");
        }
        if !crate::shutdown::sleep_unless_cancelled(poll, &shutdown).await {
            return;
        }
    }
}

/// Builds and queues the promo's campaign; `None` when Kafka refused the batches.
async fn activate(
    stores: &PromoStores,
    producer: &FutureProducer,
    topics: &Topics,
    promo: &FlashPromo,
    now_ms: u64,
) -> Result<Option<Activation>, StoreError> {
    let segment = segment::members(stores, promo).await?;
    let dated: Vec<(CustomerId, String)> = segment
        .members
        .iter()
        .map(|m| (m.id.clone(), local_date(&m.customer.time_zone, now_ms)))
        .collect();
    let holds = stores.promos.take_daily_caps(&promo.id, &dated).await?;
    let audience: Vec<CustomerId> = dated
        .into_iter()
        .zip(&holds)
        .filter(|(_, ours)| **ours)
        .map(|((id, _), _)| id)
        .collect();
    let campaign = Campaign {
        id: promo.campaign_id(),
        name: format!("Flash promo {}: {}", promo.id, promo.product.name),
        template: promo.message.clone(),
        email: None,
        whatsapp: None,
        translations: Default::default(),
        channels: promo.channels.clone(),
        confirmation_timeout_ms: Default::default(),
        max_cost: None,
        recipients: audience.len() as u64,
        created_ms: now_ms,
        send_at_ms: None,
        topic: promo.topic(),
        // A flash promo that reaches a shopper after it ended is worse than none.
        expires_at_ms: Some(promo.ends_ms),
    };
    let recipients = if audience.is_empty() {
        0
    } else {
        match crate::campaigns::launch(
            &stores.campaigns,
            producer,
            topics,
            campaign.clone(),
            &audience,
        )
        .await
        {
            Ok(launched) => launched.campaign.recipients,
            Err(LaunchError::NotQueued | LaunchError::InProgress) => return Ok(None),
            Err(LaunchError::Store(e)) => return Err(e),
            Err(LaunchError::Conflict) => {
                return Err(StoreError::Corrupt {
                    key: campaign.id.to_string(),
                    what: "another campaign has this promo's campaign id".into(),
                })
            }
        }
    };
    Ok(Some(Activation {
        promo: promo.id.clone(),
        campaign: campaign.id,
        near: segment.near,
        segment: segment.members.len(),
        capped: holds.iter().filter(|ours| !**ours).count(),
        audience: recipients as usize,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_day_is_the_customers_own() {
        // 2026-11-24T23:30:00Z: still the 24th in London, already the 25th in Madrid.
        let t = 1_795_563_000_000;
        assert_eq!(local_date("Europe/London", t), "2026-11-24");
        assert_eq!(local_date("Europe/Madrid", t), "2026-11-25");
        assert_eq!(local_date("Not/AZone", t), "2026-11-24");
    }
}
