//! One pattern for a worker's counters: a struct of `AtomicU64` fields declared once and
//! read three ways, by [`Counters`]: as JSON for `/stats`, as one Prometheus counter family
//! (a series per field), and as the progress line in the logs.

use crate::prom::{Family, Value};

pub trait Counters: serde::Serialize {
    /// What the counters are of: the `/stats` key and the progress line's `worker`.
    const NAME: &'static str;
    /// The Prometheus family's name and help.
    const FAMILY: (&'static str, &'static str);
    /// The label that holds a counter's name in the family (`result`, `what`).
    const LABEL: &'static str = "result";
    /// Numeric fields kept out of the family and the progress line (a lag is a gauge; a
    /// counter may have a metric of its own): `/stats` still shows them.
    const NOT_IN_FAMILY: &'static [&'static str] = &[];

    /// Every counter with its value, by its serialized name, in name order.
    fn counts(&self) -> Vec<(String, u64)> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        fields
            .into_iter()
            .filter(|(name, _)| !Self::NOT_IN_FAMILY.contains(&name.as_str()))
            .filter_map(|(name, value)| value.as_u64().map(|n| (name, n)))
            .collect()
    }

    /// `{"NAME": {...}}` for `/stats`.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ Self::NAME: self })
    }

    /// The counter family, each series with `labels` and the counter's name.
    fn family(&self, labels: &[(&str, &str)]) -> Family {
        let mut family = Family::new(Self::FAMILY.0, Self::FAMILY.1);
        self.add_to(&mut family, labels);
        family
    }

    /// Adds this worker's series to `family` (several workers of one program share one).
    fn add_to(&self, family: &mut Family, labels: &[(&str, &str)]) {
        for (name, n) in self.counts() {
            let mut all = labels.to_vec();
            all.push((Self::LABEL, &name));
            family.push(&all, Value::Counter(n as f64));
        }
    }

    /// The progress line: `worker`, what tells this instance apart, and every counter.
    fn log_progress(&self, instance: &str) {
        let counts = self
            .counts()
            .iter()
            .map(|(name, n)| format!("{name}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(worker = Self::NAME, instance, counts, "progress");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    use super::*;

    #[derive(Default, serde::Serialize)]
    struct Example {
        sent: AtomicU64,
        #[serde(rename = "duplicate")]
        duplicates: AtomicU64,
        lag: AtomicI64,
    }

    impl Counters for Example {
        const NAME: &'static str = "example";
        const FAMILY: (&'static str, &'static str) = ("herald_example", "Example work.");
        const NOT_IN_FAMILY: &'static [&'static str] = &["lag"];
    }

    #[test]
    fn every_counter_is_a_series_and_in_stats_and_a_gauge_only_in_stats() {
        let s = Example::default();
        s.sent.store(3, Ordering::Relaxed);
        s.duplicates.store(1, Ordering::Relaxed);
        s.lag.store(7, Ordering::Relaxed);
        assert_eq!(
            s.counts(),
            [("duplicate".to_string(), 1), ("sent".to_string(), 3)]
        );
        assert_eq!(s.json()["example"]["lag"], 7);
        let family = s.family(&[("channel", "sms")]);
        assert_eq!(family.name, "herald_example");
        let labels: Vec<_> = family.series.iter().map(|(l, _)| l.clone()).collect();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            labels,
            [
                vec![pair("channel", "sms"), pair("result", "duplicate")],
                vec![pair("channel", "sms"), pair("result", "sent")],
            ]
        );
    }
}
