//! Which adapter sends each channel, with what settings: the providers file
//! (`HERALD_PROVIDERS`, TOML), or without one today's behaviour (every channel through the
//! seed 001 `http` adapter), with e-mail switched to SMTP when `HERALD_SMTP_URL` is set.
//! Secrets are named by environment variable in the file, never written in it.
//!
//! ```toml
//! [email]
//! adapter = "smtp"
//! url_env = "SHOP_SMTP_URL"          # smtp://user:password@relay.shop.example:587?tls=required
//! from = "Shop <offers@shop.example>"
//! rate = 50                          # per second; and concurrency, timeout_ms, max_attempts
//!
//! [sms]
//! adapter = "http"
//! url = "https://notify.shop.example"
//! api_key_env = "SHOP_NOTIFY_KEY"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::http::{HttpAdapterError, HttpTransport};
use super::resilient::ResilienceError;
use super::smtp::{SmtpSettings, SmtpSetupError, SmtpTransport, UnsubscribeLinks};
use super::{Provider, Resilience, Transport};
use crate::auth::UnsubscribeTokens;
use crate::config::ProviderArgs;
use crate::model::Channel;
use crate::secret::Secret;

/// Where providers are configured: the file, or the environment's shortcuts.
#[derive(clap::Args, Debug, Clone)]
pub struct ProvidersArgs {
    /// A TOML file saying which adapter sends each channel (see docs/operations.md).
    /// Without it every channel uses the `http` adapter (seed 001's contract), and e-mail
    /// uses SMTP when --smtp-url is set.
    #[arg(long, env = "HERALD_PROVIDERS")]
    pub providers: Option<PathBuf>,

    /// Sends e-mail through this SMTP server: smtp://host:2525, smtp://user:password@host:587?tls=required,
    /// smtps://host:465. Never logged.
    #[arg(long, env = "HERALD_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret>,

    /// The sender of e-mails whose campaign names none, e.g. "Shop <offers@shop.example>".
    #[arg(long, env = "HERALD_EMAIL_FROM")]
    pub email_from: Option<String>,

    /// The subject of transactional e-mails (seed 001 requests carry only a body).
    #[arg(long, env = "HERALD_EMAIL_SUBJECT", default_value = DEFAULT_SUBJECT)]
    pub email_subject: String,

    /// Herald's public base URL (https://herald.shop.example): unsubscribe links point at
    /// `{url}/v1/unsubscribe/...`, served by herald-ingest.
    #[arg(long, env = "HERALD_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Signs unsubscribe links (at least 32 bytes); herald-ingest checks them with the same.
    #[arg(long, env = "HERALD_UNSUBSCRIBE_SECRET", hide_env_values = true)]
    pub unsubscribe_secret: Option<Secret>,

    /// An address that also unsubscribes, offered as the `mailto:` of `List-Unsubscribe`.
    #[arg(long, env = "HERALD_UNSUBSCRIBE_MAILTO")]
    pub unsubscribe_mailto: Option<String>,
}

/// The subject of a transactional e-mail when nothing else names one.
pub const DEFAULT_SUBJECT: &str = "Notification";

impl Default for ProvidersArgs {
    fn default() -> Self {
        ProvidersArgs {
            providers: None,
            smtp_url: None,
            email_from: None,
            email_subject: DEFAULT_SUBJECT.into(),
            public_url: None,
            unsubscribe_secret: None,
            unsubscribe_mailto: None,
        }
    }
}

impl ProvidersArgs {
    /// A variable set to nothing (compose's `${HERALD_SMTP_URL:-}`) is a setting not made.
    fn without_empty_values(&self) -> ProvidersArgs {
        let text = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let secret = |v: &Option<Secret>| v.clone().filter(|s| !s.expose().trim().is_empty());
        ProvidersArgs {
            providers: self.providers.clone().filter(|p| !p.as_os_str().is_empty()),
            smtp_url: secret(&self.smtp_url),
            email_from: text(&self.email_from),
            email_subject: self.email_subject.clone(),
            public_url: text(&self.public_url),
            unsubscribe_secret: secret(&self.unsubscribe_secret),
            unsubscribe_mailto: text(&self.unsubscribe_mailto),
        }
    }
}

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
    #[error(transparent)]
    Smtp(#[from] SmtpSetupError),
    #[error(transparent)]
    Http(#[from] HttpAdapterError),
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// Seed 001's contract: what every channel uses unless told otherwise.
    #[default]
    Http,
    Smtp,
}

/// One channel's provider as the file writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Shown on the dashboard and in metrics; the adapter's kind when absent.
    pub name: Option<String>,
    pub adapter: AdapterKind,
    /// http: the provider's base URL.
    pub url: Option<String>,
    /// smtp: the variable holding the SMTP URL; http: may hold the base URL instead of `url`.
    pub url_env: Option<String>,
    /// http: the variable holding the API key.
    pub api_key_env: Option<String>,
    /// smtp: the default sender.
    pub from: Option<String>,
    /// smtp: the subject of transactional e-mails.
    pub subject: Option<String>,
    pub rate: Option<f64>,
    pub max_rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
}

