//! Customers' preferences (`{ns}:prefs:{CUSTOMER}`: what they said no to, absent for a
//! customer who never chose) and the profiles promotions see through them.

use super::{CustomerStore, Lua, StoreError};
use crate::model::{Customer, CustomerId, Preferences, Topic};

// KEYS[1] preferences. ARGV: the text read ('' for none), the text to write ('' deletes).
// Writes only if nobody wrote since.
static SWAP_PREFERENCES: Lua = Lua::new(
    r#"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"#,
);

fn decode(key: &str, raw: Option<&str>) -> Result<Preferences, StoreError> {
    match raw {
        None | Some("") => Ok(Preferences::everything()),
        Some(json) => serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            what: e.to_string(),
        }),
    }
}

fn encode(p: &Preferences) -> String {
    if *p == Preferences::everything() {
        String::new()
    } else {
        serde_json::to_string(p).unwrap_or_default()
    }
}

impl CustomerStore {
    pub async fn preferences(&self, id: &CustomerId) -> Result<Preferences, StoreError> {
        let key = self.keys.preferences_key(id);
        let mut pipe = redis::pipe();
        pipe.get(&key);
        let (raw,): (Option<String>,) = self.query_pipe(&pipe).await?;
        decode(&key, raw.as_deref())
    }

    /// Changes a customer's preferences with `change`; answers (before, after). A write
    /// made meanwhile (the page and the API at once) makes it read and change again.
    pub async fn update_preferences(
        &self,
        id: &CustomerId,
        change: impl Fn(&mut Preferences),
    ) -> Result<(Preferences, Preferences), StoreError> {
        let key = self.keys.preferences_key(id);
        for _ in 0..10 {
            let mut pipe = redis::pipe();
            pipe.get(&key);
            let (raw,): (Option<String>,) = self.query_pipe(&pipe).await?;
            let raw = raw.unwrap_or_default();
            let before = decode(&key, Some(&raw))?;
            let mut after = before.clone();
            change(&mut after);
            if after == before
                || self
                    .eval_flag(SWAP_PREFERENCES.key(&key).arg(&raw).arg(encode(&after)))
                    .await?
            {
                return Ok((before, after));
            }
        }
        Err(StoreError::Batch(format!(
            "preferences of {id} kept changing; try again"
        )))
    }

    /// Profiles as a promotion of `topic` may use them: consent is taken away (in this copy
    /// only) on each channel the customer refused for the topic, unsubscribed from, or whose
    /// address is undeliverable, so the rules pass over it. Two round trips for a batch.
    pub async fn promotable_customers(
        &self,
        ids: &[CustomerId],
        topic: &Topic,
    ) -> Result<Vec<Option<Customer>>, StoreError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.get(self.keys.customer_key(id))
                .get(self.keys.preferences_key(id));
        }
        let raw: Vec<Option<String>> = self.query_pipe(&pipe).await?;
        let mut profiles = Vec::with_capacity(ids.len());
        for (id, pair) in ids.iter().zip(raw.chunks(2)) {
            let mut profile = pair[0]
                .as_deref()
                .and_then(|json| super::customers::decode_profile(id, json));
            if let (Some(p), Some(prefs)) =
                (profile.as_mut(), pair.get(1).and_then(|r| r.as_deref()))
            {
                let prefs = decode(&self.keys.preferences_key(id), Some(prefs)).unwrap_or_else(|e| {
                    // Unreadable choices: the safe reading is that the customer refused.
                    tracing::warn!(customer = %id, error = %e, "unreadable preferences; no promotion");
                    Preferences { promotions: false, ..Preferences::everything() }
                });
                for (channel, consent) in p.consent.iter_mut() {
                    *consent = *consent && prefs.allows(topic, *channel);
                }
            }
            profiles.push(profile);
        }
        self.for_promotions(ids, profiles).await
    }
}
