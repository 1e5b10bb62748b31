//! What building an adapter from the providers file needs, shared by every adapter: the
//! [`AdapterSettings`] each adapter's own settings type implements, the [`Setup`] it is built
//! with (the channel, the resilience settings, the program's flags) and the one error type.

use std::path::PathBuf;
use std::time::Duration;

use super::resilient::ResilienceError;
use super::Transport;
use crate::config::{ProviderArgs, ProvidersArgs};
use crate::model::Channel;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("cannot read the providers file {path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("the providers file {path} is not valid: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("providers file, [{channel}]: {what}")]
    Invalid { channel: Channel, what: String },
    #[error("the environment variable {0} named in the providers file is not set")]
    MissingSecret(String),
    #[error("e-mail through SMTP needs {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Unsubscribe(#[from] crate::auth::secrets::WeakSecret),
    /// An adapter's own set-up error (a bad SMTP URL, an unreadable key file...).
    #[error(transparent)]
    Adapter(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
    #[error("cannot build an HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl ProvidersError {
    /// An adapter's set-up error: the adapters' error types stay in their files (this one
    /// imports none of them).
    pub fn adapter(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ProvidersError::Adapter(Box::new(e))
    }
}

/// An adapter's own settings, as its table in the providers file holds them (after the
/// keys every provider has: `name`, `weight` and the resilience overrides).
pub trait AdapterSettings {
    /// The file's `adapter = "..."`, also shown on the dashboard and in metrics.
    const KIND: &'static str;

    /// Whether the adapter can send `channel`.
    fn sends(channel: Channel) -> bool;

    /// Builds the adapter, resolving the secrets its settings name.
    fn build(&self, setup: &Setup) -> Result<Box<dyn Transport>, ProvidersError>;
}

/// What one provider is built with.
pub struct Setup<'a> {
    pub channel: Channel,
    /// The flags' resilience settings with the provider's own overrides applied.
    pub args: ProviderArgs,
    /// The program's provider flags (the SMTP shortcut, the sender, the public URL...).
    pub flags: &'a ProvidersArgs,
}

impl Setup<'_> {
    pub fn invalid(&self, what: impl Into<String>) -> ProvidersError {
        ProvidersError::Invalid {
            channel: self.channel,
            what: what.into(),
        }
    }

    /// Refuses a URL that would carry a key (or mail) in clear to a host not allowed to.
    pub fn in_clear(&self, url: &str, carries_key: bool) -> Result<(), ProvidersError> {
        super::cleartext::check(url, carries_key, &self.flags.plaintext_hosts)
            .map_err(|e| self.invalid(e))
    }

    /// The provider's `url`, else its public API, checked: these adapters send a key or a
    /// token with every call.
    pub fn api_url(&self, url: &Option<String>, public: &str) -> Result<String, ProvidersError> {
        let url = url.clone().unwrap_or_else(|| public.to_string());
        self.in_clear(&url, true).map(|()| url)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.args.provider_timeout_ms)
    }

    pub fn concurrency(&self) -> usize {
        self.args.provider_concurrency
    }
}

/// A secret named by the file: the variable must be set (its value is never shown).
pub fn env(var: &str) -> Result<Secret, ProvidersError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::from(v.as_str()))
        .ok_or_else(|| ProvidersError::MissingSecret(var.to_string()))
}
