//! `herald topics` and `herald lag`: the fleet's Kafka topics and how far each consumer
//! group is behind.

use anyhow::Context;
use clap::Subcommand;

use super::KafkaArgs;
use crate::events::Role;
use crate::kafka::{create_topics, LagProbe, TopicSettings, Topics};
use crate::model::Channel;

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create every topic of the fleet through the Kafka admin API (existing ones are kept).
    /// Partitions bound how many instances of one consumer group can work at once.
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, env = "HERALD_TOPIC_PARTITIONS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=10_000))]
        partitions: i32,
        /// Copies of each partition: 3 on a production cluster, so that losing a broker
        /// loses nothing.
        #[arg(long, alias = "replication", env = "HERALD_TOPIC_REPLICATION", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
        replication_factor: i32,
        /// Copies that must hold a message before Herald's producers (acks=all) count it
        /// written; 2 with a replication factor of 3. Left to the broker's default if unset.
        #[arg(long, env = "HERALD_TOPIC_MIN_INSYNC_REPLICAS", value_parser = clap::value_parser!(i32).range(1..=16))]
        min_insync_replicas: Option<i32>,
    },
}

pub async fn execute(command: TopicsCommand) -> anyhow::Result<()> {
    let TopicsCommand::Create {
        kafka,
        partitions,
        replication_factor,
        min_insync_replicas,
    } = command;
    if let Some(min) = min_insync_replicas {
        anyhow::ensure!(
            min <= replication_factor,
            "--min-insync-replicas {min} is more than --replication-factor {replication_factor}: no write could ever succeed"
        );
    }
    let settings = TopicSettings {
        partitions,
        replication: replication_factor,
        min_insync_replicas,
    };
    let (created, existing) = create_topics(&kafka.kafka_brokers, &kafka.topics(), settings)
        .await
        .with_context(|| format!("creating topics on {}", kafka.kafka_brokers))?;
    for t in &created {
        println!("created  {t} ({partitions} partitions, replication factor {replication_factor})");
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
