//! The state of personalised offers: customers, campaigns, and for every (campaign, customer)
//! its once-slot `{ns}:once:{CAMPAIGN}:CUSTOMER`, the one record that decides whether that
//! customer is contacted and on which channel. Each change of a slot is one Lua script that
//! also moves the campaign's counters and the campaign's pending set, so the counts add up
//! whatever crashes in between.
//!
//! Slot statuses: `queued` (published, not yet claimed) → `claimed` (a dispatcher holds the
//! lease) → `sent` (the provider accepted; waiting for a receipt in the pending set) →
//! `delivered`. Silence past the deadline, a failed receipt or a provider rejection lead
//! through `undelivered`/`retrying` to the next channel (`queued` again, one attempt later)
//! or to `failed`. `delivered` and `failed` are final.
//!
//! Every key of one campaign carries the campaign id as its hash tag (`{CAMPAIGN}`), so each
//! script touches a single Redis Cluster slot. That is why the pending set is one per
//! campaign (`{ns}:pending:{CAMPAIGN}`) rather than one `herald:pending` for all.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::{Store, StoreError};
use crate::model::{Campaign, CampaignId, Channel, Customer, CustomerId, Delivery, ReceiptStatus};

/// Fan-out and batch bookkeeping split audiences into batches of this many customers.
pub const BATCH_SIZE: usize = 1000;

/// How a dispatcher's claim of a once-slot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceClaim {
    /// This dispatcher holds the lease and must call the provider, then `mark_sent`.
    Claimed,
    /// The customer was already handled for this attempt (or moved on): counted `deduplicated`.
    Duplicate(String),
    /// Another live lease holds it; try again after `retry_in`.
    Held { retry_in: Duration },
}

/// Where a delivery stands after the provider accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentOutcome {
    /// Waiting for its receipt until the deadline.
    AwaitingReceipt,
    /// The receipt came back before the send was recorded.
    Delivered,
    /// A failure receipt came first: the next channel is due now.
    Undelivered,
    /// This dispatcher lost its lease; whoever holds it records the outcome.
    LostLease,
}

/// What one receipt changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptOutcome {
    /// With the milliseconds since the provider accepted the send, when known.
    Delivered(Option<u64>),
    /// A failure receipt: the next channel is due now.
    Undelivered,
    /// Arrived before the dispatcher recorded the send; applied when it does.
    Early,
    /// For a delivery that already moved on or ended: recorded, changes nothing.
    Late,
    Unknown,
}

/// An overdue entry of a campaign's pending set, claimed by one `herald-retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub customer: CustomerId,
    /// `queued`: republish the same attempt (its publish may have been lost, or it waited
    /// out quiet hours). Anything else: fall back to the next channel.
    pub status: String,
    pub attempt: u32,
    pub channel: Option<Channel>,
    pub tried: Vec<Channel>,
    /// The W3C traceparent of the first attempt, so the fallback joins its trace.
    pub trace: Option<String>,
}

/// Whether a campaign was stored by this call.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignCreation {
    Created,
    /// A campaign with this id exists: the same request again, nothing new stored.
    Exists(Box<Campaign>),
}

struct OfferScripts {
    claim: Script,
    renew: Script,
    release: Script,
    mark_sent: Script,
    mark_undelivered: Script,
    receipt: Script,
    claim_overdue: Script,
    advance: Script,
    fail: Script,
    first_unreachable: Script,
    reopen_unreachable: Script,
    first_deferred: Script,
    batch_done: Script,
}

