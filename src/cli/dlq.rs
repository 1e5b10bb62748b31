//! The dead-letter topic for operators: `herald dlq list` reads it, `herald dlq replay` sends
//! what can be retried back where it came from once its cause is fixed.
//!
//! Two kinds of dead letters: copies of messages a consumer could not handle (they carry
//! `herald-source-topic` and are republished there, headers and key intact), and records a
//! program made itself (`herald-origin`). Of those, a customer fan-out could not reach
//! (unknown, or no channel) is replayed by reopening its campaign slot and fanning that
//! customer out again; a fallback chain that ran out is not replayed (it was sent before).

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use super::KafkaArgs;
use crate::kafka::{self, dlq_headers, KafkaError, Topics, DLQ_ORIGIN_HEADER};
use crate::model::{CampaignBatch, CampaignId, CustomerId};
use crate::store::{Redis, SlotStore, StoreError};

/// One message of the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub reason: String,
    pub source_topic: Option<String>,
    pub origin: Option<String>,
    pub payload: Vec<u8>,
    /// The original message's own headers (Herald's dead-letter headers left out).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What replaying a dead letter does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Publish the original message to its source topic again.
    Republish { topic: String },
    /// Reopen the customer's campaign slot and fan them out again.
    FanOutAgain {
        campaign: CampaignId,
        customer: CustomerId,
    },
    /// Not replayable, and why.
    Skip(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads every message on `topic` now, from the oldest (blocking; no group offsets are
/// committed, so reading changes nothing).
pub fn read_all(brokers: &str, topic: &str) -> Result<Vec<DeadLetter>, KafkaError> {
    let consumer: BaseConsumer = crate::kafka_security::client_config(brokers)
        .set(
            "group.id",
            format!("{topic}-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .map_err(KafkaError::Setup)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(KafkaError::Setup)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = std::collections::HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(KafkaError::Setup)?;
        if high > low {
            assignment
                .add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(KafkaError::Setup)?;
            remaining += high - low;
            ends.insert(p, high);
        }
    }
    let mut letters = Vec::new();
    if remaining == 0 {
        return Ok(letters);
    }
    consumer.assign(&assignment).map_err(KafkaError::Setup)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while remaining > 0 && std::time::Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = msg.map_err(KafkaError::Setup)?;
        if ends
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() < *end)
        {
            remaining -= 1;
            letters.push(dead_letter_of(&msg.detach()));
        }
    }
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

fn dead_letter_of(msg: &rdkafka::message::OwnedMessage) -> DeadLetter {
    let text = |name: &str| kafka::header(msg, name).map(str::to_string);
    let own_headers = msg
        .headers()
        .map(|h| {
            h.iter()
                .filter(|h| !h.key.starts_with("herald-dlq") && !h.key.starts_with("herald-source"))
                .filter(|h| h.key != DLQ_ORIGIN_HEADER)
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    DeadLetter {
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg
            .key()
            .map(|k| String::from_utf8_lossy(k).to_string())
            .unwrap_or_default(),
        reason: text(dlq_headers::REASON).unwrap_or_else(|| "(no reason)".into()),
        source_topic: text(dlq_headers::SOURCE_TOPIC),
        origin: text(DLQ_ORIGIN_HEADER),
        payload: msg.payload().unwrap_or_default().to_vec(),
        headers: own_headers,
    }
}

/// The body of fan-out's record of a customer it could not reach.
#[derive(Deserialize)]
struct Unreachable {
    campaign: CampaignId,
    customer: CustomerId,
}

/// What replaying `letter` would do.
pub fn plan(letter: &DeadLetter) -> Replay {
    if let Some(topic) = &letter.source_topic {
        return Replay::Republish {
            topic: topic.clone(),
        };
    }
    match letter.origin.as_deref() {
        Some("herald-fanout") => match serde_json::from_slice::<Unreachable>(&letter.payload) {
            Ok(u) => Replay::FanOutAgain {
                campaign: u.campaign,
                customer: u.customer,
            },
            Err(e) => Replay::Skip(format!("unreadable fan-out record: {e}")),
        },
        Some(origin) => Replay::Skip(format!(
            "made by {origin}: its channels were tried; not replayed"
        )),
        None => Replay::Skip("no source topic".into()),
    }
}

/// Carries out a replay. `Ok(false)` when there was nothing to do (a slot that is no longer
/// failed, a record that cannot be replayed).
pub async fn replay(
    letter: &DeadLetter,
    action: &Replay,
    store: &SlotStore,
    producer: &FutureProducer,
    topics: &Topics,
) -> Result<bool, DlqError> {
    match action {
        Replay::Republish { topic } => {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &letter.headers {
                headers = headers.insert(Header {
                    key: k.as_str(),
                    value: Some(v.as_slice()),
                });
            }
            kafka::publish(producer, topic, &letter.key, &letter.payload, Some(headers)).await?;
            Ok(true)
        }
        Replay::FanOutAgain { campaign, customer } => {
            if !store.reopen_unreachable(campaign, customer).await? {
                return Ok(false);
            }
            let batch = CampaignBatch {
                campaign: campaign.clone(),
                batch: u32::MAX,
                customers: vec![customer.clone()],
            };
            kafka::publish_json(producer, &topics.campaigns(), campaign.as_str(), &batch).await?;
            Ok(true)
        }
        Replay::Skip(_) => Ok(false),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeadLetterTopic {
    Fleet,
    UserEvents,
}

#[derive(clap::Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters (oldest first) with their reason and where they came from.
    List {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Which dead-letter topic: the fleet's (`herald.dlq`: notifications, campaigns,
        /// sales) or the user events' (`herald.user-events.dlq`).
        #[arg(long, value_enum, default_value_t = DeadLetterTopic::Fleet)]
        topic: DeadLetterTopic,
        /// Only those whose reason contains this text.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replay dead letters once their cause is fixed: a message goes back to its source
    /// topic; a customer fan-out could not reach is fanned out again. Anything already
    /// delivered is not sent twice (the campaign slot or request claim decides).
    Replay {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Which dead-letter topic: the fleet's (`herald.dlq`: notifications, campaigns,
        /// sales) or the user events' (`herald.user-events.dlq`).
        #[arg(long, value_enum, default_value_t = DeadLetterTopic::Fleet)]
        topic: DeadLetterTopic,
        /// Redis URL (to reopen unreachable customers' campaign slots).
        #[arg(
            long,
            env = "HERALD_REDIS_URL",
            default_value = "redis://127.0.0.1:6399"
        )]
        redis_url: String,
        /// Only those whose reason contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Show what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn execute(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            kafka,
            topic,
            reason,
        } => {
            for l in read_dead_letters(&kafka, topic, reason.as_deref()).await? {
                let from = l
                    .source_topic
                    .clone()
                    .or(l.origin.clone())
                    .unwrap_or_else(|| "?".into());
                println!(
                    "{}:{:<8} {:<24} key={:<30} reason: {}",
                    l.partition, l.offset, from, l.key, l.reason
                );
            }
            Ok(())
        }
        DlqCommand::Replay {
            kafka,
            topic,
            redis_url,
            reason,
            dry_run,
        } => replay_all(&kafka, topic, &redis_url, reason.as_deref(), dry_run).await,
    }
}

async fn replay_all(
    kafka: &KafkaArgs,
    which: DeadLetterTopic,
    redis_url: &str,
    reason: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let letters = read_dead_letters(kafka, which, reason).await?;
    let topics = kafka.topics();
    let redis = Redis::connect(redis_url, &kafka.namespace)
        .await
        .with_context(|| {
            format!(
                "connecting to Redis at {}",
                crate::config::redacted_url(redis_url)
            )
        })?;
    let store = SlotStore::new(&redis);
    let producer = kafka::producer(&kafka.kafka_brokers)?;
    let (mut done, mut skipped) = (0, 0);
    for l in &letters {
        let action = plan(l);
        let what = match &action {
            Replay::Republish { topic } => format!("republish to {topic}"),
            Replay::FanOutAgain { campaign, customer } => {
                format!("fan out {customer} of campaign {campaign} again")
            }
            Replay::Skip(why) => format!("skip: {why}"),
        };
        if dry_run {
            println!("{}:{} would {what}", l.partition, l.offset);
            continue;
        }
        if replay(l, &action, &store, &producer, &topics).await? {
            done += 1;
            println!("{}:{} {what}", l.partition, l.offset);
        } else {
            skipped += 1;
            println!("{}:{} nothing to do ({what})", l.partition, l.offset);
        }
    }
    println!("{}", summary(dry_run, done, skipped, letters.len()));
    Ok(())
}

/// The last line of a replay: with none to replay, or a dry run, it still says what it found.
fn summary(dry_run: bool, done: usize, skipped: usize, letters: usize) -> String {
    if dry_run {
        format!("dry run: {letters} dead letters, nothing replayed")
    } else {
        format!("replayed {done}, left {skipped} of {letters} dead letters")
    }
}

/// The dead letters of the fleet, optionally only those whose reason contains `reason`.
async fn read_dead_letters(
    kafka: &KafkaArgs,
    which: DeadLetterTopic,
    reason: Option<&str>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let topics = kafka.topics();
    let topic = match which {
        DeadLetterTopic::Fleet => topics.dlq(),
        DeadLetterTopic::UserEvents => topics.user_events_dlq(),
    };
    let brokers = kafka.kafka_brokers.clone();
    let letters = tokio::task::spawn_blocking(move || read_all(&brokers, &topic))
        .await?
        .context("reading the dead-letter topic")?;
    Ok(letters
        .into_iter()
        .filter(|l| reason.is_none_or(|r| l.reason.contains(r)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(source: Option<&str>, origin: Option<&str>, payload: &str) -> DeadLetter {
        DeadLetter {
            partition: 0,
            offset: 0,
            key: "k".into(),
            reason: "r".into(),
            source_topic: source.map(String::from),
            origin: origin.map(String::from),
            payload: payload.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_dry_run_says_how_many_letters_it_found_and_that_it_replayed_none() {
        assert_eq!(
            summary(true, 0, 0, 0),
            "dry run: 0 dead letters, nothing replayed"
        );
        assert_eq!(
            summary(false, 2, 1, 3),
            "replayed 2, left 1 of 3 dead letters"
        );
    }

    #[test]
    fn the_plan_follows_where_the_letter_came_from() {
        assert_eq!(
            plan(&letter(Some("herald.notify.email"), None, "x")),
            Replay::Republish {
                topic: "herald.notify.email".into()
            }
        );
        assert_eq!(
            plan(&letter(
                None,
                Some("herald-fanout"),
                r#"{"campaign":"c1","customer":"u1","reason":"no channel"}"#
            )),
            Replay::FanOutAgain {
                campaign: CampaignId::parse("c1").unwrap(),
                customer: CustomerId::parse("u1").unwrap(),
            }
        );
        assert!(matches!(
            plan(&letter(None, Some("herald-retry"), "{}")),
            Replay::Skip(_)
        ));
        assert!(matches!(
            plan(&letter(None, Some("herald-fanout"), "{")),
            Replay::Skip(_)
        ));
    }
}
