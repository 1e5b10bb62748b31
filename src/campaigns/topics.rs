//! The rules file's `[topics]`: what campaigns and flash promos may be about, and their
//! labels on the preference page (see `model::preferences`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{Topic, TopicCatalog};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopics {
    campaigns: String,
    flash_promos: String,
    labels: BTreeMap<String, BTreeMap<String, String>>,
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

pub(super) fn parse(raw: Option<RawTopics>) -> Result<TopicCatalog, String> {
    let Some(raw) = raw else {
        return Ok(default_topics());
    };
    let topic = |name: &str| {
        Topic::parse(name).ok_or_else(|| {
            format!("topics: {name:?} is not a topic (1-40 letters, digits, '-', '_' or '.')")
        })
    };
    let mut labels = BTreeMap::new();
    for (name, by_language) in raw.labels {
        if !by_language.contains_key("en") {
            return Err(format!(
                "topics.labels.{name} needs an `en` label (the page's fallback language)"
            ));
        }
        labels.insert(topic(&name)?, by_language);
    }
    TopicCatalog::new(labels, topic(&raw.campaigns)?, topic(&raw.flash_promos)?)
        .map_err(|e| format!("topics: {e}"))
}
