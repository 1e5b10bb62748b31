//! Each campaign's pending sets (`{ns}:pending:{CAMPAIGN}`, one per shard, member =
//! customer, score = deadline): what waits for a receipt, for a fallback or for quiet hours to end. Receipts
//! take entries out; `herald-retry` claims the overdue ones and advances or fails their
//! slots, each change one script that checks the claim token it was given.

use std::time::Duration;

use super::{Lua, Redis, SlotStore, StoreError};
use crate::model::{CampaignId, Channel, CustomerId, ReceiptStatus};

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
    /// The receipt the slot already reflects (same channel, same message, same outcome),
    /// posted again: a provider's webhook retry, or ingest's answer to a post it applied in
    /// part. Changes nothing and is not counted.
    Repeated,
    /// Its provider id is not the one the provider answered the send with: refused, counted.
    Mismatched,
    Unknown,
}

/// How long a delivery published but never claimed waits before it is published again: the
/// first wait, doubled at each republish up to the longest.
#[derive(Debug, Clone, Copy)]
pub struct RepublishWait {
    pub first: Duration,
    pub longest: Duration,
}

/// One receipt, for [`SlotStore::apply_receipts`].
#[derive(Debug, Clone)]
pub struct ReceiptUpdate {
    pub campaign: CampaignId,
    pub customer: CustomerId,
    pub channel: Channel,
    pub status: ReceiptStatus,
    pub reason: String,
    /// The provider's id of the message, which must be the one recorded at send time.
    pub provider_id: Option<String>,
}

impl super::slot_batch::SlotOp for ReceiptUpdate {
    fn slot(&self) -> (&CampaignId, &CustomerId) {
        (&self.campaign, &self.customer)
    }

    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>, _: &Redis) {
        let status = match self.status {
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Failed => "failed",
        };
        invocation
            .arg(self.channel.as_str())
            .arg(status)
            .arg(self.customer.as_str())
            .arg(&self.reason)
            .arg(self.provider_id.as_deref().unwrap_or(""));
    }
}

impl ReceiptOutcome {
    /// Its name: the receipt script's answer (read back by [`receipt_outcome`]), and what
    /// ingest tallies and answers the provider with.
    pub fn name(self) -> &'static str {
        match self {
            ReceiptOutcome::Delivered(_) => "delivered",
            ReceiptOutcome::Undelivered => "undelivered",
            ReceiptOutcome::Early => "early",
            ReceiptOutcome::Late => "late",
            ReceiptOutcome::Repeated => "repeated",
            ReceiptOutcome::Mismatched => "mismatched",
            ReceiptOutcome::Unknown => "unknown",
        }
    }
}

/// What the receipt script answered for one receipt.
fn receipt_outcome(reply: &str) -> ReceiptOutcome {
    match reply.split_once(' ').unwrap_or((reply, "")) {
        ("delivered", latency) => ReceiptOutcome::Delivered(latency.parse().ok()),
        (_, "") => match reply {
            "undelivered" => ReceiptOutcome::Undelivered,
            "early" => ReceiptOutcome::Early,
            "late" => ReceiptOutcome::Late,
            "repeated" => ReceiptOutcome::Repeated,
            "mismatched" => ReceiptOutcome::Mismatched,
            _ => ReceiptOutcome::Unknown,
        },
        _ => ReceiptOutcome::Unknown,
    }
}

/// An overdue entry of a campaign's pending set, claimed by one `herald-retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub customer: CustomerId,
    /// `queued`: republish the same attempt (its publish may have been lost, or it waited
    /// out quiet hours). `cancelled`, `expired`: ended by the claim, the campaign was
    /// cancelled or expired.
    /// Anything else: fall back to the next channel.
    pub status: String,
    pub attempt: u32,
    pub channel: Option<Channel>,
    pub tried: Vec<Channel>,
    /// The W3C traceparent of the first attempt, so the fallback joins its trace.
    pub trace: Option<String>,
}

