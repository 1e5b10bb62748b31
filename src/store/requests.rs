//! Seed 001 requests: a record per request is the only place that says whether it was sent.
//! The claim script is the single gate before a provider call, and a terminal status is
//! never overwritten.

use std::time::Duration;

use redis::AsyncCommands;

use super::{Lua, RequestStore, StoreError};
use crate::model::{Channel, Message, RequestId, RequestStatus};

/// The outcome of trying to take a request for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the lease and must end it with `finish` or `release`.
    Claimed,
    /// Already sent or failed: a duplicate delivery.
    AlreadyDone(RequestStatus),
    /// Another live claim holds it; it may be retried after `retry_in`.
    HeldByOther { retry_in: Duration },
    /// No such request (never created, or expired).
    Missing,
}

/// What `POST /v1/requests/{id}/process` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// First call: the caller must publish (and `unmark_published` if that fails).
    MustPublish(Message),
    /// Already published by an earlier call: nothing to do.
    AlreadyPublished,
    Missing,
}

static CLAIM: Lua = Lua::new(lua_with_now!(
    r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing'} end
if st == 'sent' or st == 'failed' then return {'done', st} end
if st == 'processing' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') or 0
  if owner ~= ARGV[1] and lease_until > now then return {'held', tostring(lease_until - now)} end
end
redis.call('HSET', KEYS[1], 'status', 'processing', 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]), 'updated_ms', now)
redis.call('HINCRBY', KEYS[1], 'claims', 1)
return {'claimed'}
"#
));

static RENEW: Lua = Lua::new(lua_with_now!(
    r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'processing' then return 0 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
return 1
"#
));

/// Terminal statuses are final: a late or duplicate finisher changes nothing.
static FINISH: Lua = Lua::new(lua_with_now!(
    r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st or st == 'sent' or st == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'detail', ARGV[2], 'owner', '', 'lease_until', 0, 'updated_ms', now)
return 1
"#
));

/// Hands a claimed request back (graceful shutdown), so the next owner need not wait out the lease.
static RELEASE: Lua = Lua::new(
    r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'processing' then return 0 end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'owner', '', 'lease_until', 0)
return 1
"#,
);

// KEYS: request. ARGV: none. Marks the request published once; the request was listed as
// being published just before (`LIST_PUBLISHING`), so one whose publisher dies between this
// mark and Kafka's acknowledgement is published by herald-retry.
static MARK_PUBLISHED: Lua = Lua::new(lua_with_now!(
    r#"
local rec = redis.call('HMGET', KEYS[1], 'to', 'message', 'type')
if not rec[3] then return {'missing'} end
if redis.call('HSETNX', KEYS[1], 'published_ms', now) == 0 then return {'already'} end
return {'publish', rec[1], rec[2], rec[3]}
"#
));

// KEYS: the requests being published. ARGV: id, ms before the reconciler may publish it.
// Adds only: a request listed already keeps the deadline of its first publisher.
static LIST_PUBLISHING: Lua = Lua::new(lua_with_now!(
    r#"
return redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[2]), ARGV[1])
"#
));

// KEYS: the requests being published. ARGV: limit, lease ms. Due entries are leased to this
// caller (their score moves to now + lease) and returned; the caller reads their requests,
// which live in other hash slots, and drops the entries of those no longer queued.
static LEASE_UNPUBLISHED: Lua = Lua::new(lua_with_now!(
    r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
end
return due
"#
));

