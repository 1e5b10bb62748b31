//! Role `history`: each customer's message history, from the lifecycle events on
//! `herald.events` (see `store::history` for what is kept and for how long).

use rdkafka::message::{Message as _, OwnedMessage};

use super::{Applied, Consume, Role};
use crate::model::LifecycleEvent;
use crate::store::{EventStore, HistoryItem, HistoryLimits};

pub struct History {
    pub store: EventStore,
    pub limits: HistoryLimits,
}

impl Consume for History {
    /// `None`: an event about no one customer's message (a batch's counts, a seed 001
    /// request), consumed and left out.
    type Item = Option<HistoryItem>;

    fn role(&self) -> Role {
        Role::History
    }

    fn decode(&self, msg: &OwnedMessage) -> Result<Option<HistoryItem>, String> {
        let payload = msg.payload().ok_or("empty message")?;
        let event: LifecycleEvent = serde_json::from_slice(payload)
            .map_err(|e| format!("undecodable lifecycle event: {e}"))?;
        Ok(HistoryItem::of(&event))
    }

    async fn apply(&self, items: &[Option<HistoryItem>]) -> Result<Applied, String> {
        let items: Vec<HistoryItem> = items.iter().flatten().cloned().collect();
        self.store
            .record_history(&items, self.limits)
            .await
            .map(Applied::tally)
            .map_err(|e| e.to_string())
    }
}
