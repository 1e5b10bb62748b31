//! What happened to a notification, as published on `herald.events` for metrics and audit.

use serde::{Deserialize, Serialize};

use super::{delivery_key, now_ms, CampaignId, Channel, CustomerId, RequestId};
/// What happened to a notification; published on `herald.events` for metrics and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleKind {
    /// Taken on: a request queued by the API, or `count` campaign deliveries fanned out.
    Accepted,
    Processing,
    Sent,
    Failed,
    Deduplicated,
    DeadLettered,
    /// A receipt confirmed a campaign delivery.
    Delivered,
    /// The provider refused, or a failure receipt came: the next channel is due.
    Undelivered,
    /// Moved on to the next channel after silence or failure.
    FellBack,
    /// A dispatcher died while the provider call may have gone out, and the channel's
    /// policy is `skip`: counted, never sent again.
    Uncertain,
    /// The customer followed a promotion's one-click unsubscribe link.
    Unsubscribed,
    /// An operator cancelled the campaign before this delivery was sent (`count` of a batch
    /// fan-out ended so).
    Cancelled,
    /// The campaign's `expires_at` passed before this delivery was sent (`count` of a batch
    /// fan-out ended so).
    Expired,
    /// A frequency cap held the promotion back (`count` of a batch fan-out ended so).
    Capped,
    /// An outgoing webhook endpoint (`id`) failed for the whole retry period and was
    /// disabled.
    EndpointDisabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Unique per event, so a consumer that sees it twice counts it once.
    pub event_id: String,
    pub kind: LifecycleKind,
    pub id: RequestId,
    /// `None` for what never reached a channel (a customer no channel could reach).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<Channel>,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// Set on campaign deliveries, whose `id` is the delivery key `campaign:customer:channel`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub campaign: Option<CampaignId>,
    /// How many notifications the event stands for when more than one (a fanned-out batch).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    /// On `delivered`: milliseconds from the provider's acceptance to the receipt.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_ms: Option<u64>,
    /// On `sent`: the provider (by its configured name) that took the message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider: Option<String>,
}

impl LifecycleEvent {
    pub fn new(
        kind: LifecycleKind,
        id: &RequestId,
        channel: Channel,
        detail: Option<String>,
    ) -> Self {
        LifecycleEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            kind,
            id: id.clone(),
            channel: Some(channel),
            at_ms: now_ms(),
            detail,
            campaign: None,
            count: None,
            latency_ms: None,
            provider: None,
        }
    }

    /// An event about one campaign delivery.
    pub fn for_delivery(
        kind: LifecycleKind,
        campaign: &CampaignId,
        customer: &CustomerId,
        channel: Channel,
        detail: Option<String>,
    ) -> Self {
        let key = delivery_key(campaign, customer, channel);
        LifecycleEvent {
            campaign: Some(campaign.clone()),
            ..LifecycleEvent::new(kind, &RequestId(key), channel, detail)
        }
    }
}

impl LifecycleKind {
    pub const ALL: [LifecycleKind; 13] = [
        LifecycleKind::Accepted,
        LifecycleKind::Processing,
        LifecycleKind::Sent,
        LifecycleKind::Delivered,
        LifecycleKind::Undelivered,
        LifecycleKind::FellBack,
        LifecycleKind::Failed,
        LifecycleKind::Deduplicated,
        LifecycleKind::DeadLettered,
        LifecycleKind::Uncertain,
        LifecycleKind::Cancelled,
        LifecycleKind::Expired,
        LifecycleKind::Capped,
    ];

    /// The outcome name metrics use (`fallback` for [`LifecycleKind::FellBack`]).
    pub fn outcome(self) -> &'static str {
        match self {
            LifecycleKind::Accepted => "accepted",
            LifecycleKind::Processing => "processing",
            LifecycleKind::Sent => "sent",
            LifecycleKind::Delivered => "delivered",
            LifecycleKind::Undelivered => "undelivered",
            LifecycleKind::FellBack => "fallback",
            LifecycleKind::Failed => "failed",
            LifecycleKind::Deduplicated => "deduplicated",
            LifecycleKind::DeadLettered => "dead_lettered",
            LifecycleKind::Uncertain => "uncertain",
            LifecycleKind::Unsubscribed => "unsubscribed",
            LifecycleKind::Cancelled => "cancelled",
            LifecycleKind::Expired => "expired",
            LifecycleKind::Capped => "capped",
            LifecycleKind::EndpointDisabled => "endpoint_disabled",
        }
    }
}
