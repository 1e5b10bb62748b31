//! Who may call Herald, and how that is proven:
//!
//! - [`keys`]: service API keys with scopes, for machine callers (the shop backend, the
//!   campaign tool, the `herald` CLI), kept hashed in a file the operator mounts as a secret.
//! - [`jwt`]: shoppers' bearer tokens for the flash-promo API, and the per-caller rate limit.
//! - [`signature`]: the HMAC signature a provider puts on the receipts it posts.
//! - [`unsubscribe`]: the signed token of a promotional e-mail's one-click unsubscribe link.
//! - [`webhooks`]: the signatures Twilio and Meta put on their status webhooks.
//! - [`secrets`]: the start-up check that refuses empty, short or example secrets.

pub(crate) mod hex;
mod hs256;
pub mod jwt;
pub mod keys;
mod scope;
pub mod secrets;
pub mod session;
pub mod signature;
pub mod unsubscribe;
pub mod webhooks;

pub use jwt::{AuthError, CallerLimit, Claims, Jwt, JwtPolicy, Role};
pub use keys::{ApiKey, Caller, KeyError, KeyStore};
pub use scope::Scope;
pub use unsubscribe::UnsubscribeTokens;
