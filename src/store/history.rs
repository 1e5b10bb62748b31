//! Each customer's message history, written from the lifecycle events by `herald-events`
//! (role `history`) and read by support through the API.
//!
//! Per customer, under the customer's hash tag (one cluster slot): `{ns}:history:{CUSTOMER}`,
//! a sorted set of the customer's messages (member = campaign id, score = when its first
//! event happened), and `{ns}:history:{CUSTOMER}:m:CAMPAIGN`, a hash of that message's events
//! by `event_id` (so an event Kafka delivers twice is kept once). Both are bounded (the
//! newest messages per customer, the first events per message) and expire after the
//! retention, counted from the customer's latest event.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{EventStore, Lua, StoreError};
use crate::model::{rfc3339, CampaignId, Channel, CustomerId, LifecycleEvent, LifecycleKind};

/// How much history is kept.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Messages per customer; the oldest are dropped first.
    pub messages: usize,
    /// Events per message (a message with every fallback has about a dozen).
    pub events: usize,
    pub retention: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            messages: 200,
            events: 32,
            retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// One status of a message, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEvent {
    /// `sent`, `delivered`, `undelivered`, `fallback`, `failed`, `cancelled`...
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// When it happened, RFC 3339.
    pub at: String,
    #[serde(skip)]
    pub at_ms: u64,
    /// The provider that took the send (on `sent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's message id, or why it failed or moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One message to a customer: a campaign's (or a flash promo's) delivery with each status.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MessageHistory {
    pub campaign: CampaignId,
    /// The latest status.
    pub status: String,
    /// The channel of the latest attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The provider that took the latest send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// When its first event happened, RFC 3339.
    pub started: String,
    /// Oldest first.
    pub events: Vec<HistoryEvent>,
}

/// A page of a customer's history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub messages: Vec<MessageHistory>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// An event the history keeps, as stored (short names: one per delivery step).
#[derive(Serialize, Deserialize)]
struct Stored {
    k: LifecycleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ch: Option<Channel>,
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
}

/// What of a lifecycle event goes into a customer's history: events about one customer's
/// campaign delivery (a batch's counts, and seed 001's requests, which name an address and
/// no customer, are not).
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub customer: CustomerId,
    pub campaign: CampaignId,
    pub event_id: String,
    pub at_ms: u64,
    stored: String,
}

impl HistoryItem {
    pub fn of(e: &LifecycleEvent) -> Option<HistoryItem> {
        let campaign = e.campaign.clone()?;
        if e.count.is_some() || e.kind == LifecycleKind::Accepted {
            return None;
        }
        let (_, customer, _) = crate::model::parse_delivery_key(&e.id.0)?;
        let stored = Stored {
            k: e.kind,
            ch: e.channel,
            at: e.at_ms,
            p: e.provider.clone(),
            d: e.detail.as_ref().map(|d| d.chars().take(300).collect()),
        };
        Some(HistoryItem {
            customer,
            campaign,
            event_id: e.event_id.clone(),
            at_ms: e.at_ms,
            stored: serde_json::to_string(&stored).ok()?,
        })
    }
}

// KEYS[1] the customer's index, KEYS[2] the message's events. ARGV: campaign, event id,
// event, at ms, most messages, most events, ttl s. 1 when kept now, 0 when kept before (or
// the message is full).
static RECORD: Lua = Lua::new(
    r#"
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[6]) then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[4]), ARGV[1])
local ttl = tonumber(ARGV[7])
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[1], ttl)
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if over > 0 then
  local prefix = string.sub(KEYS[2], 1, string.len(KEYS[2]) - string.len(ARGV[1]))
  for i, old in ipairs(redis.call('ZPOPMIN', KEYS[1], over)) do
    if i % 2 == 1 then redis.call('DEL', prefix .. old) end
  end
end
return 1
"#,
);

