//! Campaigns as stored: the definition (written once per id), the audience list, the batch
//! bitmap fan-out marks, the counters the slot scripts move, and the set of campaigns still
//! running that `herald-retry` scans. Every key carries the campaign id as its hash tag.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::{CampaignStore, Lua, StoreError};
use crate::model::{Campaign, CampaignId, CustomerId};

/// Fan-out and batch bookkeeping split audiences into batches of this many customers.
pub const BATCH_SIZE: usize = 1000;

/// Whether a campaign was stored by this call.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignCreation {
    Created,
    /// A campaign with this id exists: the same request again, nothing new stored.
    Exists(Box<Campaign>),
    /// A campaign with this id but another definition or audience exists.
    Conflict,
    /// The same campaign is being stored by another call right now: try again shortly.
    InProgress,
}

/// How long one call may take to store a campaign's audience before another call may
/// take over (a crash left it half-stored): well above the minute 5,000,000 ids take.
const CREATION_LEASE: Duration = Duration::from_secs(300);

// KEYS[1] campaign. ARGV: definition, fingerprint, owner, lease ms, shards (kept from a
// half-stored campaign: its shards may hold state already).
// Decides, atomically, whether this call stores the campaign: a new id, or one a crashed
// creator left half-stored (its lease over). Another fingerprint is a conflict.
static BEGIN_CREATE: Lua = Lua::new(lua_with_now!(
    r#"
local f = redis.call('HMGET', KEYS[1], 'def', 'fp', 'ready', 'cr', 'cru')
if f[1] and f[2] and f[2] ~= ARGV[2] then return 'conflict' end
if f[3] then return 'exists' end
if f[1] and f[4] and f[4] ~= ARGV[3] and tonumber(f[5] or '0') > now then return 'busy' end
if not f[1] then redis.call('HSET', KEYS[1], 'def', ARGV[1]) end
redis.call('HSETNX', KEYS[1], 'shards', ARGV[5])
redis.call('HSET', KEYS[1], 'fp', ARGV[2], 'cr', ARGV[3], 'cru', now + tonumber(ARGV[4]))
return 'create'
"#
));

// KEYS[1] campaign, KEYS[2] audience. ARGV: owner, recipients, batches, ttl s, state ('' for
// running). Only the creator holding the lease. The active set is written before, by itself: it has no hash tag
// of the campaign, and a script's keys must share one slot on a cluster.
static FINISH_CREATE: Lua = Lua::new(
    r#"
if redis.call('HGET', KEYS[1], 'cr') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'recipients', ARGV[2], 'batches', ARGV[3], 'ready', '1')
redis.call('HDEL', KEYS[1], 'cr', 'cru')
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return 1
"#,
);

/// A stable digest of what a campaign is (its definition but the creation time, and its
/// audience in order): a retry carries the same one, a different campaign another.
fn fingerprint(campaign: &Campaign, audience: &[CustomerId]) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let definition = Campaign {
        created_ms: 0,
        recipients: 0,
        ..campaign.clone()
    };
    eat(serde_json::to_string(&definition)
        .unwrap_or_default()
        .as_bytes());
    for id in audience {
        eat(b"\n");
        eat(id.as_str().as_bytes());
    }
    format!("{hash:016x}:{}", audience.len())
}

// KEYS[1] campaign, KEYS[2] batch bitmap. ARGV: batch, recipients in it.
static BATCH_DONE: Lua = Lua::new(
    r#"
if redis.call('SETBIT', KEYS[2], tonumber(ARGV[1]), 1) == 1 then return 0 end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'fanned_out', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'batches_done', 1)
return 1
"#,
);

/// How long a campaign's keys are kept. The report (the campaign's record and counters) for
/// `report`; the working sets (audience, batch marks, pending set, once-slots) for `working`,
/// which must outlast the broker's retention: a message redelivered later must still find its
/// slot, or the customer would be contacted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub report: Duration,
    pub working: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            report: Duration::from_secs(30 * 24 * 3600),
            // Kafka keeps messages 7 days by default.
            working: Duration::from_secs(8 * 24 * 3600),
        }
    }
}

/// Fields of a campaign's record and shard hashes that are numbers but not counts.
const NOT_COUNTS: &[&str] = &["ready", "shards", "cru", "halt", "state", "exp"];

