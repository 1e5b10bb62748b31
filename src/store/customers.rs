//! Customers as Herald knows them: a profile per customer (where each channel reaches them,
//! consent, time zone, template attributes) and the GEO set of their locations that flash
//! promos segment by.

use std::collections::BTreeSet;

use super::{CustomerStore, Lua, StoreError};
use crate::model::{Channel, Customer, CustomerId};

// KEYS[1] profile. ARGV: the text read, the text to write. Writes only if nobody wrote since.
static SWAP: Lua = Lua::new(
    r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"#,
);

/// A stored profile; `None` (with a warning) for one that no longer reads.
pub(super) fn decode_profile(id: &CustomerId, json: &str) -> Option<Customer> {
    serde_json::from_str(json)
        .map_err(|e| tracing::warn!(customer = %id, error = %e, "unreadable customer profile"))
        .ok()
}

impl CustomerStore {
    /// Stores (or replaces) a customer; its location also goes into the GEO set.
    pub async fn put_customers(
        &self,
        customers: &[(CustomerId, Customer)],
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (id, c) in customers {
            let json = serde_json::to_string(c).map_err(|e| StoreError::Corrupt {
                key: self.keys.customer_key(id),
                what: e.to_string(),
            })?;
            pipe.set(self.keys.customer_key(id), json).ignore();
            if !c.attributes.is_empty() {
                pipe.sadd(
                    self.keys.attribute_names_key(),
                    c.attributes.keys().collect::<Vec<_>>(),
                )
                .ignore();
            }
            match c.location {
                Some(loc) => pipe
                    .cmd("GEOADD")
                    .arg(self.keys.geo_key())
                    .arg(loc.lon)
                    .arg(loc.lat)
                    .arg(id.as_str())
                    .ignore(),
                None => pipe.zrem(self.keys.geo_key(), id.as_str()).ignore(),
            };
        }
        self.query_pipe::<()>(&pipe).await
    }

    /// Removes `address` from the customer's contacts on `channel` if it is still the one
    /// there (a push token FCM says is gone); `true` if it was removed. Compare-and-set, so
    /// a profile rewritten in between is left as it is.
    pub async fn forget_contact(
        &self,
        id: &CustomerId,
        channel: Channel,
        address: &str,
    ) -> Result<bool, StoreError> {
        let key = self.keys.customer_key(id);
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            key: key.clone(),
            what: e.to_string(),
        };
        for _ in 0..5 {
            let mut pipe = redis::pipe();
            pipe.get(&key);
            let (raw,): (Option<String>,) = self.query_pipe(&pipe).await?;
            let Some(raw) = raw else { return Ok(false) };
            let mut customer: Customer = serde_json::from_str(&raw).map_err(corrupt)?;
            if customer.contacts.get(&channel).map(String::as_str) != Some(address) {
                return Ok(false);
            }
            customer.contacts.remove(&channel);
            customer.consent.remove(&channel);
            let after = serde_json::to_string(&customer).map_err(corrupt)?;
            if self.eval_flag(SWAP.key(&key).arg(&raw).arg(&after)).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The attribute names customers' profiles have carried (names are never forgotten: a
    /// template naming one renders it empty for a customer without it).
    pub async fn attribute_names(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.smembers(self.keys.attribute_names_key());
        let (names,): (BTreeSet<String>,) = self.query_pipe(&pipe).await?;
        Ok(names)
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Option<Customer>, StoreError> {
        Ok(self
            .customers(std::slice::from_ref(id))
            .await?
            .pop()
            .flatten())
    }

    /// Profiles of many customers in one round trip; `None` for an unknown (or unreadable) one.
    pub async fn customers(&self, ids: &[CustomerId]) -> Result<Vec<Option<Customer>>, StoreError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.get(self.keys.customer_key(id));
        }
        let raw: Vec<Option<String>> = self.query_pipe(&pipe).await?;
        Ok(raw
            .into_iter()
            .zip(ids)
            .map(|(json, id)| json.and_then(|j| decode_profile(id, &j)))
            .collect())
    }
}
