//! What `herald-events` keeps in Redis. Keys (under the namespace `ns`; the part in braces
//! is the Redis Cluster hash tag, so each script touches one slot):
//!
//! - `{ns}:activity:{USER}`: hash of a user's aggregates: a count per action (`click`,
//!   `view`, `add_to_cart`, `purchase`), `spent_cents`, `cat:CATEGORY` counts,
//!   `last_seen_ms`. (The total is summed when read: Redis running this script is what
//!   bounds aggregation, so it does one command less per event.)
//! - `{ns}:activity:{USER}:seen:EVENT`: the event was applied (expires after the dedup window).
//! - `{ns}:loyalty:{MEMBER}`: hash `points`, `sales`, `spent_cents`, `last_sale_id`, `updated_ms`;
//!   `…:sale:SALE` marks a credited sale (expires after the dedup window); `…:recent` lists
//!   the last 20 credits.
//! - A sale's confirmation e-mail is an ordinary request record, `{ns}:req:sale-SALE`.
//!
//! Each event is applied by one script that first sets its marker with `SET NX`: a
//! redelivered or re-published copy finds the marker and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EventStore, Lua, StoreError};
use crate::model::commerce::{from_cents, Activity, MemberId, UserAction};
use crate::model::{CustomerId, Message, RequestId, RequestStatus, SaleId};

static ACTIVITY: Lua = Lua::new(
    r#"
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
local cents = tonumber(ARGV[3])
if cents > 0 then redis.call('HINCRBY', KEYS[1], 'spent_cents', cents) end
if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[1], 'cat:' .. ARGV[4], 1) end
local at = tonumber(ARGV[5])
if at > tonumber(redis.call('HGET', KEYS[1], 'last_seen_ms') or '0') then
  redis.call('HSET', KEYS[1], 'last_seen_ms', ARGV[5])
end
return 1
"#,
);

static LOYALTY: Lua = Lua::new(
    r#"
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'points', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'sales', 1)
redis.call('HINCRBY', KEYS[1], 'spent_cents', ARGV[4])
redis.call('HSET', KEYS[1], 'last_sale_id', ARGV[3], 'updated_ms', ARGV[5])
redis.call('LPUSH', KEYS[3], ARGV[6])
redis.call('LTRIM', KEYS[3], 0, 19)
return 1
"#,
);

/// Creates a request record unless one exists; answers `new` or the existing status.
static OPEN_REQUEST: Lua = Lua::new(
    r#"
local st = redis.call('HGET', KEYS[1], 'status')
if st then return st end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'to', ARGV[1], 'message', ARGV[2], 'type', ARGV[3], 'status', 'queued', 'created_ms', now, 'published_ms', now)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 'new'
"#,
);

/// Points for one sale, to credit once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoyaltyCredit {
    pub member: MemberId,
    pub sale: SaleId,
    pub points: i64,
    pub total_cents: i64,
    pub at_ms: u64,
}

/// One line of an account's recent credits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreditLine {
    pub sale_id: String,
    pub points: i64,
    #[schema(schema_with = crate::schema::money)]
    pub total: rust_decimal::Decimal,
    pub at_ms: u64,
}

/// `GET /v1/customers/{id}/loyalty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoyaltyAccount {
    pub customer: String,
    pub points: i64,
    pub sales: u64,
    #[schema(schema_with = crate::schema::money)]
    pub spent: rust_decimal::Decimal,
    pub last_sale_id: Option<String>,
    pub updated_ms: Option<u64>,
    pub recent: Vec<CreditLine>,
}

/// `GET /v1/customers/{id}/activity`: what seed 004 aggregates per user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActivitySummary {
    pub user_id: String,
    pub events: u64,
    pub clicks: u64,
    pub views: u64,
    pub add_to_cart: u64,
    pub purchases: u64,
    #[schema(schema_with = crate::schema::money)]
    pub spent: rust_decimal::Decimal,
    pub categories: BTreeMap<String, u64>,
    pub last_seen_ms: Option<u64>,
}

/// Where a sale's confirmation request stood when its sale was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Created now: publish it.
    New,
    /// Created before and not yet taken by a dispatcher: publish again (the claim keeps
    /// the e-mail single if the first copy is also on the topic).
    Queued,
    /// Being sent or already finished: nothing to do.
    Handled(RequestStatus),
}

impl Confirmation {
    pub fn must_publish(self) -> bool {
        matches!(self, Confirmation::New | Confirmation::Queued)
    }
}

impl EventStore {
    /// Applies each user event unless its id was applied before; `true` for those applied now.
    pub async fn apply_activity(
        &self,
        batch: &[Activity],
        dedup_window: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let script = &*ACTIVITY;
        let ttl = dedup_window.as_secs().max(1);
        let mut pipe = redis::pipe();
        for a in batch {
            let key = self.keys.activity_key(&a.user_id);
            pipe.invoke_script(
                script
                    .key(&key)
                    .key(format!("{key}:seen:{}", a.event_id))
                    .arg(ttl)
                    .arg(a.action.as_str())
                    .arg(a.amount_cents)
                    .arg(a.category.as_deref().unwrap_or(""))
                    .arg(a.at_ms),
            );
        }
        let applied: Vec<i64> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
        Ok(applied.into_iter().map(|n| n == 1).collect())
    }

