//! Consumer groups for operators: list them, describe one (state, members, position per
//! partition) and move a group's committed offsets, which is how seeds 003/004 events are
//! replayed after a fix. Blocking calls: run them on a blocking task.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaError, LagProbe, PartitionLag};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One group as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or `Dead`.
    pub state: String,
    /// Member ids with the client host each runs on.
    pub members: Vec<(String, String)>,
}

/// Where a reset moves a group on each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first offset at or after this time (milliseconds since the epoch).
    Timestamp(i64),
    Offset(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;

    /// `earliest`, `latest`, an RFC 3339 time (`2026-12-04T10:00:00Z`) or an offset.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            _ => {
                if let Ok(offset) = s.parse::<i64>() {
                    return if offset >= 0 {
                        Ok(ResetTo::Offset(offset))
                    } else {
                        Err(format!("an offset cannot be negative: {s}"))
                    };
                }
                s.parse::<jiff::Timestamp>()
                    .map(|t| ResetTo::Timestamp(t.as_millisecond()))
                    .map_err(|_| {
                        format!(
                            "expected earliest, latest, an RFC 3339 time or an offset, not {s:?}"
                        )
                    })
            }
        }
    }
}

/// One partition of a reset: where the group is, where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetStep {
    pub partition: i32,
    pub from: Option<i64>,
    pub to: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("group {group} has {members} live member(s) (state {state}): stop its consumers first, a reset under them would be overwritten by their next commit")]
    Live {
        group: String,
        members: usize,
        state: String,
    },
    #[error("topic {0} does not exist")]
    NoTopic(String),
}

fn client(brokers: &str, group: Option<&str>) -> Result<BaseConsumer, KafkaError> {
    let mut config = crate::kafka_security::client_config(brokers);
    config.set("enable.auto.commit", "false");
    if let Some(g) = group {
        config.set("group.id", g);
    }
    config.create().map_err(KafkaError::Setup)
}

/// Every consumer group the cluster knows whose name starts with `prefix`.
pub fn list(brokers: &str, prefix: &str) -> Result<Vec<GroupSummary>, KafkaError> {
    let c = client(brokers, None)?;
    let groups = c
        .fetch_group_list(None, TIMEOUT)
        .map_err(KafkaError::Setup)?;
    let mut out: Vec<GroupSummary> = groups
        .groups()
        .iter()
        .filter(|g| g.name().starts_with(prefix))
        .map(summary)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn summary(g: &rdkafka::groups::GroupInfo) -> GroupSummary {
    GroupSummary {
        name: g.name().to_string(),
        state: g.state().to_string(),
        members: g
            .members()
            .iter()
            .map(|m| (m.id().to_string(), m.client_host().to_string()))
            .collect(),
    }
}

/// The group as its coordinator describes it now (`Dead` if it does not exist).
pub fn describe(brokers: &str, group: &str) -> Result<GroupSummary, KafkaError> {
    let c = client(brokers, None)?;
    let groups = c
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(KafkaError::Setup)?;
    Ok(groups
        .groups()
        .first()
        .map(summary)
        .unwrap_or(GroupSummary {
            name: group.to_string(),
            state: "Dead".into(),
            members: Vec::new(),
        }))
}

/// The group's position on each partition of `topic`.
pub fn positions(brokers: &str, group: &str, topic: &str) -> Result<Vec<PartitionLag>, KafkaError> {
    LagProbe::new(brokers).partition_lags(group, topic)
}

/// A reset under live members would be overwritten by their next commit.
fn refuse_if_live(brokers: &str, group: &str) -> Result<(), GroupError> {
    let now = describe(brokers, group)?;
    if now.members.is_empty() {
        return Ok(());
    }
    Err(GroupError::Live {
        group: group.to_string(),
        members: now.members.len(),
        state: now.state,
    })
}

/// Where a reset of `group` on `topic` to `to` would move each partition; refuses while the
/// group has live members.
pub fn plan_reset(
    brokers: &str,
    group: &str,
    topic: &str,
    to: ResetTo,
) -> Result<Vec<ResetStep>, GroupError> {
    refuse_if_live(brokers, group)?;
    let c = client(brokers, Some(group))?;
    let current = positions(brokers, group, topic)?;
    if current.is_empty() {
        return Err(GroupError::NoTopic(topic.to_string()));
    }
    let by_time = match to {
        ResetTo::Timestamp(ms) => {
            let mut tpl = TopicPartitionList::new();
            for p in &current {
                tpl.add_partition_offset(topic, p.partition, Offset::Offset(ms))
                    .map_err(KafkaError::Setup)?;
            }
            Some(
                c.offsets_for_times(tpl, TIMEOUT)
                    .map_err(KafkaError::Setup)?,
            )
        }
        _ => None,
    };
    let mut steps = Vec::with_capacity(current.len());
    for p in current {
        let (low, high) = c
            .fetch_watermarks(topic, p.partition, TIMEOUT)
            .map_err(KafkaError::Setup)?;
        let target = match to {
            ResetTo::Earliest => low,
            ResetTo::Latest => high,
            ResetTo::Offset(o) => o.clamp(low, high),
            // No message at or after the time: the end, as Kafka's own tool does.
            ResetTo::Timestamp(_) => by_time
                .as_ref()
                .and_then(|t| t.find_partition(topic, p.partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(high),
        };
        steps.push(ResetStep {
            partition: p.partition,
            from: p.committed,
            to: target,
        });
    }
    Ok(steps)
}

/// Commits `steps` as `group`'s offsets on `topic`, after checking again that nobody joined.
pub fn apply_reset(
    brokers: &str,
    group: &str,
    topic: &str,
    steps: &[ResetStep],
) -> Result<(), GroupError> {
    refuse_if_live(brokers, group)?;
    let c = client(brokers, Some(group))?;
    let mut tpl = TopicPartitionList::new();
    for s in steps {
        tpl.add_partition_offset(topic, s.partition, Offset::Offset(s.to))
            .map_err(KafkaError::Setup)?;
    }
    c.commit(&tpl, CommitMode::Sync)
        .map_err(KafkaError::Setup)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse_and_bad_ones_are_named() {
        assert_eq!("earliest".parse(), Ok(ResetTo::Earliest));
        assert_eq!("latest".parse(), Ok(ResetTo::Latest));
        assert_eq!("42".parse(), Ok(ResetTo::Offset(42)));
        assert_eq!(
            "2026-12-04T10:00:00Z".parse(),
            Ok(ResetTo::Timestamp(1_796_378_400_000))
        );
        assert!("-1".parse::<ResetTo>().unwrap_err().contains("negative"));
        assert!("yesterday"
            .parse::<ResetTo>()
            .unwrap_err()
            .contains("\"yesterday\""));
    }
}