/// Totals the scripts do not keep: each is the sum of its per-channel counts (`sent:email`,
/// `sent:sms`...), added up when read rather than incremented beside them on every send and
/// receipt (two HINCRBY per recipient less in the hottest scripts). A field of that name left
/// by an older version is ignored: the per-channel counts were always kept too.
const SUMMED_TOTALS: &[&str] = &["sent", "delivered"];

/// The counts with their [`SUMMED_TOTALS`] filled in from the per-channel ones.
fn with_totals(mut counts: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    for total in SUMMED_TOTALS {
        counts.remove(*total);
        let prefix = format!("{total}:");
        let sum: u64 = counts
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum();
        if sum > 0 {
            counts.insert(total.to_string(), sum);
        }
    }
    counts
}

impl CampaignStore {
    /// Stores a campaign and its audience, unless one with this id exists already.
    pub async fn create_campaign(
        &self,
        campaign: &Campaign,
        audience: &[CustomerId],
    ) -> Result<CampaignCreation, StoreError> {
        let key = self.keys.campaign_key(&campaign.id);
        let def = serde_json::to_string(campaign).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            what: e.to_string(),
        })?;
        let owner = uuid::Uuid::new_v4().to_string();
        let decision: String = self
            .eval(
                BEGIN_CREATE
                    .key(&key)
                    .arg(&def)
                    .arg(fingerprint(campaign, audience))
                    .arg(&owner)
                    .arg(CREATION_LEASE.as_millis() as u64)
                    .arg(self.campaign_shards),
            )
            .await?;
        match decision.as_str() {
            "create" => {}
            "conflict" => return Ok(CampaignCreation::Conflict),
            "busy" => return Ok(CampaignCreation::InProgress),
            _ => {
                return match self.campaign(&campaign.id).await? {
                    Some(existing) => Ok(CampaignCreation::Exists(Box::new(existing))),
                    None => Err(StoreError::Corrupt {
                        key,
                        what: "campaign vanished".into(),
                    }),
                };
            }
        }
        // New, or half-stored by a creator that crashed: the audience from the start.
        let audience_key = self.keys.audience_key(&campaign.id);
        self.query_pipe::<()>(redis::pipe().del(&audience_key).ignore())
            .await?;
        for chunk in audience.chunks(10_000) {
            let ids: Vec<&str> = chunk.iter().map(CustomerId::as_str).collect();
            self.query_pipe::<()>(redis::pipe().rpush(&audience_key, ids).ignore())
                .await?;
        }
        self.prepare_shard_counts(&campaign.id).await?;
        if let Some(exp) = campaign.expires_at_ms {
            self.set_expiry(&campaign.id, exp).await?;
        }
        // Listed first: a campaign listed before it is ready is left alone by the retry scan
        // (`retire_if_finished`), while one made ready but never listed would never fall back.
        // Scheduled before it is ready, for the same reason: a start found not ready waits.
        let scheduled = campaign
            .send_at_ms
            .filter(|at| *at > crate::model::now_ms());
        let mut listed = redis::pipe();
        listed
            .sadd(self.keys.active_key(), campaign.id.as_str())
            .ignore();
        if let Some(at) = scheduled {
            self.schedule_in(&mut listed, &campaign.id, at);
        }
        self.query_pipe::<()>(&listed).await?;
        let state = if scheduled.is_some() {
            crate::model::CampaignState::Scheduled.as_str()
        } else {
            ""
        };
        let finished = self
            .eval_flag(
                FINISH_CREATE
                    .key(&key)
                    .key(&audience_key)
                    .arg(&owner)
                    .arg(audience.len())
                    .arg(audience.len().div_ceil(BATCH_SIZE))
                    .arg(self.retention.report.as_secs())
                    .arg(state),
            )
            .await?;
        if !finished {
            // Taken over after our lease ran out: the other call stores it.
            return Ok(CampaignCreation::InProgress);
        }
        Ok(CampaignCreation::Created)
    }

    /// Creates a sharded campaign's count hashes with the report's lifetime, before any
    /// script counts into them (a count would create one that never expires).
    async fn prepare_shard_counts(&self, id: &CampaignId) -> Result<(), StoreError> {
        let ttl = self.retention.report.as_secs() as i64;
        let mut pipe = redis::pipe();
        for key in self.shard_count_keys(id).await? {
            pipe.hset(&key, "of", id.as_str())
                .ignore()
                .expire(&key, ttl)
                .ignore();
        }
        self.query_pipe::<()>(&pipe).await
    }

    pub async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>, StoreError> {
        let key = self.keys.campaign_key(id);
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
        let mut pipe = redis::pipe();
        pipe.hgetall(self.keys.campaign_key(id));
        for key in self.shard_count_keys(id).await? {
            pipe.hgetall(key);
        }
        let hashes: Vec<BTreeMap<String, String>> = self.query_pipe(&pipe).await?;
        let mut counts = BTreeMap::new();
        for (k, v) in hashes.into_iter().flatten() {
            if NOT_COUNTS.contains(&k.as_str()) {
                continue;
            }
            if let Ok(n) = v.parse::<u64>() {
                *counts.entry(k).or_insert(0) += n;
            }
        }
        Ok(with_totals(counts))
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
                    self.keys.audience_key(id),
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
            .bounded(
                generation,
                c.getbit(self.keys.batches_key(id), batch as usize),
            )
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
        self.eval_flag(
            BATCH_DONE
                .key(self.keys.campaign_key(id))
                .key(self.keys.batches_key(id))
                .arg(batch)
                .arg(size)
                .arg(self.retention.report.as_secs()),
        )
        .await
    }

    pub async fn active_campaigns(&self) -> Result<Vec<CampaignId>, StoreError> {
        let (mut c, generation) = self.connection();
        let ids: Vec<String> = self
            .bounded(generation, c.smembers(self.keys.active_key()))
            .await?;
        Ok(ids.iter().filter_map(|s| CampaignId::parse(s)).collect())
    }

    /// Drops a campaign from the retry scan once every recipient has an outcome and nothing
    /// waits in its pending set.
    pub async fn retire_if_finished(&self, id: &CampaignId) -> Result<bool, StoreError> {
        let counts = self.campaign_counts(id).await?;
        let outcomes = crate::model::OUTCOMES
            .iter()
            .map(|k| counts.get(*k).copied().unwrap_or(0))
            .sum::<u64>();
        let shards = self.shards(id).await?;
        let mut sizes = redis::pipe();
        sizes.exists(self.keys.campaign_key(id));
        for shard in &shards {
            sizes.zcard(self.keys.pending_key_in(shard));
        }
        let sizes: Vec<u64> = self.query_pipe(&sizes).await?;
        let (exists, pending) = (sizes[0] == 1, sizes[1..].iter().sum::<u64>());
        let recipients = counts.get("recipients").copied();
        let finished = recipients.is_some_and(|r| outcomes >= r) && pending == 0;
        // A campaign whose record expired is retired too; one still being created
        // (a record without its recipients yet) is not.
        if finished || !exists {
            // Finished: the working sets go after the working retention, the report stays.
            let working = self.retention.working.as_secs() as i64;
            let mut pipe = redis::pipe();
            pipe.srem(self.keys.active_key(), id.as_str())
                .ignore()
                .expire(self.keys.audience_key(id), working)
                .ignore()
                .expire(self.keys.batches_key(id), working)
                .ignore();
            for shard in &shards {
                pipe.expire(self.keys.pending_key_in(shard), working)
                    .ignore();
            }
            self.query_pipe::<()>(&pipe).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_the_sums_of_the_per_channel_counts_and_a_stored_total_is_ignored() {
        let counts = BTreeMap::from([
            ("sent:email".to_string(), 7),
            ("sent:sms".to_string(), 2),
            ("delivered:email".to_string(), 5),
            ("undelivered:sms".to_string(), 1),
            // Left by a version that still incremented it beside the per-channel counts.
            ("sent".to_string(), 9),
            ("failed".to_string(), 1),
        ]);
        let counts = with_totals(counts);
        assert_eq!(counts["sent"], 9);
        assert_eq!(counts["delivered"], 5);
        assert_eq!(counts["failed"], 1);
        assert_eq!(counts["undelivered:sms"], 1);
        let none = with_totals(BTreeMap::from([("failed".to_string(), 3)]));
        assert!(!none.contains_key("sent") && !none.contains_key("delivered"));
    }
}
