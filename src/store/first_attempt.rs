//! What fan-out writes on a once-slot before any channel is tried: a customer no channel can
//! reach fails without a send (and is reopened when its dead letter is replayed), and a first
//! channel in quiet hours waits in the shard's pending set until `herald-retry` publishes it.

use super::{Lua, SlotStore, StoreError};
use crate::model::{CampaignId, Channel, CustomerId};

// KEYS[1] slot, KEYS[2] campaign. ARGV: reason code, reason, ttl s.
static FIRST_UNREACHABLE: Lua = Lua::new(
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'st', 'failed', 'a', 0, 'ch', '', 'tr', '', 'why', ARGV[2], 'fc', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[2], 'failed', 1)
redis.call('HINCRBY', KEYS[2], 'failed:' .. ARGV[1], 1)
return 1
"#,
);

// KEYS[1] slot, KEYS[2] campaign. Only a customer that failed before any channel was tried
// (unknown, or no channel) is reopened: anything sent stays as it is.
static REOPEN_UNREACHABLE: Lua = Lua::new(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'ch', 'fc')
if f[1] ~= 'failed' or f[2] ~= '' or not f[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'failed', -1)
redis.call('HINCRBY', KEYS[2], 'failed:' .. f[3], -1)
redis.call('HINCRBY', KEYS[2], 'replayed', 1)
return 1
"#,
);

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: channel, due at ms, customer, ttl s.
static FIRST_DEFERRED: Lua = Lua::new(
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'st', 'queued', 'a', 0, 'ch', ARGV[1], 'tr', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]), ARGV[3])
redis.call('HINCRBY', KEYS[2], 'deferred', 1)
return 1
"#,
);

// KEYS[1] slot, KEYS[2] campaign, KEYS[3] pending. ARGV: customer, why. A first delivery
// that waited (quiet hours, a cap's next window) and is capped when it comes due.
static FIRST_CAPPED: Lua = Lua::new(
    r#"
local f = redis.call('HMGET', KEYS[1], 'st', 'a')
if f[1] ~= 'queued' or f[2] ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'capped', 'own', '', 'lu', 0, 'why', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'capped', 1)
return 1
"#,
);

impl SlotStore {
    /// A waiting first delivery a frequency cap holds back when it comes due: ends
    /// `capped`; `false` if it is no longer a waiting first delivery.
    pub async fn cap_queued(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
        why: &str,
    ) -> Result<bool, StoreError> {
        self.eval_flag(
            self.on_slot(&FIRST_CAPPED, campaign, customer)
                .await?
                .arg(customer.as_str())
                .arg(why),
        )
        .await
    }

    /// A customer with no usable channel at fan-out: failed once, without any send.
    pub async fn fail_unreachable(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
        code: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.eval_flag(
            self.on_slot(&FIRST_UNREACHABLE, campaign, customer)
                .await?
                .arg(code)
                .arg(reason)
                .arg(self.retention.working.as_secs()),
        )
        .await
    }

    /// Reopens a customer that failed before any channel was tried (unknown customer, no
    /// channel), so that a replayed dead letter fans them out again; `false` when the slot
    /// is anything else (sent, delivered, or already reopened).
    pub async fn reopen_unreachable(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
    ) -> Result<bool, StoreError> {
        self.eval_flag(
            &self
                .on_slot(&REOPEN_UNREACHABLE, campaign, customer)
                .await?,
        )
        .await
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
        self.eval_flag(
            self.on_slot(&FIRST_DEFERRED, campaign, customer)
                .await?
                .arg(channel.as_str())
                .arg(at_ms)
                .arg(customer.as_str())
                .arg(self.retention.working.as_secs()),
        )
        .await
    }
}
