//! Scripts run over many once-slots at a time: what a dispatcher claims or records at once,
//! and what one receipt call carries, go to Redis as one script call per campaign shard
//! instead of one call per slot. The scripts are written with `lua_per_slot!`.

use std::collections::HashMap;

use super::shards::Shard;
use super::{Lua, Redis, StoreError};
use crate::model::{CampaignId, CustomerId};

/// Most slots one script call carries: a few hundred microseconds of Redis at most, so that
/// one call does not hold up everyone else's.
pub const SLOTS_PER_CALL: usize = 128;

/// One slot's part of a batched script call: which slot, and its arguments.
pub(super) trait SlotOp {
    fn slot(&self) -> (&CampaignId, &CustomerId);
    /// Its arguments, in the order the script reads them (the slot's key is pushed for it).
    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>, store: &Redis);
}

impl Redis {
    /// Runs `script` over many slots: one call per campaign shard among them (one hash tag,
    /// so one cluster slot each), at most [`SLOTS_PER_CALL`] slots a call, the calls under
    /// way together. `script` is written with `lua_per_slot!`; one answer per op, in order.
    pub(super) async fn on_slots<T: SlotOp, R: redis::FromRedisValue>(
        &self,
        script: &Lua,
        ops: &[T],
    ) -> Vec<Result<R, StoreError>> {
        let mut answers: Vec<Result<R, StoreError>> = ops
            .iter()
            .map(|_| Err(StoreError::Batch("not run".into())))
            .collect();
        let mut groups: HashMap<Shard, Vec<usize>> = HashMap::new();
        // Each campaign's shard count read once for the batch, not once per slot: it is not
        // cached for a campaign whose record has none (created before shards existed).
        let mut shard_counts: HashMap<&CampaignId, u16> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let (campaign, customer) = op.slot();
            let shards = match shard_counts.get(campaign) {
                Some(&n) => n,
                None => match self.shards_of(campaign).await {
                    Ok(n) => *shard_counts.entry(campaign).or_insert(n),
                    Err(e) => {
                        answers[i] = Err(e);
                        continue;
                    }
                },
            };
            groups
                .entry(Shard::of(campaign, customer, shards))
                .or_default()
                .push(i);
        }
        let calls = groups.iter().flat_map(|(shard, members)| {
            members
                .chunks(SLOTS_PER_CALL)
                .map(move |chunk| (shard, chunk))
        });
        let runs = calls.map(|(shard, members)| async move {
            let replies = self
                .call_on_slots::<T, R>(script, shard, members, ops)
                .await;
            (shard, members, replies)
        });
        for (shard, members, replies) in futures::future::join_all(runs).await {
            match replies {
                Ok(replies) => {
                    for (&i, reply) in members.iter().zip(replies) {
                        answers[i] = reply;
                    }
                }
                // One slot can make the script fail for every slot it carries (a key that
                // is not a once-slot): each is tried alone, so that only that one fails.
                Err(e) if refused_by_script(&e) && members.len() > 1 => {
                    let alone = members.iter().map(|&i| async move {
                        let one = std::slice::from_ref(&i);
                        (i, self.call_on_slots::<T, R>(script, shard, one, ops).await)
                    });
                    for (i, reply) in futures::future::join_all(alone).await {
                        answers[i] = reply
                            .and_then(only_answer)
                            .map_err(|e| self.unreadable_slot(e, shard, &ops[i]));
                    }
                }
                Err(e) if members.len() == 1 => {
                    answers[members[0]] = Err(self.unreadable_slot(e, shard, &ops[members[0]]));
                }
                Err(e) => {
                    // Each is retried on its own, as after any Redis failure.
                    let why = e.to_string();
                    for &i in members {
                        answers[i] = Err(StoreError::Batch(why.clone()));
                    }
                }
            }
        }
        answers
    }

    /// One script call over `members` of one shard: one answer per member, in order.
    async fn call_on_slots<T: SlotOp, R: redis::FromRedisValue>(
        &self,
        script: &Lua,
        shard: &Shard,
        members: &[usize],
        ops: &[T],
    ) -> Result<Vec<Result<R, StoreError>>, StoreError> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.counts_key(shard))
            .key(self.keys.pending_key_in(shard));
        for &i in members {
            invocation.key(self.keys.slot_key_in(shard, ops[i].slot().1));
            ops[i].push_args(&mut invocation, self);
        }
        let replies: Vec<R> = self.eval(&invocation).await?;
        if replies.len() != members.len() {
            let why = format!("{} answers for {} slots", replies.len(), members.len());
            return Ok(members
                .iter()
                .map(|_| Err(StoreError::Batch(why.clone())))
                .collect());
        }
        Ok(replies.into_iter().map(Ok).collect())
    }

    /// A script's refusal of a call carrying one slot alone is that slot's record: corrupt,
    /// and not mended by retrying. Any other failure is passed on as it is.
    fn unreadable_slot<T: SlotOp>(&self, e: StoreError, shard: &Shard, op: &T) -> StoreError {
        match e {
            // Redis's own words: "redis unavailable" would mislead whoever reads the
            // dead-letter reason.
            StoreError::Unavailable(refusal) if refused_by_script_error(&refusal) => {
                StoreError::Corrupt {
                    key: self.keys.slot_key_in(shard, op.slot().1),
                    what: format!("the script refused it: {refusal}"),
                }
            }
            e => e,
        }
    }
}

/// The answer for the one slot of a batch of one.
pub(super) fn only_answer<R>(mut replies: Vec<Result<R, StoreError>>) -> Result<R, StoreError> {
    replies
        .pop()
        .unwrap_or_else(|| Err(StoreError::Batch("no answer".into())))
}

/// Redis ran the script and it failed (a key of the wrong type, a value it cannot read), as
/// opposed to Redis being unreachable, slow, loading or failing over: retrying the same call
/// fails the same way.
fn refused_by_script(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(e) if refused_by_script_error(e))
}

fn refused_by_script_error(e: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ResponseError | ErrorKind::ExtensionError | ErrorKind::TypeError
    )
}
