//! The aggregator's counters in Redis. Keys (under the namespace `ns`):
//!
//! - `{ns}:metrics:totals`: hash of every counter, field `OUTCOME:CHANNEL` (channel `none`
//!   for what never reached one) plus the receipt-latency histogram `lat:CHANNEL:BUCKET`,
//!   `lat:CHANNEL:sum_ms`, `lat:CHANNEL:count`.
//! - `{ns}:metrics:campaign:{C}`: the same fields for one campaign, kept as long as the
//!   campaign (30 days after its latest event).
//! - `{ns}:metrics:campaigns`: sorted set of the newest 1000 campaigns by latest event time.
//! - `{ns}:metrics:offsets`: hash `TOPIC:PARTITION` → the next Kafka offset to count.
//!
//! Counting once: a flush adds one partition's run of events and moves that partition's
//! watermark in the same Lua script, so a run is counted entirely or not at all, and a
//! redelivered message (below the watermark) is never counted again, whatever the consumer
//! group's committed offset says after a crash or rebalance.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::{Lua, MetricsStore, StoreError};
use crate::model::CampaignId;

/// Counter increments for one partition's run of events: `(campaign, field) → n`, where
/// a campaign's increments also count in the totals.
pub type Increments = BTreeMap<(Option<CampaignId>, String), u64>;

/// One partition's run of events: offsets `first..next` and what they add.
#[derive(Debug, Clone)]
pub struct MetricsRun {
    /// `topic:partition`, the watermark's field.
    pub partition: String,
    pub first: i64,
    pub next: i64,
    pub increments: Increments,
}

/// What applying a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Counted,
    /// Part of the run was counted before (up to this offset, exclusive): drop what lies
    /// below it and apply the rest.
    AlreadyCountedUpTo(i64),
}

// KEYS[1] offsets, KEYS[2] totals, KEYS[3] campaigns zset.
// ARGV: partition field, first offset, next offset, campaign key prefix, now ms, ttl s,
// then (campaign or '', field, n) triples.
// A campaign's counters live as long as the campaign itself; the list of campaigns keeps
// the newest 1000.
static APPLY: Lua = Lua::new(
    r#"
local mark = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if mark > tonumber(ARGV[2]) then return mark end
local seen = {}
for i = 7, #ARGV, 3 do
  local c, f, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  redis.call('HINCRBY', KEYS[2], f, n)
  if c ~= '' then
    redis.call('HINCRBY', ARGV[4] .. c, f, n)
    if not seen[c] then
      redis.call('EXPIRE', ARGV[4] .. c, tonumber(ARGV[6]))
      redis.call('ZADD', KEYS[3], tonumber(ARGV[5]), c)
      seen[c] = true
    end
  end
end
if next(seen) ~= nil then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1001) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return -2
"#,
);

impl MetricsStore {
    fn metrics_campaign_prefix(&self) -> String {
        self.keys.metrics_key("campaign:")
    }

    /// Counts runs of several partitions in one round trip, each unless (part of) it was
    /// counted before; the answers are in the order of `runs`.
    pub async fn apply_metrics_runs(
        &self,
        runs: &[MetricsRun],
        now_ms: u64,
    ) -> Result<Vec<Applied>, StoreError> {
        let script = &*APPLY;
        let mut pipe = redis::pipe();
        for run in runs {
            let mut invocation = script.key(self.keys.metrics_key("offsets"));
            invocation
                .key(self.keys.metrics_key("totals"))
                .key(self.keys.metrics_key("campaigns"))
                .arg(&run.partition)
                .arg(run.first)
                .arg(run.next)
                .arg(self.metrics_campaign_prefix())
                .arg(now_ms)
                .arg(self.retention.report.as_secs());
            for ((campaign, field), n) in &run.increments {
                invocation
                    .arg(campaign.as_ref().map(|c| c.as_str()).unwrap_or(""))
                    .arg(field)
                    .arg(*n);
            }
            pipe.invoke_script(&invocation);
        }
        let marks: Vec<i64> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
        Ok(marks
            .into_iter()
            .map(|mark| {
                if mark == -2 {
                    Applied::Counted
                } else {
                    Applied::AlreadyCountedUpTo(mark)
                }
            })
            .collect())
    }

    /// Every counter of the fleet (see the module docs for the fields).
    pub async fn metrics_totals(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.numeric_hash(self.keys.metrics_key("totals")).await
    }

    /// One campaign's counters; empty when it has none.
    pub async fn metrics_campaign(
        &self,
        id: &CampaignId,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        self.numeric_hash(format!("{}{id}", self.metrics_campaign_prefix()))
            .await
    }

    /// The `limit` campaigns with the most recent events, newest first.
    pub async fn metrics_recent_campaigns(
        &self,
        limit: usize,
    ) -> Result<Vec<CampaignId>, StoreError> {
        let (mut c, generation) = self.connection();
        let ids: Vec<String> = self
            .bounded(
                generation,
                c.zrevrange(self.keys.metrics_key("campaigns"), 0, limit as isize - 1),
            )
            .await?;
        Ok(ids.iter().filter_map(|id| CampaignId::parse(id)).collect())
    }

    async fn numeric_hash(&self, key: String) -> Result<BTreeMap<String, u64>, StoreError> {
        let (mut c, generation) = self.connection();
        let all: BTreeMap<String, String> = self.bounded(generation, c.hgetall(key)).await?;
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| v.parse::<u64>().ok().map(|n| (k, n)))
            .collect())
    }
}
