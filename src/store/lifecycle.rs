//! An operator's hold on a campaign: scheduled, paused, resumed, cancelled.
//!
//! The record's `state` is what the API reports and fan-out reads before each batch. The
//! scripts that claim a delivery cannot read the record of a sharded campaign (another hash
//! tag, so another cluster slot), so the state is also written as `halt` into every shard's
//! counts, which those scripts already touch: a claim made after the change was
//! acknowledged sees it, atomically with the claim. `herald-retry` re-applies the halts of
//! every active campaign every few seconds, so a change cut short by a crash is completed.
//!
//! Fan-out parks the batches of a paused campaign in `{ns}:campaign:{ID}:parked`, a set kept
//! with the record (one tag), and the park checks the state in the same script: a batch is
//! never parked after `resume` took the parked ones back.

use redis::AsyncCommands;

use super::{CampaignStore, Lua, Redis, StoreError};
use crate::model::{CampaignAction, CampaignId, CampaignState, CustomerId, Halt};

/// What an operator's action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    Changed {
        from: CampaignState,
        to: CampaignState,
    },
    /// The action does not apply in the campaign's state (resume a running one, cancel a
    /// cancelled one).
    Refused(CampaignState),
    Unknown,
}

// KEYS[1] campaign record. ARGV: expected state, new state. Compare and set: the transition
// is decided by `CampaignAction::apply`, and two operators at once cannot both apply theirs
// to the same state.
static SET_STATE: Lua = Lua::new(
    r#"
if redis.call('HEXISTS', KEYS[1], 'ready') == 0 then return 'missing' end
local cur = redis.call('HGET', KEYS[1], 'state') or 'running'
if cur ~= ARGV[1] then return cur end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
return 'ok'
"#,
);

// KEYS[1] campaign record, KEYS[2] parked batches. ARGV: batch. Parks only while paused.
static PARK_BATCH: Lua = Lua::new(
    r#"
if redis.call('HGET', KEYS[1], 'state') ~= 'paused' then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], redis.call('TTL', KEYS[1]))
return 1
"#,
);

// KEYS[1] scheduled set. ARGV: how many, lease ms. Due campaigns get a new score (now +
// lease): no other herald-retry sees them meanwhile, and one whose start was cut short comes
// due again after the lease.
static CLAIM_DUE_STARTS: Lua = Lua::new(lua_with_now!(
    r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id) end
return due
"#
));

// The customers of a batch fan-out finds cancelled or expired (`lua_per_slot!`): each one
// never published ends so; one that has a slot already (published before) is left to its
// slot. Per slot: ttl s, the ending ('cancelled' or 'expired').
static CANCEL_UNSENT: Lua = Lua::new(lua_per_slot!(
    2,
    r#"
  if redis.call('EXISTS', slot) == 1 then return 0 end
  redis.call('HSET', slot, 'st', ARGV[o + 2], 'a', '0', 'ch', '', 'tr', '')
  redis.call('EXPIRE', slot, ARGV[o + 1])
  count(ARGV[o + 2])
  return 1
"#
));

// A shard's pending entries of a cancelled or expired campaign (`lua_per_slot!`), given by a
// scan: what waits unpublished (`queued`: parked by a pause, deferred by quiet hours, or a
// fallback not yet claimed) ends so now rather than when its wait is over. Per slot:
// customer, the ending.
static CANCEL_QUEUED: Lua = Lua::new(lua_per_slot!(
    2,
    r#"
  if redis.call('HGET', slot, 'st') ~= 'queued' then return 0 end
  redis.call('HSET', slot, 'st', ARGV[o + 2], 'own', '', 'lu', 0)
  redis.call('ZREM', pending, ARGV[o + 1])
  count(ARGV[o + 2])
  return 1
"#
));

/// A customer of a batch fanned out after the campaign was cancelled.
pub(super) struct Unsent<'a> {
    campaign: &'a CampaignId,
    customer: &'a CustomerId,
    /// The final status: `cancelled`, `expired` or `capped`.
    ending: &'static str,
}

impl super::slot_batch::SlotOp for Unsent<'_> {
    fn slot(&self) -> (&CampaignId, &CustomerId) {
        (self.campaign, self.customer)
    }

    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>, store: &Redis) {
        invocation
            .arg(store.retention.working.as_secs())
            .arg(self.ending);
    }
}

/// A pending entry of a cancelled campaign.
pub(super) struct Waiting {
    campaign: CampaignId,
    customer: CustomerId,
    ending: Halt,
}

impl super::slot_batch::SlotOp for Waiting {
    fn slot(&self) -> (&CampaignId, &CustomerId) {
        (&self.campaign, &self.customer)
    }

    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>, _: &Redis) {
        invocation
            .arg(self.customer.as_str())
            .arg(self.ending.as_str());
    }
}

