//! Scripts run over many once-slots at a time: what a dispatcher claims or records at once,
//! and what one receipt call carries, go to Redis as one script call per campaign shard
//! instead of one call per slot. The scripts are written with `lua_per_slot!`.

use std::collections::HashMap;

use super::shards::Shard;
use super::{Lua, Store, StoreError};
use crate::model::{CampaignId, CustomerId};

/// Most slots one script call carries: a few hundred microseconds of Redis at most, so that
/// one call does not hold up everyone else's.
pub const SLOTS_PER_CALL: usize = 128;

/// One slot's part of a batched script call: which slot, and its arguments.
pub(super) trait SlotOp {
    fn slot(&self) -> (&CampaignId, &CustomerId);
    /// Its arguments, in the order the script reads them (the slot's key is pushed for it).
    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>, store: &Store);
}

impl Store {
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
            let mut invocation = script.prepare_invoke();
            invocation
                .key(self.counts_key(shard))
                .key(self.pending_key_in(shard));
            for &i in members {
                invocation.key(self.slot_key_in(shard, ops[i].slot().1));
                ops[i].push_args(&mut invocation, self);
            }
            (members, self.eval::<Vec<R>>(&invocation).await)
        });
        for (members, replies) in futures::future::join_all(runs).await {
            let failed = match replies {
                Ok(replies) if replies.len() == members.len() => {
                    for (&i, reply) in members.iter().zip(replies) {
                        answers[i] = Ok(reply);
                    }
                    continue;
                }
                Ok(replies) => format!("{} answers for {} slots", replies.len(), members.len()),
                Err(e) => e.to_string(),
            };
            // Each is retried on its own, as after any Redis failure.
            for &i in members {
                answers[i] = Err(StoreError::Batch(failed.clone()));
            }
        }
        answers
    }
}
