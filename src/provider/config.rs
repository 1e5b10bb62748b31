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

use serde::{Deserialize, Serialize};

pub use super::setup::ProvidersError;
use super::setup::{AdapterSettings, Setup};
use super::{Provider, ProviderChain, Resilience, Transport};
use crate::config::{ProviderArgs, ProvidersArgs};
use crate::model::Channel;

/// Declares the adapters the file may name: each settings type lives in its adapter's file
/// and implements [`AdapterSettings`], so a new adapter is its file and one line here.
macro_rules! adapters {
    ($($variant:ident($settings:ty)),+ $(,)?) => {
        /// One provider's adapter with its own settings, as the file's `adapter` names it.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "adapter", rename_all = "lowercase")]
        pub enum AdapterConfig {
            $($variant($settings)),+
        }

        impl AdapterConfig {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(AdapterConfig::$variant(_) => <$settings>::KIND),+
                }
            }

            fn sends(&self, channel: Channel) -> bool {
                match self {
                    $(AdapterConfig::$variant(_) => <$settings>::sends(channel)),+
                }
            }

            fn build(&self, setup: &Setup) -> Result<Box<dyn Transport>, ProvidersError> {
                match self {
                    $(AdapterConfig::$variant(settings) => settings.build(setup)),+
                }
            }
        }
    };
}

adapters! {
    Http(super::http::HttpConfig),
    Smtp(super::smtp::SmtpConfig),
    Twilio(super::twilio::TwilioConfig),
    Whatsapp(super::whatsapp::WhatsappConfig),
    Fcm(super::fcm::FcmConfig),
}

/// What every provider's table may hold whatever its adapter.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Common {
    /// Shown on the dashboard and in metrics; the adapter's kind when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// With several providers on a channel: the share of first tries this one gets (a cost
    /// split); without weights the first listed is tried first.
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
}

/// The keys of [`Common`]; the rest of a table is the adapter's.
const COMMON_KEYS: [&str; 7] = [
    "name",
    "weight",
    "rate",
    "max_rate",
    "concurrency",
    "timeout_ms",
    "max_attempts",
];

impl Common {
    /// The flags' resilience settings with this provider's overrides.
    fn resilience_args(&self, defaults: &ProviderArgs) -> ProviderArgs {
        let mut args = defaults.clone();
        args.provider_rate = self.rate.unwrap_or(args.provider_rate);
        args.provider_max_rate = self.max_rate.unwrap_or(args.provider_max_rate);
        args.provider_concurrency = self.concurrency.unwrap_or(args.provider_concurrency);
        args.provider_timeout_ms = self.timeout_ms.unwrap_or(args.provider_timeout_ms);
        args.provider_max_attempts = self.max_attempts.unwrap_or(args.provider_max_attempts);
        args
    }
}

/// One channel's provider as the file writes it.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    common: Common,
    adapter: AdapterConfig,
}

impl ProviderEntry {
    fn new(adapter: AdapterConfig) -> Self {
        ProviderEntry {
            common: Common::default(),
            adapter,
        }
    }

    /// Reads one table: the keys every provider has, then the adapter's own (an absent
    /// `adapter` is seed 001's `http`). Unknown keys are refused, so a secret written
    /// inline instead of its variable's name never starts.
    fn parse(mut table: toml::Table) -> Result<Self, String> {
        let common: toml::Table = COMMON_KEYS
            .iter()
            .filter_map(|k| table.remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        table.entry("adapter").or_insert_with(|| "http".into());
        Ok(ProviderEntry {
            common: toml::Value::Table(common)
                .try_into()
                .map_err(|e| e.to_string())?,
            adapter: toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_string())?,
        })
    }

