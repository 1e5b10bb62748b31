//! The Redis core: the connection and its replacement after a time-out, the bounded calls
//! every store makes (one operation, a script, a pipeline), and leases. Domain stores reach
//! Redis only through it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::Script;

use super::link::{Client, Link, RedisTarget};
use super::{Retention, StoreError, DEFAULT_CLUSTER_SHARDS};

/// Longest one Redis operation may take before it is abandoned as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// The Redis core every domain store stands on: one connection (replaced after a time-out),
/// bounded calls, the namespace's key names and the campaign sharding. A program opens one
/// and hands each of its workers only the domain stores it uses ([`super::SlotStore`]...).
#[derive(Clone)]
pub struct Redis {
    client: Client,
    conn: Arc<RwLock<Connection>>,
    reconnecting: Arc<tokio::sync::Mutex<()>>,
    pub(super) ns: String,
    pub(super) keys: super::keys::KeyNames,
    pub(super) campaign_shards: u16,
    pub(super) shard_counts: super::shards::ShardCounts,
    pub(super) request_ttl: Duration,
    pub(super) retention: Retention,
}

/// The current connection and a generation number, bumped each time it is replaced.
struct Connection {
    link: Link,
    generation: u64,
}

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

impl Redis {
    /// Connects to the Redis the URL names: a comma-separated list names a cluster's nodes.
    pub async fn connect(redis_url: &str, namespace: &str) -> Result<Self, StoreError> {
        Redis::open(&RedisTarget::parse(redis_url, false), namespace).await
    }

    pub async fn open(target: &RedisTarget, namespace: &str) -> Result<Self, StoreError> {
        let client = Client::open(target)?;
        let link = client.link().await?;
        if !target.is_cluster() && is_cluster_node(&link).await? {
            // It would answer MOVED for most keys, long after start-up looked fine.
            return Err(StoreError::ClusterNode);
        }
        Ok(Redis {
            client,
            conn: Arc::new(RwLock::new(Connection {
                link,
                generation: 0,
            })),
            reconnecting: Arc::new(tokio::sync::Mutex::new(())),
            ns: namespace.to_string(),
            keys: super::keys::KeyNames::new(namespace),
            campaign_shards: if target.is_cluster() {
                DEFAULT_CLUSTER_SHARDS
            } else {
                1
            },
            shard_counts: super::shards::ShardCounts::default(),
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
    pub(super) fn connection(&self) -> (Link, u64) {
        let c = self.conn.read().unwrap_or_else(|e| e.into_inner());
        (c.link.clone(), c.generation)
    }

    /// Bounds one Redis operation. Across a Redis restart, redis 0.32's connection manager
    /// was seen to leave commands pending for ever (response time-out notwithstanding) and
    /// never to reconnect, since it reconnects only on an error it sees. So a time-out
    /// replaces the connection, once per generation however many callers time out together.
    pub(super) async fn bounded<T, F>(&self, generation: u64, op: F) -> Result<T, StoreError>
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
    pub(super) async fn eval<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let (mut c, generation) = self.connection();
        self.bounded(generation, invocation.invoke_async(&mut c))
            .await
    }

    /// Takes `key` as a lease for `owner` unless someone else holds it: `true` if taken.
    pub(super) async fn take_lease(
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
    pub(super) async fn eval_flag(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<bool, StoreError> {
        let changed: i64 = self.eval(invocation).await?;
        Ok(changed == 1)
    }

    /// Runs a pipeline, bounded like every other operation.
    pub(super) async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let (mut c, generation) = self.connection();
        self.bounded(generation, pipe.query_async(&mut c)).await
    }

    /// Runs a pipeline of script invocations; a Redis that lost its script cache (restart,
    /// failover) gets the scripts loaded and the pipeline run once more.
    pub(super) async fn query_pipe_with_scripts<T: redis::FromRedisValue>(
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