/// What `halt` says in a shard's counts for a state; `None`: no halt.
fn halt_of(state: CampaignState) -> Option<&'static str> {
    match state {
        CampaignState::Paused => Some("paused"),
        CampaignState::Cancelled => Some("cancelled"),
        CampaignState::Scheduled | CampaignState::Running => None,
    }
}

impl CampaignStore {
    /// The campaign's state; `None` for an unknown campaign.
    pub async fn campaign_state(
        &self,
        id: &CampaignId,
    ) -> Result<Option<CampaignState>, StoreError> {
        let (mut c, generation) = self.connection();
        let (ready, state): (Option<String>, Option<String>) = self
            .bounded(
                generation,
                c.hget(self.keys.campaign_key(id), &["ready", "state"]),
            )
            .await?;
        Ok(ready.map(|_| CampaignState::from_record(state.as_deref())))
    }

    /// Applies an operator's action, then writes the new state's halt into every shard.
    pub async fn change_campaign_state(
        &self,
        id: &CampaignId,
        action: CampaignAction,
    ) -> Result<StateChange, StoreError> {
        // A few rounds at most: each lost round means another operator changed the state.
        for _ in 0..8 {
            let Some(from) = self.campaign_state(id).await? else {
                return Ok(StateChange::Unknown);
            };
            let Some(to) = action.apply(from) else {
                return Ok(StateChange::Refused(from));
            };
            let answer: String = self
                .eval(
                    SET_STATE
                        .key(self.keys.campaign_key(id))
                        .arg(from.as_str())
                        .arg(to.as_str()),
                )
                .await?;
            match answer.as_str() {
                "ok" => {
                    self.apply_halts(id, to).await?;
                    return Ok(StateChange::Changed { from, to });
                }
                "missing" => return Ok(StateChange::Unknown),
                _ => continue,
            }
        }
        Err(StoreError::Batch(format!(
            "campaign {id}: its state kept changing under this call"
        )))
    }

    /// Writes the halt of `state` into every shard's counts (the record's own for a
    /// campaign of one shard): what the claim and overdue scripts read.
    pub async fn apply_halts(
        &self,
        id: &CampaignId,
        state: CampaignState,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for shard in self.shards(id).await? {
            let key = self.keys.counts_key(&shard);
            match halt_of(state) {
                Some(halt) => pipe.hset(&key, "halt", halt).ignore(),
                None => pipe.hdel(&key, "halt").ignore(),
            };
        }
        self.query_pipe::<()>(&pipe).await
    }

