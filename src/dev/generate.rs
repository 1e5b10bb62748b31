//! `herald-dev generate-events`: realistic user and sale events straight onto the topics, for
//! the demo and the benchmarks of seeds 003 and 004. Shoppers click, view, add to cart
//! and buy in skewed categories; every purchase is also a `sale_completed`; a share of
//! the events is invalid (each kind of mistake the consumers must dead-letter) and a share
//! is published twice.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use serde::Serialize;
use serde_json::json;

use crate::kafka::Topics;

#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Events per second; 0 for as fast as the broker takes them.
    pub rate: u64,
    pub duration: Duration,
    /// Stop after this many events even if time is left.
    pub max_events: Option<u64>,
    /// Shoppers `{prefix}0` … `{prefix}{users-1}`.
    pub users: u64,
    pub user_prefix: String,
    /// Share of events that are invalid, and of valid ones published twice.
    pub invalid_ratio: f64,
    pub duplicate_ratio: f64,
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            rate: 1000,
            duration: Duration::from_secs(10),
            max_events: None,
            users: 10_000,
            user_prefix: "c".into(),
            invalid_ratio: 0.01,
            duplicate_ratio: 0.01,
            seed: 1,
        }
    }
}

/// What was published.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GenerateReport {
    /// Distinct valid user events (each `event_id` once).
    pub user_events: u64,
    /// Distinct valid sales (one per purchase).
    pub sales: u64,
    /// Invalid records: user events and sales.
    pub invalid_user_events: u64,
    pub invalid_sales: u64,
    /// Second copies of valid records.
    pub duplicate_user_events: u64,
    pub duplicate_sales: u64,
    /// Every record published, copies and invalid ones included.
    pub published: u64,
    pub elapsed_s: f64,
    pub published_per_sec: f64,
}

const CATEGORIES: [(&str, u32); 8] = [
    ("electronics", 25),
    ("fashion", 20),
    ("home", 15),
    ("grocery", 12),
    ("sports", 10),
    ("beauty", 8),
    ("books", 6),
    ("toys", 4),
];

/// Draws events; pure, so its mix can be tested without a broker.
struct Shop {
    rng: StdRng,
    run: String,
    config: GenerateConfig,
    recent: Vec<(String, String, Vec<u8>)>,
    next: u64,
}

/// A record to publish: topic, key, payload.
type Record = (String, String, Vec<u8>);

impl Shop {
    fn new(config: GenerateConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        // Ids unique per run (a second run is new events, not copies); the mix follows the seed.
        let run = format!("g{:x}", crate::model::now_ms());
        Shop {
            rng,
            run,
            config,
            recent: Vec::new(),
            next: 0,
        }
    }

    fn category(&mut self) -> &'static str {
        let total: u32 = CATEGORIES.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.random_range(0..total);
        for (name, weight) in CATEGORIES {
            if pick < weight {
                return name;
            }
            pick -= weight;
        }
        CATEGORIES[0].0
    }

    /// The records of the next event: one user event, plus a sale for a purchase.
    fn next_records(&mut self, topics: &Topics, report: &mut GenerateReport) -> Vec<Record> {
        if !self.recent.is_empty() && self.rng.random_bool(self.config.duplicate_ratio) {
            let i = self.rng.random_range(0..self.recent.len());
            let copy = self.recent[i].clone();
            if copy.0 == topics.sales() {
                report.duplicate_sales += 1;
            } else {
                report.duplicate_user_events += 1;
            }
            return vec![copy];
        }
        if self.rng.random_bool(self.config.invalid_ratio) {
            return vec![self.invalid(topics, report)];
        }
        self.next += 1;
        let n = self.next;
        // Skewed: a few shoppers do much of the clicking.
        let u = (self.rng.random::<f64>().powi(2) * self.config.users.max(1) as f64) as u64;
        let user = format!("{}{u}", self.config.user_prefix);
        let event_id = format!("{}-{n}", self.run);
        let category = self.category();
        let now = jiff::Timestamp::now().to_string();
        let action = match self.rng.random_range(0..100) {
            0..=54 => "click",
            55..=84 => "view",
            85..=94 => "add_to_cart",
            _ => "purchase",
        };
        let mut event = json!({"event_id": event_id, "user_id": user, "event_type": action,
            "category": category, "product_id": format!("p-{}", self.rng.random_range(1..5000)),
            "timestamp": now});
        let mut records = Vec::with_capacity(2);
        if action == "purchase" {
            let quantity = self.rng.random_range(1..=3u32);
            let cents = self.rng.random_range(499..=29_999u64) * u64::from(quantity);
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            event["amount"] = json!(amount);
            let sale = json!({"event_type": "sale_completed", "sale_id": format!("{}-s{n}", self.run),
                "product_id": event["product_id"], "product_name": format!("{category} item"),
                "quantity": quantity, "total": amount, "customer_email": format!("{user}@example.com"),
                "customer_id": user, "timestamp": now});
            records.push((
                topics.sales(),
                format!("{}-s{n}", self.run),
                sale.to_string().into_bytes(),
            ));
            report.sales += 1;
        }
        records.push((topics.user_events(), user, event.to_string().into_bytes()));
        report.user_events += 1;
        for r in &records {
            if self.recent.len() < 1000 {
                self.recent.push(r.clone());
            } else {
                let i = self.rng.random_range(0..self.recent.len());
                self.recent[i] = r.clone();
            }
        }
        records
    }

    /// One of the mistakes producers make.
    fn invalid(&mut self, topics: &Topics, report: &mut GenerateReport) -> Record {
        let now = jiff::Timestamp::now().to_string();
        let id = format!(
            "{}-bad{}",
            self.run,
            report.invalid_user_events + report.invalid_sales
        );
        let user_event = |body: serde_json::Value| {
            (
                topics.user_events(),
                "bad".to_string(),
                body.to_string().into_bytes(),
            )
        };
        let record = match self.rng.random_range(0..7) {
            0 => (
                topics.user_events(),
                "bad".into(),
                b"{\"event_id\": \"truncated".to_vec(),
            ),
            1 => user_event(json!({"event_id": id, "event_type": "click", "timestamp": now})),
            2 => user_event(
                json!({"event_id": id, "user_id": "c1", "event_type": "hover", "timestamp": now}),
            ),
            3 => user_event(
                json!({"event_id": id, "user_id": "c1", "event_type": "purchase", "amount": "-5.00", "timestamp": now}),
            ),
            4 => user_event(
                json!({"event_id": id, "user_id": "c1", "event_type": "click", "timestamp": "yesterday"}),
            ),
            5 => user_event(
                json!({"event_id": id, "user_id": "c1", "event_type": "click", "amount": "1.00", "timestamp": now}),
            ),
            _ => {
                report.invalid_sales += 1;
                let sale = json!({"event_type": "sale_completed", "sale_id": id, "product_id": 1,
                    "product_name": "x", "quantity": 0, "total": 10, "customer_email": "c1@example.com",
                    "timestamp": now});
                return (topics.sales(), id, sale.to_string().into_bytes());
            }
        };
        report.invalid_user_events += 1;
        record
    }
}

