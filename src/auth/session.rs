//! Browser sessions for herald-metrics' dashboard: a browser cannot send a bearer key, so a
//! login form takes the key once and answers a cookie. The cookie holds an expiry, the
//! key's SHA-256 (never the key) and an HMAC of both under a secret made at start: it cannot
//! be forged, it ends at its expiry, when the program restarts, or when its key is revoked
//! (checked on every call).

use std::time::Duration;

use ring::hmac;

use super::{Caller, KeyStore, Scope};

/// The cookie's name.
pub const COOKIE: &str = "herald_session";

/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

pub struct Sessions {
    key: hmac::Key,
}

impl Sessions {
    /// Sessions signed with a fresh random secret.
    pub fn new() -> Result<Sessions, super::KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let key =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| super::KeyError::Random)?;
        Ok(Sessions { key })
    }

    /// A session for the key with this hash, from `now_s` (seconds since the epoch).
    pub fn open(&self, key_hash: &str, now_s: u64) -> String {
        let payload = format!("{}.{key_hash}", now_s + LIFETIME.as_secs());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", super::hex::encode(tag.as_ref()))
    }

    /// The caller of a valid, unexpired session whose key is still active and holds `scope`.
    pub fn check(&self, token: &str, keys: &KeyStore, scope: Scope, now_s: u64) -> Option<Caller> {
        let (payload, tag) = token.rsplit_once('.')?;
        let tag = super::hex::decode(tag, 32)?;
        hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        let (expiry, key_hash) = payload.split_once('.')?;
        if expiry.parse::<u64>().ok()? <= now_s {
            return None;
        }
        let caller = keys.caller_by_hash(key_hash)?;
        caller.may(scope).then_some(caller)
    }
}

/// The session cookie of a request's `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_until_expiry_forgery_or_revocation() {
        let path = std::env::temp_dir().join(format!("herald-session-{}.toml", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let ops = super::super::keys::create(&path, "ops", &[Scope::StatsRead]).unwrap();
        let shop = super::super::keys::create(&path, "shop", &[Scope::RequestsWrite]).unwrap();
        let keys = KeyStore::open(&path).unwrap();
        let sessions = Sessions::new().unwrap();
        let now = 1_800_000_000;
        let (_, hash) = keys.authenticate_for_session(ops.expose()).unwrap();
        let token = sessions.open(&hash, now);
        assert!(!token.contains(ops.expose()));
        assert!(sessions
            .check(&token, &keys, Scope::StatsRead, now + 60)
            .is_some());
        let later = now + LIFETIME.as_secs();
        assert!(
            sessions
                .check(&token, &keys, Scope::StatsRead, later)
                .is_none(),
            "expired"
        );
        let forged = format!(
            "{}{}",
            &token[..token.len() - 1],
            if token.ends_with('0') { '1' } else { '0' }
        );
        assert!(
            sessions
                .check(&forged, &keys, Scope::StatsRead, now)
                .is_none(),
            "forged"
        );
        assert!(
            Sessions::new()
                .unwrap()
                .check(&token, &keys, Scope::StatsRead, now)
                .is_none(),
            "another start"
        );
        let (_, shop_hash) = keys.authenticate_for_session(shop.expose()).unwrap();
        let shops = sessions.open(&shop_hash, now);
        assert!(
            sessions
                .check(&shops, &keys, Scope::StatsRead, now)
                .is_none(),
            "scope"
        );
        super::super::keys::revoke(&path, "ops").unwrap();
        assert!(
            sessions
                .check(&token, &keys, Scope::StatsRead, now + 60)
                .is_none(),
            "revoked"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_session_is_read_from_among_other_cookies() {
        assert_eq!(
            from_cookie_header("a=1; herald_session=x.y.z; b=2"),
            Some("x.y.z")
        );
        assert_eq!(from_cookie_header("a=1"), None);
    }
}
