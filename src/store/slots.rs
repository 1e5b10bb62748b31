//! The once-slot of every (campaign, customer) `{ns}:once:{CAMPAIGN}:CUSTOMER`, the one record that decides whether that
//! customer is contacted and on which channel. Each change of a slot is one Lua script that
//! also moves the campaign's counters and the campaign's pending set, so the counts add up
//! whatever crashes in between.
//!
//! Slot statuses: `queued` (published, not yet claimed) → `claimed` (a dispatcher holds the
//! lease) → `sending` (the provider call may go out from here on) → `sent` (the provider
//! accepted; waiting for a receipt in the pending set) → `delivered`. A slot found `sending`
//! by the next owner is uncertain: sent again, or ended `uncertain`, by the channel's policy. Silence past the deadline, a failed receipt or a provider rejection lead
//! through `undelivered`/`retrying` to the next channel (`queued` again, one attempt later)
//! or to `failed`. `delivered`, `failed` and `uncertain` are final.
//!
//! Every key of one campaign carries the campaign id as its hash tag (`{CAMPAIGN}`, or
//! `{CAMPAIGN:s}` for shard `s` of a sharded campaign, see `shards.rs`), so each script
//! touches a single Redis Cluster slot. That is why the pending set is one per campaign shard
//! (`{ns}:pending:{CAMPAIGN}`) rather than one `herald:pending` for all.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::slot_batch::{only_answer, SlotOp};
use super::{Lua, Redis, SlotStore, StoreError};
use crate::model::{CampaignId, Channel, CustomerId, Delivery, Halt, UncertainSend};

/// How a dispatcher's claim of a once-slot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceClaim {
    /// This dispatcher holds the lease and must call the provider, then `mark_sent`.
    Claimed,
    /// Claimed, and the previous owner may have sent already: the channel's policy is
    /// `resend`, so it goes again with the same idempotency key (counted `resent`).
    Resend,
    /// The previous owner may have sent and the policy is `skip`: the slot is now
    /// `uncertain` (counted) and nobody sends it again.
    Uncertain,
    /// The customer was already handled for this attempt (or moved on): counted `deduplicated`.
    Duplicate(String),
    /// Another live lease holds it; try again after `retry_in`.
    Held { retry_in: Duration },
    /// An operator paused the campaign (the delivery is parked until `resume`) or cancelled
    /// it, or it expired (the delivery ended so, counted).
    Halted(Halt),
}

/// What a renewal before a provider call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Another owner holds the slot.
    Lost,
    /// The claim waited while an operator paused (the delivery is parked) or cancelled the
    /// campaign, or it expired (the delivery ended so).
    Halted(Halt),
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

/// One delivery's claim, as [`SlotStore::claim_slots`] takes it: owned, so that claims made
/// apart can be sent together.
#[derive(Debug, Clone)]
pub struct SlotClaim {
    pub campaign: CampaignId,
    pub customer: CustomerId,
    pub attempt: u32,
    pub channel: Channel,
    pub owner: String,
    pub lease: Duration,
    pub traceparent: Option<String>,
    pub on_uncertain: UncertainSend,
    /// The provider call starts right away: the claim marks the slot `sending` itself.
    pub send_now: bool,
}

impl SlotClaim {
    pub fn of(
        d: &Delivery,
        owner: &str,
        lease: Duration,
        traceparent: Option<&str>,
        send_now: bool,
    ) -> Self {
        SlotClaim {
            campaign: d.campaign.clone(),
            customer: d.customer.clone(),
            attempt: d.attempt,
            channel: d.message.channel,
            owner: owner.to_string(),
            lease,
            traceparent: traceparent.map(str::to_string),
            on_uncertain: d.on_uncertain,
            send_now,
        }
    }
}

