//! What a dispatcher tells the fleet through Redis each second: its providers' figures (the
//! dashboard's provider panel) and, while every circuit of its channel is open, that the
//! channel is unhealthy, so that fan-out and retry try it last.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::report::circuit_name;
use crate::model::Channel;
use crate::provider::ProviderChain;
use crate::shutdown::sleep_unless_cancelled;
use crate::store::{HealthStore, Redis};

/// Reports one dispatcher's providers; the only part of a dispatcher that writes channel
/// health.
#[derive(Clone)]
pub struct HealthReporter {
    store: HealthStore,
    providers: Arc<ProviderChain>,
    channel: Channel,
}

impl HealthReporter {
    pub fn new(redis: &Redis, providers: Arc<ProviderChain>, channel: Channel) -> Self {
        HealthReporter {
            store: HealthStore::new(redis),
            providers,
            channel,
        }
    }

    /// Reports each second until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let instance = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
            std::process::id()
        );
        while sleep_unless_cancelled(Duration::from_secs(1), &shutdown).await {
            if let Err(e) = self
                .store
                .report_providers(&self.provider_reports(&instance))
                .await
            {
                tracing::debug!(error = %e, "cannot report the providers' figures");
            }
            if self.providers.all_open() {
                if let Err(e) = self
                    .store
                    .set_unhealthy(self.channel, Duration::from_secs(3))
                    .await
                {
                    tracing::debug!(error = %e, "cannot announce the open circuit");
                }
            }
        }
    }

    /// This instance's figures per provider, for the dashboard's provider panel.
    fn provider_reports(&self, instance: &str) -> Vec<(String, String)> {
        let channel = self.channel;
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
}
