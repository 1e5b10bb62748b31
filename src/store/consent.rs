//! The consent log: every change of a customer's consent or suppression, appended with its
//! time, source (`api`, `one-click`, `sms-stop`, `whatsapp-stop`, `bounce`), actor (the key's
//! name, `link`, the customer's reply) and old and new value, for a data-access request.
//!
//! Changes made to a customer (`{ns}:consent:{CUSTOMER}`) and changes made to an address
//! (`{ns}:consent:addr:CHANNEL:ADDRESS`: a STOP reply or a bounce names a number or a
//! mailbox, not a customer) are kept apart; a customer's log reads both, for the addresses
//! the profile has now. Each list keeps the newest [`KEPT_PER_LIST`] changes, for
//! [`RETENTION`] after its latest.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{CustomerStore, StoreError};
use crate::model::{now_ms, rfc3339, Channel, CustomerId};

/// How long a log is kept after its latest change (a data-access request may ask back that
/// far; GDPR asks that consent be provable for as long as it is relied on).
pub const RETENTION: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Changes kept per customer and per address.
pub const KEPT_PER_LIST: isize = 1000;

/// One change of consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentChange {
    /// When, RFC 3339 (filled in when read).
    #[serde(default)]
    pub at: String,
    pub at_ms: u64,
    /// `api`, `one-click`, `sms-stop`, `whatsapp-stop` or `bounce`.
    pub source: String,
    /// Who: a service key's name, `link` (a signed unsubscribe link), `customer reply`.
    pub actor: String,
    /// What changed: `consent:email`, `promotions:email`, `address:sms`...
    pub what: String,
    pub old: String,
    pub new: String,
}

impl ConsentChange {
    pub fn now(source: &str, actor: &str, what: String, old: &str, new: &str) -> ConsentChange {
        ConsentChange {
            at: String::new(),
            at_ms: now_ms(),
            source: source.into(),
            actor: actor.chars().take(100).collect(),
            what,
            old: old.into(),
            new: new.chars().take(300).collect(),
        }
    }
}

/// A page of a customer's consent log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConsentPage {
    pub changes: Vec<ConsentChange>,
    /// Pass as `offset` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<usize>,
}

impl CustomerStore {
    /// Appends each list's changes, all in one round trip.
    async fn append(&self, lists: &[(String, &[ConsentChange])]) -> Result<(), StoreError> {
        if lists.iter().all(|(_, c)| c.is_empty()) {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, changes) in lists.iter().filter(|(_, c)| !c.is_empty()) {
            for change in *changes {
                let json = serde_json::to_string(change).map_err(|e| StoreError::Corrupt {
                    key: key.clone(),
                    what: e.to_string(),
                })?;
                pipe.lpush(key, json).ignore();
            }
            pipe.ltrim(key, 0, KEPT_PER_LIST - 1)
                .ignore()
                .expire(key, RETENTION.as_secs() as i64)
                .ignore();
        }
        self.query_pipe::<()>(&pipe).await
    }

    /// Appends changes made to customers (a batch of profiles: one round trip).
    pub async fn log_consent(
        &self,
        changes: &[(CustomerId, Vec<ConsentChange>)],
    ) -> Result<(), StoreError> {
        let lists: Vec<(String, &[ConsentChange])> = changes
            .iter()
            .map(|(customer, c)| (self.keys.consent_key(customer), c.as_slice()))
            .collect();
        self.append(&lists).await
    }

    /// Appends a change made to an address (a STOP reply, a bounce).
    pub async fn log_address_consent(
        &self,
        channel: Channel,
        address: &str,
        change: ConsentChange,
    ) -> Result<(), StoreError> {
        let key = self.keys.address_consent_key(channel, address);
        self.append(&[(key, std::slice::from_ref(&change))]).await
    }

    /// A page of a customer's log, newest first: its own changes and those of the addresses
    /// its profile has now.
    pub async fn consent_log(
        &self,
        customer: &CustomerId,
        offset: usize,
        limit: usize,
    ) -> Result<ConsentPage, StoreError> {
        let mut keys = vec![self.keys.consent_key(customer)];
        if let Some(profile) = self.customer(customer).await? {
            for (channel, address) in &profile.contacts {
                keys.push(self.keys.address_consent_key(*channel, address));
            }
        }
        let mut changes: Vec<ConsentChange> = Vec::new();
        for key in keys {
            let (mut c, generation) = self.connection();
            let raw: Vec<String> = self
                .bounded(generation, c.lrange(&key, 0, KEPT_PER_LIST - 1))
                .await?;
            changes.extend(raw.iter().filter_map(|r| serde_json::from_str(r).ok()));
        }
        changes.sort_by_key(|c| std::cmp::Reverse(c.at_ms));
        let total = changes.len();
        let changes: Vec<ConsentChange> = changes
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|c| ConsentChange {
                at: rfc3339(c.at_ms),
                ..c
            })
            .collect();
        let next = (offset + changes.len() < total).then_some(offset + changes.len());
        Ok(ConsentPage { changes, next })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::suppression::normalise;

    #[test]
    fn an_address_is_logged_under_the_key_its_suppression_uses() {
        assert_eq!(normalise(" whatsapp:+34600111222 "), "34600111222");
        assert_eq!(normalise("Ana@Shop.Example"), "ana@shop.example");
    }
}
