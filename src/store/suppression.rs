//! Who must not be sent promotions on a channel: customers who unsubscribed (one-click
//! unsubscribe, STOP replies), and addresses that can never receive (a 5xx at RCPT, a hard
//! bounce). An address is suppressed, not a customer, so a customer who changes the address
//! is reachable again. Transactional messages (seed 001 requests, sale confirmations) do not
//! read these lists.

use std::collections::BTreeMap;

use super::{CustomerStore, Lua, StoreError};
use crate::model::{CampaignId, Channel, Customer, CustomerId};

// KEYS[1] campaign. Counts an unsubscribe on a campaign that still has its report (a key
// recreated after retention would never expire).
static COUNT_UNSUBSCRIBE: Lua = Lua::new(
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'unsubscribed', 1)
return 1
"#,
);

/// An address as suppression lists keep it: case does not matter to who receives it (bounce
/// reports vary in it), nor do the `whatsapp:` prefix and the `+` of a number (Twilio writes
/// them, Meta does not).
pub(super) fn normalise(address: &str) -> String {
    let a = address.trim().to_ascii_lowercase();
    let a = a.strip_prefix("whatsapp:").unwrap_or(&a);
    a.strip_prefix('+').unwrap_or(a).to_string()
}

impl CustomerStore {
    /// Withdraws the customer's consent to promotions on `channel`; `true` the first time.
    /// The campaign whose message carried the link counts it.
    pub async fn unsubscribe(
        &self,
        customer: &CustomerId,
        channel: Channel,
        from_campaign: Option<&CampaignId>,
    ) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.sadd(self.keys.unsubscribed_key(channel), customer.as_str());
        let (added,): (i64,) = self.query_pipe(&pipe).await?;
        if added == 1 {
            if let Some(campaign) = from_campaign {
                self.count_unsubscribe(campaign).await?;
            }
        }
        Ok(added == 1)
    }

    /// Counts an unsubscribe on the campaign its link came from (while it has a report).
    pub async fn count_unsubscribe(&self, campaign: &CampaignId) -> Result<(), StoreError> {
        let _: i64 = self
            .eval(&COUNT_UNSUBSCRIBE.key(self.keys.campaign_key(campaign)))
            .await?;
        Ok(())
    }

    /// Marks `address` as one that can never receive on `channel`; `true` the first time.
    pub async fn mark_undeliverable(
        &self,
        channel: Channel,
        address: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        let reason: String = reason.chars().take(300).collect();
        pipe.hset_nx(
            self.keys.undeliverable_key(channel),
            normalise(address),
            reason,
        );
        let (added,): (i64,) = self.query_pipe(&pipe).await?;
        Ok(added == 1)
    }

    /// Why `address` is undeliverable on `channel`, if it is.
    pub async fn undeliverable(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.hget(self.keys.undeliverable_key(channel), normalise(address));
        let (reason,): (Option<String>,) = self.query_pipe(&pipe).await?;
        Ok(reason)
    }

    /// Profiles as promotions may use them: on each channel where the customer unsubscribed
    /// or the address is undeliverable, the consent is taken away (in this copy only), so the
    /// rules pass over that channel. One round trip for the whole batch.
    pub async fn for_promotions(
        &self,
        ids: &[CustomerId],
        mut profiles: Vec<Option<Customer>>,
    ) -> Result<Vec<Option<Customer>>, StoreError> {
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for (i, (id, profile)) in ids.iter().zip(&profiles).enumerate() {
            let Some(p) = profile else { continue };
            for (channel, address) in &p.contacts {
                if p.consent.get(channel).copied().unwrap_or(false) {
                    pipe.sismember(self.keys.unsubscribed_key(*channel), id.as_str());
                    pipe.hexists(self.keys.undeliverable_key(*channel), normalise(address));
                    asked.push((i, *channel));
                }
            }
        }
        if asked.is_empty() {
            return Ok(profiles);
        }
        let answers: Vec<bool> = self.query_pipe(&pipe).await?;
        let mut suppressed: BTreeMap<usize, Vec<Channel>> = BTreeMap::new();
        for ((i, channel), pair) in asked.iter().zip(answers.chunks(2)) {
            if pair.iter().any(|b| *b) {
                suppressed.entry(*i).or_default().push(*channel);
            }
        }
        for (i, channels) in suppressed {
            if let Some(p) = profiles[i].as_mut() {
                for channel in channels {
                    p.consent.insert(channel, false);
                }
            }
        }
        Ok(profiles)
    }
}
