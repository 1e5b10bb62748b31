//! Frequency caps across campaigns and flash promos: at most so many promotions a day and a
//! week per customer, in all (`[caps.promotions]`) and per topic (`[caps.topics.NAME]`), the
//! day and week being the customer's own (their time zone; weeks start on Monday).
//! Transactional messages never count and are never held back.
//!
//! A campaign counts once per customer however many channels it falls back through: the
//! counters hold campaign ids, and taking a cap a campaign already holds passes (a replayed
//! batch, a deferred delivery coming due). The check and the count are one Redis script on
//! the customer's own keys, so two campaigns fanning out at once cannot both pass a cap of one.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::frequency::{Counter, Limit, Verdict, Windows};
use crate::model::{Campaign, Channel, CustomerId, Delivery, Topic, TopicCatalog};
use crate::store::{CampaignStore, CapAsk, StoreError};

/// The caps of the rules file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// Every promotion together, whatever its topic.
    pub promotions: Option<Limit>,
    pub topics: BTreeMap<Topic, Limit>,
    /// A capped delivery waits for the next window (`true`) instead of ending `capped`.
    pub defer: bool,
    /// Added to the time caps count windows by (tests of the day boundary).
    pub clock_offset_ms: i64,
}

impl Caps {
    /// The counters a promotion of `topic` is held against, with their limits; empty when
    /// no cap applies (and then nothing is counted either).
    pub fn applying(&self, topic: &Topic) -> Vec<(Counter, Limit)> {
        let mut out = Vec::new();
        if let Some(limit) = self.promotions {
            out.push((Counter::Promotions, limit));
        }
        if let Some(limit) = self.topics.get(topic) {
            out.push((Counter::Topic(topic.clone()), *limit));
        }
        out
    }

    /// The time caps count by: now, unless a test moved their clock.
    pub fn now_ms(&self) -> u64 {
        (crate::model::now_ms() as i64)
            .saturating_add(self.clock_offset_ms)
            .max(0) as u64
    }

    /// A time on the caps' clock as the real time it falls at (a deferral's due time).
    pub fn to_real_ms(&self, caps_ms: u64) -> u64 {
        (caps_ms as i64).saturating_sub(self.clock_offset_ms).max(0) as u64
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaps {
    #[serde(default)]
    defer: bool,
    #[serde(default)]
    promotions: Option<RawLimit>,
    #[serde(default)]
    topics: BTreeMap<String, RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    per_day: Option<u32>,
    per_week: Option<u32>,
}

impl RawLimit {
    fn limit(&self, name: &str) -> Result<Limit, String> {
        if self.per_day.is_none() && self.per_week.is_none() {
            return Err(format!("caps.{name} needs per_day, per_week or both"));
        }
        Ok(Limit {
            per_day: self.per_day,
            per_week: self.per_week,
        })
    }
}

pub(super) fn parse(raw: Option<RawCaps>, topics: &TopicCatalog) -> Result<Caps, String> {
    let Some(raw) = raw else {
        return Ok(Caps::default());
    };
    let mut per_topic = BTreeMap::new();
    for (name, limit) in &raw.topics {
        let topic = Topic::parse(name)
            .filter(|t| topics.contains(t))
            .ok_or_else(|| format!("caps.topics.{name}: not a configured topic"))?;
        per_topic.insert(topic, limit.limit(&format!("topics.{name}"))?);
    }
    Ok(Caps {
        promotions: raw.promotions.map(|l| l.limit("promotions")).transpose()?,
        topics: per_topic,
        defer: raw.defer,
        clock_offset_ms: 0,
    })
}

/// A promotion a cap held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub customer: CustomerId,
    pub channel: Channel,
    pub reason: String,
    /// When the window that is full ends.
    pub until_ms: u64,
}

/// Counts `campaign` against the caps of each of `sends` (a delivery and its customer's time
/// zone): answers the deliveries that may go, and those held back. Redis is not asked when
/// no cap applies to the campaign's topic.
pub async fn hold_back(
    store: &CampaignStore,
    caps: &Caps,
    campaign: &Campaign,
    sends: Vec<(Delivery, &str)>,
) -> Result<(Vec<Delivery>, Vec<Held>), StoreError> {
    let counters = caps.applying(&campaign.topic);
    if counters.is_empty() || sends.is_empty() {
        return Ok((sends.into_iter().map(|(d, _)| d).collect(), Vec::new()));
    }
    let now = caps.now_ms();
    let windows: Vec<Windows> = sends.iter().map(|(_, tz)| Windows::at(tz, now)).collect();
    let asks: Vec<CapAsk<'_>> = sends
        .iter()
        .zip(&windows)
        .map(|((d, _), w)| CapAsk {
            customer: &d.customer,
            windows: *w,
        })
        .collect();
    let answers = store.take_caps(&campaign.id, &counters, &asks, now).await?;
    let (mut passed, mut held) = (Vec::with_capacity(sends.len()), Vec::new());
    for (((d, _), w), answer) in sends.into_iter().zip(&windows).zip(answers) {
        match Verdict::from_script(answer, &counters, w) {
            Verdict::Pass => passed.push(d),
            Verdict::Capped { reason, until_ms } => held.push(Held {
                customer: d.customer,
                channel: d.message.channel,
                reason,
                until_ms: caps.to_real_ms(until_ms),
            }),
        }
    }
    Ok((passed, held))
}
