//! What a dispatcher tells about itself: `/stats`, `/metrics`, and each second its
//! providers' figures to Redis (the dashboard's provider panel) and, while every circuit of
//! its channel is open, that the channel is unhealthy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use crate::kafka;
use crate::prom;
use crate::provider::CircuitState;
use crate::shutdown::sleep_unless_cancelled;
use crate::stats::Counters;

impl Dispatcher {
    /// While every provider circuit of this channel is open, says so in Redis, so that
    /// fan-out and retry try the channel last.
    pub(super) async fn announce_health(self: Arc<Self>, shutdown: CancellationToken) {
        let instance = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
            std::process::id()
        );
        while sleep_unless_cancelled(Duration::from_secs(1), &shutdown).await {
            if let Err(e) = self
                .health_store
                .report_providers(&self.provider_reports(&instance))
                .await
            {
                tracing::debug!(error = %e, "cannot report the providers' figures");
            }
            if self.providers.all_open() {
                if let Err(e) = self
                    .health_store
                    .set_unhealthy(self.config.channel, Duration::from_secs(3))
                    .await
                {
                    tracing::debug!(error = %e, "cannot announce the open circuit");
                }
            }
        }
    }

    /// This instance's figures per provider, for the dashboard's provider panel.
    fn provider_reports(&self, instance: &str) -> Vec<(String, String)> {
        let channel = self.config.channel;
        let failovers = self.providers.failovers.load(Ordering::Relaxed);
        self.providers
            .providers()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let report = serde_json::json!({
                    "channel": channel,
                    "provider": p.name,
                    "adapter": p.adapter,
                    "order": i + 1,
                    "circuit": circuit_name(p.circuit_state()),
                    "rate_per_sec": p.current_rate(),
                    "calls": p.stats(),
                    // Counted on the channel: a failover leaves one provider for the next.
                    "channel_failovers": failovers,
                    "at_ms": crate::model::now_ms(),
                });
                (
                    format!("{channel}/{}/{instance}", p.name),
                    report.to_string(),
                )
            })
            .collect()
    }

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

fn circuit_name(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::HalfOpen => "half_open",
        CircuitState::Open => "open",
    }
}