impl EventStore {
    /// Records history events, each at most once however often it is given.
    pub async fn record_history(
        &self,
        items: &[HistoryItem],
        limits: HistoryLimits,
    ) -> Result<Vec<bool>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let script = &*RECORD;
        let mut pipe = redis::pipe();
        for item in items {
            pipe.invoke_script(
                script
                    .key(self.keys.history_key(&item.customer))
                    .key(self.keys.message_key(&item.customer, &item.campaign))
                    .arg(item.campaign.as_str())
                    .arg(&item.event_id)
                    .arg(&item.stored)
                    .arg(item.at_ms)
                    .arg(limits.messages)
                    .arg(limits.events)
                    .arg(limits.retention.as_secs().max(1)),
            );
        }
        let kept: Vec<i64> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
        Ok(kept.into_iter().map(|n| n == 1).collect())
    }

    /// One message of a customer's history; `None` when there is none.
    pub async fn message_history(
        &self,
        customer: &CustomerId,
        campaign: &CampaignId,
    ) -> Result<Option<MessageHistory>, StoreError> {
        let key = self.keys.history_key(customer);
        let (mut c, generation) = self.connection();
        let started: Option<f64> = self
            .bounded(generation, c.zscore(&key, campaign.as_str()))
            .await?;
        let Some(started) = started else {
            return Ok(None);
        };
        let mut pipe = redis::pipe();
        pipe.hgetall(self.keys.message_key(customer, campaign));
        let mut events: Vec<BTreeMap<String, String>> = self.query_pipe(&pipe).await?;
        Ok(Some(message_of(
            campaign.clone(),
            started as u64,
            events.pop().unwrap_or_default(),
        )))
    }

    /// A page of a customer's messages, newest first: at most `limit`, started before
    /// `before` (ms) when given.
    pub async fn customer_history(
        &self,
        customer: &CustomerId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        let key = self.keys.history_key(customer);
        let max = before.map_or("+inf".to_string(), |b| format!("({b}"));
        let (mut c, generation) = self.connection();
        let ids: Vec<(String, f64)> = self
            .bounded(
                generation,
                c.zrevrangebyscore_limit_withscores(&key, max, "-inf", 0, limit as isize + 1),
            )
            .await?;
        let more = ids.len() > limit;
        let ids: Vec<(CampaignId, u64)> = ids
            .into_iter()
            .take(limit)
            .filter_map(|(id, score)| Some((CampaignId::parse(&id)?, score as u64)))
            .collect();
        let mut pipe = redis::pipe();
        for (id, _) in &ids {
            pipe.hgetall(self.keys.message_key(customer, id));
        }
        let all: Vec<BTreeMap<String, String>> = if ids.is_empty() {
            Vec::new()
        } else {
            self.query_pipe(&pipe).await?
        };
        let next = more
            .then(|| ids.last().map(|(_, at)| at.to_string()))
            .flatten();
        let messages = ids
            .into_iter()
            .zip(all)
            .map(|((id, started), events)| message_of(id, started, events))
            .collect();
        Ok(HistoryPage { messages, next })
    }
}

/// A message from its stored events, oldest first.
fn message_of(
    campaign: CampaignId,
    started_ms: u64,
    raw: BTreeMap<String, String>,
) -> MessageHistory {
    let mut events: Vec<(String, HistoryEvent)> = raw
        .into_iter()
        .filter_map(|(event_id, v)| {
            let s: Stored = serde_json::from_str(&v).ok()?;
            Some((
                event_id,
                HistoryEvent {
                    status: s.k.outcome().to_string(),
                    channel: s.ch,
                    at: rfc3339(s.at),
                    at_ms: s.at,
                    provider: s.p,
                    detail: s.d,
                },
            ))
        })
        .collect();
    // Event ids are UUIDv7 (time-ordered): they break ties between events of one millisecond.
    events.sort_by(|(a_id, a), (b_id, b)| (a.at_ms, a_id).cmp(&(b.at_ms, b_id)));
    let events: Vec<HistoryEvent> = events.into_iter().map(|(_, e)| e).collect();
    let latest = events.iter().rev().find(|e| e.status != "deduplicated");
    MessageHistory {
        campaign,
        status: latest.map_or("unknown".into(), |e| e.status.clone()),
        channel: latest.and_then(|e| e.channel),
        provider: events.iter().rev().find_map(|e| e.provider.clone()),
        started: rfc3339(started_ms),
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_oldest_first_and_its_status_is_the_latest_that_is_not_a_duplicate() {
        let stored = |k, ch, at, p: Option<&str>| {
            serde_json::to_string(&Stored {
                k,
                ch: Some(ch),
                at,
                p: p.map(str::to_string),
                d: None,
            })
            .unwrap()
        };
        let raw = BTreeMap::from([
            (
                "e3".into(),
                stored(LifecycleKind::Delivered, Channel::Email, 30, None),
            ),
            (
                "e1".into(),
                stored(LifecycleKind::Sent, Channel::Sms, 10, Some("twilio")),
            ),
            (
                "e2".into(),
                stored(LifecycleKind::FellBack, Channel::Email, 20, None),
            ),
            (
                "e4".into(),
                stored(LifecycleKind::Deduplicated, Channel::Email, 40, None),
            ),
        ]);
        let m = message_of(CampaignId::parse("c").unwrap(), 10, raw);
        let statuses: Vec<&str> = m.events.iter().map(|e| e.status.as_str()).collect();
        assert_eq!(statuses, ["sent", "fallback", "delivered", "deduplicated"]);
        assert_eq!(m.status, "delivered");
        assert_eq!(m.channel, Some(Channel::Email));
        assert_eq!(m.provider.as_deref(), Some("twilio"));
    }
}
