//! Where a campaign's per-customer state lives. A campaign of one shard keeps it all under
//! the hash tag `{CAMPAIGN}` (its record holds the counts); a campaign of `n` shards splits
//! its once-slots, pending sets and counts into `{CAMPAIGN:s}`, `s` = the customer's shard, so
//! one huge campaign spreads over a Redis Cluster. Every script still touches one tag (a
//! slot, the counts and the pending set of the same shard); the campaign's totals are its
//! record's plus the sum over its shards.
//!
//! The shard count is fixed when the campaign is created (field `shards` of its record) and
//! never changes, so a process caches it for good once read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use redis::AsyncCommands;

use super::{Redis, StoreError};
use crate::model::{CampaignId, CustomerId};

/// The most shards a campaign may have.
pub const MAX_SHARDS: u16 = 1024;

/// Campaigns whose shard count a process keeps; past it the cache starts over.
const CACHED_CAMPAIGNS: usize = 10_000;

/// The shard counts read so far, by campaign.
#[derive(Clone, Default)]
pub(super) struct ShardCounts(Arc<RwLock<HashMap<CampaignId, u16>>>);

impl ShardCounts {
    fn get(&self, id: &CampaignId) -> Option<u16> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(id).copied()
    }

    fn put(&self, id: &CampaignId, shards: u16) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHED_CAMPAIGNS {
            map.clear();
        }
        map.insert(id.clone(), shards);
    }
}

/// The shard of a customer: FNV-1a of the id, stable across processes and versions (the
/// standard library's hasher is neither).
fn shard_of(customer: &CustomerId, shards: u16) -> u16 {
    if shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in customer.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards)) as u16
}

/// The hash tag's content for shard `shard` of a campaign of `shards` shards.
fn tag(id: &CampaignId, shards: u16, shard: u16) -> String {
    if shards <= 1 {
        id.to_string()
    } else {
        format!("{id}:{shard}")
    }
}

/// One shard of a campaign: the keys its scripts touch together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Shard {
    pub(super) tag: String,
}

impl Shard {
    /// The shard of `customer` in a campaign of `shards` shards.
    pub(super) fn of(campaign: &CampaignId, customer: &CustomerId, shards: u16) -> Shard {
        Shard {
            tag: tag(campaign, shards, shard_of(customer, shards)),
        }
    }
}

impl Redis {
    /// How many shards new campaigns get.
    pub fn with_campaign_shards(mut self, shards: u16) -> Self {
        self.campaign_shards = shards.clamp(1, MAX_SHARDS);
        self
    }

    /// The shard count of a campaign: 1 for one created before shards existed, or unknown.
    pub(super) async fn shards_of(&self, id: &CampaignId) -> Result<u16, StoreError> {
        if let Some(n) = self.shard_counts.get(id) {
            return Ok(n);
        }
        let (mut c, generation) = self.connection();
        let raw: Option<String> = self
            .bounded(generation, c.hget(self.keys.campaign_key(id), "shards"))
            .await?;
        match raw.and_then(|r| r.parse::<u16>().ok()) {
            Some(n) => {
                let n = n.clamp(1, MAX_SHARDS);
                self.shard_counts.put(id, n);
                Ok(n)
            }
            // Not cached: a campaign still being created gets its count in a moment.
            None => Ok(1),
        }
    }

    /// The shard that holds one customer of a campaign.
    pub(super) async fn shard(
        &self,
        campaign: &CampaignId,
        customer: &CustomerId,
    ) -> Result<Shard, StoreError> {
        let shards = self.shards_of(campaign).await?;
        Ok(Shard::of(campaign, customer, shards))
    }

    /// Every shard of a campaign, in order.
    pub(super) async fn shards(&self, campaign: &CampaignId) -> Result<Vec<Shard>, StoreError> {
        let shards = self.shards_of(campaign).await?;
        Ok((0..shards)
            .map(|s| Shard {
                tag: tag(campaign, shards, s),
            })
            .collect())
    }

    /// The shards' count hashes of a campaign (none for one shard: its record holds the
    /// counts).
    pub(super) async fn shard_count_keys(
        &self,
        campaign: &CampaignId,
    ) -> Result<Vec<String>, StoreError> {
        let shards = self.shards(campaign).await?;
        if shards.len() <= 1 {
            return Ok(Vec::new());
        }
        Ok(shards.iter().map(|s| self.keys.counts_key(s)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(i: usize) -> CustomerId {
        CustomerId::parse(&format!("c{i}")).expect("valid id")
    }

    #[test]
    fn one_shard_keeps_the_campaign_tag_and_many_split_it() {
        let id = CampaignId::parse("spring").expect("valid id");
        assert_eq!(tag(&id, 1, 0), "spring");
        assert_eq!(tag(&id, 16, 3), "spring:3");
    }

    #[test]
    fn customers_spread_evenly_and_always_to_the_same_shard() {
        let mut per_shard = [0u32; 16];
        for i in 0..16_000 {
            let s = shard_of(&customer(i), 16);
            assert_eq!(s, shard_of(&customer(i), 16));
            per_shard[s as usize] += 1;
        }
        for n in per_shard {
            assert!((800..1200).contains(&n), "uneven spread: {per_shard:?}");
        }
        assert_eq!(shard_of(&customer(7), 1), 0);
        // Pinned (FNV-1a 64, computed apart): a changed hash would strand the state of
        // every sharded campaign in flight.
        assert_eq!(shard_of(&customer(0), 16), 6);
        assert_eq!(shard_of(&customer(1), 16), 9);
        assert_eq!(shard_of(&customer(0), 1024), 678);
    }
}