impl SlotOp for SlotClaim {
    fn slot(&self) -> (&CampaignId, &CustomerId) {
        (&self.campaign, &self.customer)
    }

    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>, store: &Redis) {
        invocation
            .arg(self.attempt)
            .arg(self.channel.as_str())
            .arg(&self.owner)
            .arg(self.lease.as_millis() as u64)
            .arg(store.retention.working.as_secs())
            .arg(self.traceparent.as_deref().unwrap_or(""))
            .arg(self.on_uncertain.as_str())
            .arg(self.customer.as_str())
            .arg(if self.send_now { "1" } else { "0" });
    }
}

/// A provider's acceptance to record on a slot, as [`SlotStore::mark_sent_many`] takes it.
#[derive(Debug, Clone)]
pub struct SlotMark {
    pub campaign: CampaignId,
    pub customer: CustomerId,
    pub channel: Channel,
    pub owner: String,
    pub timeout_ms: u64,
    pub provider_id: String,
    pub provider: String,
    /// The acceptance is the confirmation (a provider without receipts): delivered at once.
    pub confirms: bool,
}

impl SlotMark {
    pub fn of(
        d: &Delivery,
        owner: &str,
        provider_id: &str,
        provider: &str,
        confirms: bool,
    ) -> Self {
        SlotMark {
            campaign: d.campaign.clone(),
            customer: d.customer.clone(),
            channel: d.message.channel,
            owner: owner.to_string(),
            timeout_ms: d.timeout_ms,
            provider_id: provider_id.to_string(),
            provider: provider.to_string(),
            confirms,
        }
    }
}

impl SlotOp for SlotMark {
    fn slot(&self) -> (&CampaignId, &CustomerId) {
        (&self.campaign, &self.customer)
    }

    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>, _: &Redis) {
        invocation
            .arg(&self.owner)
            .arg(self.channel.as_str())
            .arg(self.timeout_ms)
            .arg(self.customer.as_str())
            .arg(&self.provider_id)
            .arg(&self.provider)
            .arg(if self.confirms { "1" } else { "0" });
    }
}