/// What sends each channel, read and checked, secrets not yet resolved.
#[derive(Debug, Clone)]
pub struct ProvidersConfig {
    channels: BTreeMap<Channel, ProviderEntry>,
    args: ProvidersArgs,
}

impl ProvidersConfig {
    /// Reads the file if there is one, else the built-in default with the SMTP shortcut.
    pub fn load(args: &ProvidersArgs) -> Result<Self, ProvidersError> {
        let args = args.without_empty_values();
        let channels = match &args.providers {
            Some(path) => Self::read(path)?,
            None => Self::default_channels(&args),
        };
        Ok(ProvidersConfig { channels, args })
    }

    fn read(path: &PathBuf) -> Result<BTreeMap<Channel, ProviderEntry>, ProvidersError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProvidersError::Read {
            path: path.clone(),
            error: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ProvidersError::Parse {
            path: path.clone(),
            error: e.to_string(),
        })
    }

    fn default_channels(args: &ProvidersArgs) -> BTreeMap<Channel, ProviderEntry> {
        Channel::ALL
            .into_iter()
            .map(|channel| {
                let smtp = channel == Channel::Email && args.smtp_url.is_some();
                let entry = if smtp {
                    ProviderEntry {
                        adapter: AdapterKind::Smtp,
                        url_env: Some("HERALD_SMTP_URL".to_string()),
                        ..ProviderEntry::default()
                    }
                } else {
                    ProviderEntry::default()
                };
                (channel, entry)
            })
            .collect()
    }

    /// Which adapter each channel uses, and its name: for `--help`-level reporting.
    pub fn summary(&self) -> Vec<(Channel, String, AdapterKind)> {
        self.channels
            .iter()
            .map(|(c, e)| (*c, entry_name(e), e.adapter))
            .collect()
    }

    /// Builds the provider of `channel`, resolving its secrets; `defaults` are the flags'
    /// resilience settings, which the file may override per provider.
    pub fn build(
        &self,
        channel: Channel,
        defaults: &ProviderArgs,
    ) -> Result<Provider, ProvidersError> {
        let entry = self.channels.get(&channel).cloned().unwrap_or_default();
        let invalid = |what: &str| ProvidersError::Invalid {
            channel,
            what: what.into(),
        };
        let mut args = defaults.clone();
        if let Some(v) = entry.rate {
            args.provider_rate = v;
        }
        if let Some(v) = entry.max_rate {
            args.provider_max_rate = v;
        }
        if let Some(v) = entry.concurrency {
            args.provider_concurrency = v;
        }
        if let Some(v) = entry.timeout_ms {
            args.provider_timeout_ms = v;
        }
        if let Some(v) = entry.max_attempts {
            args.provider_max_attempts = v;
        }
        let resilience = Resilience::new(&args)?;
        let transport: Box<dyn Transport> = match entry.adapter {
            AdapterKind::Http => {
                if let Some(url) = &entry.url {
                    args.provider_url = url.clone();
                } else if let Some(var) = &entry.url_env {
                    args.provider_url = env(var)?.expose().to_string();
                }
                if let Some(var) = &entry.api_key_env {
                    args.provider_api_key = Some(env(var)?);
                }
                Box::new(HttpTransport::new(&args)?)
            }
            AdapterKind::Smtp => {
                if channel != Channel::Email {
                    return Err(invalid("the smtp adapter sends e-mail only"));
                }
                let url = match (&entry.url_env, &self.args.smtp_url) {
                    (Some(var), Some(flag)) if var == "HERALD_SMTP_URL" => flag.clone(),
                    (Some(var), _) => env(var)?,
                    (None, _) => {
                        return Err(invalid(
                            "an smtp provider needs url_env, the variable holding its SMTP URL",
                        ))
                    }
                };
                let from = entry.from.clone().or(self.args.email_from.clone()).ok_or(
                    ProvidersError::Missing(
                        "a sender: HERALD_EMAIL_FROM or `from` in the providers file",
                    ),
                )?;
                Box::new(SmtpTransport::new(SmtpSettings {
                    url,
                    from,
                    default_subject: entry
                        .subject
                        .clone()
                        .unwrap_or(self.args.email_subject.clone()),
                    timeout: Duration::from_millis(args.provider_timeout_ms),
                    pool_size: args.provider_concurrency.min(u32::MAX as usize) as u32,
                    unsubscribe: self.unsubscribe_links()?,
                })?)
            }
        };
        let adapter = match entry.adapter {
            AdapterKind::Http => "http",
            AdapterKind::Smtp => "smtp",
        };
        Ok(Provider::new(
            entry_name(&entry),
            adapter,
            transport,
            resilience,
        ))
    }

    /// Promotional e-mail must carry a working one-click unsubscribe link: without the
    /// public URL and the signing secret the SMTP adapter does not start.
    fn unsubscribe_links(&self) -> Result<UnsubscribeLinks, ProvidersError> {
        let base_url = self.args.public_url.clone().ok_or(ProvidersError::Missing(
            "HERALD_PUBLIC_URL, the base of unsubscribe links",
        ))?;
        let secret = self
            .args
            .unsubscribe_secret
            .as_ref()
            .ok_or(ProvidersError::Missing(
                "HERALD_UNSUBSCRIBE_SECRET, which signs unsubscribe links",
            ))?;
        Ok(UnsubscribeLinks {
            base_url,
            tokens: UnsubscribeTokens::new(secret)?,
            mailto: self.args.unsubscribe_mailto.clone(),
        })
    }
}

