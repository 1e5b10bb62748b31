//! Channel health as dispatchers announce it: while a channel's provider circuit is open,
//! fan-out and retry try that channel last. Announcements expire on their own, so a
//! dispatcher that dies cannot leave a channel marked unhealthy.
//!
//! Dispatchers also report each provider's figures (calls, errors, circuit, rate) once a
//! second into one hash, a field per dispatcher instance and provider, for the dashboard's
//! provider panel; reports older than an hour are dropped when read.

use std::time::Duration;

use redis::AsyncCommands;

use super::{HealthStore, StoreError};
use crate::model::Channel;

impl HealthStore {
    /// Dispatchers announce an open provider circuit; rules then try that channel last.
    pub async fn set_unhealthy(
        &self,
        channel: Channel,
        for_how_long: Duration,
    ) -> Result<(), StoreError> {
        let (mut c, generation) = self.connection();
        let _: () = self
            .bounded(
                generation,
                c.pset_ex(
                    self.keys.health_key(channel),
                    "open",
                    for_how_long.as_millis() as u64,
                ),
            )
            .await?;
        Ok(())
    }

    /// One dispatcher's figures for its providers: `(field, JSON)` with the field
    /// `channel/provider/instance` and the JSON carrying `at_ms`.
    pub async fn report_providers(&self, reports: &[(String, String)]) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.hset_multiple(self.keys.provider_reports_key(), reports)
            .ignore();
        self.query_pipe(&pipe).await
    }

    /// Every dispatcher's last report, older than an hour dropped.
    pub async fn provider_reports(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.hgetall(self.keys.provider_reports_key());
        let (all,): (Vec<(String, String)>,) = self.query_pipe(&pipe).await?;
        let now = crate::model::now_ms();
        let mut fresh = Vec::new();
        let mut stale = Vec::new();
        for (field, raw) in all {
            let value: serde_json::Value = serde_json::from_str(&raw).unwrap_or_default();
            let at = value["at_ms"].as_u64().unwrap_or(0);
            if now.saturating_sub(at) > 3_600_000 {
                stale.push(field);
            } else {
                fresh.push((field, value));
            }
        }
        if !stale.is_empty() {
            let mut pipe = redis::pipe();
            pipe.hdel(self.keys.provider_reports_key(), stale).ignore();
            self.query_pipe::<()>(&pipe).await?;
        }
        Ok(fresh)
    }

    pub async fn unhealthy_channels(&self) -> Result<Vec<Channel>, StoreError> {
        let mut pipe = redis::pipe();
        for ch in Channel::ALL {
            pipe.exists(self.keys.health_key(ch));
        }
        let open: Vec<bool> = self.query_pipe(&pipe).await?;
        Ok(Channel::ALL
            .into_iter()
            .zip(open)
            .filter_map(|(ch, o)| o.then_some(ch))
            .collect())
    }
}
