//! Seed 003: each sale on `herald.sales` becomes a confirmation e-mail and loyalty points,
//! in two consumer groups that know nothing of each other.

use std::time::Duration;

use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::{Applied, Consume, Role};
use crate::kafka::Topics;
use crate::model::commerce::{cents, SaleEvent};
use crate::model::{
    now_ms, Channel, LifecycleEvent, LifecycleKind, Message, Notification, RequestId,
};
use crate::store::{EventStore, LoyaltyCredit};

/// Reads a sale from a message and checks it; the error is the dead-letter reason.
fn decode_sale(msg: &OwnedMessage) -> Result<(SaleEvent, u64), String> {
    sale_of(msg.payload())
}

/// A message of `herald.sales` and the time it happened, or why it is dead-lettered.
pub fn sale_of(payload: Option<&[u8]>) -> Result<(SaleEvent, u64), String> {
    let payload = payload.ok_or("empty message")?;
    let sale: SaleEvent =
        serde_json::from_slice(payload).map_err(|e| format!("undecodable sale: {e}"))?;
    let at = sale
        .validate(now_ms())
        .map_err(|e| format!("invalid sale: {e}"))?;
    Ok((sale, at))
}

/// The confirmation e-mail of every sale, exactly one per `sale_id`: the sale opens a seed
/// 001 request `sale-{sale_id}` (or finds it) and publishes it to the e-mail topic, where a
/// dispatcher claims and sends it like any request. `GET /v1/requests/sale-{id}` tracks it.
pub struct SaleEmail {
    pub store: EventStore,
    pub producer: FutureProducer,
    pub topics: Topics,
    /// How long a sale is remembered (its request record lives as long).
    pub dedup_window: Duration,
}

impl Consume for SaleEmail {
    type Item = (RequestId, Message);

    fn role(&self) -> Role {
        Role::SaleEmail
    }

    fn decode(&self, msg: &OwnedMessage) -> Result<Self::Item, String> {
        let (sale, _) = decode_sale(msg)?;
        Ok((
            sale.confirmation_id(),
            Message {
                to: sale.customer_email.trim().to_string(),
                message: sale.confirmation_text(),
                channel: Channel::Email,
            },
        ))
    }

    async fn apply(&self, items: &[Self::Item]) -> Result<Applied, String> {
        let opened = self
            .store
            .open_confirmations(items, self.dedup_window)
            .await
            .map_err(|e| e.to_string())?;
        let (topic, events) = (self.topics.notify(Channel::Email), self.topics.events());
        let mut records = Vec::new();
        for ((id, message), state) in items.iter().zip(&opened) {
            if !state.must_publish() {
                continue;
            }
            let notification = Notification {
                id: id.clone(),
                message: message.clone(),
                published_at_ms: now_ms(),
            };
            let accepted = LifecycleEvent::new(LifecycleKind::Accepted, id, Channel::Email, None);
            for (t, payload) in [
                (&topic, serde_json::to_vec(&notification)),
                (&events, serde_json::to_vec(&accepted)),
            ] {
                let payload = payload.map_err(|e| e.to_string())?;
                records.push((t.clone(), id.to_string(), payload));
            }
        }
        let failed = crate::kafka::publish_all(&self.producer, &records).await;
        if failed > 0 {
            // The requests stay `queued`: applying the batch again publishes them again.
            return Err(format!("{failed} of {} publishes failed", records.len()));
        }
        Ok(Applied::tally(
            opened
                .iter()
                .map(|s| matches!(s, crate::store::Confirmation::New)),
        ))
    }
}

/// How many points a sale earns: `per_unit` per unit of currency spent (rounded down)
/// plus `per_item` per item bought.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoyaltyRule {
    pub per_unit: Decimal,
    pub per_item: i64,
}

impl Default for LoyaltyRule {
    fn default() -> Self {
        LoyaltyRule {
            per_unit: Decimal::ONE,
            per_item: 0,
        }
    }
}

impl LoyaltyRule {
    pub fn points(&self, sale: &SaleEvent) -> i64 {
        let spent = (sale.total * self.per_unit).floor().to_i64().unwrap_or(0);
        spent.saturating_add(self.per_item.saturating_mul(i64::from(sale.quantity)))
    }
}

/// Loyalty points for every sale, credited once per `sale_id`.
pub struct Loyalty {
    pub store: EventStore,
    pub rule: LoyaltyRule,
    pub dedup_window: Duration,
}

impl Consume for Loyalty {
    type Item = LoyaltyCredit;

    fn role(&self) -> Role {
        Role::Loyalty
    }

    fn decode(&self, msg: &OwnedMessage) -> Result<Self::Item, String> {
        let (sale, at_ms) = decode_sale(msg)?;
        Ok(LoyaltyCredit {
            member: sale.member(),
            points: self.rule.points(&sale),
            total_cents: cents("total", sale.total).map_err(|e| e.to_string())?,
            sale: sale.sale_id,
            at_ms,
        })
    }

    async fn apply(&self, items: &[Self::Item]) -> Result<Applied, String> {
        self.store
            .credit_loyalty(items, self.dedup_window)
            .await
            .map(Applied::tally)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_per_unit_rounded_down_plus_per_item() {
        let sale: SaleEvent = serde_json::from_value(serde_json::json!({
            "event_type": "sale_completed", "sale_id": "s1", "product_id": 1,
            "product_name": "x", "quantity": 3, "total": "75.99",
            "customer_email": "a@b.co", "timestamp": "2026-11-24T10:00:00Z"
        }))
        .unwrap();
        assert_eq!(LoyaltyRule::default().points(&sale), 75);
        let rule = LoyaltyRule {
            per_unit: Decimal::new(5, 1),
            per_item: 10,
        };
        assert_eq!(rule.points(&sale), 37 + 30);
    }
}