// The receipts of one call that fall in one shard (`lua_per_slot!`). Per slot: channel,
// status, customer, reason, provider id.
static RECEIPT: Lua = Lua::new(lua_per_slot!(
    5,
    r#"
  local f = redis.call('HMGET', slot, 'st', 'ch', 'sa', 'pid')
  if not f[1] then return 'unknown' end
  if f[2] == ARGV[o + 1] and (f[1] == 'claimed' or f[1] == 'sending') then
    redis.call('HSET', slot, 'er', ARGV[o + 2])
    return 'early'
  end
  if f[2] == ARGV[o + 1] and (f[1] == 'sent' or f[1] == 'retrying') then
    -- A receipt that would settle the send names the message the provider accepted: another
    -- id (or none) is not this delivery's receipt.
    if f[4] and f[4] ~= '' and f[4] ~= ARGV[o + 5] then
      count('mismatched_receipts')
      return 'mismatched'
    end
    if ARGV[o + 2] == 'delivered' then
      redis.call('HSET', slot, 'st', 'delivered', 'rt', '')
      redis.call('ZREM', pending, ARGV[o + 3])
      count('delivered:' .. ARGV[o + 1])
      if f[3] then return string.format('delivered %d', now - tonumber(f[3])) end
      return 'delivered'
    end
    redis.call('HSET', slot, 'st', 'undelivered', 'rt', '', 'why', ARGV[o + 4])
    redis.call('ZADD', pending, now_s, ARGV[o + 3])
    count('undelivered:' .. ARGV[o + 1])
    return 'undelivered'
  end
  if f[2] == ARGV[o + 1] and (f[4] or '') == ARGV[o + 5] and
     ((f[1] == 'delivered' and ARGV[o + 2] == 'delivered') or (f[1] == 'undelivered' and ARGV[o + 2] == 'failed')) then
    return 'repeated'
  end
  count('late_receipts')
  redis.call('HSET', slot, 'late:' .. ARGV[o + 1], ARGV[o + 2])
  return 'late'
"#
));

// KEYS[1] pending, KEYS[2] the shard's counts. ARGV: batch, lease ms, token, slot key prefix,
// first republish wait ms, longest republish wait ms.
// A paused shard (`halt`) is left alone; a cancelled one, or one past its expiry (`exp`),
// ends what came due so (answered with that status, for its lifecycle event) instead of
// moving it on.
// Overdue entries get a new score (now + lease) so no other instance sees them meanwhile. A
// `queued` entry (published, never claimed) is republished, and waits twice as long each time
// (`rq` counts them), up to the longest wait: under a consumer lag of minutes the same
// deliveries are not queued again and again.
static CLAIM_OVERDUE: Lua = Lua::new(lua_with_now!(
    r#"
local h = redis.call('HMGET', KEYS[2], 'halt', 'exp')
local halt = h[1]
if halt ~= 'cancelled' and h[2] and now >= tonumber(h[2]) then halt = 'expired' end
if halt == 'paused' then return {} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, m in ipairs(due) do
  local slot = ARGV[4] .. m
  local f = redis.call('HMGET', slot, 'st', 'a', 'ch', 'tr', 'tp')
  local st = f[1]
  if not st or st == 'delivered' or st == 'failed' or st == 'uncertain' or st == 'cancelled' or st == 'expired' then
    redis.call('ZREM', KEYS[1], m)
  elseif (halt == 'cancelled' or halt == 'expired') and st ~= 'claimed' and st ~= 'sending' then
    redis.call('HSET', slot, 'st', halt, 'own', '', 'rt', '')
    redis.call('ZREM', KEYS[1], m)
    redis.call('HINCRBY', KEYS[2], halt, 1)
    for _, v in ipairs({m, halt, f[2] or '0', f[3] or '', f[4] or '', f[5] or ''}) do table.insert(out, v) end
  else
    local wait = tonumber(ARGV[2])
    if st == 'queued' then
      local n = redis.call('HINCRBY', slot, 'rq', 1)
      wait = math.min(tonumber(ARGV[5]) * 2 ^ math.min(n - 1, 30), tonumber(ARGV[6]))
    end
    redis.call('ZADD', KEYS[1], now + wait, m)
    if st ~= 'claimed' and st ~= 'sending' then
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
));

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending.
// ARGV: token, attempt, next channel, customer, due at ms (0: now + watch ms), watch ms.
// The entry stays pending as a watchdog: if the republished message is lost, it comes due again.
static ADVANCE: Lua = Lua::new(lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'rt', 'a', 'tr')
if f[1] ~= 'retrying' or f[2] ~= ARGV[1] or tonumber(f[3]) ~= tonumber(ARGV[2]) then return 0 end
local due = tonumber(ARGV[5])
if due == 0 then due = now + tonumber(ARGV[6]) end
redis.call('HSET', KEYS[1], 'st', 'queued', 'a', tonumber(ARGV[2]) + 1, 'ch', ARGV[3], 'tr', f[4] .. ',' .. ARGV[3], 'rt', '', 'er', '', 'own', '', 'lu', 0, 'rq', 0)
redis.call('ZADD', KEYS[3], due, ARGV[4])
redis.call('HINCRBY', KEYS[2], 'fallbacks', 1)
redis.call('HINCRBY', KEYS[2], 'fallbacks:' .. ARGV[3], 1)
return 1
"#
));

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: token, attempt, customer, reason code, reason.
static FAIL: Lua = Lua::new(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'rt', 'a')
if f[1] ~= 'retrying' or f[2] ~= ARGV[1] or tonumber(f[3]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'st', 'failed', 'rt', '', 'why', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'failed', 1)
redis.call('HINCRBY', KEYS[2], 'failed:' .. ARGV[4], 1)
return 1
"#,
);

