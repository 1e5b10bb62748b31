//! `herald topics` and `herald lag`: the fleet's Kafka topics and how far each consumer
//! group is behind.

use anyhow::Context;
use clap::Subcommand;

use super::KafkaArgs;
use crate::events::Role;
use crate::kafka::{create_topics, LagProbe, Topics};
use crate::model::Channel;

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create every topic of the fleet through the Kafka admin API (existing ones are kept).
    /// Partitions bound how many instances of one consumer group can work at once.
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, env = "HERALD_TOPIC_PARTITIONS", default_value_t = 12)]
        partitions: i32,
        #[arg(long, env = "HERALD_TOPIC_REPLICATION", default_value_t = 1)]
        replication: i32,
    },
}

pub async fn execute(command: TopicsCommand) -> anyhow::Result<()> {
    let TopicsCommand::Create {
        kafka,
        partitions,
        replication,
    } = command;
    let (created, existing) = create_topics(
        &kafka.kafka_brokers,
        &kafka.topics(),
        partitions,
        replication,
    )
    .await
    .with_context(|| format!("creating topics on {}", kafka.kafka_brokers))?;
    for t in &created {
        println!("created  {t} ({partitions} partitions)");
    }
    for t in &existing {
        println!("exists   {t}");
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct Lag {
    #[command(flatten)]
    kafka: KafkaArgs,
}

impl Lag {
    pub async fn execute(self) -> anyhow::Result<()> {
        let topics = self.kafka.topics();
        let brokers = self.kafka.kafka_brokers;
        let rows = tokio::task::spawn_blocking(move || {
            let probe = LagProbe::new(&brokers);
            fleet_groups(&topics)
                .into_iter()
                .map(|(group, topic)| {
                    let lags = probe.partition_lags(&group, &topic);
                    (group, topic, lags)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        println!(
            "{:<28} {:<28} {:>9} {:>12} {:>12} {:>10}",
            "group", "topic", "partition", "committed", "newest", "lag"
        );
        for (group, topic, lags) in rows {
            let lags = lags.with_context(|| format!("reading {group} on {topic}"))?;
            for l in lags {
                let committed = l.committed.map(|c| c.to_string()).unwrap_or("-".into());
                println!(
                    "{group:<28} {topic:<28} {:>9} {committed:>12} {:>12} {:>10}",
                    l.partition, l.high, l.lag
                );
            }
        }
        Ok(())
    }
}

/// Every consumer group of the fleet with the topic it reads.
fn fleet_groups(topics: &Topics) -> Vec<(String, String)> {
    let mut groups: Vec<(String, String)> = Channel::ALL
        .iter()
        .map(|c| (topics.dispatch_group(*c), topics.notify(*c)))
        .collect();
    groups.push((topics.fanout_group(), topics.campaigns()));
    groups.push((topics.metrics_group(), topics.events()));
    for role in Role::ALL {
        groups.push((role.group(topics), role.topic(topics)));
    }
    groups
}
