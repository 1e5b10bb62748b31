//! Talking to the external notification provider, resiliently.
//! Nothing outside this module makes an HTTP call to the provider.

pub mod breaker;
pub mod client;
pub mod limiter;

pub use breaker::CircuitState;
pub use client::{ProviderClient, SendOutcome, API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER};
