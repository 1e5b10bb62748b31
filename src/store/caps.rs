//! Frequency-cap counters (see `campaigns::caps`): per customer, a sorted set of the
//! campaigns that counted against each counter, scored by when (`{ns}:cap:{CUSTOMER}:all`,
//! `{ns}:cap:{CUSTOMER}:t:TOPIC`; one hash slot per customer). A window's count is a
//! ZCOUNT from its start; entries older than a week and a day are trimmed as it is written.

use super::{CampaignStore, Lua, StoreError};
use crate::model::frequency::{Counter, Limit, Windows};
use crate::model::{CampaignId, CustomerId};

/// How long a count is kept: the longest window, and a day for time zones.
const KEPT_MS: u64 = 8 * 24 * 3600 * 1000;

// KEYS: the customer's counters. ARGV[1] the campaign, ARGV[2] now (the caller's clock, so
// a test can move it), ARGV[3] how long to keep; then per counter: day start, day limit,
// week start, week limit (-1: none). A campaign already counted passes (a fallback, a
// replay, a deferred delivery coming due). Answers 0 (counted), or 2k-1 / 2k when counter
// k's day / week limit is reached (nothing counted then).
static TAKE_CAP: Lua = Lua::new(
    r#"
local member, now = ARGV[1], tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], member) then return 0 end
for k, key in ipairs(KEYS) do
  local o = 3 + (k - 1) * 4
  local day_limit, week_limit = tonumber(ARGV[o + 2]), tonumber(ARGV[o + 4])
  if day_limit >= 0 and redis.call('ZCOUNT', key, ARGV[o + 1], '+inf') >= day_limit then return 2 * k - 1 end
  if week_limit >= 0 and redis.call('ZCOUNT', key, ARGV[o + 3], '+inf') >= week_limit then return 2 * k end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(ARGV[3]))
  redis.call('PEXPIRE', key, ARGV[3])
end
return 0
"#,
);

/// One customer's cap check.
pub struct CapAsk<'a> {
    pub customer: &'a CustomerId,
    pub windows: Windows,
}

impl CampaignStore {
    /// Counts `campaign` against each customer's `counters` unless a limit is reached:
    /// one answer per ask (see `TAKE_CAP`), all in one round trip per thousand.
    pub async fn take_caps(
        &self,
        campaign: &CampaignId,
        counters: &[(Counter, Limit)],
        asks: &[CapAsk<'_>],
        now_ms: u64,
    ) -> Result<Vec<i64>, StoreError> {
        let limit = |l: Option<u32>| l.map_or(-1, i64::from);
        let mut answers = Vec::with_capacity(asks.len());
        for chunk in asks.chunks(1000) {
            let mut pipe = redis::pipe();
            for ask in chunk {
                let mut call = TAKE_CAP.prepare_invoke();
                for (counter, _) in counters {
                    call.key(self.keys.cap_key(ask.customer, counter));
                }
                call.arg(campaign.as_str()).arg(now_ms).arg(KEPT_MS);
                for (_, l) in counters {
                    call.arg(ask.windows.day_start_ms)
                        .arg(limit(l.per_day))
                        .arg(ask.windows.week_start_ms)
                        .arg(limit(l.per_week));
                }
                pipe.invoke_script(&call);
            }
            let got: Vec<i64> = self.query_pipe_with_scripts(&pipe, &[&TAKE_CAP]).await?;
            answers.extend(got);
        }
        Ok(answers)
    }
}