fn offer_scripts() -> &'static OfferScripts {
    static SCRIPTS: std::sync::OnceLock<OfferScripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| OfferScripts {
        claim: Script::new(CLAIM_LUA),
        renew: Script::new(RENEW_LUA),
        release: Script::new(RELEASE_LUA),
        mark_sent: Script::new(MARK_SENT_LUA),
        mark_undelivered: Script::new(MARK_UNDELIVERED_LUA),
        receipt: Script::new(RECEIPT_LUA),
        claim_overdue: Script::new(CLAIM_OVERDUE_LUA),
        advance: Script::new(ADVANCE_LUA),
        fail: Script::new(FAIL_LUA),
        first_unreachable: Script::new(FIRST_UNREACHABLE_LUA),
        reopen_unreachable: Script::new(REOPEN_UNREACHABLE_LUA),
        first_deferred: Script::new(FIRST_DEFERRED_LUA),
        batch_done: Script::new(BATCH_DONE_LUA),
    })
}

// KEYS[1] slot, KEYS[2] campaign. ARGV: attempt, channel, owner, lease ms, ttl s, traceparent.
// The first claim's trace is kept (`tp`) so that a fallback continues it.
const CLAIM_LUA: &str = lua_with_now!(
    r#"
local a = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'st', 'a', 'ch', 'own', 'lu')
if not f[1] then
  if a ~= 0 then
    redis.call('HINCRBY', KEYS[2], 'deduplicated', 1)
    return {'dup', 'expired'}
  end
  redis.call('HSET', KEYS[1], 'st', 'claimed', 'a', 0, 'ch', ARGV[2], 'tr', ARGV[2], 'own', ARGV[3], 'lu', now + tonumber(ARGV[4]))
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'tp', ARGV[6]) end
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
  return {'claimed'}
end
if tonumber(f[2]) ~= a or f[3] ~= ARGV[2] or (f[1] ~= 'queued' and f[1] ~= 'claimed') then
  redis.call('HINCRBY', KEYS[2], 'deduplicated', 1)
  return {'dup', f[1]}
end
if f[1] == 'claimed' and f[4] ~= ARGV[3] and tonumber(f[5]) > now then
  return {'held', tostring(tonumber(f[5]) - now)}
end
redis.call('HSET', KEYS[1], 'st', 'claimed', 'own', ARGV[3], 'lu', now + tonumber(ARGV[4]))
if ARGV[6] ~= '' then redis.call('HSETNX', KEYS[1], 'tp', ARGV[6]) end
return {'claimed'}
"#
);

// KEYS[1] slot. ARGV: owner, lease ms.
const RENEW_LUA: &str = lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'own')
if f[1] ~= 'claimed' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lu', now + tonumber(ARGV[2]))
return 1
"#
);

// KEYS[1] slot. ARGV: owner. A handed-back claim is queued again for its redelivered message.
const RELEASE_LUA: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'own')
if f[1] ~= 'claimed' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', 'queued', 'own', '', 'lu', 0)
return 1
"#;

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: owner, channel, timeout ms, customer, provider id.
const MARK_SENT_LUA: &str = lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'own', 'er')
if f[1] ~= 'claimed' or f[2] ~= ARGV[1] then return 'lost' end
redis.call('HINCRBY', KEYS[2], 'sent', 1)
redis.call('HINCRBY', KEYS[2], 'sent:' .. ARGV[2], 1)
if f[3] == 'delivered' then
  redis.call('HSET', KEYS[1], 'st', 'delivered', 'own', '', 'pid', ARGV[5])
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'delivered', 1)
  redis.call('HINCRBY', KEYS[2], 'delivered:' .. ARGV[2], 1)
  return 'delivered'
end
if f[3] == 'failed' then
  redis.call('HSET', KEYS[1], 'st', 'undelivered', 'own', '', 'pid', ARGV[5], 'why', 'failure receipt')
  redis.call('ZADD', KEYS[3], now, ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'undelivered:' .. ARGV[2], 1)
  return 'undelivered'
end
redis.call('HSET', KEYS[1], 'st', 'sent', 'own', '', 'pid', ARGV[5], 'sa', now)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[4])
return 'sent'
"#
);

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: owner, channel, customer, reason.
const MARK_UNDELIVERED_LUA: &str = lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'own')
if f[1] ~= 'claimed' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', 'undelivered', 'own', '', 'why', ARGV[4])
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('HINCRBY', KEYS[2], 'undelivered:' .. ARGV[2], 1)
return 1
"#
);

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: channel, status, customer, reason.
const RECEIPT_LUA: &str = lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'ch', 'sa')
if not f[1] then return 'unknown' end
if f[2] == ARGV[1] and f[1] == 'claimed' then
  redis.call('HSET', KEYS[1], 'er', ARGV[2])
  return 'early'
