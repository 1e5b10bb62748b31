//! Flash promos in Redis. Keys (under the namespace `ns`; braces are the Cluster hash tag):
//!
//! - `{ns}:promo:{ID}`: hash `json` (the promo), `stock` (units neither held nor sold),
//!   `sold`, and once activated `activated_ms`, `audience`, `capped`, `campaign`.
//! - `{ns}:promo:{ID}:holds`: sorted set, member = user, score = when the hold lapses (ms).
//! - `{ns}:promo:{ID}:buyers`: set of users who bought.
//! - `{ns}:promo:{ID}:activating`: the activation lease of one scheduler instance.
//! - `{ns}:promo:{ID}:outbox`: sale events of purchases, written by the purchase script and
//!   published to `herald.sales` by a scheduler (`…:outbox-lock` is its lease), so a
//!   purchase and its sale event are never parted.
//! - `{ns}:promos`: every promo by end time; `{ns}:promos:pending`: promos not yet
//!   activated, by start time.
//! - `{ns}:promo-cap:{USER}:{DATE}`: the promo that notified the user on that local date.
//!
//! Stock only moves inside the reserve and purchase scripts, which first give back the units
//! of lapsed holds: a unit is in stock, held, or sold, never two at once, and stock never
//! goes below zero.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use super::{Lua, PromoStore, StoreError};
use crate::model::{CustomerId, PromoId};

// KEYS: promo hash, holds, buyers. ARGV: user, hold ms. Holds are stamped and lapse by Redis'
// clock (TIME), one clock for every API instance whatever their hosts' clocks say.
static RESERVE: Lua = Lua::new(lua_with_now!(
    r#"
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, u in ipairs(lapsed) do
  redis.call('ZREM', KEYS[2], u)
  redis.call('HINCRBY', KEYS[1], 'stock', 1)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0, 0, now} end
local stock = tonumber(redis.call('HGET', KEYS[1], 'stock') or '0')
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {'bought', 0, stock, now} end
local held = redis.call('ZSCORE', KEYS[2], ARGV[1])
if held then return {'held', tonumber(held), stock, now} end
if stock <= 0 then return {'sold_out', 0, 0, now} end
local until_ms = now + tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'stock', -1)
redis.call('ZADD', KEYS[2], until_ms, ARGV[1])
local expires = redis.call('PEXPIRETIME', KEYS[1])
if expires > 0 then redis.call('PEXPIREAT', KEYS[2], expires) end
return {'reserved', until_ms, stock - 1, now}
"#
));

// KEYS: promo hash, holds, buyers, outbox. ARGV: user, the sale event ('' for none). A hold
// is live by Redis' clock, as RESERVE stamped it. The promo is listed among those with an
// outbox after this script, by itself (that set has no hash tag of the promo); the outbox
// drainer also reads every promo of the last hour, so a listing lost to a crash loses nothing.
static PURCHASE: Lua = Lua::new(lua_with_now!(
    r#"
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 'already' end
local held = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not held then return 'no_hold' end
redis.call('ZREM', KEYS[2], ARGV[1])
if tonumber(held) <= now then
  redis.call('HINCRBY', KEYS[1], 'stock', 1)
  return 'lapsed'
end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'sold', 1)
local expires = redis.call('PEXPIRETIME', KEYS[1])
if expires > 0 then redis.call('PEXPIREAT', KEYS[3], expires) end
if ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[2])
  if expires > 0 then redis.call('PEXPIREAT', KEYS[4], expires) end
end
return 'purchased'
"#
));

// KEYS: promo hash, activation lease. ARGV: owner, then field, value pairs. Records the
// activation only while `owner` still holds the lease: a scheduler whose lease ran out must
// not end (or delete) the lease of the one that took over. The promo leaves the schedule
// after this script, by itself; one recorded but still scheduled is only taken off again.
static FINISH_ACTIVATION: Lua = Lua::new(
    r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('DEL', KEYS[2])
return 1
"#,
);

