//! Redis state, in one store per domain over a small core. [`Redis`] (`redis_core.rs`) holds
//! the connection, the bounded calls and the per-slot script runner (`slot_batch.rs`);
//! [`keys`](keys::KeyNames) names every key; the Lua scripts are `static`s beside the methods
//! that run them, one registry ([`Lua`]). A program opens one [`Redis`] and hands each worker
//! only the domain stores it uses: [`SlotStore`], [`RequestStore`], [`CampaignStore`],
//! [`CustomerStore`], [`PromoStore`], [`EventStore`], [`MetricsStore`], [`HealthStore`],
//! [`WebhookStore`].
//!
//! A request's record is the only place that says whether it was sent: the claim script is
//! the single gate before a provider call, and a terminal status is never overwritten. Every
//! script reads Redis's own clock, so leases mean the same to every host.

use std::sync::OnceLock;
use std::time::Duration;

use redis::Script;

pub use caps::CapAsk;
pub use consent::{ConsentChange, ConsentPage};
pub use history::{HistoryEvent, HistoryItem, HistoryLimits, HistoryPage, MessageHistory};
pub use lifecycle::StateChange;
pub use link::RedisTarget;
pub use outgoing::{Claimed, Outgoing, Retry};
pub use redis_core::Redis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),
    #[error("cannot reach redis within {0:?}")]
    ConnectTimeout(Duration),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Redis at this URL is a node of a Redis Cluster: list its nodes in HERALD_REDIS_URL (comma-separated) or set HERALD_REDIS_CLUSTER=1")]
    ClusterNode,
    /// A call that served many (a batch of claims) failed as a whole; each is retried.
    #[error("batched redis call failed: {0}")]
    Batch(String),
    #[error("corrupt record for {key}: {what}")]
    Corrupt { key: String, what: String },
}

/// Shards of a new campaign on a Redis Cluster, unless configured: several per master of a
/// cluster of a few masters, so one campaign's slots land on all of them.
pub const DEFAULT_CLUSTER_SHARDS: u16 = 16;

/// A Lua script of the store. Each is a `static` beside the methods that run it and is
/// hashed once, on first use: one registry for all of them, nothing to keep in step by hand.
pub(crate) struct Lua {
    body: &'static str,
    script: OnceLock<Script>,
}

impl Lua {
    pub(crate) const fn new(body: &'static str) -> Self {
        Lua {
            body,
            script: OnceLock::new(),
        }
    }
}

impl std::ops::Deref for Lua {
    type Target = Script;
    fn deref(&self) -> &Script {
        self.script.get_or_init(|| Script::new(self.body))
    }
}