end
if f[2] == ARGV[1] and (f[1] == 'sent' or f[1] == 'retrying') then
  if ARGV[2] == 'delivered' then
    redis.call('HSET', KEYS[1], 'st', 'delivered', 'rt', '')
    redis.call('ZREM', KEYS[3], ARGV[3])
    redis.call('HINCRBY', KEYS[2], 'delivered', 1)
    redis.call('HINCRBY', KEYS[2], 'delivered:' .. ARGV[1], 1)
    if f[3] then return 'delivered ' .. (now - tonumber(f[3])) end
    return 'delivered'
  end
  redis.call('HSET', KEYS[1], 'st', 'undelivered', 'rt', '', 'why', ARGV[4])
  redis.call('ZADD', KEYS[3], now, ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'undelivered:' .. ARGV[1], 1)
  return 'undelivered'
end
redis.call('HINCRBY', KEYS[2], 'late_receipts', 1)
redis.call('HSET', KEYS[1], 'late:' .. ARGV[1], ARGV[2])
return 'late'
"#
);

// KEYS[1] pending. ARGV: batch, lease ms, token, slot key prefix.
// Overdue entries get a new score (now + lease) so no other instance sees them meanwhile.
const CLAIM_OVERDUE_LUA: &str = lua_with_now!(
    r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, m in ipairs(due) do
  local slot = ARGV[4] .. m
  local f = redis.call('HMGET', slot, 'st', 'a', 'ch', 'tr', 'tp')
  local st = f[1]
  if not st or st == 'delivered' or st == 'failed' then
    redis.call('ZREM', KEYS[1], m)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), m)
    if st ~= 'claimed' then
      if st ~= 'queued' then redis.call('HSET', slot, 'st', 'retrying', 'rt', ARGV[3]) end
      table.insert(out, m)
      table.insert(out, st)
      table.insert(out, f[2] or '0')
      table.insert(out, f[3] or '')
      table.insert(out, f[4] or '')
      table.insert(out, f[5] or '')
    end
  end
end
return out
"#
);

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending.
// ARGV: token, attempt, next channel, customer, due at ms (0: now + watch ms), watch ms.
// The entry stays pending as a watchdog: if the republished message is lost, it comes due again.
const ADVANCE_LUA: &str = lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'rt', 'a', 'tr')
if f[1] ~= 'retrying' or f[2] ~= ARGV[1] or tonumber(f[3]) ~= tonumber(ARGV[2]) then return 0 end
local due = tonumber(ARGV[5])
if due == 0 then due = now + tonumber(ARGV[6]) end
redis.call('HSET', KEYS[1], 'st', 'queued', 'a', tonumber(ARGV[2]) + 1, 'ch', ARGV[3], 'tr', f[4] .. ',' .. ARGV[3], 'rt', '', 'er', '', 'own', '', 'lu', 0)
redis.call('ZADD', KEYS[3], due, ARGV[4])
redis.call('HINCRBY', KEYS[2], 'fallbacks', 1)
redis.call('HINCRBY', KEYS[2], 'fallbacks:' .. ARGV[3], 1)
return 1
"#
);

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: token, attempt, customer, reason code, reason.
const FAIL_LUA: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'rt', 'a')
if f[1] ~= 'retrying' or f[2] ~= ARGV[1] or tonumber(f[3]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'st', 'failed', 'rt', '', 'why', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'failed', 1)
redis.call('HINCRBY', KEYS[2], 'failed:' .. ARGV[4], 1)
return 1
"#;

