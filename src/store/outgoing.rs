//! Outgoing webhooks as stored: the endpoints (`{ns}:webhook-endpoints`, one hash of their
//! definitions) and, per endpoint, under its hash tag (one cluster slot):
//! - `{ns}:wh:{EP}:body`: each queued message's body, by message id (the event's id, so an
//!   event Kafka delivers twice is queued once);
//! - `{ns}:wh:{EP}:due`: the messages still to deliver, scored by their next attempt;
//! - `{ns}:wh:{EP}:log`: every message kept, scored by its event's time (what a replay
//!   sends again, and what pruning drops after the keep window);
//! - `{ns}:wh:{EP}:tries` (attempts so far) and `:first` (first failure), by message id;
//! - `{ns}:wh:{EP}:state`: `failing_since` (cleared by a success) and counts.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::{Lua, StoreError, WebhookStore};
use crate::model::{Endpoint, EndpointId};

/// One message for one endpoint, to queue.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub endpoint: EndpointId,
    pub id: String,
    pub at_ms: u64,
    pub body: String,
}

/// A message claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub body: String,
    pub attempts: u64,
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Tried again at this time (ms).
    At(u64),
    /// Failing for the whole retry period: given up.
    GaveUp,
}

// KEYS body, due, log. ARGV: id, body, at ms. Queued once per id.
static ENQUEUE: Lua = Lua::new(lua_with_now!(
    r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]), ARGV[1])
return 1
"#
));

// KEYS due. ARGV: how many, lease ms. The due messages get a new score (now + lease): no
// other sender sees them meanwhile, and one a crashed sender held comes due again.
static CLAIM: Lua = Lua::new(lua_with_now!(
    r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id) end
return due
"#
));

// KEYS due, tries, first, state. ARGV: id.
static DELIVERED: Lua = Lua::new(
    r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], 'failing_since')
redis.call('HINCRBY', KEYS[4], 'delivered', 1)
return 1
"#,
);

// KEYS due, tries, first, state. ARGV: id, back-off ms, retry period ms. Gives up on a
// message that has failed for the retry period; otherwise it comes due after the back-off.
static FAILED: Lua = Lua::new(lua_with_now!(
    r#"
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSETNX', KEYS[3], ARGV[1], now)
redis.call('HSETNX', KEYS[4], 'failing_since', now)
redis.call('HINCRBY', KEYS[4], 'failed_attempts', 1)
local first = tonumber(redis.call('HGET', KEYS[3], ARGV[1]))
if now - first >= tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'gave_up', 1)
  return -1
end
local at = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], at, ARGV[1])
return at
"#
));

