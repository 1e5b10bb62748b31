//! Campaigns as stored: the definition (written once per id), the audience list, the batch
//! bitmap fan-out marks, the counters the slot scripts move, and the set of campaigns still
//! running that `herald-retry` scans. Every key carries the campaign id as its hash tag.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::{Lua, Store, StoreError};
use crate::model::{Campaign, CampaignId, CustomerId};

/// Fan-out and batch bookkeeping split audiences into batches of this many customers.
pub const BATCH_SIZE: usize = 1000;

/// Whether a campaign was stored by this call.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignCreation {
    Created,
    /// A campaign with this id exists: the same request again, nothing new stored.
    Exists(Box<Campaign>),
}

// KEYS[1] campaign, KEYS[2] batch bitmap. ARGV: batch, recipients in it.
static BATCH_DONE: Lua = Lua::new(
    r#"
if redis.call('SETBIT', KEYS[2], tonumber(ARGV[1]), 1) == 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'fanned_out', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'batches_done', 1)
return 1
"#,
);

/// Campaign keys live this long after creation: well past any fallback chain.
pub(super) const CAMPAIGN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Store {
    pub(super) fn campaign_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}", self.ns)
    }

    pub(super) fn audience_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}:audience", self.ns)
    }

    pub(super) fn batches_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}:batches", self.ns)
    }

    pub(super) fn active_key(&self) -> String {
        format!("{}:campaigns:active", self.ns)
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
        self.eval_flag(
            BATCH_DONE
                .key(self.campaign_key(id))
                .key(self.batches_key(id))
                .arg(batch)
                .arg(size),
        )
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
        let outcomes = ["delivered", "failed", "uncertain"]
            .iter()
            .map(|k| counts.get(*k).copied().unwrap_or(0))
            .sum::<u64>();
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
}
