//! `herald produce-events` and `herald broker-bench`: load for the benchmarks, straight to
//! Kafka.

use crate::dev::kafka_bench::{broker_throughput, produce_lifecycle_events};

#[derive(clap::Args, Debug)]
pub struct ProduceEvents {
    /// Kafka bootstrap servers.
    #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Topic (the fleet's is NAMESPACE.events).
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Campaigns to spread the recipients over.
    #[arg(long, default_value_t = 4)]
    campaigns: u64,
}

impl ProduceEvents {
    pub async fn execute(self) -> anyhow::Result<()> {
        let rate = tokio::task::spawn_blocking(move || {
            produce_lifecycle_events(&self.kafka_brokers, &self.topic, self.count, self.campaigns)
        })
        .await??;
        println!("events_produced_per_sec {rate:.0}");
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub struct BrokerBench {
    /// Kafka bootstrap servers.
    #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Topic to fill (it should be otherwise unused).
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 250)]
    size: usize,
}

impl BrokerBench {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (produced, consumed) = tokio::task::spawn_blocking(move || {
            broker_throughput(&self.kafka_brokers, &self.topic, self.count, self.size)
        })
        .await??;
        println!("broker_produce_per_sec {produced:.0}");
        println!("broker_consume_per_sec {consumed:.0}");
        Ok(())
    }
}
