//! Shoppers' credentials for the flash-promo API (seed 002): JWT bearer tokens signed with
//! HS256 and a shared secret from configuration, carrying the caller's id (`sub`) and role;
//! and a rate limit per caller (shoppers and service keys alike). Crates: `jsonwebtoken` (its `ring` backend is already in the tree
//! through rustls) and `governor` (keyed GCRA limiter, the engine behind tower-governor;
//! used directly because the key is the verified `sub`, known only after authentication).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a caller may do: an admin creates promos; a user reserves and buys for themself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller's id: for a user, their customer id.
    pub sub: String,
    pub role: Role,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    pub iat: u64,
    /// Who issued it, when the deployment names an issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Whom it is for, when the deployment names an audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// What a token must carry besides a valid signature: the issuer and audience, when the
/// deployment names them (tokens from an identity provider carry both), and a lifetime no
/// longer than `max_lifetime` (a leaked token stops working soon).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct JwtPolicy {
    /// The `iss` every token must carry (and `herald-dev token` writes); unchecked when unset.
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The `aud` every token must carry (and `herald-dev token` writes); unchecked when unset.
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Longest lifetime (exp - iat) a token may have, in seconds.
    #[arg(long, env = "HERALD_JWT_MAX_LIFETIME_SECS", default_value_t = JwtPolicy::default().jwt_max_lifetime_secs)]
    pub jwt_max_lifetime_secs: u64,
}

impl Default for JwtPolicy {
    fn default() -> Self {
        JwtPolicy {
            jwt_issuer: None,
            jwt_audience: None,
            jwt_max_lifetime_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error(transparent)]
    WeakSecret(#[from] super::secrets::WeakSecret),
}

/// Signs and checks tokens with one HS256 secret.
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    policy: JwtPolicy,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jwt(***)")
    }
}

impl Jwt {
    pub fn new(secret: &str) -> Result<Self, AuthError> {
        Jwt::with_policy(secret, JwtPolicy::default())
    }

    pub fn with_policy(secret: &str, policy: JwtPolicy) -> Result<Self, AuthError> {
        super::secrets::check("HERALD_JWT_SECRET", secret)?;
        super::hs256::install();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        if let Some(iss) = &policy.jwt_issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &policy.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Ok(Jwt {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            policy,
        })
    }

    /// A token for `sub` with `role`, valid for `ttl`.
    pub fn mint(&self, sub: &str, role: Role, ttl: Duration) -> Result<String, AuthError> {
        let now = crate::model::now_ms() / 1000;
        let claims = Claims {
            sub: sub.to_string(),
            role,
            iat: now,
            exp: now + ttl.as_secs(),
            iss: self.policy.jwt_issuer.clone(),
            aud: self.policy.jwt_audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// The claims of a valid, unexpired token signed with this secret.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let now = crate::model::now_ms() / 1000;
        // A future `iat` would let a token outlive the cap: measured from now too.
        if claims.iat > now + self.validation.leeway {
            return Err(AuthError::Invalid(
                "the token is issued in the future".into(),
            ));
        }
        let max = self.policy.jwt_max_lifetime_secs;
        if claims.exp.saturating_sub(claims.iat) > max || claims.exp.saturating_sub(now) > max {
            return Err(AuthError::Invalid(format!(
                "the token lives longer than {max} s"
            )));
        }
        Ok(claims)
    }
}

/// A rate limit per caller: `per_second` sustained, `burst` at once.
pub struct CallerLimit {
    limiter: governor::DefaultKeyedRateLimiter<std::sync::Arc<str>>,
}

impl CallerLimit {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        CallerLimit {
            limiter: governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
        }
    }

    /// `Ok` if `caller` may go now, else how long until they may.
    pub fn check(&self, caller: &str) -> Result<(), Duration> {
        self.check_shared(&std::sync::Arc::from(caller))
    }

    /// As [`CallerLimit::check`], for a name already shared (a key's): no allocation per call.
    pub fn check_shared(&self, caller: &std::sync::Arc<str>) -> Result<(), Duration> {
        match self.limiter.check_key(caller) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Forgets callers whose budget is full again, so the table does not grow for ever.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_carries_its_subject_and_role_and_only_its_secret_verifies_it() {
        let jwt = Jwt::new("a-secret-of-enough-bytes-0123456789").unwrap();
        let token = jwt
            .mint("c-42", Role::User, Duration::from_secs(60))
            .unwrap();
        let claims = jwt.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("c-42", Role::User));
        let other = Jwt::new("another-secret-of-enough-bytes-0123").unwrap();
        assert!(matches!(other.verify(&token), Err(AuthError::Invalid(_))));
        assert!(matches!(Jwt::new("short"), Err(AuthError::WeakSecret(_))));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let jwt = Jwt::new("a-secret-of-enough-bytes-0123456789").unwrap();
        let now = crate::model::now_ms() / 1000;
        let claims = Claims {
            sub: "u".into(),
            role: Role::Admin,
            iat: now - 120,
            exp: now - 60,
            iss: None,
            aud: None,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &jwt.encoding).unwrap();
        assert!(jwt.verify(&token).is_err());
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let jwt = Jwt::new("a-secret-of-enough-bytes-0123456789").unwrap();
        let now = crate::model::now_ms() / 1000;
        // Within the lifetime cap by its own claims, but valid until two days from now.
        let claims = Claims {
            sub: "u".into(),
            role: Role::Admin,
            iat: now + 86_400,
            exp: now + 2 * 86_400,
            iss: None,
            aud: None,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &jwt.encoding).unwrap();
        let refused = jwt.verify(&token).unwrap_err();
        assert!(refused.to_string().contains("future"), "{refused}");
    }

    #[test]
    fn issuer_audience_and_lifetime_are_enforced_when_configured() {
        let secret = "a-secret-of-enough-bytes-0123456789";
        let policy = JwtPolicy {
            jwt_issuer: Some("https://id.shop.example".into()),
            jwt_audience: Some("herald".into()),
            jwt_max_lifetime_secs: 3600,
        };
        let strict = Jwt::with_policy(secret, policy).unwrap();
        let ok = strict
            .mint("c-1", Role::User, Duration::from_secs(600))
            .unwrap();
        assert_eq!(strict.verify(&ok).unwrap().aud.as_deref(), Some("herald"));
        let long = strict
            .mint("c-1", Role::User, Duration::from_secs(7200))
            .unwrap();
        assert!(strict.verify(&long).is_err(), "longer than the cap");
        let anyone = Jwt::new(secret).unwrap();
        let no_iss = anyone
            .mint("c-1", Role::User, Duration::from_secs(600))
            .unwrap();
        assert!(strict.verify(&no_iss).is_err(), "no issuer or audience");
        assert!(anyone.verify(&ok).is_ok(), "unchecked when not configured");
    }

    #[test]
    fn a_token_signed_with_another_algorithm_is_refused() {
        // {"alg":"none"} and {"alg":"HS512"}: never accepted, whatever they carry.
        let jwt = Jwt::new("a-secret-of-enough-bytes-0123456789").unwrap();
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1Iiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjB9.";
        assert!(jwt.verify(none).is_err());
        let hs512 = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1Iiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjB9.AAAA";
        assert!(jwt.verify(hs512).is_err());
    }

    #[test]
    fn each_caller_has_a_budget_of_their_own() {
        let limit = CallerLimit::new(1, 2);
        assert!(limit.check("a").is_ok());
        assert!(limit.check("a").is_ok());
        let wait = limit.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limit.check("b").is_ok(), "another caller is not held up");
    }
}
