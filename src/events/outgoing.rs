//! Role `webhooks`: each lifecycle event queued for every outgoing webhook endpoint that
//! chose its type (group `{ns}-webhooks` on `herald.events`); [`crate::outgoing::sender`],
//! run beside it, delivers the queues.

use rdkafka::message::{Message as _, OwnedMessage};

use super::{Applied, Consume, Role};
use crate::model::LifecycleEvent;
use crate::outgoing::{event_type, Payload};
use crate::store::{Outgoing, WebhookStore};

pub struct Webhooks {
    pub store: WebhookStore,
}

impl Consume for Webhooks {
    type Item = LifecycleEvent;

    fn role(&self) -> Role {
        Role::Webhooks
    }

    fn decode(&self, msg: &OwnedMessage) -> Result<LifecycleEvent, String> {
        let payload = msg.payload().ok_or("empty message")?;
        serde_json::from_slice(payload).map_err(|e| format!("undecodable lifecycle event: {e}"))
    }

    /// Read for every batch, not cached: an endpoint registered a moment ago gets the
    /// events that follow.
    async fn apply(&self, events: &[LifecycleEvent]) -> Result<Applied, String> {
        let endpoints = self.store.endpoints().await.map_err(|e| e.to_string())?;
        let mut queue = Vec::new();
        for event in events {
            let kind = event_type(event.kind);
            let wanting: Vec<_> = endpoints.iter().filter(|e| e.wants(&kind)).collect();
            if wanting.is_empty() {
                continue;
            }
            let body = serde_json::to_string(&Payload::of(event)).map_err(|e| e.to_string())?;
            for endpoint in wanting {
                queue.push(Outgoing {
                    endpoint: endpoint.id.clone(),
                    id: event.event_id.clone(),
                    at_ms: event.at_ms,
                    body: body.clone(),
                });
            }
        }
        self.store
            .enqueue_outgoing(&queue)
            .await
            .map(Applied::tally)
            .map_err(|e| e.to_string())
    }
}
