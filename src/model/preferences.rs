//! What a customer chose to hear about: promotions at all, and per topic and channel. A
//! campaign and a flash promo name a [`Topic`]; transactional messages (seed 001 requests,
//! sale confirmations) have none, and preferences never hold them back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Channel, Language, Topic};

/// A customer's choices, as stored: only what differs from "yes to everything", so a
/// customer who never chose costs no memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// `false`: no promotion at all, whatever the topic (the page's "all promotions").
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub promotions: bool,
    /// Per topic, the channels the customer said no to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<Topic, Vec<Channel>>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

impl Preferences {
    pub fn everything() -> Self {
        Preferences {
            promotions: true,
            refused: BTreeMap::new(),
        }
    }

    /// Whether a promotion of `topic` may reach the customer on `channel`.
    pub fn allows(&self, topic: &Topic, channel: Channel) -> bool {
        self.promotions && !self.refuses(topic, channel)
    }

    /// Says no (or yes) to `topic` on `channel`.
    pub fn set(&mut self, topic: &Topic, channel: Channel, allowed: bool) {
        let refused = self.refused.entry(topic.clone()).or_default();
        refused.retain(|c| *c != channel);
        if !allowed {
            refused.push(channel);
            refused.sort();
        }
        if refused.is_empty() {
            self.refused.remove(topic);
        }
    }

    /// Says no to `topic` on every channel (what an e-mail's one-click unsubscribe does).
    pub fn withdraw(&mut self, topic: &Topic) {
        for channel in Channel::ALL {
            self.set(topic, channel, false);
        }
    }

    /// Each choice that differs between `self` (before) and `after`, as `(what, old, new)`
    /// for the consent log: `promotions`, `topic:offers:email`.
    pub fn changes_to(
        &self,
        after: &Preferences,
        topics: &TopicCatalog,
    ) -> Vec<(String, &'static str, &'static str)> {
        let word = |yes: bool| if yes { "subscribed" } else { "unsubscribed" };
        let mut changes = Vec::new();
        if self.promotions != after.promotions {
            changes.push((
                "promotions".to_string(),
                word(self.promotions),
                word(after.promotions),
            ));
        }
        for topic in topics.names() {
            for channel in Channel::ALL {
                let (old, new) = (self.refuses(topic, channel), after.refuses(topic, channel));
                if old != new {
                    changes.push((format!("topic:{topic}:{channel}"), word(!old), word(!new)));
                }
            }
        }
        changes
    }

    /// Whether the customer said no to `topic` on `channel` (whatever `promotions` says).
    pub fn refuses(&self, topic: &Topic, channel: Channel) -> bool {
        self.refused
            .get(topic)
            .is_some_and(|channels| channels.contains(&channel))
    }
}

/// The topics this deployment's campaigns and promos may name, and their labels for the
/// preference page (from the rules file's `[topics]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCatalog {
    /// Per topic, its label per language (`en` at least).
    labels: BTreeMap<Topic, BTreeMap<String, String>>,
    /// The topic of a campaign that names none.
    pub campaign_default: Topic,
    /// The topic of every flash promo.
    pub flash_promos: Topic,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(pub String);

impl TopicCatalog {
    pub fn new(
        labels: BTreeMap<Topic, BTreeMap<String, String>>,
        campaign_default: Topic,
        flash_promos: Topic,
    ) -> Result<Self, CatalogError> {
        for topic in [&campaign_default, &flash_promos] {
            if !labels.contains_key(topic) {
                return Err(CatalogError(format!(
                    "topic {topic:?} is a default but has no [topics.labels.{topic}]"
                )));
            }
        }
        Ok(TopicCatalog {
            labels,
            campaign_default,
            flash_promos,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &Topic> {
        self.labels.keys()
    }

    pub fn contains(&self, topic: &Topic) -> bool {
        self.labels.contains_key(topic)
    }

    /// The topic's label in `language` (its first part, `es` of `es-MX`), else English,
    /// else the topic's own name.
    pub fn label(&self, topic: &Topic, language: Option<&Language>) -> String {
        let labels = self.labels.get(topic);
        let primary = language.map(|l| l.as_str().split('-').next().unwrap_or("en"));
        labels
            .and_then(|l| primary.and_then(|p| l.get(p)).or_else(|| l.get("en")))
            .cloned()
            .unwrap_or_else(|| topic.to_string())
    }

    /// The names as one line, for an error that lists them.
    pub fn listed(&self) -> String {
        self.names()
            .map(Topic::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    #[test]
    fn a_refused_topic_channel_blocks_only_itself_and_promotions_off_blocks_all() {
        let mut p = Preferences::everything();
        p.set(&topic("offers"), Channel::Sms, false);
        assert!(!p.allows(&topic("offers"), Channel::Sms));
        assert!(p.allows(&topic("offers"), Channel::Email));
        assert!(p.allows(&topic("flash-sales"), Channel::Sms));
        p.set(&topic("offers"), Channel::Sms, true);
        assert_eq!(
            p,
            Preferences::everything(),
            "saying yes again leaves nothing stored"
        );
        p.withdraw(&topic("loyalty"));
        assert!(Channel::ALL
            .iter()
            .all(|c| !p.allows(&topic("loyalty"), *c)));
        p.promotions = false;
        assert!(!p.allows(&topic("offers"), Channel::Email));
    }

    #[test]
    fn changes_name_each_choice_that_moved() {
        let labels = [("offers", "Offers"), ("news", "News")]
            .into_iter()
            .map(|(t, l)| (topic(t), [("en".to_string(), l.to_string())].into()))
            .collect();
        let catalog = TopicCatalog::new(labels, topic("offers"), topic("offers")).unwrap();
        let before = Preferences::everything();
        let mut after = before.clone();
        after.set(&topic("news"), Channel::Push, false);
        after.promotions = false;
        assert_eq!(
            before.changes_to(&after, &catalog),
            vec![
                ("promotions".to_string(), "subscribed", "unsubscribed"),
                ("topic:news:push".to_string(), "subscribed", "unsubscribed"),
            ]
        );
        assert_eq!(
            catalog.label(&topic("news"), Language::parse("es-MX").as_ref()),
            "News"
        );
    }
}