    fn name(&self) -> String {
        self.common
            .name
            .clone()
            .unwrap_or_else(|| self.adapter.kind().to_string())
    }
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
        let channels = parse_file(&text).map_err(|error| ProvidersError::Parse {
            path: path.clone(),
            error,
        })?;
        for (channel, entries) in &channels {
            check_entries(*channel, entries)?;
        }
        Ok(channels)
    }

    fn default_channels(args: &ProvidersArgs) -> BTreeMap<Channel, Vec<ProviderEntry>> {
        Channel::ALL
            .into_iter()
            .map(|channel| {
                let adapter = if channel == Channel::Email && args.smtp_url.is_some() {
                    AdapterConfig::Smtp(super::smtp::SmtpConfig {
                        url_env: Some("HERALD_SMTP_URL".to_string()),
                        ..Default::default()
                    })
                } else {
                    AdapterConfig::Http(Default::default())
                };
                (channel, vec![ProviderEntry::new(adapter)])
            })
            .collect()
    }

    /// Which providers each channel uses, in order: (channel, name, adapter).
    pub fn summary(&self) -> Vec<(Channel, String, &'static str)> {
        self.channels
            .iter()
            .flat_map(|(c, entries)| entries.iter().map(|e| (*c, e.name(), e.adapter.kind())))
            .collect()
    }

    /// The providers of `channel`, in order, built with their secrets resolved.
    pub fn build_chain(
        &self,
        channel: Channel,
        defaults: &ProviderArgs,
    ) -> Result<ProviderChain, ProvidersError> {
        let entries =
            self.channels.get(&channel).cloned().unwrap_or_else(|| {
                vec![ProviderEntry::new(AdapterConfig::Http(Default::default()))]
            });
        let providers = entries
            .iter()
            .map(|e| self.build_entry(channel, e, defaults))
            .collect::<Result<Vec<_>, _>>()?;
        let weights = if entries.iter().any(|e| e.common.weight.is_some()) {
            entries
                .iter()
                .map(|e| e.common.weight.unwrap_or(0))
                .collect()
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
        let setup = Setup {
            channel,
            args: entry.common.resilience_args(defaults),
            flags: &self.args,
        };
        let resilience = Resilience::new(&setup.args)?;
        let transport = entry.adapter.build(&setup)?;
        Ok(Provider::new(
            entry.name(),
            entry.adapter.kind(),
            transport,
            resilience,
        ))
    }
}

