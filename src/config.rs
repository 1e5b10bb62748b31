//! Command-line and environment configuration shared by every binary.
//! Every flag reads a `HERALD_*` variable too; defaults suit a local run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use crate::secret::Secret;

/// A URL fit for logs and errors: its password (and user) replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    if url.contains(',') {
        return url
            .split(',')
            .map(redacted_url)
            .collect::<Vec<_>>()
            .join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The last '@' ends the credentials, which may hold a '/' themselves (a password); a
    // path with an '@' of its own is over-redacted, never under.
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Liveness, readiness and stats over HTTP for programs that have no API of their own.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Serve `/healthz`, `/readyz` and `/stats` on this address (off when unset).
    #[arg(long, env = "HERALD_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
}

/// Where the channel rules come from.
#[derive(Debug, Clone, Default, Args)]
pub struct RulesArgs {
    /// Channel rules, topics and frequency caps (TOML); the built-in default
    /// (`config/rules.toml`) when unset. Give ingest, fan-out and retry the same file.
    #[arg(long, env = "HERALD_RULES")]
    pub rules: Option<std::path::PathBuf>,

    /// Moves the clock frequency caps count days and weeks by, in seconds: for tests of the
    /// day boundary, never for production (0).
    #[arg(
        long,
        env = "HERALD_CAPS_CLOCK_OFFSET_SECS",
        default_value_t = 0,
        hide = true,
        allow_hyphen_values = true
    )]
    pub caps_clock_offset_secs: i64,
}

/// Flags every long-running Herald program takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Kafka bootstrap servers (comma separated). `scripts/stack.sh up` writes the local
    /// broker's address to `.herald/stack.env`.
    #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Redis URL. A comma-separated list of URLs names the nodes of a Redis Cluster.
    /// Its value is never shown by `--help`: it may carry a password.
    #[arg(
        long,
        env = "HERALD_REDIS_URL",
        default_value = "redis://127.0.0.1:6399",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Treat the Redis URL as a seed node of a Redis Cluster (implied by a list of URLs).
    #[arg(long, env = "HERALD_REDIS_CLUSTER", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub redis_cluster: bool,

    /// Shards of each new campaign's per-customer state in Redis (`{CAMPAIGN:s}` hash tags),
    /// so one campaign spreads over a cluster's nodes: 1 on a single Redis and 16 on a
    /// cluster unless set. Fixed per campaign when it is created.
    #[arg(long, env = "HERALD_CAMPAIGN_SHARDS", value_parser = clap::value_parser!(u16).range(1..=crate::store::MAX_SHARDS as i64))]
    pub campaign_shards: Option<u16>,

    /// Prefix of every Redis key and Kafka topic name. Lets several fleets (or tests)
    /// share one Redis and one broker.
    #[arg(long, env = "HERALD_NAMESPACE", default_value = "herald")]
    pub namespace: String,

    /// Log format.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub kafka_security: crate::kafka_security::KafkaSecurity,

    /// How long a campaign's report (its record and counts) is kept, in seconds.
    #[arg(long, env = "HERALD_CAMPAIGN_RETENTION_SECS", default_value_t = crate::store::Retention::default().report.as_secs())]
    pub campaign_retention_secs: u64,

    /// How long a campaign's working sets (audience, batch marks, pending set, once-slots)
    /// are kept, in seconds: longer than the broker keeps messages, so a late redelivery
    /// still finds its slot.
    #[arg(long, env = "HERALD_WORKING_RETENTION_SECS", default_value_t = crate::store::Retention::default().working.as_secs())]
    pub working_retention_secs: u64,
}

impl CommonArgs {
    /// The Redis these flags name: one server or a cluster.
    pub fn redis_target(&self) -> crate::store::RedisTarget {
        crate::store::RedisTarget::parse(&self.redis_url, self.redis_cluster)
    }

