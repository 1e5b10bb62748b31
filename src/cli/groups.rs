//! `herald groups`: the fleet's consumer groups, and moving one back or forward to replay or
//! skip work (events after a fix, say). A reset refuses while the group has live members.

use anyhow::Context;
use clap::Subcommand;

use super::KafkaArgs;
use crate::kafka::groups::{self, ResetTo};

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// Every consumer group of the namespace, with its state and members.
    List {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// One group: state, members, and its committed offset and lag per partition of TOPIC.
    Describe {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        on: GroupOnTopic,
    },
    /// Moves GROUP's committed offsets on TOPIC. Stop the group's consumers first: it refuses
    /// while the group has live members. Start them again afterwards to replay (or skip).
    Reset {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        on: GroupOnTopic,
        /// earliest, latest, an RFC 3339 time (the first message at or after it) or an offset.
        #[arg(long)]
        to: ResetTo,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A consumer group and one of the topics it reads.
#[derive(clap::Args, Debug)]
pub struct GroupOnTopic {
    /// The group's full name, e.g. herald-loyalty (`herald groups list` shows them).
    #[arg(long)]
    group: String,
    /// The topic's full name, e.g. herald.sales.
    #[arg(long)]
    topic: String,
}

pub async fn execute(command: GroupsCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || execute_blocking(command)).await?
}

fn execute_blocking(command: GroupsCommand) -> anyhow::Result<()> {
    match command {
        GroupsCommand::List { kafka } => {
            let all = groups::list(&kafka.kafka_brokers, &kafka.namespace)
                .with_context(|| format!("listing groups on {}", kafka.kafka_brokers))?;
            println!("{:<40} {:<22} {:>7}", "group", "state", "members");
            for g in all {
                println!("{:<40} {:<22} {:>7}", g.name, g.state, g.members.len());
            }
        }
        GroupsCommand::Describe {
            kafka,
            on: GroupOnTopic { group, topic },
        } => {
            let g = groups::describe(&kafka.kafka_brokers, &group)?;
            println!(
                "group {}: {}, {} member(s)",
                g.name,
                g.state,
                g.members.len()
            );
            for (id, host) in &g.members {
                println!("  member {id} on {host}");
            }
            let positions = groups::positions(&kafka.kafka_brokers, &group, &topic)
                .with_context(|| format!("reading {group}'s offsets on {topic}"))?;
            println!(
                "{:>9} {:>12} {:>12} {:>10}",
                "partition", "committed", "newest", "lag"
            );
            for p in positions {
                let committed = p.committed.map(|c| c.to_string()).unwrap_or("-".into());
                println!(
                    "{:>9} {committed:>12} {:>12} {:>10}",
                    p.partition, p.high, p.lag
                );
            }
        }
        GroupsCommand::Reset {
            kafka,
            on: GroupOnTopic { group, topic },
            to,
            dry_run,
        } => {
            let steps = groups::plan_reset(&kafka.kafka_brokers, &group, &topic, to)?;
            println!("{:>9} {:>12} {:>12}", "partition", "from", "to");
            for s in &steps {
                let from = s.from.map(|c| c.to_string()).unwrap_or("-".into());
                println!("{:>9} {from:>12} {:>12}", s.partition, s.to);
            }
            if dry_run {
                println!("dry run: nothing changed");
            } else {
                groups::apply_reset(&kafka.kafka_brokers, &group, &topic, &steps)?;
                println!("group {group} moved on {topic}");
            }
        }
    }
    Ok(())
}
