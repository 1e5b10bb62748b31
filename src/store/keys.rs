//! Every Redis key Herald writes, in one place: `{ns}:...`, each with the hash tag (`{...}`)
//! that keeps what one script touches in one cluster slot. A store file names a key only
//! through [`KeyNames`].

use super::shards::Shard;
use super::suppression::normalise;
use crate::model::commerce::MemberId;
use crate::model::frequency::Counter;
use crate::model::{CampaignId, Channel, CustomerId, EndpointId, PromoId, RequestId};

/// The keys of one webhook endpoint's queue.
pub struct EndpointKeys {
    pub body: String,
    pub due: String,
    pub log: String,
    pub tries: String,
    pub first: String,
    pub state: String,
}

/// The key names of one namespace.
#[derive(Debug, Clone)]
pub struct KeyNames {
    ns: String,
}

impl KeyNames {
    pub fn new(namespace: &str) -> Self {
        KeyNames {
            ns: namespace.to_string(),
        }
    }

    // campaigns
    pub fn campaign_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}", self.ns)
    }

    pub fn audience_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}:audience", self.ns)
    }

    pub fn batches_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}:batches", self.ns)
    }

    pub fn active_key(&self) -> String {
        format!("{}:campaigns:active", self.ns)
    }

    // caps
    pub fn cap_key(&self, customer: &CustomerId, counter: &Counter) -> String {
        format!("{}:cap:{{{customer}}}:{}", self.ns, counter.suffix())
    }

    // channel_health
    pub fn health_key(&self, channel: Channel) -> String {
        format!("{}:health:{channel}", self.ns)
    }

    pub fn provider_reports_key(&self) -> String {
        format!("{}:providers", self.ns)
    }

    // consent
    pub fn consent_key(&self, customer: &CustomerId) -> String {
        format!("{}:consent:{{{customer}}}", self.ns)
    }

    pub fn address_consent_key(&self, channel: Channel, address: &str) -> String {
        format!("{}:consent:addr:{channel}:{}", self.ns, normalise(address))
    }

    // customers
    pub fn customer_key(&self, id: &CustomerId) -> String {
        format!("{}:customer:{id}", self.ns)
    }

    /// Every attribute name some profile has had: what a campaign template may mention.
    pub fn attribute_names_key(&self) -> String {
        format!("{}:customers:attributes", self.ns)
    }

    pub fn geo_key(&self) -> String {
        format!("{}:geo:customers", self.ns)
    }

    // events
    pub fn activity_key(&self, user: &CustomerId) -> String {
        format!("{}:activity:{{{}}}", self.ns, user)
    }

    pub fn loyalty_key(&self, member: &MemberId) -> String {
        format!("{}:loyalty:{{{}}}", self.ns, member)
    }

    // history
    pub fn history_key(&self, customer: &CustomerId) -> String {
        format!("{}:history:{{{customer}}}", self.ns)
    }

    pub fn message_key(&self, customer: &CustomerId, campaign: &CampaignId) -> String {
        format!("{}:m:{campaign}", self.history_key(customer))
    }

    // lifecycle
    pub fn parked_key(&self, id: &CampaignId) -> String {
        format!("{}:campaign:{{{id}}}:parked", self.ns)
    }

    pub fn scheduled_key(&self) -> String {
        format!("{}:campaigns:scheduled", self.ns)
    }

    // metrics
    /// Every metrics key shares the hash tag `{metrics}`: one script applies a run to the
    /// totals and to each campaign's counters, so on a cluster they live in one slot. The
    /// metrics writer is one consumer group's few calls a second; one node carries it.
    pub fn metrics_key(&self, what: &str) -> String {
        format!("{}:{{metrics}}:{what}", self.ns)
    }

    // outgoing
    pub fn endpoints_key(&self) -> String {
        format!("{}:webhook-endpoints", self.ns)
    }

    pub fn outgoing_keys(&self, ep: &EndpointId) -> EndpointKeys {
        let base = format!("{}:wh:{{{ep}}}", self.ns);
        EndpointKeys {
            body: format!("{base}:body"),
            due: format!("{base}:due"),
            log: format!("{base}:log"),
            tries: format!("{base}:tries"),
            first: format!("{base}:first"),
            state: format!("{base}:state"),
        }
    }

    // preferences
    pub fn preferences_key(&self, id: &CustomerId) -> String {
        format!("{}:prefs:{id}", self.ns)
    }

    // promos
    pub fn promo_key(&self, id: &PromoId) -> String {
        format!("{}:promo:{{{id}}}", self.ns)
    }

    /// One of a promo's own keys (`outbox`, and the task leases), in the promo's slot.
    pub fn promo_part(&self, id: &PromoId, part: &str) -> String {
        format!("{}:{part}", self.promo_key(id))
    }

    /// A shopper's reservations of one promo on one local date.
    pub fn promo_cap(&self, user: impl std::fmt::Display, date: impl std::fmt::Display) -> String {
        format!("{}:promo-cap:{user}:{date}", self.ns)
    }

    pub fn promos_key(&self) -> String {
        format!("{}:promos", self.ns)
    }

    pub fn pending_promos_key(&self) -> String {
        format!("{}:promos:pending", self.ns)
    }

    pub fn outboxes_key(&self) -> String {
        format!("{}:promos:outboxes", self.ns)
    }

    // requests
    pub fn request(&self, id: &RequestId) -> String {
        format!("{}:req:{id}", self.ns)
    }

    pub fn publishing_key(&self) -> String {
        format!("{}:requests:publishing", self.ns)
    }

    // shards
    /// One customer's once-slot in its shard.
    pub fn slot_key_in(&self, shard: &Shard, customer: &CustomerId) -> String {
        format!("{}{customer}", self.slot_prefix_in(shard))
    }

    pub fn slot_prefix_in(&self, shard: &Shard) -> String {
        format!("{}:once:{{{}}}:", self.ns, shard.tag)
    }

    /// The counts a shard's scripts move: the campaign's record for one shard.
    pub fn counts_key(&self, shard: &Shard) -> String {
        format!("{}:campaign:{{{}}}", self.ns, shard.tag)
    }

    /// A shard's pending confirmations: member = customer, score = deadline (ms).
    pub fn pending_key_in(&self, shard: &Shard) -> String {
        format!("{}:pending:{{{}}}", self.ns, shard.tag)
    }

    // suppression
    pub fn unsubscribed_key(&self, channel: Channel) -> String {
        format!("{}:suppress:unsubscribed:{channel}", self.ns)
    }

    pub fn undeliverable_key(&self, channel: Channel) -> String {
        format!("{}:suppress:undeliverable:{channel}", self.ns)
    }
}
