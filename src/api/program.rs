//! The `herald-ingest` program: its flags and its set-up, shared by the binary and the
//! test harness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{AccessSettings, Ingest, IngestStores, PromoSettings};
use crate::auth::signature::ReceiptSecrets;
use crate::auth::{CallerLimit, Jwt, KeyStore};
use crate::config::{CommonArgs, Secret};
use crate::program::Connections;
use crate::shutdown::sleep_unless_cancelled;

/// Accepts notification requests over HTTP, records them in Redis and queues them on Kafka;
/// serves the offers, flash-promo, sales and user-event APIs and their document at `/docs`.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "herald-ingest", version)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address the API listens on (port 0: any free port).
    #[arg(long, env = "HERALD_HTTP_ADDR", default_value = "0.0.0.0:5000")]
    pub http_addr: SocketAddr,

    /// How long request records are kept in Redis, in seconds.
    #[arg(long, env = "HERALD_REQUEST_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub request_ttl_secs: u64,

    /// How long `/process` waits for Kafka to acknowledge before answering 503, in ms.
    #[arg(long, env = "HERALD_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    pub publish_timeout_ms: u64,

    /// HS256 secret of the flash-promo API's bearer tokens (at least 16 bytes; `herald-dev token`
    /// mints with it). Unset: the authenticated `/api/` routes answer 503.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// HS256 secret of admins' tokens on the flash-promo API (at least 32 bytes, not the
    /// shoppers' secret; `herald-dev token --role admin` mints with it). Unset: admins use a
    /// service key with `promos:write`.
    #[arg(long, env = "HERALD_JWT_ADMIN_SECRET", hide_env_values = true)]
    pub jwt_admin_secret: Option<Secret>,

    /// Reserve and purchase calls per second allowed to each user, sustained.
    #[arg(long, env = "HERALD_USER_RATE_PER_SEC", default_value_t = 5)]
    pub user_rate_per_sec: u32,

    /// Reserve and purchase calls each user may make at once before the rate applies.
    #[arg(long, env = "HERALD_USER_BURST", default_value_t = 10)]
    pub user_burst: u32,

    /// How long a reservation holds a unit, in seconds (seed 002: one minute).
    #[arg(long, env = "HERALD_RESERVATION_SECS", default_value_t = 60)]
    pub reservation_secs: u64,

    /// Origins browsers may call the `/api/` routes from (comma separated, `*` for any);
    /// unset: no CORS headers.
    #[arg(long, env = "HERALD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Domains (`shop.example`) and addresses (`news@shop.example`) a campaign's `email.from`
    /// may use, comma separated. Unset: a campaign may not name a sender, and the
    /// dispatcher's HERALD_EMAIL_FROM is used.
    #[arg(long, env = "HERALD_EMAIL_SENDER_DOMAINS", value_delimiter = ',')]
    pub email_sender_domains: Vec<String>,

    #[command(flatten)]
    pub jwt_policy: crate::auth::JwtPolicy,

    /// Which URLs webhook endpoints may be registered with.
    #[command(flatten)]
    pub webhook_addresses: crate::outgoing::address::AddressArgs,

    #[command(flatten)]
    pub access: AccessArgs,

    /// The topics campaigns, flash promos and preferences may name come from its `[topics]`.
    #[command(flatten)]
    pub rules: crate::config::RulesArgs,

    #[command(flatten)]
    pub http: crate::http::HttpLimits,
}

/// Who may call the API.
#[derive(clap::Args, Debug, Clone)]
pub struct AccessArgs {
    /// The service key file (`herald keys create` writes it; mount it as a secret). Required
    /// unless `--insecure-dev`.
    #[arg(long, env = "HERALD_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// The providers' receipt secrets, `provider=secret,...` (at least 32 bytes each; one per
    /// provider, or old and new while rotating). Required unless `--insecure-dev`.
    #[arg(long, env = "HERALD_RECEIPT_SECRETS", hide_env_values = true)]
    pub receipt_secrets: Option<Secret>,

    /// Checks the one-click unsubscribe links in promotional e-mails (the dispatchers sign
    /// them with the same secret). Without it every link answers 404.
    #[arg(long, env = "HERALD_UNSUBSCRIBE_SECRET", hide_env_values = true)]
    pub unsubscribe_secret: Option<Secret>,

