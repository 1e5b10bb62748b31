//! `herald-dev produce-events` and `herald-dev broker-bench`: load for the benchmarks, straight to
//! Kafka.

use crate::dev::kafka_bench::{broker_throughput, produce_lifecycle_events};

/// Where a benchmark's messages go, and how many.
#[derive(clap::Args, Debug)]
pub struct Load {
    /// Kafka bootstrap servers.
    #[arg(long, env = "HERALD_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Topic to fill: the fleet's events topic (NAMESPACE.events) for `produce-events`, an
    /// otherwise unused one for `broker-bench`.
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
}

#[derive(clap::Args, Debug)]
pub struct ProduceEvents {
    #[command(flatten)]
    load: Load,
    /// Campaigns to spread the recipients over.
    #[arg(long, default_value_t = 4)]
    campaigns: u64,
}

impl ProduceEvents {
    pub async fn execute(self) -> anyhow::Result<()> {
        let rate = tokio::task::spawn_blocking(move || {
            let load = &self.load;
            produce_lifecycle_events(&load.kafka_brokers, &load.topic, load.count, self.campaigns)
        })
        .await??;
        println!("events_produced_per_sec {rate:.0}");
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub struct BrokerBench {
    #[command(flatten)]
    load: Load,
    /// Message size in bytes.
    #[arg(long, default_value_t = 250)]
    size: usize,
}

impl BrokerBench {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (produced, consumed) = tokio::task::spawn_blocking(move || {
            let load = &self.load;
            broker_throughput(&load.kafka_brokers, &load.topic, load.count, self.size)
        })
        .await??;
        println!("broker_produce_per_sec {produced:.0}");
        println!("broker_consume_per_sec {consumed:.0}");
        Ok(())
    }
}