// KEYS[1] slot, KEYS[2] campaign. ARGV: reason code, reason, ttl s.
const FIRST_UNREACHABLE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'st', 'failed', 'a', 0, 'ch', '', 'tr', '', 'why', ARGV[2], 'fc', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[2], 'failed', 1)
redis.call('HINCRBY', KEYS[2], 'failed:' .. ARGV[1], 1)
return 1
"#;

// KEYS[1] slot, KEYS[2] campaign. Only a customer that failed before any channel was tried
// (unknown, or no channel) is reopened: anything sent stays as it is.
const REOPEN_UNREACHABLE_LUA: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'ch', 'fc')
if f[1] ~= 'failed' or f[2] ~= '' or not f[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'failed', -1)
redis.call('HINCRBY', KEYS[2], 'failed:' .. f[3], -1)
redis.call('HINCRBY', KEYS[2], 'replayed', 1)
return 1
"#;

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: channel, due at ms, customer, ttl s.
const FIRST_DEFERRED_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'st', 'queued', 'a', 0, 'ch', ARGV[1], 'tr', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]), ARGV[3])
redis.call('HINCRBY', KEYS[2], 'deferred', 1)
return 1
"#;

// KEYS[1] campaign, KEYS[2] batch bitmap. ARGV: batch, recipients in it.
const BATCH_DONE_LUA: &str = r#"
if redis.call('SETBIT', KEYS[2], tonumber(ARGV[1]), 1) == 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'fanned_out', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'batches_done', 1)
return 1
"#;