    /// Writes a campaign's expiry into every shard's counts (`exp`, ms), where the claim
    /// and overdue scripts read it.
    pub(super) async fn set_expiry(&self, id: &CampaignId, at_ms: u64) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for shard in self.shards(id).await? {
            pipe.hset(self.keys.counts_key(&shard), "exp", at_ms)
                .ignore();
        }
        self.query_pipe::<()>(&pipe).await
    }

    /// Parks a batch of a paused campaign for `resume`; `false` when the campaign is not
    /// paused (any more): fan it out, or cancel it, by the state read again.
    pub async fn park_batch(&self, id: &CampaignId, batch: u32) -> Result<bool, StoreError> {
        self.eval_flag(
            PARK_BATCH
                .key(self.keys.campaign_key(id))
                .key(self.keys.parked_key(id))
                .arg(batch),
        )
        .await
    }

    /// The batches parked while the campaign was paused.
    pub async fn parked_batches(&self, id: &CampaignId) -> Result<Vec<u32>, StoreError> {
        let (mut c, generation) = self.connection();
        let raw: Vec<String> = self
            .bounded(generation, c.smembers(self.keys.parked_key(id)))
            .await?;
        Ok(raw.iter().filter_map(|b| b.parse().ok()).collect())
    }

    /// Drops batches from the parked set once they are queued again.
    pub async fn unpark_batches(&self, id: &CampaignId, batches: &[u32]) -> Result<(), StoreError> {
        if batches.is_empty() {
            return Ok(());
        }
        let (mut c, generation) = self.connection();
        self.bounded(generation, c.srem(self.keys.parked_key(id), batches))
            .await
    }

    /// Lists a campaign to be started at `at_ms` by whichever `herald-retry` comes first.
    pub(super) fn schedule_in(&self, pipe: &mut redis::Pipeline, id: &CampaignId, at_ms: u64) {
        pipe.zadd(self.keys.scheduled_key(), id.as_str(), at_ms)
            .ignore();
    }

    /// Up to `limit` scheduled campaigns whose time has come, each claimed by this call for
    /// `lease`.
    pub async fn claim_due_starts(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<CampaignId>, StoreError> {
        let due: Vec<String> = self
            .eval(
                CLAIM_DUE_STARTS
                    .key(self.keys.scheduled_key())
                    .arg(limit)
                    .arg(lease.as_millis() as u64),
            )
            .await?;
        Ok(due.iter().filter_map(|s| CampaignId::parse(s)).collect())
    }

    /// A scheduled campaign's batches are queued: it is running (unless an operator changed
    /// it meanwhile) and no longer waits to start.
    pub async fn mark_started(&self, id: &CampaignId) -> Result<bool, StoreError> {
        let started: String = self
            .eval(
                SET_STATE
                    .key(self.keys.campaign_key(id))
                    .arg(CampaignState::Scheduled.as_str())
                    .arg(CampaignState::Running.as_str()),
            )
            .await?;
        self.unschedule(id).await?;
        Ok(started == "ok")
    }

    pub async fn unschedule(&self, id: &CampaignId) -> Result<(), StoreError> {
        let (mut c, generation) = self.connection();
        self.bounded(generation, c.zrem(self.keys.scheduled_key(), id.as_str()))
            .await
    }

    /// The customers of a batch of a cancelled or expired campaign: each one not yet
    /// published ends so (`ending`). Returns how many.
    pub async fn cancel_unsent(
        &self,
        campaign: &CampaignId,
        customers: &[CustomerId],
        ending: Halt,
    ) -> Result<u64, StoreError> {
        self.end_unsent(campaign, customers, ending.as_str()).await
    }

    /// Customers a frequency cap holds back at fan-out: each one not yet published ends
    /// `capped`. Returns how many.
    pub async fn cap_unsent(
        &self,
        campaign: &CampaignId,
        customers: &[CustomerId],
    ) -> Result<u64, StoreError> {
        self.end_unsent(campaign, customers, "capped").await
    }

    async fn end_unsent(
        &self,
        campaign: &CampaignId,
        customers: &[CustomerId],
        ending: &'static str,
    ) -> Result<u64, StoreError> {
        let ops: Vec<Unsent> = customers
            .iter()
            .map(|customer| Unsent {
                campaign,
                customer,
                ending,
            })
            .collect();
        let mut cancelled = 0;
        for answer in self.on_slots::<_, i64>(&CANCEL_UNSENT, &ops).await {
            cancelled += answer? as u64;
        }
        Ok(cancelled)
    }

    /// Ends every unpublished delivery waiting in a cancelled or expired campaign's pending
    /// sets (`ending`). Returns how many.
    pub async fn cancel_queued(
        &self,
        campaign: &CampaignId,
        ending: Halt,
    ) -> Result<u64, StoreError> {
        let mut cancelled = 0;
        for shard in self.shards(campaign).await? {
            let key = self.keys.pending_key_in(&shard);
            let mut cursor: u64 = 0;
            loop {
                let (mut c, generation) = self.connection();
                let (next, page): (u64, Vec<String>) = self
                    .bounded(
                        generation,
                        redis::cmd("ZSCAN")
                            .arg(&key)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(500)
                            .query_async(&mut c),
                    )
                    .await?;
                // ZSCAN answers member, score, member, score...
                let ops: Vec<Waiting> = page
                    .iter()
                    .step_by(2)
                    .filter_map(|m| CustomerId::parse(m))
                    .map(|customer| Waiting {
                        campaign: campaign.clone(),
                        customer,
                        ending,
                    })
                    .collect();
                for answer in self.on_slots::<_, i64>(&CANCEL_QUEUED, &ops).await {
                    cancelled += answer? as u64;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pause_and_cancel_halt_claims() {
        assert_eq!(halt_of(CampaignState::Paused), Some("paused"));
        assert_eq!(halt_of(CampaignState::Cancelled), Some("cancelled"));
        assert_eq!(halt_of(CampaignState::Running), None);
        assert_eq!(halt_of(CampaignState::Scheduled), None);
    }

    #[test]
    fn actions_apply_only_where_an_operator_would_expect() {
        use CampaignAction::*;
        use CampaignState::*;
        assert_eq!(Pause.apply(Running), Some(Paused));
        assert_eq!(Pause.apply(Scheduled), None);
        assert_eq!(Resume.apply(Paused), Some(Running));
        assert_eq!(Resume.apply(Running), None);
        assert_eq!(Cancel.apply(Scheduled), Some(Cancelled));
        assert_eq!(Cancel.apply(Paused), Some(Cancelled));
        assert_eq!(Cancel.apply(Cancelled), None);
        assert_eq!(Resume.apply(Cancelled), None);
    }
}