/// Publishes events at `config.rate` for `config.duration`, calling `progress` about four
/// times a second. Blocking: run it on a blocking thread.
pub fn generate(
    brokers: &str,
    topics: &Topics,
    config: GenerateConfig,
    mut progress: impl FnMut(&GenerateReport),
) -> Result<GenerateReport, rdkafka::error::KafkaError> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        crate::kafka_security::client_config(brokers)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create()?;
    let (rate, duration, max) = (
        config.rate,
        config.duration,
        config.max_events.unwrap_or(u64::MAX),
    );
    let mut shop = Shop::new(config);
    let mut report = GenerateReport::default();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut events = 0u64;
    while started.elapsed() < duration && events < max {
        if rate > 0 {
            // Paced: event i is due at i/rate seconds.
            let due = Duration::from_secs_f64(events as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_millis(50)));
                continue;
            }
        }
        for (topic, key, payload) in shop.next_records(topics, &mut report) {
            crate::dev::kafka_bench::send_waiting(&producer, &topic, &key, &payload)?;
            report.published += 1;
        }
        events += 1;
        if last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            report.elapsed_s = started.elapsed().as_secs_f64();
            progress(&report);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.published_per_sec = report.published as f64 / report.elapsed_s.max(1e-9);
    progress(&report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::commerce::{SaleEvent, UserEvent};

    #[test]
    fn the_mix_has_valid_events_sales_for_purchases_mistakes_and_copies() {
        let topics = Topics::new("herald");
        let mut shop = Shop::new(GenerateConfig {
            invalid_ratio: 0.05,
            duplicate_ratio: 0.05,
            ..GenerateConfig::default()
        });
        let mut report = GenerateReport::default();
        let (mut valid, mut invalid) = (0u64, 0u64);
        let now = crate::model::now_ms();
        for _ in 0..5000 {
            for (topic, _, payload) in shop.next_records(&topics, &mut report) {
                let ok = if topic == topics.sales() {
                    serde_json::from_slice::<SaleEvent>(&payload)
                        .ok()
                        .is_some_and(|s| s.validate(now).is_ok())
                } else {
                    serde_json::from_slice::<UserEvent>(&payload)
                        .ok()
                        .is_some_and(|e| e.validate(now).is_ok())
                };
                if ok {
                    valid += 1;
                } else {
                    invalid += 1;
                }
            }
        }
        assert_eq!(
            invalid,
            report.invalid_user_events + report.invalid_sales,
            "every record counted invalid fails validation, and only those"
        );
        assert!(report.sales > 100 && report.sales < report.user_events / 10);
        assert!(report.duplicate_user_events > 100, "{report:?}");
        assert_eq!(
            valid,
            report.user_events
                + report.sales
                + report.duplicate_user_events
                + report.duplicate_sales
        );
    }
}