/// The first line of a script that reads the time: `now`, Redis's clock in milliseconds.
macro_rules! lua_now {
    () => {
        "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    };
}

/// Prefixes a Lua body with `now`, Redis's clock in milliseconds.
macro_rules! lua_with_now {
    ($body:literal) => {
        concat!(lua_now!(), $body)
    };
}

/// A script that [`SlotStore::on_slots`] runs over the slots of one campaign shard: KEYS[1] the
/// shard's counts, KEYS[2] its pending set, KEYS[3..] the slots, and `$args` arguments per
/// slot in ARGV, in the slots' order. `$body` is run once per slot, as a Lua function of
/// `slot` (its key) and `o` (where its arguments start: `ARGV[o + 1]`...), with `counts`,
/// `pending` and `now` in scope; what it returns comes back one answer per slot, in order.
/// `count(field)` adds one to a field of the shard's counts: the additions are summed over
/// the slots and written once per field when the batch is done (one HINCRBY per field, not
/// per slot; the script is atomic, so nobody sees the difference).
/// `halt()` is the shard's `halt` ('paused', 'cancelled' or ''; see `lifecycle.rs`), or
/// 'expired' once its `exp` passed (cancelled first), read once per batch when first asked
/// for.
/// `now_s` is `now` as text and `after(ms)` is `now + ms` as text, formatted once per batch
/// and value: a Lua number given to `redis.call` is formatted with `%.17g` by Redis 7.0, and
/// that formatting was about 4% of Redis's samples when every slot did it several times.
macro_rules! lua_per_slot {
    ($args:literal, $body:literal) => {
        concat!(
            lua_now!(),
            "local counts, pending = KEYS[1], KEYS[2]\n",
            "local tally = {}\n",
            "local function count(field) tally[field] = (tally[field] or 0) + 1 end\n",
            "local now_s = string.format('%d', now)\n",
            "local later = {}\n",
            "local function after(ms) local v = later[ms] if not v then v = string.format('%d', now + tonumber(ms)) later[ms] = v end return v end\n",
            "local halt_read = nil\n",
            "local function halt() if halt_read == nil then local h = redis.call('HMGET', counts, 'halt', 'exp') halt_read = h[1] or '' if halt_read ~= 'cancelled' and h[2] and now >= tonumber(h[2]) then halt_read = 'expired' end end return halt_read end\n",
            "local function per_slot(slot, o)\n",
            $body,
            "end\n",
            "local answers = {}\n",
            "for i = 3, #KEYS do answers[#answers + 1] = per_slot(KEYS[i], (i - 3) * ",
            $args,
            ") end\n",
            "for field, n in pairs(tally) do redis.call('HINCRBY', counts, field, n) end\n",
            "return answers\n"
        )
    };
}

/// A domain store: the Redis core seen through one domain's methods. A program builds the
/// ones its workers use from its [`Redis`], and a worker holds only those.
macro_rules! domain_store {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Redis);

        impl $name {
            pub fn new(redis: &Redis) -> Self {
                $name(redis.clone())
            }
        }

        impl std::ops::Deref for $name {
            type Target = Redis;
            fn deref(&self) -> &Redis {
                &self.0
            }
        }
    };
}

domain_store!(
    /// A campaign's deliveries: their slots (claimed, sent, confirmed), the batches of
    /// claims, first attempts put off, and the pending confirmations herald-retry watches.
    SlotStore
);
domain_store!(
    /// Seed 001's requests: their records, claims and publication.
    RequestStore
);
domain_store!(
    /// Campaigns: their records and counts, lifecycle (schedule, pause, cancel, expiry) and
    /// frequency caps.
    CampaignStore
);
domain_store!(
    /// Customers: profiles, suppression, consent log and preferences.
    CustomerStore
);
domain_store!(
    /// Flash promos: their records, stock reservations and outbox.
    PromoStore
);
domain_store!(
    /// Sales and user events: loyalty, activity, and every message's history.
    EventStore
);
domain_store!(
    /// herald-metrics' totals per campaign and recent campaigns.
    MetricsStore
);
domain_store!(
    /// Each channel's providers as dispatchers report them, and which channels are unhealthy.
    HealthStore
);
domain_store!(
    /// Outgoing webhooks: endpoints and the deliveries to them.
    WebhookStore
);

pub mod acl;
mod campaigns;
mod caps;
mod channel_health;
mod consent;
mod customers;
mod events;
mod first_attempt;
mod history;
mod keys;
mod lifecycle;
mod link;
mod metrics;
mod outgoing;
mod pending;
mod preferences;
mod promos;
mod redis_core;
mod requests;
mod shards;
mod slot_batch;
mod slots;
mod suppression;
pub use campaigns::{CampaignCreation, Retention, BATCH_SIZE};
pub use events::{ActivitySummary, Confirmation, CreditLine, LoyaltyAccount, LoyaltyCredit};
pub use metrics::{Applied, Increments, MetricsRun};
pub use pending::{Overdue, ReceiptOutcome, ReceiptUpdate, RepublishWait};
pub use promos::{PromoRecord, PromoTask, Purchase, Reservation};
pub use requests::{Claim, Publication};
pub use shards::MAX_SHARDS;
pub use slot_batch::SLOTS_PER_CALL;
pub use slots::{OnceClaim, Renewal, SentOutcome, SlotClaim, SlotMark};
