//! Prometheus exposition. Each program already keeps its counters (atomics, or Redis for the
//! aggregator), so rather than mirror them into a second set of metric objects it describes
//! them as a [`Family`] snapshot at scrape time, and prometheus-client writes the text format.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

/// One series' value. Counter names get `_total` appended by the encoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(f64),
    Gauge(f64),
    /// Per-bucket (not cumulative) counts by upper bound; the last bound is `f64::MAX` (+Inf).
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

/// A metric name with its help text and series, all of one type.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub series: Vec<(Labels, Value)>,
}

impl Family {
    pub fn new(name: &str, help: &str) -> Self {
        Family {
            name: name.to_string(),
            help: help.to_string(),
            series: Vec::new(),
        }
    }

    /// Adds a series; labels are `(name, value)` pairs.
    pub fn with(mut self, labels: &[(&str, &str)], value: Value) -> Self {
        self.push(labels, value);
        self
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: Value) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series.push((labels, value));
    }

    fn metric_type(&self) -> MetricType {
        match self.series.first().map(|(_, v)| v) {
            Some(Value::Counter(_)) => MetricType::Counter,
            Some(Value::Histogram { .. }) => MetricType::Histogram,
            _ => MetricType::Gauge,
        }
    }
}

/// A counter family with one unlabelled series.
pub fn counter(name: &str, help: &str, value: u64) -> Family {
    Family::new(name, help).with(&[], Value::Counter(value as f64))
}

/// A gauge family with one unlabelled series.
pub fn gauge(name: &str, help: &str, value: f64) -> Family {
    Family::new(name, help).with(&[], Value::Gauge(value))
}

/// A counter family from a stats struct's numeric fields (atomics serialize as numbers):
/// one series per field, the field's name in label `key`, plus `labels`. Other fields
/// (histograms, text) are left out.
pub fn counters_from<T: serde::Serialize>(
    name: &str,
    help: &str,
    key: &str,
    stats: &T,
    labels: &[(&str, &str)],
) -> Family {
    let mut family = Family::new(name, help);
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(stats) {
        for (field, value) in fields {
            if let Some(n) = value.as_u64() {
                let mut all = labels.to_vec();
                all.push((key, &field));
                family.push(&all, Value::Counter(n as f64));
            }
        }
    }
    family
}

#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.0.iter().filter(|f| !f.series.is_empty()) {
            let mut metric = encoder.encode_descriptor(
                &family.name,
                &family.help,
                None,
                family.metric_type(),
            )?;
            for (labels, value) in &family.series {
                // An unlabelled series is written `name value`, not `name{} value`.
                if labels.is_empty() {
                    encode_value(&mut metric, value)?;
                } else {
                    encode_value(&mut metric.encode_family(labels)?, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(series: &mut MetricEncoder, value: &Value) -> Result<(), std::fmt::Error> {
    match value {
        Value::Counter(v) => series.encode_counter::<Labels, f64, f64>(v, None),
        Value::Gauge(v) => series.encode_gauge(v),
        Value::Histogram {
            sum,
            count,
            buckets,
        } => series.encode_histogram::<Labels>(*sum, *count, buckets, None),
    }
}

/// The Prometheus text format of `families`.
pub fn render(families: Vec<Family>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would mean a bug, so show it.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        out = format!("# encoding failed: {e}\n");
    }
    out
}

/// The content type Prometheus expects for the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms_with_labels() {
        let text = render(vec![
            Family::new("herald_events", "Events.")
                .with(
                    &[("channel", "email"), ("outcome", "sent")],
                    Value::Counter(3.0),
                )
                .with(
                    &[("channel", "sms"), ("outcome", "sent")],
                    Value::Counter(1.0),
                ),
            gauge("herald_in_flight", "In flight.", 7.0),
            Family::new("herald_latency_seconds", "Latency.").with(
                &[("channel", "email")],
                Value::Histogram {
                    sum: 1.5,
                    count: 3,
                    buckets: vec![(0.1, 1), (1.0, 2), (f64::MAX, 0)],
                },
            ),
        ]);
        assert!(text.contains("herald_events_total{channel=\"email\",outcome=\"sent\"} 3"));
        assert!(text.contains("herald_events_total{channel=\"sms\",outcome=\"sent\"} 1"));
        assert!(text.contains("herald_in_flight 7.0"), "{text}");
        assert!(text.contains("herald_latency_seconds_bucket{le=\"1.0\",channel=\"email\"} 3"));
        assert!(text.contains("herald_latency_seconds_bucket{le=\"+Inf\",channel=\"email\"} 3"));
        assert!(text.contains("# TYPE herald_events counter"));
    }

    #[test]
    fn empty_families_are_left_out() {
        let text = render(vec![Family::new("herald_nothing", "Nothing.")]);
        assert!(!text.contains("herald_nothing"));
    }
}