    /// The retention these flags ask for.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            report: Duration::from_secs(self.campaign_retention_secs.max(1)),
            working: Duration::from_secs(self.working_retention_secs.max(1)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How Herald talks to the external notification provider.
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Base URL of the provider; Herald calls `{url}/v1/notify`.
    #[arg(
        long,
        env = "HERALD_PROVIDER_URL",
        default_value = "http://127.0.0.1:3001"
    )]
    pub provider_url: String,

    /// API key sent as `X-API-Key` (needed by the `http` adapter). Never logged.
    #[arg(long, env = "HERALD_PROVIDER_API_KEY", hide_env_values = true)]
    pub provider_api_key: Option<Secret>,

    /// Time-out of one provider call, in milliseconds.
    #[arg(long, env = "HERALD_PROVIDER_TIMEOUT_MS", default_value_t = 2000)]
    pub provider_timeout_ms: u64,

    /// Attempts per notification on 5xx and network errors (429s are waited out, not counted).
    #[arg(long, env = "HERALD_PROVIDER_MAX_ATTEMPTS", default_value_t = 6)]
    pub provider_max_attempts: u32,

    /// First retry back-off in milliseconds; doubles each attempt, with full jitter.
    #[arg(long, env = "HERALD_PROVIDER_BACKOFF_MS", default_value_t = 100)]
    pub provider_backoff_ms: u64,

    /// Upper bound of one back-off, in milliseconds.
    #[arg(long, env = "HERALD_PROVIDER_BACKOFF_MAX_MS", default_value_t = 5000)]
    pub provider_backoff_max_ms: u64,

    /// Most provider calls in flight at once from this process.
    #[arg(long, env = "HERALD_PROVIDER_CONCURRENCY", default_value_t = 256)]
    pub provider_concurrency: usize,

    /// Starting call rate (per second). It adapts: it drops on 429 and grows on success.
    #[arg(long, env = "HERALD_PROVIDER_RATE", default_value_t = 500.0)]
    pub provider_rate: f64,

    /// Ceiling of the adaptive call rate (per second).
    #[arg(long, env = "HERALD_PROVIDER_MAX_RATE", default_value_t = 100_000.0)]
    pub provider_max_rate: f64,

    /// Consecutive failures (5xx, network, time-out) that open the circuit.
    #[arg(long, env = "HERALD_PROVIDER_BREAKER_FAILURES", default_value_t = 10)]
    pub provider_breaker_failures: u32,

    /// How long an open circuit stays open before one probe call is let through, in ms.
    #[arg(
        long,
        env = "HERALD_PROVIDER_BREAKER_COOLDOWN_MS",
        default_value_t = 2000
    )]
    pub provider_breaker_cooldown_ms: u64,
}

impl ProviderArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.provider_timeout_ms)
    }

    /// One attempt, a millisecond's back-off, one call at a time, at these rates.
    #[cfg(test)]
    pub(crate) fn for_tests(rate: f64, max_rate: f64) -> ProviderArgs {
        ProviderArgs {
            provider_url: "http://127.0.0.1:1".into(),
            provider_api_key: Some("k".into()),
            provider_timeout_ms: 1000,
            provider_max_attempts: 1,
            provider_backoff_ms: 1,
            provider_backoff_max_ms: 1,
            provider_concurrency: 1,
            provider_rate: rate,
            provider_max_rate: max_rate,
            provider_breaker_failures: 1,
            provider_breaker_cooldown_ms: 1,
        }
    }
}

/// Where providers are configured: the file, or the environment's shortcuts.
#[derive(Args, Debug, Clone)]
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

    /// Hosts a provider's credentials may reach without TLS (comma-separated), besides this
    /// machine: only hosts on a private network, such as compose's simulated provider.
    #[arg(long, env = "HERALD_PLAINTEXT_HOSTS", value_delimiter = ',')]
    pub plaintext_hosts: Vec<String>,
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
            plaintext_hosts: Vec::new(),
        }
    }
}

impl ProvidersArgs {
    /// A variable set to nothing (compose's `${HERALD_SMTP_URL:-}`) is a setting not made.
    pub(crate) fn without_empty_values(&self) -> ProvidersArgs {
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
            plaintext_hosts: self
                .plaintext_hosts
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn a_url_in_a_log_shows_no_password() {
        assert_eq!(
            redacted_url("redis://:hunter2@redis:6379/0"),
            "redis://***@redis:6379/0"
        );
        assert_eq!(
            redacted_url("rediss://user:p%40ss@host/1"),
            "rediss://***@host/1"
        );
        assert_eq!(
            redacted_url("redis://:pa/ss@host:6379/0"),
            "redis://***@host:6379/0",
            "a password with a '/' in it"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redacted_url("redis://:a@h1:7001,redis://:b@h2:7002"),
            "redis://***@h1:7001,redis://***@h2:7002"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::from("test-dev-2026");
        assert!(!format!("{s:?} {s}").contains("test-dev"));
        assert_eq!(s.expose(), "test-dev-2026");
    }

    #[test]
    fn defaults_point_at_the_local_stack() {
        let p = Probe::try_parse_from(["x"]).unwrap();
        assert_eq!(p.common.namespace, "herald");
        assert!(p.common.redis_url.starts_with("redis://127.0.0.1"));
    }
}