/// The file: per channel, one provider (a table) or several in order (an array of tables).
fn parse_file(text: &str) -> Result<BTreeMap<Channel, Vec<ProviderEntry>>, String> {
    let file: BTreeMap<Channel, toml::Value> = toml::from_str(text).map_err(|e| e.to_string())?;
    file.into_iter()
        .map(|(channel, value)| {
            let tables = match value {
                toml::Value::Table(t) => vec![t],
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        toml::Value::Table(t) => Ok(t),
                        _ => Err(format!("[[{channel}]]: each provider is a table")),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(format!("{channel}: a provider table or an array of them")),
            };
            let entries = tables
                .into_iter()
                .map(|t| ProviderEntry::parse(t).map_err(|e| format!("[{channel}]: {e}")))
                .collect::<Result<_, _>>()?;
            Ok((channel, entries))
        })
        .collect()
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
                e.adapter.kind()
            )));
        }
        let name = e.name();
        if !names.insert(name.clone()) {
            return Err(invalid(format!(
                "two providers are named {name:?}: give each a `name`"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Result<BTreeMap<Channel, &'static str>, String> {
        Ok(parse_file(text)?
            .into_iter()
            .map(|(c, e)| (c, e[0].adapter.kind()))
            .collect())
    }

    #[test]
    fn the_file_names_an_adapter_per_channel_and_refuses_what_it_does_not_know() {
        let ok = kinds(
            "[email]\nadapter = \"smtp\"\nurl_env = \"X\"\nfrom = \"a@b.test\"\n[sms]\nadapter = \"http\"\nurl = \"http://127.0.0.1:1\"\n[push]\nurl = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(ok[&Channel::Email], "smtp");
        assert_eq!(ok[&Channel::Push], "http", "no adapter named: seed 001's");
        assert!(kinds("[fax]\nadapter = \"http\"\n").is_err());
        assert!(kinds("[email]\nadapter = \"pigeon\"\n").is_err());
        // A secret written inline is refused: only the variable's name may be there.
        let inline = kinds("[email]\nadapter = \"smtp\"\npassword = \"hunter2\"\n");
        assert!(
            inline.as_ref().is_err_and(|e| e.contains("password")),
            "{inline:?}"
        );
        // Another adapter's key is refused too: each adapter owns its settings.
        let foreign = kinds("[sms]\nadapter = \"http\"\naccount_sid = \"AC1\"\n");
        assert!(
            foreign.as_ref().is_err_and(|e| e.contains("account_sid")),
            "{foreign:?}"
        );
        let missing = kinds("[sms]\nadapter = \"twilio\"\nfrom = \"+1\"\n");
        assert!(
            missing.as_ref().is_err_and(|e| e.contains("account_sid")),
            "{missing:?}"
        );
    }

    #[test]
    fn the_keys_every_provider_has_are_the_fields_of_common() {
        let all = Common {
            name: Some("n".into()),
            weight: Some(1),
            rate: Some(1.0),
            max_rate: Some(1.0),
            concurrency: Some(1),
            timeout_ms: Some(1),
            max_attempts: Some(1),
        };
        let table = toml::Table::try_from(all).unwrap();
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut expected = COMMON_KEYS.to_vec();
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
    }

    #[test]
    fn the_documented_example_file_parses() {
        let text = include_str!("../../config/providers.example.toml");
        let example = parse_file(text).unwrap();
        let first = |c: Channel| example[&c][0].adapter.kind();
        assert_eq!(first(Channel::Email), "smtp");
        assert_eq!(first(Channel::Sms), "twilio");
        assert_eq!(first(Channel::Whatsapp), "whatsapp");
        assert_eq!(first(Channel::Push), "fcm");
        assert_eq!(example[&Channel::Sms][0].common.weight, Some(9));
        for (channel, entries) in &example {
            check_entries(*channel, entries).unwrap();
        }
    }

    #[test]
    fn a_channel_refuses_an_adapter_that_cannot_send_it_and_twice_the_same_name() {
        let entry = |text: &str| ProviderEntry::parse(toml::from_str(text).unwrap()).unwrap();
        let fcm = entry("adapter = \"fcm\"\ncredentials_env = \"F\"");
        let twilio = entry(
            "adapter = \"twilio\"\naccount_sid = \"AC\"\nauth_token_env = \"T\"\nfrom = \"+1\"",
        );
        let http = entry("adapter = \"http\"");
        assert!(check_entries(Channel::Sms, std::slice::from_ref(&fcm)).is_err());
        assert!(check_entries(Channel::Push, std::slice::from_ref(&twilio)).is_err());
        assert!(check_entries(Channel::Whatsapp, std::slice::from_ref(&twilio)).is_ok());
        assert!(check_entries(Channel::Sms, &[http.clone(), http]).is_err());
        assert!(check_entries(Channel::Sms, &[]).is_err());
    }

    #[test]
    fn without_a_file_email_goes_to_smtp_only_when_its_url_is_set() {
        let args = ProvidersArgs::default();
        let plain = ProvidersConfig::load(&args).unwrap();
        assert!(plain.summary().iter().all(|(_, _, a)| *a == "http"));
        let smtp = ProvidersConfig::load(&ProvidersArgs {
            smtp_url: Some("smtp://127.0.0.1:2525".into()),
            ..args
        })
        .unwrap();
        let kinds: BTreeMap<Channel, &str> =
            smtp.summary().into_iter().map(|(c, _, a)| (c, a)).collect();
        assert_eq!(kinds[&Channel::Email], "smtp");
        assert_eq!(kinds[&Channel::Sms], "http");
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
