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
//! [[sms]]                            # several: tried in order (failover)
//! adapter = "twilio"
//! account_sid = "AC..."
//! auth_token_env = "TWILIO_AUTH_TOKEN"
//! from = "+15005550006"
//! [[sms]]
//! adapter = "http"
//! url = "https://notify.shop.example"
//! api_key_env = "SHOP_NOTIFY_KEY"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::fcm::{FcmSettings, FcmSetupError, FcmTransport, ServiceAccount};
use super::http::{HttpAdapterError, HttpTransport};
use super::resilient::ResilienceError;
use super::smtp::{SmtpSettings, SmtpSetupError, SmtpTransport, UnsubscribeLinks};
use super::twilio::{TwilioSettings, TwilioTransport};
use super::whatsapp::{WhatsappSettings, WhatsappTransport};
use super::{Provider, ProviderChain, Resilience, Transport};
use crate::auth::UnsubscribeTokens;
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
    #[error(transparent)]
    Smtp(#[from] SmtpSetupError),
    #[error(transparent)]
    Http(#[from] HttpAdapterError),
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
    #[error(transparent)]
    Fcm(#[from] FcmSetupError),
    #[error("cannot build an HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// Seed 001's contract: what every channel uses unless told otherwise.
    #[default]
    Http,
    Smtp,
    /// Twilio Programmable Messaging (SMS and WhatsApp).
    Twilio,
    /// Meta's WhatsApp Business Cloud API.
    Whatsapp,
    /// Firebase Cloud Messaging HTTP v1 (push).
    Fcm,
}

impl AdapterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Http => "http",
            AdapterKind::Smtp => "smtp",
            AdapterKind::Twilio => "twilio",
            AdapterKind::Whatsapp => "whatsapp",
            AdapterKind::Fcm => "fcm",
        }
    }

    /// The channels an adapter can send.
    fn sends(self, channel: Channel) -> bool {
        match self {
            AdapterKind::Http => true,
            AdapterKind::Smtp => channel == Channel::Email,
            AdapterKind::Twilio => matches!(channel, Channel::Sms | Channel::Whatsapp),
            AdapterKind::Whatsapp => channel == Channel::Whatsapp,
            AdapterKind::Fcm => channel == Channel::Push,
        }
    }
}

/// A channel's entry: one provider (a table) or several in order (an array of tables).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Box<ProviderEntry>),
    Many(Vec<ProviderEntry>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<ProviderEntry> {
        match self {
            OneOrMany::One(e) => vec![*e],
            OneOrMany::Many(v) => v,
        }
    }
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
    /// With several providers on a channel: the share of first tries this one gets (a cost
    /// split); without weights the first listed is tried first.
    pub weight: Option<u32>,
    /// twilio: the account SID (`AC...`).
    pub account_sid: Option<String>,
    /// twilio: the user of HTTP Basic when it is an API key (`SK...`); the account SID otherwise.
    pub api_key_sid: Option<String>,
    /// twilio: the variable holding the auth token (or the API key's secret).
    pub auth_token_env: Option<String>,
    /// whatsapp: the Graph API version (`v21.0` unless given).
    pub version: Option<String>,
    /// whatsapp: the sending phone number's id.
    pub phone_number_id: Option<String>,
    /// whatsapp: the variable holding the access token.
    pub token_env: Option<String>,
    /// fcm: the OAuth2 token endpoint the key file must name (Google's when unset).
    pub token_uri: Option<String>,
    /// fcm: the variable holding the path of the service-account key file (JSON).
    pub credentials_env: Option<String>,
    pub rate: Option<f64>,
    pub max_rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
}

/// What sends each channel, read and checked, secrets not yet resolved.
#[derive(Debug, Clone)]
pub struct ProvidersConfig {
    channels: BTreeMap<Channel, Vec<ProviderEntry>>,
    args: ProvidersArgs,
}

impl ProvidersConfig {
    /// Reads the file if there is one, else the built-in default with the SMTP shortcut.
    pub fn load(args: &ProvidersArgs) -> Result<Self, ProvidersError> {
        let args = args.without_empty_values();
        // A channel the file does not name keeps the default (and the SMTP shortcut).
        let mut channels = Self::default_channels(&args);
        if let Some(path) = &args.providers {
            channels.extend(Self::read(path)?);
        }
        Ok(ProvidersConfig { channels, args })
    }

