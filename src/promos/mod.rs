//! Flash promos (seed 002): a store's product at a price, a few units, a time window and the
//! customers it suits. When the window opens, [`activate`] (run by `herald-retry`, safe with
//! several instances) turns the promo into a campaign whose audience is its segment, minus
//! those already notified of a promo that day (the daily cap), fanned out in batches of 1000
//! by `herald-fanout`. Customers then reserve a unit for a minute and buy it
//! ([`crate::store`]'s reserve and purchase scripts).

pub mod activate;
pub mod outbox;
pub mod segment;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::model::commerce::{cents, parse_timestamp, Invalid};
use crate::model::{Channel, Location, PromoId, Template};
use crate::store::{CampaignStore, CustomerStore, EventStore, PromoStore, Redis};

/// The domain stores promo activation works with: the promos, who they suit (customers and
/// their activity), and the campaigns they launch.
#[derive(Clone)]
pub struct PromoStores {
    pub promos: PromoStore,
    pub customers: CustomerStore,
    pub events: EventStore,
    pub campaigns: CampaignStore,
}

impl PromoStores {
    pub fn new(redis: &Redis) -> Self {
        PromoStores {
            promos: PromoStore::new(redis),
            customers: CustomerStore::new(redis),
            events: EventStore::new(redis),
            campaigns: CampaignStore::new(redis),
        }
    }
}

pub use activate::{activate_due, Activation};
pub use segment::{Segment, SegmentMember};

/// The largest radius a segment may have.
const MAX_RADIUS_M: f64 = 50_000.0;
/// Longest store, product or category name (they are written into messages).
const MAX_LABEL_LEN: usize = 200;
const MAX_UNITS: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Shop {
    #[schema(schema_with = label_schema)]
    pub id: String,
    #[schema(schema_with = label_schema)]
    pub name: String,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    #[schema(schema_with = label_schema)]
    pub id: String,
    #[schema(schema_with = label_schema)]
    pub name: String,
}

/// What [`check_label`] accepts.
fn label_schema() -> utoipa::openapi::schema::Schema {
    crate::schema::from_json(json!({
        "type": "string", "minLength": 1, "maxLength": MAX_LABEL_LEN,
        "pattern": "^[^{}]*[^{}\\s][^{}]*$", "description": "Text without braces",
    }))
}

fn radius_schema() -> utoipa::openapi::schema::Schema {
    crate::schema::from_json(json!({
        "type": "number", "exclusiveMinimum": 0, "maximum": MAX_RADIUS_M, "default": 2000.0,
        "description": "Within this many metres of the store (seed 002: 2 km)",
    }))
}

fn units_schema() -> utoipa::openapi::schema::Schema {
    crate::schema::from_json(json!({"type": "integer", "minimum": 1, "maximum": MAX_UNITS}))
}

fn categories_schema() -> utoipa::openapi::schema::Schema {
    crate::schema::from_json(json!({
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_LEN, "pattern": "^[^{}]*[^{}\\s][^{}]*$"},
    }))
}

/// Who a promo is for; criteria combine (all must hold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentCriteria {
    /// Geographic: within this many metres of the store (seed 002: 2 km).
    #[serde(default = "default_radius")]
    #[schema(schema_with = radius_schema)]
    pub radius_m: f64,
    /// Behavioural, from `herald-events`' per-user aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_purchases: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_money)]
    pub min_spent: Option<Decimal>,
    /// Any of these categories seen in the user's events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = categories_schema)]
    pub categories: Vec<String>,
    /// Demographic: profile attributes that must match exactly (`{"gender": "f"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn default_radius() -> f64 {
    2000.0
}

impl Default for SegmentCriteria {
    fn default() -> Self {
        SegmentCriteria {
            radius_m: default_radius(),
            min_purchases: None,
            min_spent: None,
            categories: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }
}

/// `POST /api/flash-promos/`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPromo {
    #[serde(default)]
    pub id: Option<PromoId>,
    pub store: Shop,
    pub product: Product,
    #[schema(schema_with = crate::schema::money)]
    pub price: Decimal,
    #[serde(default)]
    #[schema(schema_with = crate::schema::optional_money)]
    pub original_price: Option<Decimal>,
    #[schema(schema_with = units_schema)]
    pub units: u32,
    #[schema(schema_with = crate::schema::timestamp)]
    pub starts_at: String,
    #[schema(schema_with = crate::schema::timestamp)]
    pub ends_at: String,
    #[serde(default)]
    pub segment: SegmentCriteria,
    /// The notification; `{{name}}` and other profile placeholders are filled per customer.
    #[serde(default)]
    pub message: Option<Template>,
    /// Channel order; empty for the rules' default.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// What customers choose it by on their preferences; the configured flash-promo topic
    /// (`flash-sales` by default) when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "flash-sales")]
    pub topic: Option<crate::model::Topic>,
}

/// A promo as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlashPromo {
    pub id: PromoId,
    pub store: Shop,
    pub product: Product,
    pub price: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_price: Option<Decimal>,
    pub units: u32,
    pub starts_ms: u64,
    pub ends_ms: u64,
    pub segment: SegmentCriteria,
    pub message: Template,
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Promos stored before topics existed have none: `flash-sales`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<crate::model::Topic>,
    pub created_ms: u64,
}

/// Where a promo's window stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Scheduled,
    Active,
    Ended,
}

impl FlashPromo {
    pub fn window(&self, now_ms: u64) -> Window {
        if now_ms < self.starts_ms {
            Window::Scheduled
        } else if now_ms < self.ends_ms {
            Window::Active
        } else {
            Window::Ended
        }
    }