// KEYS: outbox, outbox lease. ARGV: owner, entries published. Trims only while `owner`
// holds the lease (another drainer publishes the same entries again otherwise, which
// herald-events applies once). Answers 0 when the lease was lost, else 1 + what is left.
static TRIM_OUTBOX: Lua = Lua::new(
    r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
redis.call('DEL', KEYS[2])
return 1 + redis.call('LLEN', KEYS[1])
"#,
);

// KEYS: promo hash. ARGV: json, units. Creates unless it exists.
// KEYS: promo hash. ARGV: json, units, expire at (ms): the promo's end plus the report
// retention; its holds, buyers and outbox take the same deadline as they are written.
static CREATE: Lua = Lua::new(
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'json') end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'stock', ARGV[2], 'sold', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return false
"#,
);

// KEYS: cap key. ARGV: promo, ttl s. The promo that holds the user's day.
static CAP: Lua = Lua::new(
    r#"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"#,
);

/// What a scheduler does to a promo under a lease, one instance at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromoTask {
    /// Opening its window: the segment becomes a campaign.
    Activation,
    /// Publishing its purchases' sale events.
    OutboxDrain,
}

/// What a reserve call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A unit is held for the caller until `until_ms` (Redis' clock), `expires_in_ms` from
    /// now.
    Reserved {
        until_ms: u64,
        expires_in_ms: u64,
        units_left: u64,
    },
    /// The caller already holds one (the same hold; no second unit).
    AlreadyHeld {
        until_ms: u64,
        expires_in_ms: u64,
        units_left: u64,
    },
    SoldOut,
    AlreadyBought,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase {
    Purchased,
    /// Bought before: the same purchase.
    AlreadyPurchased,
    /// No live hold: never reserved, or the hold lapsed (its unit went back).
    NoHold,
}

/// A promo's stored record and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoRecord {
    pub json: String,
    pub stock: i64,
    pub sold: i64,
    pub holds: u64,
    pub activation: BTreeMap<String, String>,
}

impl PromoStore {
    fn promo_keys(&self, id: &PromoId) -> [String; 3] {
        let k = self.keys.promo_key(id);
        [k.clone(), format!("{k}:holds"), format!("{k}:buyers")]
    }

    /// Stores a promo unless one with its id exists; `None` when created, else the stored
    /// JSON. Either way the promo is (again) listed and scheduled.
    pub async fn create_promo(
        &self,
        id: &PromoId,
        json: &str,
        units: u32,
        starts_ms: u64,
        ends_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let existing: Option<String> = self
            .eval(
                CREATE
                    .key(self.keys.promo_key(id))
                    .arg(json)
                    .arg(units)
                    .arg(ends_ms + self.retention.report.as_millis() as u64),
            )
            .await?;
        let mut pipe = redis::pipe();
        pipe.zadd(self.keys.promos_key(), id.as_str(), ends_ms)
            .ignore()
            .zadd(self.keys.pending_promos_key(), id.as_str(), starts_ms)
            .ignore();
        self.query_pipe::<()>(&pipe).await?;
        Ok(existing)
    }

    /// Promos that end after `now_ms` (active or still to come), oldest end first.
    pub async fn current_promo_ids(&self, now_ms: u64) -> Result<Vec<PromoId>, StoreError> {
        let (mut c, generation) = self.connection();
        let ids: Vec<String> = self
            .bounded(
                generation,
                c.zrangebyscore_limit(self.keys.promos_key(), now_ms + 1, "+inf", 0, 1000),
            )
            .await?;
        Ok(ids.iter().filter_map(|i| PromoId::parse(i)).collect())
    }

    /// Promos whose start has come and that no scheduler activated yet.
    pub async fn due_promo_ids(&self, now_ms: u64) -> Result<Vec<PromoId>, StoreError> {
        let (mut c, generation) = self.connection();
        let ids: Vec<String> = self
            .bounded(
                generation,
                c.zrangebyscore_limit(self.keys.pending_promos_key(), "-inf", now_ms, 0, 100),
            )
            .await?;
        Ok(ids.iter().filter_map(|i| PromoId::parse(i)).collect())
    }

