//! What every long-running program shares: logs and traces, the shutdown signal, its
//! connections to Redis and Kafka, and one exit sequence. Each program's own set-up lives
//! beside its work (`dispatch::program`, `campaigns::fanout::program`, ...) and is used by
//! its binary and by the test harness alike.

use std::future::Future;

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::config::{CommonArgs, LogFormat};
use crate::kafka::{self, Topics};
use crate::store::Store;

/// Redis, a producer and the topic names of one namespace.
#[derive(Clone)]
pub struct Connections {
    pub store: Store,
    pub producer: FutureProducer,
    pub topics: Topics,
}

impl Connections {
    pub async fn open(common: &CommonArgs) -> anyhow::Result<Self> {
        let store = Store::connect(&common.redis_url, &common.namespace)
            .await
            .with_context(|| format!("connecting to Redis at {}", common.redis_url))?;
        let producer =
            kafka::producer(&common.kafka_brokers).context("creating the Kafka producer")?;
        Ok(Connections {
            store,
            producer,
            topics: Topics::new(&common.namespace),
        })
    }
}

/// A consumer in `group` that commits only the offsets the program stores.
pub fn consumer(common: &CommonArgs, group: &str) -> anyhow::Result<StreamConsumer> {
    kafka::consumer(&common.kafka_brokers, group)
        .with_context(|| format!("creating the Kafka consumer of {group}"))
}

/// Runs a program: logs and traces named `name`, `body` given the shutdown signal
/// (SIGTERM or SIGINT), then the one exit sequence. On success the process exits at once
/// with 0: its work is committed or handed back, and a Kafka client stuck on a dead broker
/// must not hold it up. An error is returned to `main`, which prints it and exits with 1.
pub async fn main<F, Fut>(name: &'static str, log_format: LogFormat, body: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let telemetry = crate::telemetry::init(name, log_format);
    let result = body(crate::shutdown::on_signal()).await;
    telemetry.shutdown();
    result?;
    std::process::exit(0)
}
