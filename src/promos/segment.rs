//! Who a promo suits: within the radius of its store (Redis GEO over customers' locations),
//! then the behavioural criteria (from `herald-events`' per-user aggregates) and the
//! demographic ones (profile attributes). All criteria must hold.

use rust_decimal::Decimal;

use super::{FlashPromo, SegmentCriteria};
use crate::model::{Customer, CustomerId, Location};
use crate::store::{ActivitySummary, StoreError};

use super::PromoStores;

/// A customer a promo suits.
#[derive(Debug, Clone)]
pub struct SegmentMember {
    pub id: CustomerId,
    pub customer: Customer,
}

/// A promo's segment, and how many were near enough before the other criteria.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    pub near: usize,
    pub members: Vec<SegmentMember>,
}

impl SegmentCriteria {
    fn needs_activity(&self) -> bool {
        self.min_purchases.is_some() || self.min_spent.is_some() || !self.categories.is_empty()
    }

    /// Whether a customer (already known to be near) meets the other criteria.
    pub fn admits(&self, customer: &Customer, activity: Option<&ActivitySummary>) -> bool {
        let demographic = self
            .attributes
            .iter()
            .all(|(k, v)| customer.attributes.get(k) == Some(v));
        let purchases = activity.map_or(0, |a| a.purchases);
        let spent = activity.map_or(Decimal::ZERO, |a| a.spent);
        let behaviour = self.min_purchases.is_none_or(|m| purchases >= m)
            && self.min_spent.is_none_or(|m| spent >= m)
            && (self.categories.is_empty()
                || activity.is_some_and(|a| {
                    self.categories
                        .iter()
                        .any(|c| a.categories.get(c).copied().unwrap_or(0) > 0)
                }));
        demographic && behaviour
    }
}

/// Great-circle distance in metres (what Redis GEO uses, to within its precision).
pub fn distance_m(a: Location, b: Location) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_372_797.560_856;
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

/// The customers a promo suits, read 1000 at a time.
pub async fn members(stores: &PromoStores, promo: &FlashPromo) -> Result<Segment, StoreError> {
    let criteria = &promo.segment;
    let loc = promo.store.location;
    let near = stores
        .promos
        .customers_near(loc.lat, loc.lon, criteria.radius_m)
        .await?;
    let mut segment = Segment {
        near: near.len(),
        members: Vec::new(),
    };
    for chunk in near.chunks(1000) {
        let profiles = stores.customers.customers(chunk).await?;
        let activities = if criteria.needs_activity() {
            stores.events.activities(chunk).await?
        } else {
            vec![None; chunk.len()]
        };
        for ((id, profile), activity) in chunk.iter().zip(profiles).zip(&activities) {
            if let Some(customer) = profile {
                if criteria.admits(&customer, activity.as_ref()) {
                    segment.members.push(SegmentMember {
                        id: id.clone(),
                        customer,
                    });
                }
            }
        }
    }
    Ok(segment)
}

/// Descriptive labels of a customer, for `GET /api/users/segments/`.
pub fn labels(activity: Option<&ActivitySummary>) -> Vec<String> {
    let Some(a) = activity else {
        return vec!["new".into()];
    };
    let mut labels = Vec::new();
    labels.push(
        match a.purchases {
            0 => "browser",
            1..=4 => "buyer",
            _ => "frequent_buyer",
        }
        .to_string(),
    );
    if a.spent >= Decimal::from(500) {
        labels.push("big_spender".into());
    }
    labels.extend(
        a.categories
            .iter()
            .filter(|(_, n)| **n >= 3)
            .map(|(c, _)| format!("category:{c}")),
    );
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn distances_match_known_ones() {
        let sol = Location {
            lat: 40.4168,
            lon: -3.7038,
        };
        // About 0.018 degrees of latitude is 2 km.
        let north = Location {
            lat: 40.4168 + 0.017_98,
            lon: -3.7038,
        };
        assert!(
            (distance_m(sol, north) - 2000.0).abs() < 5.0,
            "{}",
            distance_m(sol, north)
        );
    }

    #[test]
    fn criteria_combine() {
        let customer: Customer = serde_json::from_value(serde_json::json!({
            "attributes": {"gender": "f"}
        }))
        .unwrap();
        let activity = ActivitySummary {
            user_id: "u".into(),
            events: 5,
            clicks: 3,
            views: 0,
            add_to_cart: 0,
            purchases: 2,
            spent: Decimal::new(12000, 2),
            categories: BTreeMap::from([("shoes".to_string(), 5)]),
            last_seen_ms: None,
        };
        let mut c = SegmentCriteria {
            min_purchases: Some(2),
            categories: vec!["shoes".into()],
            attributes: BTreeMap::from([("gender".to_string(), "f".to_string())]),
            ..SegmentCriteria::default()
        };
        assert!(c.admits(&customer, Some(&activity)));
        assert!(!c.admits(&customer, None), "behaviour needs activity");
        c.min_spent = Some(Decimal::from(200));
        assert!(!c.admits(&customer, Some(&activity)));
        assert_eq!(labels(Some(&activity)), vec!["buyer", "category:shoes"]);
    }
}