    /// The promo's topic: its own, or `flash-sales` for one stored before topics existed.
    pub fn topic(&self) -> crate::model::Topic {
        self.topic.clone().unwrap_or_else(|| {
            crate::model::Topic::parse("flash-sales").unwrap_or_else(crate::model::Topic::offers)
        })
    }

    /// The campaign that carries the promo's notifications.
    pub fn campaign_id(&self) -> crate::model::CampaignId {
        crate::model::CampaignId::parse(&format!("promo-{}", self.id))
            .unwrap_or_else(crate::model::CampaignId::generate)
    }
}

fn check_label(field: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() || value.len() > MAX_LABEL_LEN || value.contains(['{', '}']) {
        return Err(Invalid {
            field: field.into(),
            reason: format!("must be 1-{MAX_LABEL_LEN} bytes without braces"),
        });
    }
    Ok(())
}

fn invalid(field: &str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl NewPromo {
    /// Checks what types alone cannot and builds the promo.
    pub fn validate(self, now_ms: u64) -> Result<FlashPromo, Invalid> {
        check_label("store.id", &self.store.id)?;
        check_label("store.name", &self.store.name)?;
        check_label("product.id", &self.product.id)?;
        check_label("product.name", &self.product.name)?;
        if let Some((part, why)) = self.store.location.invalid_part() {
            return Err(invalid(&format!("store.location.{part}"), why));
        }
        if self.price.is_zero() {
            return Err(invalid("price", "must be more than 0"));
        }
        cents("price", self.price)?;
        if let Some(original) = self.original_price {
            cents("original_price", original)?;
            if original < self.price {
                return Err(invalid("original_price", "must not be below the price"));
            }
        }
        if !(1..=MAX_UNITS).contains(&self.units) {
            return Err(invalid("units", format!("must be 1-{MAX_UNITS}")));
        }
        // Promos are created ahead of time: no bound on how far in the future.
        let far = u64::MAX / 4;
        let starts_ms = parse_timestamp("starts_at", &self.starts_at, far)?;
        let ends_ms = parse_timestamp("ends_at", &self.ends_at, far)?;
        if ends_ms <= starts_ms {
            return Err(invalid("ends_at", "must be after starts_at"));
        }
        if ends_ms <= now_ms {
            return Err(invalid("ends_at", "is in the past"));
        }
        let s = &self.segment;
        if !(s.radius_m.is_finite() && s.radius_m > 0.0 && s.radius_m <= MAX_RADIUS_M) {
            return Err(invalid(
                "segment.radius_m",
                format!("must be more than 0 and at most {MAX_RADIUS_M}"),
            ));
        }
        if let Some(spent) = s.min_spent {
            cents("segment.min_spent", spent)?;
        }
        for (i, c) in s.categories.iter().enumerate() {
            check_label(&format!("segment.categories[{i}]"), c)?;
        }
        let message = match self.message {
            Some(m) => m,
            None => default_message(&self.product, self.price, &self.store)?,
        };
        Ok(FlashPromo {
            id: self.id.unwrap_or_else(|| {
                PromoId::parse(&format!("fp-{}", uuid::Uuid::now_v7().simple()))
                    .unwrap_or_else(|| unreachable!("a uuid is a token"))
            }),
            segment: SegmentCriteria {
                categories: s
                    .categories
                    .iter()
                    .map(|c| c.to_ascii_lowercase())
                    .collect(),
                ..s.clone()
            },
            store: self.store,
            product: self.product,
            price: self.price,
            original_price: self.original_price,
            units: self.units,
            starts_ms,
            ends_ms,
            message,
            channels: self.channels,
            topic: self.topic,
            created_ms: now_ms,
        })
    }
}

fn default_message(product: &Product, price: Decimal, shop: &Shop) -> Result<Template, Invalid> {
    Template::try_from(format!(
        "{{{{name}}}}, flash promo: {} for {:.2} at {}, while units last.",
        product.name, price, shop.name
    ))
    .map_err(|e| invalid("message", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> serde_json::Value {
        json!({
            "store": {"id": "s1", "name": "Tienda Centro", "location": {"lat": 40.4168, "lon": -3.7038}},
            "product": {"id": "p1", "name": "Auriculares"},
            "price": "19.99", "original_price": 49.99, "units": 10,
            "starts_at": "2026-11-24T10:00:00Z", "ends_at": "2026-11-24T12:00:00Z",
        })
    }

    const NOW: u64 = 1_795_000_000_000; // 2026-11-18

    #[test]
    fn a_promo_gets_a_default_segment_and_message() {
        let p = serde_json::from_value::<NewPromo>(body())
            .unwrap()
            .validate(NOW)
            .unwrap();
        assert_eq!(p.segment.radius_m, 2000.0);
        assert_eq!(p.price.to_string(), "19.99");
        assert!(p
            .message
            .render(&minijinja::context! { name => "Ana" })
            .unwrap()
            .starts_with("Ana, flash promo: Auriculares for 19.99"));
        assert_eq!(p.window(p.starts_ms - 1), Window::Scheduled);
        assert_eq!(p.window(p.starts_ms), Window::Active);
        assert_eq!(p.window(p.ends_ms), Window::Ended);
    }

    #[test]
    fn bad_promos_name_the_field() {
        for (field, value, at) in [
            ("ends_at", json!("2026-11-24T09:00:00Z"), "ends_at"),
            ("price", json!("0"), "price"),
            ("price", json!("1.999"), "price"),
            ("units", json!(0), "units"),
            ("segment", json!({"radius_m": 0}), "segment.radius_m"),
            ("original_price", json!("5.00"), "original_price"),
        ] {
            let mut b = body();
            b[field] = value;
            let err = serde_json::from_value::<NewPromo>(b)
                .unwrap()
                .validate(NOW)
                .unwrap_err();
            assert_eq!(err.field, at);
        }
    }
}