// The slots of one shard that a dispatcher claims at once (`lua_per_slot!`). Per slot:
// attempt, channel, owner, lease ms, ttl s, traceparent, uncertain policy, customer, send
// now ('1': the provider call starts right away, so the claim marks the slot `sending`
// itself and the renewal before the first call is not needed).
// The first claim's trace is kept (`tp`) so that a fallback continues it. A slot left
// `sending` by an owner whose lease ran out (or handed back with `ms`, maybe sent) is
// uncertain: per the policy it is claimed to be sent again (`rs` counts the resends) or
// ends `uncertain`, never sent again. A campaign an operator paused or cancelled (`halt`)
// parks a delivery not yet claimed, or ends it `cancelled`.
static CLAIM: Lua = Lua::new(lua_per_slot!(
    9,
    r#"
  local claimed = 'claimed'
  if ARGV[o + 9] == '1' then claimed = 'sending' end
  local f = redis.call('HMGET', slot, 'st', 'a', 'ch', 'own', 'lu', 'ms')
  local fresh = not f[1] and ARGV[o + 1] == '0'
  if halt() ~= '' and (fresh or (f[1] == 'queued' and tonumber(f[2]) == tonumber(ARGV[o + 1]) and f[3] == ARGV[o + 2])) then
    local ending = halt()
    if ending == 'cancelled' or ending == 'expired' then
      if fresh then
        redis.call('HSET', slot, 'st', ending, 'a', '0', 'ch', ARGV[o + 2], 'tr', ARGV[o + 2])
        redis.call('EXPIRE', slot, ARGV[o + 5])
      else
        redis.call('HSET', slot, 'st', ending, 'own', '', 'lu', 0)
        redis.call('ZREM', pending, ARGV[o + 8])
      end
      count(ending)
      return {'halted', ending}
    end
    -- Paused: parked `queued` and due at once. herald-retry leaves a paused shard's entries
    -- alone, and publishes them again after `resume`.
    if fresh then
      redis.call('HSET', slot, 'st', 'queued', 'a', '0', 'ch', ARGV[o + 2], 'tr', ARGV[o + 2])
      redis.call('EXPIRE', slot, ARGV[o + 5])
    end
    redis.call('ZADD', pending, now_s, ARGV[o + 8])
    return {'halted', 'paused'}
  end
  if not f[1] then
    if ARGV[o + 1] ~= '0' then
      count('deduplicated')
      return {'dup', 'expired'}
    end
    -- One HSET for the whole new slot: this is the path of nearly every message.
    local fields = {'st', claimed, 'a', '0', 'ch', ARGV[o + 2], 'tr', ARGV[o + 2], 'own', ARGV[o + 3], 'lu', after(ARGV[o + 4])}
    if claimed == 'sending' then table.insert(fields, 'sg') table.insert(fields, now_s) end
    if ARGV[o + 6] ~= '' then table.insert(fields, 'tp') table.insert(fields, ARGV[o + 6]) end
    redis.call('HSET', slot, unpack(fields))
    redis.call('EXPIRE', slot, ARGV[o + 5])
    return {'claimed'}
  end
  local st = f[1]
  if tonumber(f[2]) ~= tonumber(ARGV[o + 1]) or f[3] ~= ARGV[o + 2] or (st ~= 'queued' and st ~= 'claimed' and st ~= 'sending') then
    count('deduplicated')
    return {'dup', st}
  end
  if (st == 'claimed' or st == 'sending') and f[4] ~= ARGV[o + 3] and tonumber(f[5]) > now then
    return {'held', tostring(tonumber(f[5]) - now)}
  end
  if (st == 'claimed' or st == 'sending') and f[4] == ARGV[o + 3] then
    -- This handling's own claim, made by a call whose answer never came back (a time-out,
    -- or a batch that failed after it): still ours, and nothing has been sent yet. Marked
    -- `sending` if this call says the provider call starts at once (no renewal before it).
    if claimed == 'sending' and st == 'claimed' then
      redis.call('HSET', slot, 'st', 'sending', 'sg', now_s, 'lu', after(ARGV[o + 4]))
    else
      redis.call('HSET', slot, 'lu', after(ARGV[o + 4]))
    end
    return {'claimed'}
  end
  local resend = ''
  if st == 'sending' or f[6] == '1' then
    -- A receipt that came while the dead owner held the slot proves the send went out.
    local er = redis.call('HGET', slot, 'er')
    if er == 'delivered' or er == 'failed' then
      count('sent:' .. ARGV[o + 2])
      if er == 'delivered' then
        redis.call('HSET', slot, 'st', 'delivered', 'own', '', 'ms', '')
        redis.call('ZREM', pending, ARGV[o + 8])
        count('delivered:' .. ARGV[o + 2])
      else
        redis.call('HSET', slot, 'st', 'undelivered', 'own', '', 'ms', '', 'why', 'failure receipt')
        redis.call('ZADD', pending, now_s, ARGV[o + 8])
        count('undelivered:' .. ARGV[o + 2])
      end
      return {'dup', er}
    end
    -- Who left it uncertain, and when it was taken over, for the audit (and the crash
    -- tests: a takeover is legitimate only from an owner that was dead by then).
    if f[4] and f[4] ~= '' then redis.call('HSET', slot, 'po', f[4], 'pt', now_s) end
    if ARGV[o + 7] == 'skip' then
      redis.call('HSET', slot, 'st', 'uncertain', 'own', '', 'lu', 0, 'ms', '')
      redis.call('ZREM', pending, ARGV[o + 8])
      count('uncertain')
      count('uncertain:' .. ARGV[o + 2])
      return {'uncertain'}
    end
    redis.call('HINCRBY', slot, 'rs', 1)
    count('resent')
    count('resent:' .. ARGV[o + 2])
    resend = 'resend'
  end
  redis.call('HSET', slot, 'st', claimed, 'own', ARGV[o + 3], 'lu', after(ARGV[o + 4]), 'ms', '')
  if claimed == 'sending' then redis.call('HSET', slot, 'sg', now_s) end
  if ARGV[o + 6] ~= '' then redis.call('HSETNX', slot, 'tp', ARGV[o + 6]) end
  return {'claimed', resend}
"#
));