impl SlotStore {
    /// Applies receipts: one script call per campaign shard among them, under way together.
    /// One answer per receipt, in order: a failed call fails only its shard's receipts (the
    /// others are applied, and come back `Repeated` if posted again).
    pub async fn apply_receipts(
        &self,
        receipts: &[ReceiptUpdate],
    ) -> Vec<Result<ReceiptOutcome, StoreError>> {
        let replies = self.on_slots::<_, String>(&RECEIPT, receipts).await;
        replies
            .into_iter()
            .map(|reply| reply.map(|r| receipt_outcome(&r)))
            .collect()
    }

    /// Claims up to `limit` overdue pending entries of a campaign for this `token`; no other
    /// `herald-retry` sees them for `lease`.
    /// A `queued` entry (published, never claimed) comes back after `republish.first`, then
    /// twice as long each time, up to `republish.longest`.
    pub async fn claim_overdue(
        &self,
        campaign: &CampaignId,
        token: &str,
        limit: usize,
        lease: Duration,
        republish: RepublishWait,
    ) -> Result<Vec<Overdue>, StoreError> {
        let mut flat: Vec<String> = Vec::new();
        for shard in self.shards(campaign).await? {
            let left = limit.saturating_sub(flat.len() / 6);
            if left == 0 {
                break;
            }
            let claimed: Vec<String> = self
                .eval(
                    CLAIM_OVERDUE
                        .key(self.keys.pending_key_in(&shard))
                        .key(self.keys.counts_key(&shard))
                        .arg(left)
                        .arg(lease.as_millis() as u64)
                        .arg(token)
                        .arg(self.keys.slot_prefix_in(&shard))
                        .arg(republish.first.as_millis() as u64)
                        .arg(republish.longest.as_millis() as u64),
                )
                .await?;
            flat.extend(claimed);
        }
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
        self.eval_flag(
            self.on_slot(&ADVANCE, campaign, &o.customer)
                .await?
                .arg(token)
                .arg(o.attempt)
                .arg(next.as_str())
                .arg(o.customer.as_str())
                .arg(due_ms)
                .arg(watch.as_millis() as u64),
        )
        .await
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
        self.eval_flag(
            self.on_slot(&FAIL, campaign, &o.customer)
                .await?
                .arg(token)
                .arg(o.attempt)
                .arg(o.customer.as_str())
                .arg(code)
                .arg(reason),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's answers and ingest's tally use one set of names.
    #[test]
    fn every_outcome_is_read_back_from_its_name() {
        for outcome in [
            ReceiptOutcome::Delivered(None),
            ReceiptOutcome::Undelivered,
            ReceiptOutcome::Early,
            ReceiptOutcome::Late,
            ReceiptOutcome::Repeated,
            ReceiptOutcome::Mismatched,
            ReceiptOutcome::Unknown,
        ] {
            assert_eq!(receipt_outcome(outcome.name()), outcome);
        }
        assert_eq!(
            receipt_outcome("delivered 42"),
            ReceiptOutcome::Delivered(Some(42))
        );
    }
}