impl RequestStore {
    pub async fn create_request(&self, id: &RequestId, msg: &Message) -> Result<(), StoreError> {
        let key = self.keys.request(id);
        let (mut c, generation) = self.connection();
        let created = crate::model::now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("to", msg.to.as_str()),
                    ("message", msg.message.as_str()),
                    ("type", msg.channel.as_str()),
                    ("status", RequestStatus::Queued.as_str()),
                    ("created_ms", &created.to_string()),
                ],
            )
            .ignore()
            .expire(&key, self.request_ttl.as_secs() as i64)
            .ignore();
        self.bounded(generation, pipe.query_async::<()>(&mut c))
            .await?;
        Ok(())
    }

    pub async fn request_status(
        &self,
        id: &RequestId,
    ) -> Result<Option<RequestStatus>, StoreError> {
        let key = self.keys.request(id);
        let (mut c, generation) = self.connection();
        let raw: Option<String> = self.bounded(generation, c.hget(&key, "status")).await?;
        raw.map(|s| {
            RequestStatus::parse(&s).ok_or(StoreError::Corrupt {
                key: key.clone(),
                what: format!("status {s:?}"),
            })
        })
        .transpose()
    }

    /// Marks a request published exactly once, however many times `/process` is called, and
    /// lists it as being published: unless [`RequestStore::confirm_published`] follows within
    /// `grace`, herald-retry publishes it.
    pub async fn mark_published(
        &self,
        id: &RequestId,
        grace: Duration,
    ) -> Result<Publication, StoreError> {
        let key = self.keys.request(id);
        let mut list = LIST_PUBLISHING.prepare_invoke();
        list.key(self.keys.publishing_key())
            .arg(id.as_str())
            .arg(grace.as_millis() as u64);
        let mut mark = MARK_PUBLISHED.prepare_invoke();
        mark.key(&key);
        let reply: Vec<String> = if self.is_cluster() {
            // Two nodes: one after the other, the list first.
            let _: i64 = self.eval(&list).await?;
            self.eval(&mark).await?
        } else {
            // One server runs a pipeline in order, and a broken connection can only cut
            // its tail: the list first still, in one round trip (the API's /process).
            let mut pipe = redis::pipe();
            pipe.invoke_script(&list).ignore().invoke_script(&mark);
            let (reply,): (Vec<String>,) = self
                .query_pipe_with_scripts(&pipe, &[&LIST_PUBLISHING, &MARK_PUBLISHED])
                .await?;
            reply
        };
        match reply.first().map(String::as_str) {
            Some("missing") => {
                self.confirm_published(id).await?;
                Ok(Publication::Missing)
            }
            Some("already") => Ok(Publication::AlreadyPublished),
            Some("publish") if reply.len() == 4 => {
                let channel = reply[3]
                    .parse::<Channel>()
                    .map_err(|e| StoreError::Corrupt {
                        key: key.clone(),
                        what: e.to_string(),
                    })?;
                Ok(Publication::MustPublish(Message {
                    to: reply[1].clone(),
                    message: reply[2].clone(),
                    channel,
                }))
            }
            _ => Err(StoreError::Corrupt {
                key,
                what: format!("mark_published reply {reply:?}"),
            }),
        }
    }

    /// Undoes `mark_published` when the publish itself failed, so a retry of `/process` works.
    pub async fn unmark_published(&self, id: &RequestId) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.hdel(self.keys.request(id), "published_ms")
            .ignore()
            .zrem(self.keys.publishing_key(), id.as_str())
            .ignore();
        self.query_pipe::<()>(&pipe).await
    }

    /// Kafka acknowledged the request's notification: nothing left for the reconciler.
    pub async fn confirm_published(&self, id: &RequestId) -> Result<(), StoreError> {
        let (mut c, generation) = self.connection();
        let _: i64 = self
            .bounded(generation, c.zrem(self.keys.publishing_key(), id.as_str()))
            .await?;
        Ok(())
    }

    /// Requests marked published whose publish was never acknowledged in time (the publisher
    /// died, or the broker did not answer), still queued: up to `limit`, leased to the caller
    /// for `lease`.
    pub async fn claim_unpublished(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(RequestId, Message)>, StoreError> {
        let key = self.keys.publishing_key();
        let due: Vec<String> = self
            .eval(
                LEASE_UNPUBLISHED
                    .key(&key)
                    .arg(limit)
                    .arg(lease.as_millis() as u64),
            )
            .await?;
        let ids: Vec<RequestId> = due.iter().filter_map(|id| RequestId::parse(id)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(self.keys.request(id), &["status", "to", "message", "type"]);
        }
        let records: Vec<[Option<String>; 4]> = self.query_pipe(&pipe).await?;
        let mut out = Vec::with_capacity(ids.len());
        let mut gone = redis::pipe();
        for (id, [status, to, message, channel]) in ids.into_iter().zip(records) {
            let channel = channel.and_then(|c| c.parse::<Channel>().ok());
            match (status.as_deref(), to, message, channel) {
                (Some("queued"), Some(to), Some(message), Some(channel)) => out.push((
                    id,
                    Message {
                        to,
                        message,
                        channel,
                    },
                )),
                _ => {
                    gone.zrem(&key, id.as_str()).ignore();
                }
            }
        }
        if !gone.is_empty() {
            self.query_pipe::<()>(&gone).await?;
        }
        Ok(out)
    }

    /// Takes the request for sending under a lease of `lease`; `owner` must be unique per attempt.
    pub async fn claim(
        &self,
        id: &RequestId,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let key = self.keys.request(id);
        let reply: Vec<String> = self
            .eval(CLAIM.key(&key).arg(owner).arg(lease.as_millis() as u64))
            .await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("claimed"), _) => Ok(Claim::Claimed),
            (Some("missing"), _) => Ok(Claim::Missing),
            (Some("done"), Some(st)) => {
                RequestStatus::parse(st)
                    .map(Claim::AlreadyDone)
                    .ok_or(StoreError::Corrupt {
                        key,
                        what: format!("status {st:?}"),
                    })
            }
            (Some("held"), Some(ms)) => Ok(Claim::HeldByOther {
                retry_in: Duration::from_millis(ms.parse().unwrap_or(1000)),
            }),
            _ => Err(StoreError::Corrupt {
                key,
                what: format!("claim reply {reply:?}"),
            }),
        }
    }

    /// Extends the lease; `false` means this owner lost it and must not call the provider.
    pub async fn renew(
        &self,
        id: &RequestId,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.eval_flag(
            RENEW
                .key(self.keys.request(id))
                .arg(owner)
                .arg(lease.as_millis() as u64),
        )
        .await
    }

    /// Records the terminal status; `false` if it was already terminal.
    pub async fn finish(
        &self,
        id: &RequestId,
        status: RequestStatus,
        detail: &str,
    ) -> Result<bool, StoreError> {
        debug_assert!(status.is_terminal());
        self.eval_flag(
            FINISH
                .key(self.keys.request(id))
                .arg(status.as_str())
                .arg(detail),
        )
        .await
    }

    pub async fn release(&self, id: &RequestId, owner: &str) -> Result<bool, StoreError> {
        self.eval_flag(RELEASE.key(self.keys.request(id)).arg(owner))
            .await
    }
}