/// Campaign keys live this long after creation: well past any fallback chain.
pub(super) const CAMPAIGN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Store {
    fn customer_key(&self, id: &CustomerId) -> String {
        format!("{}:customer:{id}", self.ns)
    }
    pub(super) fn geo_key(&self) -> String {
        format!("{}:geo:customers", self.ns)
    }
    fn campaign_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}", self.ns)
    }
    fn audience_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}:audience", self.ns)
    }
    fn batches_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}:batches", self.ns)
    }
    fn slot_prefix(&self, id: &CampaignId) -> String {
        format!("{}:once:{{{id}}}:", self.ns)
    }
    /// The once-slot of one (campaign, customer).
    pub fn slot_key(&self, campaign: &CampaignId, customer: &CustomerId) -> String {
        format!("{}{customer}", self.slot_prefix(campaign))
    }
    /// The pending confirmations of one campaign: member = customer, score = deadline (ms).
    pub fn pending_key(&self, id: &CampaignId) -> String {
        format!("{}:pending:{{{id}}}", self.ns)
    }
    fn active_key(&self) -> String {
        format!("{}:campaigns:active", self.ns)
    }
    fn health_key(&self, channel: Channel) -> String {
        format!("{}:health:{channel}", self.ns)
    }

    /// Stores (or replaces) a customer; its location also goes into the GEO set.
    pub async fn put_customers(
        &self,
        customers: &[(CustomerId, Customer)],
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (id, c) in customers {
            let json = serde_json::to_string(c).map_err(|e| StoreError::Corrupt {
                key: self.customer_key(id),
                what: e.to_string(),
            })?;
            pipe.set(self.customer_key(id), json).ignore();
            match c.location {
                Some(loc) => pipe
                    .cmd("GEOADD")
                    .arg(self.geo_key())
                    .arg(loc.lon)
                    .arg(loc.lat)
                    .arg(id.as_str())
                    .ignore(),
                None => pipe.zrem(self.geo_key(), id.as_str()).ignore(),
            };
        }
        self.query_pipe::<()>(&pipe).await
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Option<Customer>, StoreError> {
        Ok(self
            .customers(std::slice::from_ref(id))
            .await?
            .pop()
            .flatten())
    }

    /// Profiles of many customers in one round trip; `None` for an unknown (or unreadable) one.
    pub async fn customers(&self, ids: &[CustomerId]) -> Result<Vec<Option<Customer>>, StoreError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.get(self.customer_key(id));
        }
        let raw: Vec<Option<String>> = self.query_pipe(&pipe).await?;
        Ok(raw
            .into_iter()
            .zip(ids)
            .map(|(json, id)| {
                json.and_then(|j| match serde_json::from_str(&j) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(customer = %id, error = %e, "unreadable customer profile");
                        None
                    }
                })
            })
            .collect())
    }

    /// Stores a campaign and its audience, unless one with this id exists already.
    pub async fn create_campaign(
        &self,
        campaign: &Campaign,
        audience: &[CustomerId],
    ) -> Result<CampaignCreation, StoreError> {
        let key = self.campaign_key(&campaign.id);
        let def = serde_json::to_string(campaign).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            what: e.to_string(),
        })?;
        let (mut c, generation) = self.connection();
        let created: bool = self
            .bounded(generation, c.hset_nx(&key, "def", &def))
            .await?;
        if !created {
            let ready: Option<String> = self.bounded(generation, c.hget(&key, "ready")).await?;
            if ready.is_some() {
                return match self.campaign(&campaign.id).await? {
                    Some(existing) => Ok(CampaignCreation::Exists(Box::new(existing))),
                    None => Err(StoreError::Corrupt {
                        key,
                        what: "campaign vanished".into(),
                    }),
                };
            }
            // A crash left it half-stored: store the audience again from the start.
        }
        let audience_key = self.audience_key(&campaign.id);
        let ttl = CAMPAIGN_TTL.as_secs() as i64;
        self.query_pipe::<()>(redis::pipe().del(&audience_key).ignore())
            .await?;
        for chunk in audience.chunks(10_000) {
            let ids: Vec<&str> = chunk.iter().map(CustomerId::as_str).collect();
            self.query_pipe::<()>(redis::pipe().rpush(&audience_key, ids).ignore())
                .await?;
        }
        let batches = audience.len().div_ceil(BATCH_SIZE);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("recipients", audience.len().to_string()),
                    ("batches", batches.to_string()),
                    ("ready", "1".to_string()),
                ],
            )
            .ignore()
            .expire(&key, ttl)
            .ignore()
            .expire(&audience_key, ttl)
            .ignore()
            .sadd(self.active_key(), campaign.id.as_str())
            .ignore();
        self.query_pipe::<()>(&pipe).await?;
        Ok(CampaignCreation::Created)
    }

    pub async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        let key = self.campaign_key(id);
        let (mut c, generation) = self.connection();
        let def: Option<String> = self.bounded(generation, c.hget(&key, "def")).await?;
        def.map(|d| {
            serde_json::from_str(&d).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                what: e.to_string(),
            })
        })
        .transpose()
    }

    /// A campaign's counters: recipients, batches, fanned_out, sent, delivered, failed,
    /// fallbacks, deduplicated, late_receipts, and per-channel / per-reason splits
    /// (`sent:email`, `failed:exhausted`...).
    pub async fn campaign_counts(
        &self,
        id: &CampaignId,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let (mut c, generation) = self.connection();
        let all: BTreeMap<String, String> = self
            .bounded(generation, c.hgetall(self.campaign_key(id)))
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| v.parse::<u64>().ok().map(|n| (k, n)))
            .filter(|(k, _)| k != "ready")
            .collect())
    }

    /// The customers of one fan-out batch.
    pub async fn audience_batch(
        &self,
        id: &CampaignId,
        batch: u32,
    ) -> Result<Vec<CustomerId>, StoreError> {
        let start = batch as isize * BATCH_SIZE as isize;
        let (mut c, generation) = self.connection();
        let raw: Vec<String> = self
            .bounded(
                generation,
                c.lrange(
                    self.audience_key(id),
                    start,
                    start + BATCH_SIZE as isize - 1,
                ),
            )
            .await?;
        Ok(raw.iter().filter_map(|s| CustomerId::parse(s)).collect())
    }

    pub async fn is_batch_done(&self, id: &CampaignId, batch: u32) -> Result<bool, StoreError> {
        let (mut c, generation) = self.connection();
        let bit: u8 = self
            .bounded(generation, c.getbit(self.batches_key(id), batch as usize))
            .await?;
        Ok(bit == 1)
    }

    /// Records a batch as fanned out, once; `false` if it already was.
    pub async fn mark_batch_done(
        &self,
        id: &CampaignId,
        batch: u32,
        size: usize,
    ) -> Result<bool, StoreError> {
        let done: i64 = self
            .eval(
                offer_scripts()
                    .batch_done
                    .key(self.campaign_key(id))
                    .key(self.batches_key(id))
                    .arg(batch)
                    .arg(size),
            )
            .await?;
        Ok(done == 1)
    }

    /// A customer with no usable channel at fan-out: failed once, without any send.
    pub async fn fail_unreachable(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
        code: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(
                offer_scripts()
                    .first_unreachable
                    .key(self.slot_key(campaign, customer))
                    .key(self.campaign_key(campaign))
                    .arg(code)
                    .arg(reason)
                    .arg(CAMPAIGN_TTL.as_secs()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Reopens a customer that failed before any channel was tried (unknown customer, no
    /// channel), so that a replayed dead letter fans them out again; `false` when the slot
    /// is anything else (sent, delivered, or already reopened).
    pub async fn reopen_unreachable(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(
                offer_scripts()
                    .reopen_unreachable
                    .key(self.slot_key(campaign, customer))
                    .key(self.campaign_key(campaign)),
            )
            .await?;
        Ok(n == 1)
    }

    /// The first channel is in quiet hours and the rules say wait: `herald-retry` publishes
    /// it at `at_ms`.
    pub async fn defer_first(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
        channel: Channel,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(
                offer_scripts()
                    .first_deferred
                    .key(self.slot_key(campaign, customer))
                    .key(self.campaign_key(campaign))
                    .key(self.pending_key(campaign))
                    .arg(channel.as_str())
                    .arg(at_ms)
                    .arg(customer.as_str())
                    .arg(CAMPAIGN_TTL.as_secs()),
            )
            .await?;
        Ok(n == 1)
    }

    /// The gate before a customer is contacted: claims this delivery's attempt under a lease.
    pub async fn claim_once(
        &self,
        d: &Delivery,
        owner: &str,
        lease: Duration,
        traceparent: Option<&str>,
    ) -> Result<OnceClaim, StoreError> {
        let slot = self.slot_key(&d.campaign, &d.customer);
        let reply: Vec<String> = self
            .eval(
                offer_scripts()
                    .claim
                    .key(&slot)
                    .key(self.campaign_key(&d.campaign))
                    .arg(d.attempt)
                    .arg(d.message.channel.as_str())
                    .arg(owner)
                    .arg(lease.as_millis() as u64)
                    .arg(CAMPAIGN_TTL.as_secs())
                    .arg(traceparent.unwrap_or("")),
            )
            .await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("claimed"), _) => Ok(OnceClaim::Claimed),
            (Some("dup"), Some(st)) => Ok(OnceClaim::Duplicate(st.clone())),
            (Some("held"), Some(ms)) => Ok(OnceClaim::Held {
                retry_in: Duration::from_millis(ms.parse().unwrap_or(1000)),
            }),
            _ => Err(StoreError::Corrupt {
                key: slot,
                what: format!("claim reply {reply:?}"),
            }),
        }
    }

    /// Extends the lease; `false` means it was lost and the provider must not be called.
    pub async fn renew_once(
        &self,
        d: &Delivery,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let kept: i64 = self
            .eval(
                offer_scripts()
                    .renew
                    .key(self.slot_key(&d.campaign, &d.customer))
                    .arg(owner)
                    .arg(lease.as_millis() as u64),
            )
            .await?;
        Ok(kept == 1)
    }

    /// Hands a claim back on shutdown, so the redelivered message need not wait out the lease.
    pub async fn release_once(&self, d: &Delivery, owner: &str) -> Result<bool, StoreError> {
        let released: i64 = self
            .eval(
                offer_scripts()
                    .release
                    .key(self.slot_key(&d.campaign, &d.customer))
                    .arg(owner),
            )
            .await?;
        Ok(released == 1)
    }

    /// The provider accepted: wait for the receipt until now + the delivery's time-out.
    pub async fn mark_sent(
        &self,
        d: &Delivery,
        owner: &str,
        provider_id: &str,
    ) -> Result<SentOutcome, StoreError> {
        let reply: String = self
            .eval(
                offer_scripts()
                    .mark_sent
                    .key(self.slot_key(&d.campaign, &d.customer))
                    .key(self.campaign_key(&d.campaign))
                    .key(self.pending_key(&d.campaign))
                    .arg(owner)
                    .arg(d.message.channel.as_str())
                    .arg(d.timeout_ms)
                    .arg(d.customer.as_str())
                    .arg(provider_id),
            )
            .await?;
        Ok(match reply.as_str() {
            "sent" => SentOutcome::AwaitingReceipt,
            "delivered" => SentOutcome::Delivered,
            "undelivered" => SentOutcome::Undelivered,
            _ => SentOutcome::LostLease,
        })
    }

    /// The provider refused for good: the next channel is due now.
    pub async fn mark_undelivered(
        &self,
        d: &Delivery,
        owner: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(
                offer_scripts()
                    .mark_undelivered
                    .key(self.slot_key(&d.campaign, &d.customer))
                    .key(self.campaign_key(&d.campaign))
                    .key(self.pending_key(&d.campaign))
                    .arg(owner)
                    .arg(d.message.channel.as_str())
                    .arg(d.customer.as_str())
                    .arg(reason),
            )
            .await?;
        Ok(n == 1)
    }

    /// Applies receipts in one round trip.
    pub async fn apply_receipts(
        &self,
        receipts: &[(CampaignId, CustomerId, Channel, ReceiptStatus, String)],
    ) -> Result<Vec<ReceiptOutcome>, StoreError> {
        let mut pipe = redis::pipe();
        let script = &offer_scripts().receipt;
        for (campaign, customer, channel, status, reason) in receipts {
            let status = match status {
                ReceiptStatus::Delivered => "delivered",
                ReceiptStatus::Failed => "failed",
            };
            pipe.invoke_script(
                script
                    .key(self.slot_key(campaign, customer))
                    .key(self.campaign_key(campaign))
                    .key(self.pending_key(campaign))
                    .arg(channel.as_str())
                    .arg(status)
                    .arg(customer.as_str())
                    .arg(reason),
            );
        }
        let replies: Vec<String> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
        Ok(replies
            .iter()
            .map(|r| match r.split_once(' ').unwrap_or((r, "")) {
                ("delivered", latency) => ReceiptOutcome::Delivered(latency.parse().ok()),
                (_, "") => match r.as_str() {
                    "undelivered" => ReceiptOutcome::Undelivered,
                    "early" => ReceiptOutcome::Early,
                    "late" => ReceiptOutcome::Late,
                    _ => ReceiptOutcome::Unknown,
                },
                _ => ReceiptOutcome::Unknown,
            })
            .collect())
    }

    /// Claims up to `limit` overdue pending entries of a campaign for this `token`; no other
    /// `herald-retry` sees them for `lease`.
    pub async fn claim_overdue(
        &self,
        campaign: &CampaignId,
        token: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Overdue>, StoreError> {
        let flat: Vec<String> = self
            .eval(
                offer_scripts()
                    .claim_overdue
                    .key(self.pending_key(campaign))
                    .arg(limit)
                    .arg(lease.as_millis() as u64)
                    .arg(token)
                    .arg(self.slot_prefix(campaign)),
            )
            .await?;
        Ok(flat
            .chunks_exact(6)
            .filter_map(|f| {
                Some(Overdue {
                    customer: CustomerId::parse(&f[0])?,
                    status: f[1].clone(),
                    attempt: f[2].parse().unwrap_or(0),
                    channel: f[3].parse().ok(),
                    tried: f[4].split(',').filter_map(|c| c.parse().ok()).collect(),
                    trace: Some(f[5].clone()).filter(|t| !t.is_empty()),
                })
            })
            .collect())
    }

    /// Moves a claimed overdue entry to its next channel (`queued`, one attempt later).
    /// `due_ms` of 0 means publish now, watched for `watch`; otherwise wait until `due_ms`.
    #[allow(clippy::too_many_arguments)]
    pub async fn advance(
        &self,
        campaign: &CampaignId,
        o: &Overdue,
        token: &str,
        next: Channel,
        due_ms: u64,
        watch: Duration,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(
                offer_scripts()
                    .advance
                    .key(self.slot_key(campaign, &o.customer))
                    .key(self.campaign_key(campaign))
                    .key(self.pending_key(campaign))
                    .arg(token)
                    .arg(o.attempt)
                    .arg(next.as_str())
                    .arg(o.customer.as_str())
                    .arg(due_ms)
                    .arg(watch.as_millis() as u64),
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends a claimed overdue entry as failed (no channel left).
    pub async fn fail_overdue(
        &self,
        campaign: &CampaignId,
        o: &Overdue,
        token: &str,
        code: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(
                offer_scripts()
                    .fail
                    .key(self.slot_key(campaign, &o.customer))
                    .key(self.campaign_key(campaign))
                    .key(self.pending_key(campaign))
                    .arg(token)
                    .arg(o.attempt)
                    .arg(o.customer.as_str())
                    .arg(code)
                    .arg(reason),
            )
            .await?;
        Ok(n == 1)
    }

    /// One slot's fields, for the API and tests.
    pub async fn slot(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let (mut c, generation) = self.connection();
        self.bounded(generation, c.hgetall(self.slot_key(campaign, customer)))
            .await
    }

    pub async fn active_campaigns(&self) -> Result<Vec<CampaignId>, StoreError> {
        let (mut c, generation) = self.connection();
        let ids: Vec<String> = self
            .bounded(generation, c.smembers(self.active_key()))
            .await?;
        Ok(ids.iter().filter_map(|s| CampaignId::parse(s)).collect())
    }

    /// Drops a campaign from the retry scan once every recipient has an outcome and nothing
    /// waits in its pending set.
    pub async fn retire_if_finished(&self, id: &CampaignId) -> Result<bool, StoreError> {
        let counts = self.campaign_counts(id).await?;
        let outcomes = counts.get("delivered").unwrap_or(&0) + counts.get("failed").unwrap_or(&0);
        let (mut c, generation) = self.connection();
        let pending: u64 = self
            .bounded(generation, c.zcard(self.pending_key(id)))
            .await?;
        let recipients = counts.get("recipients").copied();
        let finished = recipients.is_some_and(|r| outcomes >= r) && pending == 0;
        // A campaign whose record expired is retired too.
        if finished || recipients.is_none() {
            let _: i64 = self
                .bounded(generation, c.srem(self.active_key(), id.as_str()))
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Dispatchers announce an open provider circuit; rules then try that channel last.
    pub async fn set_unhealthy(
        &self,
        channel: Channel,
        for_how_long: Duration,
    ) -> Result<(), StoreError> {
        let (mut c, generation) = self.connection();
        let _: () = self
            .bounded(
                generation,
                c.pset_ex(
                    self.health_key(channel),
                    "open",
                    for_how_long.as_millis() as u64,
                ),
            )
            .await?;
        Ok(())
    }

    pub async fn unhealthy_channels(&self) -> Result<Vec<Channel>, StoreError> {
        let mut pipe = redis::pipe();
        for ch in Channel::ALL {
            pipe.exists(self.health_key(ch));
        }
        let open: Vec<bool> = self.query_pipe(&pipe).await?;
        Ok(Channel::ALL
            .into_iter()
            .zip(open)
            .filter_map(|(ch, o)| o.then_some(ch))
            .collect())
    }
}