    /// Herald's public base URL, as providers call it (Twilio signs the full URL).
    #[arg(long, env = "HERALD_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Checks Twilio's status and inbound webhooks (`X-Twilio-Signature`): the account's
    /// auth token.
    #[arg(long, env = "HERALD_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<Secret>,

    /// Checks Meta's WhatsApp webhooks (`X-Hub-Signature-256`): the app secret.
    #[arg(long, env = "HERALD_WHATSAPP_APP_SECRET", hide_env_values = true)]
    pub whatsapp_app_secret: Option<Secret>,

    /// Answers Meta's webhook verification handshake (`hub.verify_token`).
    #[arg(long, env = "HERALD_WHATSAPP_VERIFY_TOKEN", hide_env_values = true)]
    pub whatsapp_verify_token: Option<Secret>,

    /// Route groups callers may use without credentials. Only `requests` (seed 001's three
    /// routes, for a client of the seed's exact contract) can be opened.
    #[arg(long, env = "HERALD_PUBLIC_ROUTES", value_delimiter = ',')]
    pub public_routes: Vec<String>,

    /// Networks that may call the opened seed 001 routes without credentials (CIDR blocks
    /// or addresses, comma separated: `10.0.0.0/8,192.168.1.7`). Required with
    /// `HERALD_PUBLIC_ROUTES=requests`; anyone else still needs a key.
    #[arg(long, env = "HERALD_PUBLIC_NETWORKS", value_delimiter = ',')]
    pub public_networks: Vec<String>,

    /// Calls per second each client address may make to the opened routes, sustained.
    #[arg(long, env = "HERALD_PUBLIC_RATE_PER_SEC", default_value_t = 20)]
    pub public_rate_per_sec: u32,

    /// Calls each client address may make to the opened routes at once before the rate applies.
    #[arg(long, env = "HERALD_PUBLIC_BURST", default_value_t = 40)]
    pub public_burst: u32,

    /// Memory that the bodies of callers not yet proven (receipts before their signature is
    /// checked, providers' webhooks, one-click posts, the opened routes) may hold at once,
    /// all callers together, in bytes; beyond it they are answered 503.
    #[arg(long, env = "HERALD_ANONYMOUS_BODY_BUDGET_BYTES", default_value_t = super::access::DEFAULT_ANONYMOUS_BODY_BUDGET)]
    pub anonymous_body_budget_bytes: usize,

    /// Largest `POST /v1/receipts` body, in bytes: it is read before its signature is checked.
    #[arg(long, env = "HERALD_RECEIPT_BODY_LIMIT_BYTES", default_value_t = super::access::DEFAULT_RECEIPT_BODY_LIMIT)]
    pub receipt_body_limit_bytes: usize,

    /// Calls per second allowed to each service key, sustained.
    #[arg(long, env = "HERALD_KEY_RATE_PER_SEC", default_value_t = 2000)]
    pub key_rate_per_sec: u32,

    /// Calls each service key may make at once before the rate applies.
    #[arg(long, env = "HERALD_KEY_BURST", default_value_t = 4000)]
    pub key_burst: u32,

    /// Serve with no key store and unsigned receipts: every route open to anyone. For a
    /// laptop only; never on a network.
    #[arg(long, env = "HERALD_INSECURE_DEV")]
    pub insecure_dev: bool,
}

