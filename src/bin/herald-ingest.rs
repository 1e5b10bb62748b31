//! herald-ingest: the public HTTP API (seed 001 requests) in front of Kafka and Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::api::{self, Ingest};
use herald::config::CommonArgs;
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
    let ingest = Arc::new(Ingest {
        store,
        producer,
        topics: Topics::new(&args.common.namespace),
    });
    api::run(ingest, args.http_addr, herald::shutdown::on_signal())
        .await
        .with_context(|| format!("serving on {}", args.http_addr))
}