    pub async fn promo(&self, id: &PromoId) -> Result<Option<PromoRecord>, StoreError> {
        let [key, holds, _] = self.promo_keys(id);
        let mut pipe = redis::pipe();
        pipe.hgetall(&key).zcard(&holds);
        let (mut fields, holds): (BTreeMap<String, String>, u64) = self.query_pipe(&pipe).await?;
        let Some(json) = fields.remove("json") else {
            return Ok(None);
        };
        let n = |v: Option<String>| v.and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Some(PromoRecord {
            json,
            stock: n(fields.remove("stock")),
            sold: n(fields.remove("sold")),
            holds,
            activation: fields,
        }))
    }

    /// Takes one scheduler's `task` on a promo for `lease` unless another scheduler holds it.
    pub async fn claim_promo_task(
        &self,
        id: &PromoId,
        task: PromoTask,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let suffix = match task {
            PromoTask::Activation => "activating",
            PromoTask::OutboxDrain => "outbox-lock",
        };
        let key = self.keys.promo_part(id, suffix);
        self.take_lease(&key, owner, lease).await
    }

    /// Records an activation and takes the promo off the schedule, if `owner` still holds the
    /// activation lease; `false` when another scheduler took it over (it finishes the work).
    pub async fn finish_promo_activation(
        &self,
        id: &PromoId,
        owner: &str,
        fields: &[(&str, String)],
    ) -> Result<bool, StoreError> {
        let key = self.keys.promo_key(id);
        let mut call = FINISH_ACTIVATION.key(&key);
        call.key(format!("{key}:activating")).arg(owner);
        for (field, value) in fields {
            call.arg(*field).arg(value.as_str());
        }
        if !self.eval_flag(&call).await? {
            return Ok(false);
        }
        self.unschedule_promo(id).await?;
        Ok(true)
    }

    /// Takes a promo whose activation is recorded off the schedule.
    pub async fn unschedule_promo(&self, id: &PromoId) -> Result<(), StoreError> {
        let (mut c, generation) = self.connection();
        let _: i64 = self
            .bounded(
                generation,
                c.zrem(self.keys.pending_promos_key(), id.as_str()),
            )
            .await?;
        Ok(())
    }

    /// Promos whose outbox holds sale events not yet published, however long ago they ended.
    pub async fn promos_with_outbox(&self) -> Result<Vec<PromoId>, StoreError> {
        let (mut c, generation) = self.connection();
        let ids: Vec<String> = self
            .bounded(generation, c.smembers(self.keys.outboxes_key()))
            .await?;
        Ok(ids.iter().filter_map(|i| PromoId::parse(i)).collect())
    }

    /// Customers within `radius_m` metres of a point (Redis GEO).
    pub async fn customers_near(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
    ) -> Result<Vec<CustomerId>, StoreError> {
        let (mut c, generation) = self.connection();
        let ids: Vec<String> = self
            .bounded(
                generation,
                redis::cmd("GEOSEARCH")
                    .arg(self.keys.geo_key())
                    .arg("FROMLONLAT")
                    .arg(lon)
                    .arg(lat)
                    .arg("BYRADIUS")
                    .arg(radius_m)
                    .arg("m")
                    .query_async(&mut c),
            )
            .await?;
        Ok(ids.iter().filter_map(|i| CustomerId::parse(i)).collect())
    }

    /// Takes each user's promo notification of their local day for `promo` unless another
    /// promo has it; answers for each whether `promo` holds it (`false`: capped).
    pub async fn take_daily_caps(
        &self,
        promo: &PromoId,
        users: &[(CustomerId, String)],
    ) -> Result<Vec<bool>, StoreError> {
        let script = &*CAP;
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(1000) {
            let mut pipe = redis::pipe();
            for (user, date) in chunk {
                pipe.invoke_script(
                    script
                        .key(self.keys.promo_cap(user, date))
                        .arg(promo.as_str())
                        // Two days: the local date has passed everywhere by then.
                        .arg(2 * 24 * 3600),
                );
            }
            let holders: Vec<String> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
            out.extend(holders.iter().map(|h| h == promo.as_str()));
        }
        Ok(out)
    }

    pub async fn reserve_unit(
        &self,
        id: &PromoId,
        user: &CustomerId,
        hold: Duration,
    ) -> Result<Reservation, StoreError> {
        let [key, holds, buyers] = self.promo_keys(id);
        let (outcome, until, left, now): (String, u64, i64, u64) = self
            .eval(
                RESERVE
                    .key(key)
                    .key(holds)
                    .key(buyers)
                    .arg(user.as_str())
                    .arg(hold.as_millis() as u64),
            )
            .await?;
        let units_left = left.max(0) as u64;
        let expires_in_ms = until.saturating_sub(now);
        Ok(match outcome.as_str() {
            "reserved" => Reservation::Reserved {
                until_ms: until,
                expires_in_ms,
                units_left,
            },
            "held" => Reservation::AlreadyHeld {
                until_ms: until,
                expires_in_ms,
                units_left,
            },
            "sold_out" => Reservation::SoldOut,
            "bought" => Reservation::AlreadyBought,
            _ => Reservation::Missing,
        })
    }

    /// Buys the unit `user` holds; a first purchase also queues `sale_event` (if any) in the
    /// promo's outbox, in the same script.
    pub async fn purchase_unit(
        &self,
        id: &PromoId,
        user: &CustomerId,
        sale_event: Option<&str>,
    ) -> Result<Purchase, StoreError> {
        let [key, holds, buyers] = self.promo_keys(id);
        let outbox = format!("{key}:outbox");
        let outcome: String = self
            .eval(
                PURCHASE
                    .key(key)
                    .key(holds)
                    .key(buyers)
                    .key(outbox)
                    .arg(user.as_str())
                    .arg(sale_event.unwrap_or("")),
            )
            .await?;
        if outcome == "purchased" && sale_event.is_some() {
            let (mut c, generation) = self.connection();
            let _: i64 = self
                .bounded(generation, c.sadd(self.keys.outboxes_key(), id.as_str()))
                .await?;
        }
        Ok(match outcome.as_str() {
            "purchased" => Purchase::Purchased,
            "already" => Purchase::AlreadyPurchased,
            _ => Purchase::NoHold,
        })
    }

    /// The oldest `max` entries of a promo's outbox (read, not removed).
    pub async fn outbox(&self, id: &PromoId, max: usize) -> Result<Vec<String>, StoreError> {
        let (mut c, generation) = self.connection();
        let key = self.keys.promo_part(id, "outbox");
        self.bounded(generation, c.lrange(key, 0, max as isize - 1))
            .await
    }

    /// Removes the oldest `n` entries once published and lets the outbox go, if `owner` still
    /// holds its lease; `false` when the lease was lost (nothing is trimmed).
    pub async fn trim_outbox(
        &self,
        id: &PromoId,
        owner: &str,
        n: usize,
    ) -> Result<bool, StoreError> {
        let key = self.keys.promo_key(id);
        let answer: i64 = self
            .eval(
                TRIM_OUTBOX
                    .key(format!("{key}:outbox"))
                    .key(format!("{key}:outbox-lock"))
                    .arg(owner)
                    .arg(n),
            )
            .await?;
        if answer == 1 {
            // Empty: off the list. A sale queued right after is still found, through the
            // promos of the last hour the drainer reads as well.
            let (mut c, generation) = self.connection();
            let _: i64 = self
                .bounded(generation, c.srem(self.keys.outboxes_key(), id.as_str()))
                .await?;
        }
        Ok(answer > 0)
    }
}