impl AccessArgs {
    /// The access settings, or why the API must not start with these.
    pub fn settings(&self) -> anyhow::Result<AccessSettings> {
        let public_requests = public_requests(&self.public_routes)?;
        let unsubscribe = match &self.unsubscribe_secret {
            Some(secret) => Some(
                crate::auth::UnsubscribeTokens::new(secret).context("HERALD_UNSUBSCRIBE_SECRET")?,
            ),
            None => {
                tracing::warn!("no HERALD_UNSUBSCRIBE_SECRET: unsubscribe links cannot be checked and answer 404");
                None
            }
        };
        let limit = CallerLimit::new(self.key_rate_per_sec, self.key_burst);
        let anonymous_bodies = super::anonymous::BodyBudget::new(self.anonymous_body_budget_bytes);
        let receipt_body_limit = self.receipt_body_limit_bytes.max(1);
        if self.insecure_dev {
            tracing::warn!(
                "--insecure-dev: EVERY ROUTE IS OPEN TO ANYONE and receipts are not verified; \
                 never run this on a network"
            );
            return Ok(AccessSettings {
                public_requests,
                limit,
                unsubscribe,
                webhooks: self.webhook_secrets(),
                anonymous_bodies,
                receipt_body_limit,
                ..AccessSettings::insecure()
            });
        }
        let path = self.api_keys_file.as_ref().context(
            "no key store: set HERALD_API_KEYS_FILE (create keys with \
             `herald keys create --name NAME --scopes a,b`), or pass --insecure-dev on a laptop",
        )?;
        let keys = KeyStore::open(path).context("HERALD_API_KEYS_FILE")?;
        if keys.is_empty() {
            tracing::warn!(file = %path.display(), "the key file holds no active key: every keyed route answers 401");
        }
        let secrets = self.receipt_secrets.as_ref().context(
            "no receipt secret: set HERALD_RECEIPT_SECRETS=provider=<secret> \
             (make one with `openssl rand -hex 32`; the provider signs receipts with it)",
        )?;
        let receipts = ReceiptSecrets::parse(secrets.expose())?;
        let open_requests = public_requests.then(|| self.open_requests()).transpose()?;
        if let Some(open) = &open_requests {
            let networks: Vec<String> = open.networks.iter().map(|n| n.to_string()).collect();
            tracing::warn!(
                networks = %networks.join(","),
                "HERALD_PUBLIC_ROUTES=requests: seed 001's routes (POST /v1/requests, \
                 POST /v1/requests/{{id}}/process, GET /v1/requests/{{id}}) ANSWER CALLERS \
                 FROM THESE NETWORKS WITHOUT CREDENTIALS: they send any text to any address"
            );
        }
        Ok(AccessSettings {
            keys: Some(keys),
            public_requests,
            limit,
            receipts: Some(receipts),
            unsubscribe,
            webhooks: self.webhook_secrets(),
            open_requests,
            anonymous_bodies,
            receipt_body_limit,
        })
    }

    /// Who may call the opened routes: the networks must be named, never implied.
    fn open_requests(&self) -> anyhow::Result<super::anonymous::OpenRequests> {
        let networks = super::anonymous::parse_networks(&self.public_networks)
            .map_err(|e| anyhow::anyhow!("HERALD_PUBLIC_NETWORKS: {e}"))?;
        anyhow::ensure!(
            !networks.is_empty(),
            "HERALD_PUBLIC_ROUTES=requests needs HERALD_PUBLIC_NETWORKS: the networks whose \
             callers may send without credentials (e.g. 10.0.0.0/8); the opened routes send \
             any text to any address"
        );
        Ok(super::anonymous::OpenRequests {
            networks,
            per_address: CallerLimit::new(self.public_rate_per_sec, self.public_burst),
        })
    }

    fn webhook_secrets(&self) -> crate::api::WebhookSecrets {
        let set = |s: &Option<Secret>| s.clone().filter(|v| !v.expose().trim().is_empty());
        crate::api::WebhookSecrets {
            public_url: self.public_url.clone().filter(|u| !u.trim().is_empty()),
            twilio_auth_token: set(&self.twilio_auth_token),
            whatsapp_app_secret: set(&self.whatsapp_app_secret),
            whatsapp_verify_token: set(&self.whatsapp_verify_token),
        }
    }
}

/// Whether `HERALD_PUBLIC_ROUTES` opens seed 001's routes; anything else it names is refused.
fn public_requests(groups: &[String]) -> anyhow::Result<bool> {
    let mut open = false;
    for group in groups.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
        match group {
            "requests" => open = true,
            _ => anyhow::bail!(
                "HERALD_PUBLIC_ROUTES: only `requests` (seed 001's routes) can be opened; \
                 every other route needs credentials"
            ),
        }
    }
    Ok(open)
}

/// The API connected, its listener bound.
pub struct Program {
    pub ingest: Arc<Ingest>,
    listener: TcpListener,
}

impl crate::program::Program for Program {
    type Args = Args;

