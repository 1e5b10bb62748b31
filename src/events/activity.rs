//! Seed 004: user events on `herald.user-events` kept as per-user aggregates in Redis,
//! each `event_id` applied once, invalid events dead-lettered to `herald.user-events.dlq`.

use std::time::Duration;

use rdkafka::message::{Message as _, OwnedMessage};

use super::{Applied, Consume, Role};
use crate::model::commerce::{Activity, UserEvent};
use crate::model::now_ms;
use crate::store::EventStore;

pub struct UserEvents {
    pub store: EventStore,
    /// How long an `event_id` is remembered; a copy arriving later counts again.
    pub dedup_window: Duration,
}

impl Consume for UserEvents {
    type Item = Activity;

    fn role(&self) -> Role {
        Role::UserEvents
    }

    fn decode(&self, msg: &OwnedMessage) -> Result<Activity, String> {
        user_event_of(msg.payload())
    }

    async fn apply(&self, items: &[Activity]) -> Result<Applied, String> {
        self.store
            .apply_activity(items, self.dedup_window)
            .await
            .map(Applied::tally)
            .map_err(|e| e.to_string())
    }
}

/// A message of `herald.user-events`, or why it is dead-lettered.
pub fn user_event_of(payload: Option<&[u8]>) -> Result<Activity, String> {
    let payload = payload.ok_or("empty message")?;
    let de = &mut serde_json::Deserializer::from_slice(payload);
    let event: UserEvent = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => format!("undecodable user event: {}", e.into_inner()),
            _ => format!("undecodable user event: {path}: {}", e.into_inner()),
        }
    })?;
    event
        .validate(now_ms())
        .map_err(|e| format!("invalid user event: {e}"))
}
