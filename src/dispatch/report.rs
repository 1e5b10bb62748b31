//! What a dispatcher tells about itself: `/stats` and `/metrics`. What it tells the fleet
//! through Redis is in `health.rs`.

use std::sync::atomic::Ordering;

use super::Dispatcher;
use crate::kafka;
use crate::prom;
use crate::provider::CircuitState;
use crate::stats::Counters;

impl Dispatcher {
    /// Counters for `/stats`.
    pub fn stats_json(&self) -> serde_json::Value {
        let window = self.stats.accept_to_mark_ms.snapshot();
        serde_json::json!({
            "channel": self.config.channel,
            "dispatch": &self.stats,
            "uncertain_window_ms": {
                "p50": crate::latency::quantile(&window, 0.5),
                "p99": crate::latency::quantile(&window, 0.99),
            },
            "failovers": self.providers.failovers.load(Ordering::Relaxed),
            "providers": self.providers.providers().iter().map(|p| serde_json::json!({
                "name": p.name,
                "adapter": p.adapter,
                "circuit": circuit_name(p.circuit_state()),
                "rate_per_sec": p.current_rate(),
                "calls": p.stats(),
            })).collect::<Vec<_>>(),
        })
    }

    /// `/metrics`: messages by result, in flight, consumer lag, provider calls by status,
    /// circuit state and the adaptive rate.
    pub fn prometheus(&self) -> Vec<prom::Family> {
        let channel = self.config.channel.as_str();
        let labels = [("channel", channel)];
        let gauge = |name: &str, help: &str, v: f64| {
            prom::Family::new(name, help).with(&labels, prom::Value::Gauge(v))
        };
        let topics = &self.topics;
        let mut families = vec![
            self.stats.family(&labels),
            gauge(
                "herald_dispatch_in_flight",
                "Notifications being worked on now.",
                self.stats.in_flight.load(Ordering::Relaxed) as f64,
            ),
            gauge(
                "herald_dispatch_uncertain_window_p99_ms",
                "p99 of the time from the provider's acceptance to the slot marked sent.",
                crate::latency::quantile(&self.stats.accept_to_mark_ms.snapshot(), 0.99)
                    .unwrap_or(0) as f64,
            ),
            prom::Family::new(
                "herald_provider_failovers",
                "Sends that moved on to the channel's next provider.",
            )
            .with(
                &labels,
                prom::Value::Counter(self.providers.failovers.load(Ordering::Relaxed) as f64),
            ),
        ];
        families.extend(self.provider_families(channel));
        families.push(kafka::lag_family(
            &topics.dispatch_group(self.config.channel),
            &topics.notify(self.config.channel),
            &self.stats.consumer_lag,
        ));
        families
    }

    /// Per provider of the channel: calls by status, circuit state, adaptive rate (one
    /// family each, a series per provider).
    fn provider_families(&self, channel: &str) -> Vec<prom::Family> {
        let mut calls = prom::Family::new(
            "herald_provider_calls",
            "Provider calls by status (calls counts every attempt).",
        );
        let mut circuit = prom::Family::new(
            "herald_provider_circuit_state",
            "Provider circuit: 0 closed, 1 half-open, 2 open.",
        );
        let mut rate = prom::Family::new(
            "herald_provider_rate_per_second",
            "The adaptive limiter's current rate.",
        );
        for p in self.providers.providers() {
            let labels = [("channel", channel), ("provider", p.name.as_str())];
            let per_status = prom::counters_from("", "", "status", p.stats(), &labels);
            calls.series.extend(per_status.series);
            let state = match p.circuit_state() {
                CircuitState::Closed => 0.0,
                CircuitState::HalfOpen => 1.0,
                CircuitState::Open => 2.0,
            };
            circuit.push(&labels, prom::Value::Gauge(state));
            rate.push(&labels, prom::Value::Gauge(p.current_rate()));
        }
        vec![calls, circuit, rate]
    }
}

pub(super) fn circuit_name(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::HalfOpen => "half_open",
        CircuitState::Open => "open",
    }
}
