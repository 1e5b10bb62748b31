//! Channel selection as data. Which channel a customer is contacted on, and which one is
//! tried next when a channel stays silent, is decided here and only here, from a TOML file
//! (`config/rules.toml` is the built-in default). Fan-out picks the first channel and
//! `herald-retry` the fallbacks with the same [`Rules::choose`], so both follow one policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Deserialize;

use super::caps::{Caps, Limit};
use super::quiet::QuietHours;
use crate::model::{Campaign, Channel, Customer, Topic, TopicCatalog, UncertainSend};

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
    /// Added to the time caps count windows by (tests of the day boundary).
    caps_clock_offset_ms: i64,
    zones: Mutex<HashMap<String, jiff::tz::TimeZone>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    selection: RawSelection,
    #[serde(default)]
    channels: BTreeMap<String, RawChannel>,
    #[serde(default)]
    topics: Option<RawTopics>,
    #[serde(default)]
    caps: Option<RawCaps>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopics {
    campaigns: String,
    flash_promos: String,
    labels: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaps {
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
    fn limit(&self, name: &str) -> Result<Limit, RulesError> {
        if self.per_day.is_none() && self.per_week.is_none() {
            return Err(RulesError::Invalid(format!(
                "caps.{name} needs per_day, per_week or both"
            )));
        }
        Ok(Limit {
            per_day: self.per_day,
            per_week: self.per_week,
        })
    }
}

/// The topics the built-in rules list, when a rules file has no `[topics]`.
fn default_topics() -> TopicCatalog {
    let label = |en: &str, es: &str| {
        [
            ("en".to_string(), en.to_string()),
            ("es".to_string(), es.to_string()),
        ]
        .into()
    };
    let named = |t: &str| Topic::parse(t).unwrap_or_else(Topic::offers);
    let labels = [
        (
            "offers",
            label("Offers and discounts", "Ofertas y descuentos"),
        ),
        (
            "flash-sales",
            label("Flash sales near you", "Ventas flash cerca de ti"),
        ),
        (
            "loyalty-news",
            label(
                "Loyalty programme news",
                "Novedades del programa de fidelidad",
            ),
        ),
    ]
    .into_iter()
    .map(|(t, l)| (named(t), l))
    .collect();
    TopicCatalog::new(labels, named("offers"), named("flash-sales"))
        .unwrap_or_else(|e| unreachable!("the built-in topics hold: {e}"))
}

fn parse_topics(raw: Option<RawTopics>) -> Result<TopicCatalog, RulesError> {
    let Some(raw) = raw else {
        return Ok(default_topics());
    };
    let topic = |name: &str| {
        Topic::parse(name).ok_or_else(|| {
            RulesError::Invalid(format!(
                "topics: {name:?} is not a topic (1-40 letters, digits, '-', '_' or '.')"
            ))
        })
    };
    let mut labels = BTreeMap::new();
    for (name, by_language) in raw.labels {
        if !by_language.contains_key("en") {
            return Err(RulesError::Invalid(format!(
                "topics.labels.{name} needs an `en` label (the page's fallback language)"
            )));
        }
        labels.insert(topic(&name)?, by_language);
    }
    TopicCatalog::new(labels, topic(&raw.campaigns)?, topic(&raw.flash_promos)?)
        .map_err(|e| RulesError::Invalid(format!("topics: {e}")))
}

fn parse_caps(raw: Option<RawCaps>, topics: &TopicCatalog) -> Result<Caps, RulesError> {
    let Some(raw) = raw else {
        return Ok(Caps::default());
    };
    let mut per_topic = BTreeMap::new();
    for (name, limit) in &raw.topics {
        let topic = Topic::parse(name)
            .filter(|t| topics.contains(t))
            .ok_or_else(|| {
                RulesError::Invalid(format!("caps.topics.{name}: not a configured topic"))
            })?;
        per_topic.insert(topic, limit.limit(&format!("topics.{name}"))?);
    }
    Ok(Caps {
        promotions: raw.promotions.map(|l| l.limit("promotions")).transpose()?,
        topics: per_topic,
        defer: raw.defer,
    })
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
        let topics = parse_topics(raw.topics)?;
        let caps = parse_caps(raw.caps, &topics)?;
        Ok(Rules {
            default_order,
            order_by: raw.selection.order_by,
            quiet_policy: raw.selection.quiet_hours,
            channels,
            topics,
            caps,
            caps_clock_offset_ms: 0,
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

    /// The time caps count by: now, unless a test moved their clock.
    pub fn caps_now_ms(&self) -> u64 {
        (crate::model::now_ms() as i64)
            .saturating_add(self.caps_clock_offset_ms)
            .max(0) as u64
    }

    /// A time on the caps' clock as the real time it falls at (a deferral's due time).
    pub fn caps_time_to_real(&self, caps_ms: u64) -> u64 {
        (caps_ms as i64)
            .saturating_sub(self.caps_clock_offset_ms)
            .max(0) as u64
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
        rules.caps_clock_offset_ms = self.caps_clock_offset_secs.saturating_mul(1000);
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CampaignId, Template, Topic};

    /// 2026-01-15 12:00 UTC, a Thursday.
    const NOON_UTC: u64 = 1_768_478_400_000;
    const HOUR: u64 = 3_600_000;

    fn customer(channels: &[Channel], zone: &str) -> Customer {
        Customer {
            name: None,
            contacts: channels.iter().map(|c| (*c, format!("addr-{c}"))).collect(),
            consent: channels.iter().map(|c| (*c, true)).collect(),
            time_zone: zone.into(),
            location: None,
            attributes: Default::default(),
            language: None,
        }
    }

    fn campaign(order: &[Channel], max_cost: Option<f64>) -> Campaign {
        Campaign {
            id: CampaignId::parse("c").unwrap(),
            name: "t".into(),
            template: Template::try_from("hi".to_string()).unwrap(),
            email: None,
            whatsapp: None,
            translations: Default::default(),
            channels: order.to_vec(),
            confirmation_timeout_ms: Default::default(),
            max_cost,
            recipients: 1,
            created_ms: 0,
            send_at_ms: None,
            topic: Topic::offers(),
            expires_at_ms: None,
        }
    }

    const RULES: &str = r#"
[selection]
default_order = ["push", "email", "sms"]
order_by = "campaign"
quiet_hours = "skip"
[channels.email]
cost = 0.001
[channels.push]
cost = 0.0005
[channels.sms]
cost = 0.05
quiet_hours = { start = "21:00", end = "09:00" }
[channels.whatsapp]
cost = 0.02
quiet_hours = { start = "22:00", end = "08:00" }
"#;

    #[test]
    fn choices_follow_the_rules() {
        use Channel::*;
        let skip = Rules::parse(RULES).unwrap();
        let wait =
            Rules::parse(&RULES.replace(r#"quiet_hours = "skip""#, r#"quiet_hours = "wait""#))
                .unwrap();
        let by_cost =
            Rules::parse(&RULES.replace(r#"order_by = "campaign""#, r#"order_by = "cost""#))
                .unwrap();
        struct Case {
            name: &'static str,
            rules: &'static Rules,
            has: &'static [Channel],
            zone: &'static str,
            order: &'static [Channel],
            max_cost: Option<f64>,
            tried: &'static [Channel],
            unhealthy: &'static [Channel],
            now: u64,
            want: Choice,
        }
        let (skip, wait, by_cost): (&'static Rules, &'static Rules, &'static Rules) = (
            Box::leak(Box::new(skip)),
            Box::leak(Box::new(wait)),
            Box::leak(Box::new(by_cost)),
        );
        let base = Case {
            name: "",
            rules: skip,
            has: &[Email, Sms, Whatsapp, Push],
            zone: "UTC",
            order: &[Sms, Email],
            max_cost: None,
            tried: &[],
            unhealthy: &[],
            now: NOON_UTC,
            want: Choice::Send(Sms),
        };
        let cases = [
            Case {
                name: "campaign order first",
                ..base
            },
            Case {
                name: "default order without a campaign order",
                order: &[],
                want: Choice::Send(Push),
                ..base
            },
            Case {
                name: "missing contact is skipped",
                has: &[Email],
                want: Choice::Send(Email),
                ..base
            },
            Case {
                name: "tried channel is never repeated",
                tried: &[Sms],
                want: Choice::Send(Email),
                ..base
            },
            Case {
                name: "nothing left after the last",
                tried: &[Sms, Email],
                want: Choice::NoChannel("every usable channel was tried"),
                ..base
            },
            Case {
                name: "no channel at all",
                has: &[],
                want: Choice::NoChannel("customer has no usable channel (contact and consent)"),
                ..base
            },
            Case {
                name: "channel outside the campaign's order is not used",
                has: &[Push],
                want: Choice::NoChannel("customer has no usable channel (contact and consent)"),
                ..base
            },
            Case {
                name: "too dear for the campaign",
                max_cost: Some(0.01),
                want: Choice::Send(Email),
                ..base
            },
            Case {
                name: "open circuit goes last",
                unhealthy: &[Sms],
                want: Choice::Send(Email),
                ..base
            },
            Case {
                name: "open circuit still used when alone",
                has: &[Sms],
                unhealthy: &[Sms],
                want: Choice::Send(Sms),
                ..base
            },
            Case {
                name: "cheapest first when ordered by cost",
                rules: by_cost,
                want: Choice::Send(Email),
                ..base
            },
            // 23:00 in Madrid (UTC+1 in January): SMS is quiet, e-mail is not.
            Case {
                name: "quiet hours skip to e-mail",
                zone: "Europe/Madrid",
                now: NOON_UTC + 10 * HOUR,
                want: Choice::Send(Email),
                ..base
            },
            Case {
                name: "quiet hours wait when the rules say so",
                rules: wait,
                zone: "Europe/Madrid",
                now: NOON_UTC + 10 * HOUR,
                want: Choice::WaitUntil {
                    channel: Sms,
                    at_ms: NOON_UTC + 20 * HOUR,
                },
                ..base
            },
            Case {
                name: "only a quiet channel: wait for it",
                has: &[Sms],
                zone: "Europe/Madrid",
                now: NOON_UTC + 10 * HOUR,
                want: Choice::WaitUntil {
                    channel: Sms,
                    at_ms: NOON_UTC + 20 * HOUR,
                },
                ..base
            },
            // Noon UTC is 07:00 in New York (UTC-5): quiet until 09:00 local.
            Case {
                name: "quiet hours read in the customer's zone",
                zone: "America/New_York",
                want: Choice::Send(Email),
                ..base
            },
            Case {
                name: "same hour elsewhere is fine",
                zone: "Asia/Tokyo",
                now: NOON_UTC - 3 * HOUR,
                want: Choice::Send(Sms),
                ..base
            },
        ];
        for c in cases {
            let customer = customer(c.has, c.zone);
            let campaign = campaign(c.order, c.max_cost);
            let got = c.rules.choose(&Situation {
                customer: &customer,
                campaign: &campaign,
                tried: c.tried,
                unhealthy: c.unhealthy,
                now_ms: c.now,
            });
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn consent_withdrawn_means_unused() {
        let rules = Rules::parse(RULES).unwrap();
        let mut c = customer(&[Channel::Email, Channel::Sms], "UTC");
        c.consent.insert(Channel::Sms, false);
        let campaign = campaign(&[Channel::Sms, Channel::Email], None);
        let s = Situation {
            customer: &c,
            campaign: &campaign,
            tried: &[],
            unhealthy: &[],
            now_ms: NOON_UTC,
        };
        assert_eq!(rules.choose(&s), Choice::Send(Channel::Email));
    }

    #[test]
    fn the_built_in_rules_parse_and_bad_ones_are_named() {
        let rules = Rules::load(None).unwrap();
        assert_eq!(rules.default_order[0], Channel::Push);
        let bad = RULES.replace("[channels.sms]", "[channels.fax]");
        assert!(Rules::parse(&bad).unwrap_err().to_string().contains("fax"));
        let bad = RULES.replace("\"21:00\"", "\"25:00\"");
        assert!(Rules::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("quiet_hours"));
        let bad = RULES.replace("order_by = \"campaign\"", "order_by = \"luck\"");
        assert!(Rules::parse(&bad).is_err());
    }

    #[test]
    fn the_uncertain_send_policy_is_per_channel_and_resend_by_default() {
        let rules = Rules::parse(
            "[selection]\ndefault_order = [\"email\", \"sms\"]\n[channels.sms]\nuncertain_send = \"skip\"\n[channels.email]\ncost = 0.001\n",
        )
        .unwrap();
        assert_eq!(rules.uncertain_send(Channel::Sms), UncertainSend::Skip);
        assert_eq!(rules.uncertain_send(Channel::Email), UncertainSend::Resend);
        assert_eq!(rules.uncertain_send(Channel::Push), UncertainSend::Resend);
        let bad = Rules::parse(
            "[selection]\ndefault_order = [\"sms\"]\n[channels.sms]\nuncertain_send = \"maybe\"\n",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("uncertain_send"), "{bad}");
    }

    #[test]
    fn time_zones_are_checked() {
        assert!(crate::model::is_known_time_zone("Europe/Madrid"));
        assert!(!crate::model::is_known_time_zone("europe/madrid"));
        assert!(!crate::model::is_known_time_zone("Mars/Olympus"));
    }
}
