//! herald-broker: an in-memory Kafka-protocol broker for local runs and tests.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use herald::dev::broker::MockBroker;
use herald::kafka::Topics;

/// Runs librdkafka's mock Kafka cluster on 127.0.0.1 with Herald's topics created.
/// In memory only, about 5 MiB kept per partition: for development and tests, not production
/// (compose/ runs Apache Kafka).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Partitions per topic; the most dispatchers of one channel that can share work.
    #[arg(long, env = "HERALD_BROKER_PARTITIONS", default_value_t = 8)]
    partitions: i32,

    /// Topic namespace (topics are `<namespace>.notify.email`, ...).
    #[arg(long, env = "HERALD_NAMESPACE", default_value = "herald")]
    namespace: String,

    /// File the bootstrap address is written to.
    #[arg(
        long,
        env = "HERALD_BROKER_ADDRESS_FILE",
        default_value = ".herald/broker.addr"
    )]
    address_file: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = herald::telemetry::init("herald-broker", herald::config::LogFormat::Text);
    let broker = MockBroker::start(1).context("starting the mock cluster")?;
    for topic in Topics::new(&args.namespace).all() {
        broker.create_topic(&topic, args.partitions)?;
    }
    if let Some(dir) = args
        .address_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.address_file, broker.bootstrap_servers())
        .with_context(|| format!("writing {}", args.address_file.display()))?;
    println!("HERALD_KAFKA_BROKERS={}", broker.bootstrap_servers());
    tracing::info!(
        bootstrap = broker.bootstrap_servers(),
        partitions = args.partitions,
        "herald-broker ready"
    );
    herald::shutdown::on_signal().cancelled().await;
    drop(broker);
    Ok(())
}
