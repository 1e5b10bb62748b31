//! herald-ingest: the public HTTP API (seed 001 requests) in front of Kafka and Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::api::{self, Ingest};
use herald::config::{CommonArgs, Secret};
use herald::kafka::{self, Topics};
use herald::store::Store;

/// Accepts notification requests over HTTP, records them in Redis and queues them on Kafka.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Address the API listens on.
    #[arg(long, env = "HERALD_HTTP_ADDR", default_value = "0.0.0.0:5000")]
    http_addr: SocketAddr,

    /// How long request records are kept in Redis, in seconds.
    #[arg(long, env = "HERALD_REQUEST_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    request_ttl_secs: u64,

    /// How long `/process` waits for Kafka to acknowledge before answering 503, in ms.
    #[arg(long, env = "HERALD_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    publish_timeout_ms: u64,

    /// HS256 secret of the flash-promo API's bearer tokens (at least 16 bytes; `herald token`
    /// mints with it). Unset: the authenticated `/api/` routes answer 503.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<Secret>,

    /// Reserve and purchase calls per second allowed to each user, sustained.
    #[arg(long, env = "HERALD_USER_RATE_PER_SEC", default_value_t = 5)]
    user_rate_per_sec: u32,

    /// Reserve and purchase calls each user may make at once before the rate applies.
    #[arg(long, env = "HERALD_USER_BURST", default_value_t = 10)]
    user_burst: u32,

    /// How long a reservation holds a unit, in seconds (seed 002: one minute).
    #[arg(long, env = "HERALD_RESERVATION_SECS", default_value_t = 60)]
    reservation_secs: u64,

    /// Origins browsers may call the `/api/` routes from (comma separated, `*` for any);
    /// unset: no CORS headers.
    #[arg(long, env = "HERALD_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = herald::telemetry::init("herald-ingest", args.common.log_format);
    let store = Store::connect(&args.common.redis_url, &args.common.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", args.common.redis_url))?
        .with_request_ttl(Duration::from_secs(args.request_ttl_secs));
    let producer =
        kafka::producer(&args.common.kafka_brokers).context("creating the Kafka producer")?;
    let jwt = match args.jwt_secret.as_ref().filter(|s| !s.expose().is_empty()) {
        Some(secret) => Some(herald::auth::Jwt::new(secret.expose()).context("HERALD_JWT_SECRET")?),
        None => {
            tracing::warn!("no HERALD_JWT_SECRET: the flash-promo API refuses authenticated calls");
            None
        }
    };
    let ingest = Arc::new(Ingest {
        store,
        producer,
        topics: Topics::new(&args.common.namespace),
        promos: api::PromoSettings {
            jwt,
            limit: herald::auth::CallerLimit::new(args.user_rate_per_sec, args.user_burst),
            hold: Duration::from_secs(args.reservation_secs.max(1)),
            cors_origins: args.cors_origins.clone(),
            ..api::PromoSettings::default()
        },
    });
    let shutdown = herald::shutdown::on_signal();
    let idle = ingest.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        while herald::shutdown::sleep_unless_cancelled(Duration::from_secs(60), &stop).await {
            idle.promos.limit.forget_idle();
        }
    });
    api::run(ingest, args.http_addr, shutdown)
        .await
        .with_context(|| format!("serving on {}", args.http_addr))
}
