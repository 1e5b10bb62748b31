//! Redis state. A request's record is the only place that says whether it was sent: the
//! claim script is the single gate before a provider call, and a terminal status is never
//! overwritten. Every script reads Redis's own clock, so leases mean the same to every host.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use redis::Script;

pub use caps::CapAsk;
pub use consent::{ConsentChange, ConsentPage};
pub use history::{HistoryEvent, HistoryItem, HistoryLimits, HistoryPage, MessageHistory};
pub use lifecycle::StateChange;
pub use link::RedisTarget;
use link::{Client, Link};
pub use outgoing::{Claimed, Outgoing, Retry};

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

/// Longest one Redis operation may take before it is abandoned as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Store {
    client: Client,
    conn: Arc<RwLock<Connection>>,
    reconnecting: Arc<tokio::sync::Mutex<()>>,
    ns: String,
    keys: keys::KeyNames,
    campaign_shards: u16,
    shard_counts: shards::ShardCounts,
    request_ttl: Duration,
    retention: Retention,
}

/// The current connection and a generation number, bumped each time it is replaced.
struct Connection {
    link: Link,
    generation: u64,
}

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

/// A script that [`Store::on_slots`] runs over the slots of one campaign shard: KEYS[1] the
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

/// Whether a server reached as a single Redis is a node of a cluster.
async fn is_cluster_node(link: &Link) -> Result<bool, StoreError> {
    let mut c = link.clone();
    let info: String = tokio::time::timeout(
        OP_TIMEOUT,
        redis::cmd("INFO").arg("cluster").query_async(&mut c),
    )
    .await
    .map_err(|_| StoreError::Timeout(OP_TIMEOUT))??;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

impl Store {
    /// Connects to the Redis the URL names: a comma-separated list names a cluster's nodes.
    pub async fn connect(redis_url: &str, namespace: &str) -> Result<Self, StoreError> {
        Store::open(&RedisTarget::parse(redis_url, false), namespace).await
    }

    pub async fn open(target: &RedisTarget, namespace: &str) -> Result<Self, StoreError> {
        let client = Client::open(target)?;
        let link = client.link().await?;
        if !target.is_cluster() && is_cluster_node(&link).await? {
            // It would answer MOVED for most keys, long after start-up looked fine.
            return Err(StoreError::ClusterNode);
        }
        Ok(Store {
            client,
            conn: Arc::new(RwLock::new(Connection {
                link,
                generation: 0,
            })),
            reconnecting: Arc::new(tokio::sync::Mutex::new(())),
            ns: namespace.to_string(),
            keys: keys::KeyNames::new(namespace),
            campaign_shards: if target.is_cluster() {
                DEFAULT_CLUSTER_SHARDS
            } else {
                1
            },
            shard_counts: shards::ShardCounts::default(),
            request_ttl: Duration::from_secs(7 * 24 * 3600),
            retention: Retention::default(),
        })
    }

    /// How long finished campaigns' keys are kept.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How long request records live after creation (seven days by default).
    pub fn with_request_ttl(mut self, ttl: Duration) -> Self {
        self.request_ttl = ttl;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Whether this store speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.client.is_cluster()
    }

    /// The connection to use now, and its generation.
    fn connection(&self) -> (Link, u64) {
        let c = self.conn.read().unwrap_or_else(|e| e.into_inner());
        (c.link.clone(), c.generation)
    }

    /// Bounds one Redis operation. Across a Redis restart, redis 0.32's connection manager
    /// was seen to leave commands pending for ever (response time-out notwithstanding) and
    /// never to reconnect, since it reconnects only on an error it sees. So a time-out
    /// replaces the connection, once per generation however many callers time out together.
    async fn bounded<T, F>(&self, generation: u64, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(result) => Ok(result?),
            Err(_) => {
                self.replace_connection(generation).await;
                Err(StoreError::Timeout(OP_TIMEOUT))
            }
        }
    }

    /// Runs one Lua script, bounded like every other operation.
    async fn eval<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let (mut c, generation) = self.connection();
        self.bounded(generation, invocation.invoke_async(&mut c))
            .await
    }

    /// Takes `key` as a lease for `owner` unless someone else holds it: `true` if taken.
    async fn take_lease(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (mut c, generation) = self.connection();
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(lease.as_millis() as u64);
        let taken: Option<String> = self.bounded(generation, set.query_async(&mut c)).await?;
        Ok(taken.is_some())
    }

    /// Runs a script that answers 1 when it changed something.
    async fn eval_flag(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<bool, StoreError> {
        let changed: i64 = self.eval(invocation).await?;
        Ok(changed == 1)
    }

    /// Runs a pipeline, bounded like every other operation.
    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let (mut c, generation) = self.connection();
        self.bounded(generation, pipe.query_async(&mut c)).await
    }

    /// Runs a pipeline of script invocations; a Redis that lost its script cache (restart,
    /// failover) gets the scripts loaded and the pipeline run once more.
    async fn query_pipe_with_scripts<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        scripts: &[&Script],
    ) -> Result<T, StoreError> {
        match self.query_pipe(pipe).await {
            Err(StoreError::Unavailable(e)) if e.kind() == redis::ErrorKind::NoScriptError => {
                let (mut c, generation) = self.connection();
                for script in scripts {
                    let _: String = self
                        .bounded(generation, script.prepare_invoke().load_async(&mut c))
                        .await?;
                }
                self.query_pipe(pipe).await
            }
            other => other,
        }
    }

    async fn replace_connection(&self, failed_generation: u64) {
        let _one_at_a_time = self.reconnecting.lock().await;
        if self.connection().1 != failed_generation {
            return; // someone else already replaced it
        }
        match self.client.link().await {
            Ok(link) => {
                let mut c = self.conn.write().unwrap_or_else(|e| e.into_inner());
                c.link = link;
                c.generation += 1;
                tracing::warn!(generation = c.generation, "redis connection replaced");
            }
            Err(e) => tracing::warn!(error = %e, "redis still unreachable"),
        }
    }

    /// How many times the connection was replaced after a time-out (once per outage, however
    /// many callers timed out together).
    pub fn reconnections(&self) -> u64 {
        self.connection().1
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let (mut c, generation) = self.connection();
        let _: String = self
            .bounded(generation, redis::cmd("PING").query_async(&mut c))
            .await?;
        Ok(())
    }
}