// KEYS[1] slot, KEYS[2] its shard's counts, KEYS[3] pending. ARGV: owner, lease ms,
// customer. Runs right before every provider call: from here until `sent` is recorded, a
// crash leaves the send uncertain, and the slot says so. A claim that waited (for the
// provider's rate) while an operator paused or cancelled the campaign, or while it expired,
// is parked or ended here instead: nothing has been sent yet.
static RENEW: Lua = Lua::new(lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'own')
if (f[1] ~= 'claimed' and f[1] ~= 'sending') or f[2] ~= ARGV[1] then return 0 end
if f[1] == 'claimed' then
  local h = redis.call('HMGET', KEYS[2], 'halt', 'exp')
  local halt = h[1]
  if halt ~= 'cancelled' and h[2] and now >= tonumber(h[2]) then halt = 'expired' end
  if halt == 'cancelled' or halt == 'expired' then
    redis.call('HSET', KEYS[1], 'st', halt, 'own', '', 'lu', 0)
    redis.call('HINCRBY', KEYS[2], halt, 1)
    if halt == 'expired' then return 4 end
    return 2
  end
  if halt == 'paused' then
    redis.call('HSET', KEYS[1], 'st', 'queued', 'own', '', 'lu', 0)
    redis.call('ZADD', KEYS[3], now, ARGV[3])
    return 3
  end
  redis.call('HSET', KEYS[1], 'st', 'sending', 'sg', now)
end
redis.call('HSET', KEYS[1], 'lu', now + tonumber(ARGV[2]))
return 1
"#
));

// KEYS[1] slot. ARGV: owner, maybe sent (1: an attempt may have reached the provider).
// A handed-back claim is queued again for its redelivered message. An uncertain attempt
// handed back by its live owner records who (`po`) and when (`pr`): unlike a takeover (`pt`),
// its owner was not dead, and the next claim counts the send again as a resend.
static RELEASE: Lua = Lua::new(lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'own')
if (f[1] ~= 'claimed' and f[1] ~= 'sending') or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', 'queued', 'own', '', 'lu', 0)
if f[1] == 'sending' and ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'ms', '1', 'po', ARGV[1], 'pr', now)
end
return 1
"#
));

// The acceptances a dispatcher records at once, per shard (`lua_per_slot!`). Per slot:
// owner, channel, timeout ms, customer, provider's message id, provider's name (recorded on
// the slot, counted on the campaign), '1' when the acceptance is the confirmation (SMTP,
// FCM): delivered at once, in the same script, so no crash can fall between "sent" and
// "delivered" and send the customer on to a fallback.
static MARK_SENT: Lua = Lua::new(lua_per_slot!(
    7,
    r#"
  local f = redis.call('HMGET', slot, 'st', 'own', 'er', 'pid')
  if (f[1] == 'sent' or f[1] == 'delivered') and ARGV[o + 5] ~= '' and f[4] == ARGV[o + 5] then
    -- This acceptance, recorded already by a call whose answer never came back (the
    -- provider's id for the message is the one recorded): not a lost lease.
    return f[1]
  end
  if (f[1] ~= 'claimed' and f[1] ~= 'sending') or f[2] ~= ARGV[o + 1] then return 'lost' end
  count('sent:' .. ARGV[o + 2])
  count('provider:' .. ARGV[o + 6])
  if f[3] == 'delivered' or ARGV[o + 7] == '1' then
    redis.call('HSET', slot, 'st', 'delivered', 'own', '', 'pid', ARGV[o + 5], 'prov', ARGV[o + 6])
    redis.call('ZREM', pending, ARGV[o + 4])
    count('delivered:' .. ARGV[o + 2])
    return 'delivered'
  end
  if f[3] == 'failed' then
    redis.call('HSET', slot, 'st', 'undelivered', 'own', '', 'pid', ARGV[o + 5], 'prov', ARGV[o + 6], 'why', 'failure receipt')
    redis.call('ZADD', pending, now_s, ARGV[o + 4])
    count('undelivered:' .. ARGV[o + 2])
    return 'undelivered'
  end
  redis.call('HSET', slot, 'st', 'sent', 'own', '', 'pid', ARGV[o + 5], 'prov', ARGV[o + 6], 'sa', now_s)
  redis.call('ZADD', pending, after(ARGV[o + 3]), ARGV[o + 4])
  return 'sent'
"#
));

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: owner, channel, customer, reason.
static MARK_UNDELIVERED: Lua = Lua::new(lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'own')
if (f[1] ~= 'claimed' and f[1] ~= 'sending') or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', 'undelivered', 'own', '', 'why', ARGV[4])
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('HINCRBY', KEYS[2], 'undelivered:' .. ARGV[2], 1)
return 1
"#
));