    pub async fn activity(&self, user: &CustomerId) -> Result<Option<ActivitySummary>, StoreError> {
        Ok(self
            .activities(std::slice::from_ref(user))
            .await?
            .pop()
            .flatten())
    }

    /// The aggregates of many users in one round trip; `None` for a user with none.
    pub async fn activities(
        &self,
        users: &[CustomerId],
    ) -> Result<Vec<Option<ActivitySummary>>, StoreError> {
        let mut pipe = redis::pipe();
        for user in users {
            pipe.hgetall(self.keys.activity_key(user));
        }
        let all: Vec<BTreeMap<String, String>> = self.query_pipe(&pipe).await?;
        Ok(all
            .into_iter()
            .zip(users)
            .map(|(fields, user)| summary_of(user, &fields))
            .collect())
    }

    /// Credits each sale's points unless that sale was credited before; `true` for those
    /// credited now.
    pub async fn credit_loyalty(
        &self,
        credits: &[LoyaltyCredit],
        dedup_window: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        if credits.is_empty() {
            return Ok(Vec::new());
        }
        let script = &*LOYALTY;
        let ttl = dedup_window.as_secs().max(1);
        let mut pipe = redis::pipe();
        for credit in credits {
            let key = self.keys.loyalty_key(&credit.member);
            let line = serde_json::to_string(&CreditLine {
                sale_id: credit.sale.to_string(),
                points: credit.points,
                total: from_cents(credit.total_cents),
                at_ms: credit.at_ms,
            })
            .unwrap_or_default();
            pipe.invoke_script(
                script
                    .key(&key)
                    .key(format!("{key}:sale:{}", credit.sale))
                    .key(format!("{key}:recent"))
                    .arg(ttl)
                    .arg(credit.points)
                    .arg(credit.sale.as_str())
                    .arg(credit.total_cents)
                    .arg(credit.at_ms)
                    .arg(line),
            );
        }
        let credited: Vec<i64> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
        Ok(credited.into_iter().map(|n| n == 1).collect())
    }

    pub async fn loyalty(&self, member: &MemberId) -> Result<Option<LoyaltyAccount>, StoreError> {
        let key = self.keys.loyalty_key(member);
        let mut pipe = redis::pipe();
        pipe.hgetall(&key).lrange(format!("{key}:recent"), 0, 19);
        let (fields, recent): (BTreeMap<String, String>, Vec<String>) =
            self.query_pipe(&pipe).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let n = |f: &str| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0i64);
        Ok(Some(LoyaltyAccount {
            customer: member.to_string(),
            points: n("points"),
            sales: n("sales").max(0) as u64,
            spent: from_cents(n("spent_cents")),
            last_sale_id: fields.get("last_sale_id").cloned(),
            updated_ms: fields.get("updated_ms").and_then(|v| v.parse().ok()),
            recent: recent
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }))
    }

    /// Creates each sale's confirmation request unless it exists, with records kept for
    /// `keep` (the dedup window): says for each whether it must be published.
    pub async fn open_confirmations(
        &self,
        requests: &[(RequestId, Message)],
        keep: Duration,
    ) -> Result<Vec<Confirmation>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let script = &*OPEN_REQUEST;
        let mut pipe = redis::pipe();
        for (id, msg) in requests {
            pipe.invoke_script(
                script
                    .key(self.keys.request(id))
                    .arg(&msg.to)
                    .arg(&msg.message)
                    .arg(msg.channel.as_str())
                    .arg(keep.as_secs().max(1)),
            );
        }
        let replies: Vec<String> = self.query_pipe_with_scripts(&pipe, &[script]).await?;
        replies
            .into_iter()
            .map(|r| match r.as_str() {
                "new" => Ok(Confirmation::New),
                "queued" => Ok(Confirmation::Queued),
                other => RequestStatus::parse(other)
                    .map(Confirmation::Handled)
                    .ok_or_else(|| StoreError::Corrupt {
                        key: "confirmation request".into(),
                        what: format!("status {other:?}"),
                    }),
            })
            .collect()
    }
}

fn summary_of(user: &CustomerId, fields: &BTreeMap<String, String>) -> Option<ActivitySummary> {
    if fields.is_empty() {
        return None;
    }
    let n = |f: &str| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    Some(ActivitySummary {
        user_id: user.to_string(),
        events: UserAction::ALL.iter().map(|a| n(a.as_str())).sum(),
        clicks: n("click"),
        views: n("view"),
        add_to_cart: n("add_to_cart"),
        purchases: n("purchase"),
        spent: from_cents(n("spent_cents") as i64),
        categories: fields
            .iter()
            .filter_map(|(f, v)| Some((f.strip_prefix("cat:")?.to_string(), v.parse().ok()?)))
            .collect(),
        last_seen_ms: fields.get("last_seen_ms").and_then(|v| v.parse().ok()),
    })
}
