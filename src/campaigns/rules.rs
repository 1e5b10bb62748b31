//! Channel selection as data. Which channel a customer is contacted on, and which one is
//! tried next when a channel stays silent, is decided here and only here, from a TOML file
//! (`config/rules.toml` is the built-in default). Fan-out picks the first channel and
//! `herald-retry` the fallbacks with the same [`Rules::choose`], so both follow one policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Deserialize;

use super::caps::Caps;
use super::quiet::QuietHours;
use crate::model::{Campaign, Channel, Customer, TopicCatalog, UncertainSend};

/// The rules Herald ships with; also a commented example for operators.
pub const DEFAULT_RULES: &str = include_str!("../../config/rules.toml");

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid rules: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderBy {
    Campaign,
    Cost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuietPolicy {
    /// Try the next channel now.
    Skip,
    /// Keep the channel and send when its quiet hours end.
    Wait,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRule {
    pub cost: f64,
    pub confirmation_timeout_ms: u64,
    pub quiet_hours: Option<QuietHours>,
    pub uncertain_send: UncertainSend,
}

/// What to do with one (campaign, customer) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Send(Channel),
    /// The best channel is inside its quiet hours and the rules say wait.
    WaitUntil {
        channel: Channel,
        at_ms: u64,
    },
    /// Nothing left to try; the reason goes to the dead-letter topic.
    NoChannel(&'static str),
}

/// What one decision depends on besides the rules themselves.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub customer: &'a Customer,
    pub campaign: &'a Campaign,
    /// Channels already tried for this (campaign, customer), never tried again.
    pub tried: &'a [Channel],
    /// Channels whose provider circuit is open: tried only when nothing else is left.
    pub unhealthy: &'a [Channel],
    pub now_ms: u64,
}

#[derive(Debug)]
pub struct Rules {
    default_order: Vec<Channel>,
    order_by: OrderBy,
    quiet_policy: QuietPolicy,
    channels: BTreeMap<Channel, ChannelRule>,
    topics: TopicCatalog,
    caps: Caps,
    zones: Mutex<HashMap<String, jiff::tz::TimeZone>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    selection: RawSelection,
    #[serde(default)]
    channels: BTreeMap<String, RawChannel>,
    #[serde(default)]
    topics: Option<super::topics::RawTopics>,
    #[serde(default)]
    caps: Option<super::caps::RawCaps>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelection {
    default_order: Vec<String>,
    #[serde(default = "default_order_by")]
    order_by: OrderBy,
    #[serde(default = "default_quiet_policy")]
    quiet_hours: QuietPolicy,
}

fn default_order_by() -> OrderBy {
    OrderBy::Campaign
}
fn default_quiet_policy() -> QuietPolicy {
    QuietPolicy::Skip
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    #[serde(default)]
    cost: f64,
    #[serde(default = "default_timeout")]
    confirmation_timeout_ms: u64,
    quiet_hours: Option<RawQuiet>,
    #[serde(default)]
    uncertain_send: UncertainSend,
}

fn default_timeout() -> u64 {
    60_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuiet {
    start: String,
    end: String,
}

fn channel_named(name: &str) -> Result<Channel, RulesError> {
    name.parse()
        .map_err(|e: crate::model::UnknownChannel| RulesError::Invalid(e.to_string()))
}

impl Rules {
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let raw: RawRules = toml::from_str(text).map_err(|e| RulesError::Invalid(e.to_string()))?;
        let default_order = raw
            .selection
            .default_order
            .iter()
            .map(|n| channel_named(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut channels = BTreeMap::new();
        for (name, c) in raw.channels {
            let channel = channel_named(&name)?;
            if !(c.cost.is_finite() && c.cost >= 0.0) {
                return Err(RulesError::Invalid(format!(
                    "channels.{name}.cost must be >= 0"
                )));
            }
            let quiet_hours = c
                .quiet_hours
                .map(|q| QuietHours::parse(&q.start, &q.end))
                .transpose()
                .map_err(|e| RulesError::Invalid(format!("channels.{name}.quiet_hours: {e}")))?;
            channels.insert(
                channel,
                ChannelRule {
                    cost: c.cost,
                    confirmation_timeout_ms: c.confirmation_timeout_ms.max(1),
                    uncertain_send: c.uncertain_send,
                    quiet_hours,
                },
            );
        }
        let topics = super::topics::parse(raw.topics).map_err(RulesError::Invalid)?;
        let caps = super::caps::parse(raw.caps, &topics).map_err(RulesError::Invalid)?;
        Ok(Rules {
            default_order,
            order_by: raw.selection.order_by,
            quiet_policy: raw.selection.quiet_hours,
            channels,
            topics,
            caps,
            zones: Mutex::new(HashMap::new()),
        })
    }

    /// The rules in `path`, or the built-in default when there is none.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, RulesError> {
        match path {
            None => Self::parse(DEFAULT_RULES),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| RulesError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::parse(&text)
            }
        }
    }

    /// The topics campaigns, promos and preferences may name.
    pub fn topics(&self) -> &TopicCatalog {
        &self.topics
    }

    /// The frequency caps across campaigns and promos.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    fn rule(&self, channel: Channel) -> Option<&ChannelRule> {
        self.channels.get(&channel)
    }

    /// How long to wait for a receipt on `channel` before falling back.
    /// What a dispatcher does with a send of `channel` a crash left uncertain.
    pub fn uncertain_send(&self, channel: Channel) -> UncertainSend {
        self.rule(channel)
            .map(|r| r.uncertain_send)
            .unwrap_or_default()
    }

    pub fn confirmation_timeout_ms(&self, campaign: &Campaign, channel: Channel) -> u64 {
        campaign
            .confirmation_timeout_ms
            .get(&channel)
            .copied()
            .or_else(|| self.rule(channel).map(|r| r.confirmation_timeout_ms))
            .unwrap_or_else(default_timeout)
    }

    /// The channel to use now for this customer, given what was already tried.
    pub fn choose(&self, s: &Situation<'_>) -> Choice {
        let order = if s.campaign.channels.is_empty() {
            &self.default_order
        } else {
            &s.campaign.channels
        };
        let mut candidates: Vec<Channel> = order
            .iter()
            .copied()
            .filter(|c| !s.tried.contains(c))
            .filter(|c| s.customer.reachable_on(*c).is_some())
            .filter(|c| match (s.campaign.max_cost, self.rule(*c)) {
                (Some(max), Some(rule)) => rule.cost <= max,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Choice::NoChannel(if s.tried.is_empty() {
                "customer has no usable channel (contact and consent)"
            } else {
                "every usable channel was tried"
            });
        }
        if self.order_by == OrderBy::Cost {
            let cost = |c: &Channel| self.rule(*c).map_or(f64::MAX, |r| r.cost);
            candidates.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
        }
        // An open circuit pushes its channel to the back rather than out: a provider outage
        // should not cost a customer the offer if nothing else reaches them.
        candidates.sort_by_key(|c| s.unhealthy.contains(c));

        let mut first_quiet: Option<(Channel, u64)> = None;
        for channel in candidates {
            match self.quiet_for(channel, s.customer, s.now_ms) {
                None => return Choice::Send(channel),
                Some(left_ms) => {
                    let at_ms = s.now_ms + left_ms;
                    if self.quiet_policy == QuietPolicy::Wait {
                        return Choice::WaitUntil { channel, at_ms };
                    }
                    first_quiet.get_or_insert((channel, at_ms));
                }
            }
        }
        // Every channel left is quiet now: wait for the first rather than give up.
        match first_quiet {
            Some((channel, at_ms)) => Choice::WaitUntil { channel, at_ms },
            None => Choice::NoChannel("every usable channel was tried"),
        }
    }

    /// `Some(ms until the quiet hours end)` when `channel` is quiet for this customer now.
    fn quiet_for(&self, channel: Channel, customer: &Customer, now_ms: u64) -> Option<u64> {
        let window = self.rule(channel)?.quiet_hours?;
        let minute = self.local_minute(&customer.time_zone, now_ms);
        window.contains(minute).then(|| {
            let into_minute_ms = now_ms % 60_000;
            (window.minutes_left(minute) as u64 * 60_000).saturating_sub(into_minute_ms)
        })
    }

    fn local_minute(&self, zone: &str, now_ms: u64) -> u32 {
        let tz = {
            let mut zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
            zones
                .entry(zone.to_string())
                .or_insert_with(|| jiff::tz::db().get(zone).unwrap_or(jiff::tz::TimeZone::UTC))
                .clone()
        };
        let ts =
            jiff::Timestamp::from_millisecond(now_ms as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let local = ts.to_zoned(tz);
        local.hour() as u32 * 60 + local.minute() as u32
    }
}

impl crate::config::RulesArgs {
    /// The rules this flag names, or the built-in default.
    pub fn load(&self) -> Result<Rules, RulesError> {
        let mut rules = Rules::load(self.rules.as_deref())?;
        rules.caps.clock_offset_ms = self.caps_clock_offset_secs.saturating_mul(1000);
        Ok(rules)
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