fn entry_name(e: &ProviderEntry) -> String {
    e.name.clone().unwrap_or_else(|| {
        match e.adapter {
            AdapterKind::Http => "http",
            AdapterKind::Smtp => "smtp",
        }
        .to_string()
    })
}

/// A secret named by the file: the variable must be set (its value is never shown).
fn env(var: &str) -> Result<Secret, ProvidersError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::from(v.as_str()))
        .ok_or_else(|| ProvidersError::MissingSecret(var.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<Channel, ProviderEntry>, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn the_file_names_an_adapter_per_channel_and_refuses_what_it_does_not_know() {
        let ok = parse(
            "[email]\nadapter = \"smtp\"\nurl_env = \"X\"\nfrom = \"a@b.test\"\n[sms]\nadapter = \"http\"\nurl = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(ok[&Channel::Email].adapter, AdapterKind::Smtp);
        assert!(parse("[fax]\nadapter = \"http\"\n").is_err());
        assert!(parse("[email]\nadapter = \"pigeon\"\n").is_err());
        // A secret written inline is refused: only the variable's name may be there.
        assert!(parse("[email]\nadapter = \"smtp\"\npassword = \"hunter2\"\n").is_err());
    }

    #[test]
    fn the_documented_example_file_parses() {
        let example = parse(include_str!("../../config/providers.example.toml")).unwrap();
        assert_eq!(example[&Channel::Email].adapter, AdapterKind::Smtp);
        assert_eq!(example[&Channel::Sms].adapter, AdapterKind::Http);
    }

    #[test]
    fn without_a_file_email_goes_to_smtp_only_when_its_url_is_set() {
        let args = ProvidersArgs::default();
        let plain = ProvidersConfig::load(&args).unwrap();
        assert!(plain
            .summary()
            .iter()
            .all(|(_, _, a)| *a == AdapterKind::Http));
        let smtp = ProvidersConfig::load(&ProvidersArgs {
            smtp_url: Some("smtp://127.0.0.1:2525".into()),
            ..args
        })
        .unwrap();
        let kinds: BTreeMap<Channel, AdapterKind> =
            smtp.summary().into_iter().map(|(c, _, a)| (c, a)).collect();
        assert_eq!(kinds[&Channel::Email], AdapterKind::Smtp);
        assert_eq!(kinds[&Channel::Sms], AdapterKind::Http);
    }

    #[tokio::test]
    async fn smtp_without_a_sender_or_unsubscribe_settings_does_not_start() {
        let defaults = ProviderArgs::for_tests(10.0, 10.0);
        let mut args = ProvidersArgs {
            smtp_url: Some("smtp://127.0.0.1:2525".into()),
            ..Default::default()
        };
        let build = |a: &ProvidersArgs| {
            ProvidersConfig::load(a)
                .unwrap()
                .build(Channel::Email, &defaults)
                .err()
                .map(|e| e.to_string())
        };
        assert!(build(&args).unwrap().contains("HERALD_EMAIL_FROM"));
        args.email_from = Some("Shop <offers@shop.test>".into());
        assert!(build(&args).unwrap().contains("HERALD_PUBLIC_URL"));
        args.public_url = Some("https://herald.shop.test".into());
        assert!(build(&args).unwrap().contains("HERALD_UNSUBSCRIBE_SECRET"));
        args.unsubscribe_secret = Some("s".repeat(40).as_str().into());
        assert_eq!(build(&args), None);
    }
}
