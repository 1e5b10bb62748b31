//! Counter fields: what one event adds, and how a hash of fields reads back as totals per
//! outcome and channel with a latency summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{LifecycleEvent, LifecycleKind};

/// Upper bounds of the send-to-receipt latency buckets, in ms; one more bucket holds the rest.
pub const LATENCY_BUCKETS_MS: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
];

/// The bucket index of a latency (`LATENCY_BUCKETS_MS.len()` for the overflow bucket).
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BUCKETS_MS
        .iter()
        .position(|&upper| ms <= upper)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// The counter fields one event adds to, with how much.
pub(super) fn fields_of(e: &LifecycleEvent) -> Vec<(String, u64)> {
    let channel = e.channel.map(|c| c.as_str()).unwrap_or("none");
    let mut fields = vec![(
        format!("{}:{channel}", e.kind.outcome()),
        e.count.unwrap_or(1),
    )];
    if let (LifecycleKind::Delivered, Some(ms)) = (e.kind, e.latency_ms) {
        fields.push((format!("lat:{channel}:{}", latency_bucket(ms)), 1));
        fields.push((format!("lat:{channel}:sum_ms"), ms));
        fields.push((format!("lat:{channel}:count"), 1));
    }
    fields
}

/// Counters read back: per outcome, per channel and outcome, and receipt latency per channel.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Counts {
    pub outcomes: BTreeMap<String, u64>,
    pub channels: BTreeMap<String, BTreeMap<String, u64>>,
    pub latency_ms: BTreeMap<String, LatencySummary>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_ms: u64,
    pub mean_ms: f64,
    /// Upper bound of the bucket holding the median (an estimate, as in Prometheus).
    pub p50_ms: u64,
    pub p99_ms: u64,
    /// Per-bucket counts, index as in [`LATENCY_BUCKETS_MS`] plus overflow.
    pub buckets: Vec<u64>,
}

impl LatencySummary {
    fn finish(&mut self) {
        self.mean_ms = if self.count == 0 {
            0.0
        } else {
            self.sum_ms as f64 / self.count as f64
        };
        self.p50_ms = self.quantile(0.5);
        self.p99_ms = self.quantile(0.99);
    }

    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    }
}

impl Counts {
    pub fn from_fields(fields: &BTreeMap<String, u64>) -> Self {
        let mut counts = Counts::default();
        for (field, &n) in fields {
            if let Some(rest) = field.strip_prefix("lat:") {
                counts.add_latency(rest, n);
            } else if let Some((outcome, channel)) = field.split_once(':') {
                *counts.outcomes.entry(outcome.to_string()).or_default() += n;
                *counts
                    .channels
                    .entry(channel.to_string())
                    .or_default()
                    .entry(outcome.to_string())
                    .or_default() += n;
            }
        }
        counts.latency_ms.values_mut().for_each(|l| l.finish());
        counts
    }

    fn add_latency(&mut self, rest: &str, n: u64) {
        let Some((channel, what)) = rest.split_once(':') else {
            return;
        };
        let l = self.latency_ms.entry(channel.to_string()).or_default();
        match what {
            "sum_ms" => l.sum_ms = n,
            "count" => l.count = n,
            bucket => {
                if let Ok(i) = bucket.parse::<usize>() {
                    if l.buckets.len() <= LATENCY_BUCKETS_MS.len() {
                        l.buckets.resize(LATENCY_BUCKETS_MS.len() + 1, 0);
                    }
                    if let Some(slot) = l.buckets.get_mut(i) {
                        *slot = n;
                    }
                }
            }
        }
    }

    pub fn outcome(&self, name: &str) -> u64 {
        self.outcomes.get(name).copied().unwrap_or(0)
    }

    /// Customers whose notification reached an end: delivered, failed for good, dead-lettered
    /// before any channel, or left uncertain by a crash (a campaign is complete when this
    /// reaches its recipients).
    pub fn finished(&self) -> u64 {
        self.outcome("delivered")
            + self.outcome("failed")
            + self.outcome("dead_lettered")
            + self.outcome("uncertain")
            + self.outcome("cancelled")
            + self.outcome("expired")
            + self.outcome("capped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(10), 0);
        assert_eq!(latency_bucket(11), 1);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS_MS.len());
    }

    #[test]
    fn fields_read_back_per_outcome_channel_and_latency() {
        let fields = BTreeMap::from([
            ("sent:email".to_string(), 10),
            ("sent:sms".to_string(), 5),
            ("delivered:email".to_string(), 8),
            ("dead_lettered:none".to_string(), 2),
            ("lat:email:0".to_string(), 4),
            ("lat:email:6".to_string(), 4),
            ("lat:email:sum_ms".to_string(), 4_020),
            ("lat:email:count".to_string(), 8),
        ]);
        let c = Counts::from_fields(&fields);
        assert_eq!(c.outcome("sent"), 15);
        assert_eq!(c.channels["email"]["delivered"], 8);
        assert_eq!(c.finished(), 10);
        let l = &c.latency_ms["email"];
        assert_eq!((l.count, l.p50_ms, l.p99_ms), (8, 10, 1_000));
        assert!((l.mean_ms - 502.5).abs() < 1e-9);
    }
}