impl SlotStore {
    /// `script` on one customer's slot with its shard's counts and pending set: the three
    /// keys every slot transition moves together (one hash tag, one cluster slot).
    pub(super) async fn on_slot<'a>(
        &self,
        script: &'a Lua,
        campaign: &CampaignId,
        customer: &CustomerId,
    ) -> Result<redis::ScriptInvocation<'a>, StoreError> {
        let shard = self.shard(campaign, customer).await?;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.slot_key_in(&shard, customer))
            .key(self.keys.counts_key(&shard))
            .key(self.keys.pending_key_in(&shard));
        Ok(invocation)
    }

    /// The once-slot of one (campaign, customer).
    pub async fn slot_key(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
    ) -> Result<String, StoreError> {
        let shard = self.shard(campaign, customer).await?;
        Ok(self.keys.slot_key_in(&shard, customer))
    }

    /// The gate before a customer is contacted: claims this delivery's attempt under a lease.
    pub async fn claim_once(
        &self,
        d: &Delivery,
        owner: &str,
        lease: Duration,
        traceparent: Option<&str>,
    ) -> Result<OnceClaim, StoreError> {
        self.claim_slot(d, owner, lease, traceparent, false).await
    }

    /// [`SlotStore::claim_once`], or with `send_now` for a caller whose provider call starts
    /// right away: the claim marks the slot `sending` itself, so no renewal is needed before
    /// the first call (one script less per notification). Dying between the two leaves the
    /// send uncertain, as dying inside the call does.
    pub async fn claim_slot(
        &self,
        d: &Delivery,
        owner: &str,
        lease: Duration,
        traceparent: Option<&str>,
        send_now: bool,
    ) -> Result<OnceClaim, StoreError> {
        let claim = SlotClaim::of(d, owner, lease, traceparent, send_now);
        only_answer(self.claim_slots(vec![claim]).await)
    }

    /// Claims many slots, one script call per campaign shard among them: what a dispatcher
    /// received at once costs a round trip and a script per shard instead of one each. One
    /// answer per claim, in order.
    pub async fn claim_slots(&self, claims: Vec<SlotClaim>) -> Vec<Result<OnceClaim, StoreError>> {
        let replies = self.on_slots::<_, Vec<String>>(&CLAIM, &claims).await;
        let mut answers = Vec::with_capacity(claims.len());
        for (claim, reply) in claims.iter().zip(replies) {
            answers.push(match reply {
                Ok(reply) => self.once_claim(claim, reply).await,
                Err(e) => Err(e),
            });
        }
        answers
    }

    /// What the claim script answered for one slot.
    async fn once_claim(
        &self,
        claim: &SlotClaim,
        reply: Vec<String>,
    ) -> Result<OnceClaim, StoreError> {
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("claimed"), Some(resend)) if resend == "resend" => Ok(OnceClaim::Resend),
            (Some("claimed"), _) => Ok(OnceClaim::Claimed),
            (Some("uncertain"), _) => Ok(OnceClaim::Uncertain),
            (Some("dup"), Some(st)) => Ok(OnceClaim::Duplicate(st.clone())),
            (Some("halted"), Some(halt)) if Halt::from_script(halt).is_some() => Ok(
                OnceClaim::Halted(Halt::from_script(halt).unwrap_or(Halt::Paused)),
            ),
            (Some("held"), Some(ms)) => Ok(OnceClaim::Held {
                retry_in: Duration::from_millis(ms.parse().unwrap_or(1000)),
            }),
            _ => Err(StoreError::Corrupt {
                key: self.slot_key(&claim.campaign, &claim.customer).await?,
                what: format!("claim reply {reply:?}"),
            }),
        }
    }

    /// Extends the lease; `false` means it was lost (or the campaign halted) and the
    /// provider must not be called.
    pub async fn renew_once(
        &self,
        d: &Delivery,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.renew_slot(d, owner, lease).await? == Renewal::Renewed)
    }

    /// [`SlotStore::renew_once`], saying why a renewal was refused.
    pub async fn renew_slot(
        &self,
        d: &Delivery,
        owner: &str,
        lease: Duration,
    ) -> Result<Renewal, StoreError> {
        let answer: i64 = self
            .eval(
                self.on_slot(&RENEW, &d.campaign, &d.customer)
                    .await?
                    .arg(owner)
                    .arg(lease.as_millis() as u64)
                    .arg(d.customer.as_str()),
            )
            .await?;
        Ok(match answer {
            1 => Renewal::Renewed,
            2 => Renewal::Halted(Halt::Cancelled),
            3 => Renewal::Halted(Halt::Paused),
            4 => Renewal::Halted(Halt::Expired),
            _ => Renewal::Lost,
        })
    }

    /// Hands a claim back on shutdown, so the redelivered message need not wait out the lease.
    /// Hands a claim back on shutdown; `maybe_sent` when an attempt may have reached the
    /// provider, so that the next owner treats the send as uncertain.
    pub async fn release_once(
        &self,
        d: &Delivery,
        owner: &str,
        maybe_sent: bool,
    ) -> Result<bool, StoreError> {
        self.eval_flag(
            RELEASE
                .key(self.slot_key(&d.campaign, &d.customer).await?)
                .arg(owner)
                .arg(if maybe_sent { "1" } else { "0" }),
        )
        .await
    }

    /// The provider named `provider` accepted, as message `provider_id`: wait for the receipt
    /// until now + the delivery's time-out, or, when the acceptance `confirms` it (a provider
    /// without receipts), mark it delivered at once.
    pub async fn mark_sent(
        &self,
        d: &Delivery,
        owner: &str,
        provider_id: &str,
        provider: &str,
        confirms: bool,
    ) -> Result<SentOutcome, StoreError> {
        let mark = SlotMark::of(d, owner, provider_id, provider, confirms);
        only_answer(self.mark_sent_many(vec![mark]).await)
    }

    /// [`SlotStore::mark_sent`] for many slots: one script call per campaign shard among them.
    pub async fn mark_sent_many(
        &self,
        marks: Vec<SlotMark>,
    ) -> Vec<Result<SentOutcome, StoreError>> {
        let replies = self.on_slots::<_, String>(&MARK_SENT, &marks).await;
        let outcome = |reply: String| match reply.as_str() {
            "sent" => SentOutcome::AwaitingReceipt,
            "delivered" => SentOutcome::Delivered,
            "undelivered" => SentOutcome::Undelivered,
            _ => SentOutcome::LostLease,
        };
        replies.into_iter().map(|r| r.map(outcome)).collect()
    }

    /// The provider refused for good: the next channel is due now.
    pub async fn mark_undelivered(
        &self,
        d: &Delivery,
        owner: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.eval_flag(
            self.on_slot(&MARK_UNDELIVERED, &d.campaign, &d.customer)
                .await?
                .arg(owner)
                .arg(d.message.channel.as_str())
                .arg(d.customer.as_str())
                .arg(reason),
        )
        .await
    }

    /// One slot's fields, for the API and tests.
    pub async fn slot(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let key = self.slot_key(campaign, customer).await?;
        let (mut c, generation) = self.connection();
        self.bounded(generation, c.hgetall(key)).await
    }
}