// KEYS log, due, body, tries, first. ARGV: since ms, how many, skip. A page of the messages
// since a time, due again at once with their attempts forgotten.
static REPLAY: Lua = Lua::new(lua_with_now!(
    r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'LIMIT', tonumber(ARGV[3]), tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(ids) do
  if redis.call('HEXISTS', KEYS[3], id) == 1 then
    redis.call('ZADD', KEYS[2], now, id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    n = n + 1
  end
end
return {#ids, n}
"#
));

// KEYS log, due, body. ARGV: older than ms, how many. Drops kept messages past the keep
// window that are not waiting to be delivered.
static PRUNE: Lua = Lua::new(
    r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  if not redis.call('ZSCORE', KEYS[2], id) then redis.call('HDEL', KEYS[3], id) end
end
return #ids
"#,
);

impl WebhookStore {
    pub async fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let json = serde_json::to_string(endpoint).map_err(|e| StoreError::Corrupt {
            key: self.keys.endpoints_key(),
            what: e.to_string(),
        })?;
        let (mut c, generation) = self.connection();
        self.bounded(
            generation,
            c.hset(self.keys.endpoints_key(), endpoint.id.as_str(), json),
        )
        .await
    }

    /// Every registered endpoint (disabled ones too).
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let (mut c, generation) = self.connection();
        let all: BTreeMap<String, String> = self
            .bounded(generation, c.hgetall(self.keys.endpoints_key()))
            .await?;
        Ok(all
            .values()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect())
    }

    pub async fn endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>, StoreError> {
        let (mut c, generation) = self.connection();
        let raw: Option<String> = self
            .bounded(generation, c.hget(self.keys.endpoints_key(), id.as_str()))
            .await?;
        Ok(raw.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Removes an endpoint and its queue; `false` if there was none.
    pub async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool, StoreError> {
        let k = self.keys.outgoing_keys(id);
        let mut pipe = redis::pipe();
        pipe.hdel(self.keys.endpoints_key(), id.as_str());
        for key in [&k.body, &k.due, &k.log, &k.tries, &k.first, &k.state] {
            pipe.del(key).ignore();
        }
        let removed: (i64,) = self.query_pipe(&pipe).await?;
        Ok(removed.0 == 1)
    }

    /// Queues messages, each once per endpoint however often it is given; `true` for each
    /// queued now.
    pub async fn enqueue_outgoing(&self, items: &[Outgoing]) -> Result<Vec<bool>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let script = &*ENQUEUE;
        let mut pipe = redis::pipe();
        for item in items {
            let k = self.keys.outgoing_keys(&item.endpoint);
            pipe.invoke_script(
                script
                    .key(&k.body)
                    .key(&k.due)
                    .key(&k.log)
                    .arg(&item.id)
                    .arg(&item.body)
                    .arg(item.at_ms),
            );
        }
        let queued: Vec<i64> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
        Ok(queued.into_iter().map(|n| n == 1).collect())
    }

    /// Up to `limit` due messages of an endpoint, claimed for `lease`.
    pub async fn claim_outgoing(
        &self,
        ep: &EndpointId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let k = self.keys.outgoing_keys(ep);
        let ids: Vec<String> = self
            .eval(CLAIM.key(&k.due).arg(limit).arg(lease.as_millis() as u64))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&k.body).arg(&ids);
        pipe.cmd("HMGET").arg(&k.tries).arg(&ids);
        let (bodies, tries): (Vec<Option<String>>, Vec<Option<u64>>) =
            self.query_pipe(&pipe).await?;
        let mut claimed = Vec::with_capacity(ids.len());
        let mut orphans = Vec::new();
        for ((id, body), attempts) in ids.into_iter().zip(bodies).zip(tries) {
            match body {
                Some(body) => claimed.push(Claimed {
                    id,
                    body,
                    attempts: attempts.unwrap_or(0),
                }),
                None => orphans.push(id),
            }
        }
        if !orphans.is_empty() {
            // Pruned or deleted meanwhile: nothing left to send.
            let (mut c, generation) = self.connection();
            let _: i64 = self.bounded(generation, c.zrem(&k.due, orphans)).await?;
        }
        Ok(claimed)
    }

    pub async fn outgoing_delivered(&self, ep: &EndpointId, id: &str) -> Result<(), StoreError> {
        let k = self.keys.outgoing_keys(ep);
        let _: i64 = self
            .eval(
                DELIVERED
                    .key(&k.due)
                    .key(&k.tries)
                    .key(&k.first)
                    .key(&k.state)
                    .arg(id),
            )
            .await?;
        Ok(())
    }

    pub async fn outgoing_failed(
        &self,
        ep: &EndpointId,
        id: &str,
        backoff: Duration,
        retry_period: Duration,
    ) -> Result<Retry, StoreError> {
        let k = self.keys.outgoing_keys(ep);
        let at: i64 = self
            .eval(
                FAILED
                    .key(&k.due)
                    .key(&k.tries)
                    .key(&k.first)
                    .key(&k.state)
                    .arg(id)
                    .arg(backoff.as_millis() as u64)
                    .arg(retry_period.as_millis() as u64),
            )
            .await?;
        Ok(if at < 0 {
            Retry::GaveUp
        } else {
            Retry::At(at as u64)
        })
    }

    /// An endpoint's figures: `failing_since` (ms), `delivered`, `failed_attempts`,
    /// `gave_up`, and `queued` (messages waiting).
    pub async fn endpoint_state(
        &self,
        ep: &EndpointId,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let k = self.keys.outgoing_keys(ep);
        let mut pipe = redis::pipe();
        pipe.hgetall(&k.state).zcard(&k.due);
        let (state, queued): (BTreeMap<String, u64>, u64) = self.query_pipe(&pipe).await?;
        let mut state = state;
        state.insert("queued".into(), queued);
        Ok(state)
    }

    /// Every kept message of an endpoint since `since_ms` is due again; how many.
    pub async fn replay_outgoing(&self, ep: &EndpointId, since_ms: u64) -> Result<u64, StoreError> {
        let k = self.keys.outgoing_keys(ep);
        let (mut skip, mut queued) = (0u64, 0u64);
        loop {
            let (seen, n): (u64, u64) = self
                .eval(
                    REPLAY
                        .key(&k.log)
                        .key(&k.due)
                        .key(&k.body)
                        .key(&k.tries)
                        .key(&k.first)
                        .arg(since_ms)
                        .arg(1000)
                        .arg(skip),
                )
                .await?;
            queued += n;
            skip += seen;
            if seen < 1000 {
                return Ok(queued);
            }
        }
    }

    /// Drops an endpoint's kept messages older than `older_than_ms` (the keep window); how
    /// many.
    pub async fn prune_outgoing(
        &self,
        ep: &EndpointId,
        older_than_ms: u64,
    ) -> Result<u64, StoreError> {
        let k = self.keys.outgoing_keys(ep);
        self.eval(
            PRUNE
                .key(&k.log)
                .key(&k.due)
                .key(&k.body)
                .arg(older_than_ms)
                .arg(1000),
        )
        .await
    }
}