    fn read(path: &PathBuf) -> Result<BTreeMap<Channel, Vec<ProviderEntry>>, ProvidersError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProvidersError::Read {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let parsed: BTreeMap<Channel, OneOrMany> =
            toml::from_str(&text).map_err(|e| ProvidersError::Parse {
                path: path.clone(),
                error: e.to_string(),
            })?;
        let channels: BTreeMap<Channel, Vec<ProviderEntry>> =
            parsed.into_iter().map(|(c, e)| (c, e.into_vec())).collect();
        for (channel, entries) in &channels {
            check_entries(*channel, entries)?;
        }
        Ok(channels)
    }

    fn default_channels(args: &ProvidersArgs) -> BTreeMap<Channel, Vec<ProviderEntry>> {
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
                (channel, vec![entry])
            })
            .collect()
    }

    /// Which providers each channel uses, in order: (channel, name, adapter).
    pub fn summary(&self) -> Vec<(Channel, String, AdapterKind)> {
        self.channels
            .iter()
            .flat_map(|(c, entries)| entries.iter().map(|e| (*c, entry_name(e), e.adapter)))
            .collect()
    }

    /// The providers of `channel`, in order, built with their secrets resolved.
    pub fn build_chain(
        &self,
        channel: Channel,
        defaults: &ProviderArgs,
    ) -> Result<ProviderChain, ProvidersError> {
        let entries = self
            .channels
            .get(&channel)
            .cloned()
            .unwrap_or_else(|| vec![ProviderEntry::default()]);
        let providers = entries
            .iter()
            .map(|e| self.build_entry(channel, e, defaults))
            .collect::<Result<Vec<_>, _>>()?;
        let weights = if entries.iter().any(|e| e.weight.is_some()) {
            entries.iter().map(|e| e.weight.unwrap_or(0)).collect()
        } else {
            Vec::new()
        };
        Ok(ProviderChain::new(providers, weights))
    }

    /// Builds one provider, resolving its secrets; `defaults` are the flags' resilience
    /// settings, which the file may override per provider.
    fn build_entry(
        &self,
        channel: Channel,
        entry: &ProviderEntry,
        defaults: &ProviderArgs,
    ) -> Result<Provider, ProvidersError> {
        let invalid = |what: &str| ProvidersError::Invalid {
            channel,
            what: what.into(),
        };
        let plaintext = &self.args.plaintext_hosts;
        let in_clear = |url: &str, carries_key: bool| {
            super::cleartext::check(url, carries_key, plaintext).map_err(|e| invalid(&e))
        };
        // The entry's `url`, else the provider's public API, checked: these adapters send a
        // key or token with every call.
        let api_url = |public: &str| {
            let url = entry.url.clone().unwrap_or_else(|| public.to_string());
            in_clear(&url, true).map(|()| url)
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
        let timeout = Duration::from_millis(args.provider_timeout_ms);
        let concurrency = args.provider_concurrency;
        let need = |what: &'static str, v: &Option<String>| {
            v.clone()
                .ok_or_else(|| invalid(&format!("{} needs `{what}`", entry.adapter.as_str())))
        };
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
                in_clear(&args.provider_url, true)?;
                Box::new(HttpTransport::new(&args)?)
            }
            AdapterKind::Smtp => {
                let url = match (&entry.url_env, &self.args.smtp_url) {
                    (Some(var), Some(flag)) if var == "HERALD_SMTP_URL" => flag.clone(),
                    (Some(var), _) => env(var)?,
                    (None, _) => {
                        return Err(invalid(
                            "an smtp provider needs url_env, the variable holding its SMTP URL",
                        ))
                    }
                };
                in_clear(url.expose(), false)?;
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
            AdapterKind::Twilio => {
                let account_sid = need("account_sid", &entry.account_sid)?;
                Box::new(TwilioTransport::new(TwilioSettings {
                    base_url: api_url("https://api.twilio.com")?,
                    username: entry.api_key_sid.clone().unwrap_or(account_sid.clone()),
                    account_sid,
                    secret: env(&need("auth_token_env", &entry.auth_token_env)?)?,
                    from: need("from", &entry.from)?,
                    channel,
                    // Without status callbacks every message would wait out its time-out
                    // and fall back to another channel: a second message to the customer.
                    public_url: self.args.public_url.clone().ok_or(ProvidersError::Missing(
                        "HERALD_PUBLIC_URL, where Twilio posts delivery statuses",
                    ))?,
                    timeout,
                    concurrency,
                })?)
            }
            AdapterKind::Whatsapp => Box::new(WhatsappTransport::new(WhatsappSettings {
                base_url: api_url("https://graph.facebook.com")?,
                version: entry.version.clone().unwrap_or("v21.0".into()),
                phone_number_id: need("phone_number_id", &entry.phone_number_id)?,
                token: env(&need("token_env", &entry.token_env)?)?,
                timeout,
                concurrency,
            })?),
            AdapterKind::Fcm => {
                let path = env(&need("credentials_env", &entry.credentials_env)?)?;
                let token_uri = entry
                    .token_uri
                    .clone()
                    .unwrap_or_else(|| super::fcm::GOOGLE_TOKEN_URI.to_string());
                in_clear(&token_uri, true)?;
                Box::new(FcmTransport::new(FcmSettings {
                    base_url: api_url("https://fcm.googleapis.com")?,
                    account: ServiceAccount::read(path.expose(), &token_uri)?,
                    timeout,
                    concurrency,
                })?)
            }
        };
        Ok(Provider::new(
            entry_name(entry),
            entry.adapter.as_str(),
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
    e.name
        .clone()
        .unwrap_or_else(|| e.adapter.as_str().to_string())
}

/// A channel's providers: at least one, each able to send the channel, names distinct
/// (metrics and the once-slot tell them apart by name).
fn check_entries(channel: Channel, entries: &[ProviderEntry]) -> Result<(), ProvidersError> {
    let invalid = |what: String| ProvidersError::Invalid { channel, what };
    if entries.is_empty() {
        return Err(invalid("no provider listed".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    for e in entries {
        if !e.adapter.sends(channel) {
            return Err(invalid(format!(
                "the {} adapter cannot send {channel}",
                e.adapter.as_str()
            )));
        }
        let name = entry_name(e);
        if !names.insert(name.clone()) {
            return Err(invalid(format!(
                "two providers are named {name:?}: give each a `name`"
            )));
        }
    }
    Ok(())
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
        let many: BTreeMap<Channel, OneOrMany> = toml::from_str(text)?;
        Ok(many
            .into_iter()
            .map(|(c, e)| (c, e.into_vec().remove(0)))
            .collect())
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
        let text = include_str!("../../config/providers.example.toml");
        let example = parse(text).unwrap();
        assert_eq!(example[&Channel::Email].adapter, AdapterKind::Smtp);
        assert_eq!(example[&Channel::Sms].adapter, AdapterKind::Twilio);
        assert_eq!(example[&Channel::Whatsapp].adapter, AdapterKind::Whatsapp);
        assert_eq!(example[&Channel::Push].adapter, AdapterKind::Fcm);
        let all: BTreeMap<Channel, OneOrMany> = toml::from_str(text).unwrap();
        for (channel, entries) in all {
            check_entries(channel, &entries.into_vec()).unwrap();
        }
    }

    #[test]
    fn a_channel_refuses_an_adapter_that_cannot_send_it_and_twice_the_same_name() {
        let entry = |adapter| ProviderEntry {
            adapter,
            ..ProviderEntry::default()
        };
        assert!(check_entries(Channel::Sms, &[entry(AdapterKind::Fcm)]).is_err());
        assert!(check_entries(Channel::Push, &[entry(AdapterKind::Twilio)]).is_err());
        assert!(check_entries(Channel::Whatsapp, &[entry(AdapterKind::Twilio)]).is_ok());
        let twice = [entry(AdapterKind::Http), entry(AdapterKind::Http)];
        assert!(check_entries(Channel::Sms, &twice).is_err());
        assert!(check_entries(Channel::Sms, &[]).is_err());
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
                .build_chain(Channel::Email, &defaults)
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
