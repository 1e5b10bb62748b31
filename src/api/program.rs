//! The `herald-ingest` program: its flags and its set-up, shared by the binary and the
//! test harness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Ingest, PromoSettings};
use crate::auth::{CallerLimit, Jwt};
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

    /// HS256 secret of the flash-promo API's bearer tokens (at least 16 bytes; `herald token`
    /// mints with it). Unset: the authenticated `/api/` routes answer 503.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

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
        let publish_timeout = Duration::from_millis(args.publish_timeout_ms.max(1));
        let c = Connections::open_with_delivery_timeout(&args.common, publish_timeout).await?;
        let ingest = Arc::new(Ingest {
            store: c
                .store
                .with_request_ttl(Duration::from_secs(args.request_ttl_secs)),
            producer: c.producer,
            topics: c.topics,
            promos: PromoSettings {
                jwt: jwt(args.jwt_secret.as_ref())?,
                limit: CallerLimit::new(args.user_rate_per_sec, args.user_burst),
                hold: Duration::from_secs(args.reservation_secs.max(1)),
                cors_origins: args.cors_origins.clone(),
                ..PromoSettings::default()
            },
        });
        let listener = TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("listening on {}", args.http_addr))?;
        Ok(Program { ingest, listener })
    }

    /// Serves until `shutdown`, then lets requests under way finish.
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let idle = self.ingest.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            while sleep_unless_cancelled(Duration::from_secs(60), &stop).await {
                idle.promos.limit.forget_idle();
            }
        });
        tracing::info!(addr = %self.local_addr()?, "herald-ingest listening");
        super::serve(self.listener, self.ingest, shutdown)
            .await
            .context("serving the API")
    }
}

fn jwt(secret: Option<&Secret>) -> anyhow::Result<Option<Jwt>> {
    match secret.filter(|s| !s.expose().is_empty()) {
        Some(secret) => Ok(Some(
            Jwt::new(secret.expose()).context("HERALD_JWT_SECRET")?,
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