    async fn from_args(args: &Args) -> anyhow::Result<Self> {
        // The API answers "unavailable" within the publish time-out instead of holding a
        // caller for the producer's default 30 s when the broker is gone.
        let access = args.access.settings()?;
        let catalog = args.rules.load()?.topics().clone();
        let jwt = jwt(args.jwt_secret.as_ref(), &args.jwt_policy)?;
        let admin_jwt = admin_jwt(args, &args.jwt_policy)?;
        let publish_timeout = Duration::from_millis(args.publish_timeout_ms.max(1));
        let c = Connections::open_with_delivery_timeout(&args.common, publish_timeout).await?;
        let ingest = Arc::new(Ingest {
            stores: IngestStores::new(
                &c.redis
                    .with_request_ttl(Duration::from_secs(args.request_ttl_secs)),
            ),
            producer: c.producer,
            events_producer: crate::kafka::producer(&args.common.kafka_brokers)?,
            topics: c.topics,
            promos: PromoSettings {
                jwt,
                admin_jwt,
                limit: CallerLimit::new(args.user_rate_per_sec, args.user_burst),
                hold: Duration::from_secs(args.reservation_secs.max(1)),
                cors_origins: args.cors_origins.clone(),
                ..PromoSettings::default()
            },
            access,
            http: args.http.clone(),
            readiness: Default::default(),
            senders: super::SenderPolicy::new(&args.email_sender_domains),
            webhook_addresses: args.webhook_addresses.policy(),
            catalog,
        });
        let addr = listen_addr(args.http_addr, args.access.insecure_dev)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        Ok(Program { ingest, listener })
    }

    /// Serves until `shutdown`, then lets requests under way finish.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let idle = self.ingest.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            while sleep_unless_cancelled(Duration::from_secs(60), &stop).await {
                idle.promos.limit.forget_idle();
                idle.access.limit.forget_idle();
            }
        });
        let keys = self.ingest.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            while sleep_unless_cancelled(Duration::from_secs(2), &stop).await {
                reload_keys(&keys.access);
            }
        });
        tracing::info!(addr = %self.local_addr()?, "herald-ingest listening");
        super::serve(self.listener, self.ingest, shutdown)
            .await
            .context("serving the API")
    }
}

/// Takes keys created or revoked since the file was last read.
fn reload_keys(access: &AccessSettings) {
    if let Some(keys) = access.keys.as_ref() {
        keys.reload_and_report();
    }
}

/// Where to listen: with `--insecure-dev` (every route open) only on loopback; "any address"
/// becomes 127.0.0.1, and another address is refused.
fn listen_addr(asked: SocketAddr, insecure_dev: bool) -> anyhow::Result<SocketAddr> {
    if !insecure_dev || asked.ip().is_loopback() {
        return Ok(asked);
    }
    anyhow::ensure!(
        asked.ip().is_unspecified(),
        "--insecure-dev opens every route to anyone: it listens on loopback only, not {asked}"
    );
    let loopback = SocketAddr::from(([127, 0, 0, 1], asked.port()));
    tracing::warn!(%loopback, "--insecure-dev: listening on loopback only");
    Ok(loopback)
}

fn admin_jwt(args: &Args, policy: &crate::auth::JwtPolicy) -> anyhow::Result<Option<Jwt>> {
    let Some(secret) = args
        .jwt_admin_secret
        .as_ref()
        .filter(|s| !s.expose().trim().is_empty())
    else {
        return Ok(None);
    };
    anyhow::ensure!(
        args.jwt_secret.as_ref().map(|s| s.expose()) != Some(secret.expose()),
        "HERALD_JWT_ADMIN_SECRET must differ from HERALD_JWT_SECRET: whoever mints shoppers' \
         tokens must not be able to mint admins'"
    );
    Ok(Some(
        Jwt::with_policy(secret.expose(), policy.clone()).context("HERALD_JWT_ADMIN_SECRET")?,
    ))
}

fn jwt(secret: Option<&Secret>, policy: &crate::auth::JwtPolicy) -> anyhow::Result<Option<Jwt>> {
    match secret {
        Some(secret) => Ok(Some(
            Jwt::with_policy(secret.expose(), policy.clone()).context("HERALD_JWT_SECRET")?,
        )),
        None => {
            tracing::warn!("no HERALD_JWT_SECRET: the flash-promo API refuses authenticated calls");
            Ok(None)
        }
    }
}

impl Program {
    /// Where the API listens (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_dev_listens_on_loopback_only() {
        let any: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        assert_eq!(listen_addr(any, false).unwrap(), any);
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(listen_addr(any, true).unwrap(), loopback);
        let lan: SocketAddr = "192.168.1.5:5000".parse().unwrap();
        let refused = listen_addr(lan, true).unwrap_err().to_string();
        assert!(refused.contains("loopback"), "{refused}");
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(listen_addr(v6, true).unwrap(), v6);
    }
}
