//! The business events Herald consumes as producers send them: sales (seed 003) and user
//! events (seed 004), and what makes one usable. The same checks run in `herald-ingest`
//! (a 422 naming the field) and in `herald-events` (a dead letter naming it), since
//! producers may publish to the topics directly.

use std::fmt;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::schema::from_json;

use crate::model::{CustomerId, EventId, RequestId, SaleId};

/// Why an event cannot be used: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// The largest amount one sale or purchase may carry.
use crate::schema::MAX_AMOUNT;
/// Longest product id and product name.
const MAX_PRODUCT_ID_LEN: usize = 64;
const MAX_PRODUCT_NAME_LEN: usize = 200;
const MAX_QUANTITY: u32 = 10_000;
/// Longest e-mail address (RFC 5321's forward path less its brackets).
const MAX_EMAIL_LEN: usize = 254;
const MAX_CATEGORY_LEN: usize = 64;
/// How far in the future an event's timestamp may be (producers' clocks drift).
const MAX_CLOCK_SKEW_MS: u64 = 24 * 3600 * 1000;

/// Seed 003's `sale_completed` event, field for field. `customer_id` is ours and optional:
/// with it, loyalty points go to the customer; without, to the e-mail address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SaleEvent {
    #[schema(schema_with = sale_completed_schema)]
    pub event_type: String,
    #[serde(deserialize_with = "sale_id")]
    #[schema(schema_with = sale_id_schema)]
    pub sale_id: SaleId,
    #[serde(deserialize_with = "text_or_number")]
    #[schema(schema_with = product_id_schema)]
    pub product_id: String,
    #[schema(schema_with = product_name_schema)]
    pub product_name: String,
    #[serde(deserialize_with = "crate::schema::whole_number")]
    #[schema(schema_with = quantity_schema)]
    pub quantity: u32,
    #[schema(schema_with = crate::schema::money)]
    pub total: Decimal,
    #[schema(schema_with = email_schema)]
    pub customer_email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    #[schema(schema_with = crate::schema::timestamp)]
    pub timestamp: String,
}

/// Producers send it as text or as a number, as they send `product_id`.
fn sale_id_schema() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(<SaleId as utoipa::PartialSchema>::schema())
        .item(from_json(json!({"type": "integer"})))
        .into()
}

fn sale_completed_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": "string", "enum": [SALE_COMPLETED]}))
}

fn product_name_schema() -> utoipa::openapi::schema::Schema {
    from_json(
        json!({"type": "string", "minLength": 1, "maxLength": MAX_PRODUCT_NAME_LEN, "pattern": "\\S"}),
    )
}

fn quantity_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}))
}

fn email_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": "string", "format": "email", "maxLength": MAX_EMAIL_LEN}))
}

fn category_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": ["string", "null"],
        "pattern": format!("^\\s*[A-Za-z0-9._-]{{1,{MAX_CATEGORY_LEN}}}\\s*$"),
    }))
}

/// Ids producers send as text or as a whole number (seed 003's `product_id: 1`).
fn product_id_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "oneOf": [{"type": "string", "minLength": 1, "maxLength": MAX_PRODUCT_ID_LEN}, {"type": "integer"}],
    }))
}

/// [`product_id_schema`] or null (a user event may name no product).
fn optional_product_id_schema() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(product_id_schema())
        .item(from_json(json!({"type": "null"})))
        .into()
}

pub const SALE_COMPLETED: &str = "sale_completed";

impl SaleEvent {
    /// Checks what types alone cannot; returns when the sale happened (ms since the epoch).
    pub fn validate(&self, now_ms: u64) -> Result<u64, Invalid> {
        if self.event_type != SALE_COMPLETED {
            return Err(Invalid::new(
                "event_type",
                format!("expected \"{SALE_COMPLETED}\""),
            ));
        }
        check_text("product_id", &self.product_id, MAX_PRODUCT_ID_LEN)?;
        check_text("product_name", &self.product_name, MAX_PRODUCT_NAME_LEN)?;
        if !(1..=MAX_QUANTITY).contains(&self.quantity) {
            return Err(Invalid::new(
                "quantity",
                format!("must be 1-{MAX_QUANTITY}"),
            ));
        }
        check_amount("total", self.total)?;
        check_email("customer_email", &self.customer_email)?;
        parse_timestamp("timestamp", &self.timestamp, now_ms)
    }

    /// Whose loyalty account the sale credits.
    pub fn member(&self) -> MemberId {
        match &self.customer_id {
            Some(id) => MemberId(id.as_str().to_string()),
            None => MemberId(self.customer_email.trim().to_ascii_lowercase()),
        }
    }

    /// The seed 001 request that carries the sale's confirmation e-mail: one per sale.
    pub fn confirmation_id(&self) -> RequestId {
        confirmation_id(&self.sale_id)
    }

    pub fn confirmation_text(&self) -> String {
        format!(
            "Thank you for your order {}: {} x {}, total {:.2}.",
            self.sale_id, self.quantity, self.product_name, self.total
        )
    }
}

pub fn confirmation_id(sale: &SaleId) -> RequestId {
    RequestId(format!("sale-{sale}"))
}

/// A loyalty account: a customer id, or the e-mail address of a sale that named none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(String);

impl MemberId {
    /// A customer id as it is, or an e-mail address (lower-cased).
    pub fn parse(raw: &str) -> Option<Self> {
        if let Some(id) = CustomerId::parse(raw) {
            return Some(MemberId(id.as_str().to_string()));
        }
        check_email("id", raw)
            .ok()
            .map(|()| MemberId(raw.trim().to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user did (seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserAction {
    Click,
    View,
    AddToCart,
    Purchase,
}

impl UserAction {
    pub const ALL: [UserAction; 4] = [
        UserAction::Click,
        UserAction::View,
        UserAction::AddToCart,
        UserAction::Purchase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserAction::Click => "click",
            UserAction::View => "view",
            UserAction::AddToCart => "add_to_cart",
            UserAction::Purchase => "purchase",
        }
    }
}

/// One user event on `herald.user-events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserEvent {
    pub event_id: EventId,
    pub user_id: CustomerId,
    pub event_type: UserAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = category_schema)]
    pub category: Option<String>,
    #[serde(
        default,
        deserialize_with = "optional_text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = optional_product_id_schema)]
    pub product_id: Option<String>,
    /// What a purchase cost; only purchases carry one (and must).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_money)]
    pub amount: Option<Decimal>,
    #[schema(schema_with = crate::schema::timestamp)]
    pub timestamp: String,
}

impl UserEvent {
    /// The purchase rule of [`UserEvent::validate`] as JSON Schema (`if`/`then`/`else`), which
    /// no derive can write: a purchase carries an amount, nothing else does.
    pub fn purchase_rule() -> serde_json::Map<String, serde_json::Value> {
        let rule = json!({
            "if": {"properties": {"event_type": {"const": "purchase"}}, "required": ["event_type"]},
            "then": {"required": ["amount"], "properties": {"amount": {"not": {"type": "null"}}}},
            "else": {"properties": {"amount": {"type": "null"}}},
        });
        match rule {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }
}

/// A user event as it is applied: checked, its category normalised, its amount in cents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub event_id: EventId,
    pub user_id: CustomerId,
    pub action: UserAction,
    pub category: Option<String>,
    pub amount_cents: i64,
    pub at_ms: u64,
}

impl UserEvent {
    pub fn validate(&self, now_ms: u64) -> Result<Activity, Invalid> {
        let category = match &self.category {
            None => None,
            Some(c) => {
                let c = c.trim().to_ascii_lowercase();
                if c.is_empty()
                    || c.len() > MAX_CATEGORY_LEN
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(Invalid::new(
                        "category",
                        format!("must be 1-{MAX_CATEGORY_LEN} letters, digits, '-', '_' or '.'"),
                    ));
                }
                Some(c)
            }
        };
        if let Some(p) = &self.product_id {
            check_text("product_id", p, MAX_PRODUCT_ID_LEN)?;
        }
        let amount_cents = match (self.event_type, self.amount) {
            (UserAction::Purchase, Some(a)) => cents("amount", a)?,
            (UserAction::Purchase, None) => {
                return Err(Invalid::new("amount", "a purchase needs an amount"))
            }
            (_, Some(_)) => {
                return Err(Invalid::new("amount", "only a purchase carries an amount"))
            }
            (_, None) => 0,
        };
        Ok(Activity {
            event_id: self.event_id.clone(),
            user_id: self.user_id.clone(),
            action: self.event_type,
            category,
            amount_cents,
            at_ms: parse_timestamp("timestamp", &self.timestamp, now_ms)?,
        })
    }
}

/// Money as cents; at most two decimals, never negative.
pub fn cents(field: &str, amount: Decimal) -> Result<i64, Invalid> {
    check_amount(field, amount)?;
    (amount * Decimal::ONE_HUNDRED)
        .to_i64()
        .ok_or_else(|| Invalid::new(field, "too large"))
}

/// Cents as a decimal amount (`12345` → `123.45`).
pub fn from_cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

fn check_amount(field: &str, amount: Decimal) -> Result<(), Invalid> {
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(Invalid::new(field, "must not be negative"));
    }
    if amount.normalize().scale() > 2 {
        return Err(Invalid::new(field, "at most two decimals"));
    }
    if amount > Decimal::from(MAX_AMOUNT) {
        return Err(Invalid::new(field, format!("at most {MAX_AMOUNT}")));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!("must be 1-{max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// A plausible address: one `@`, a dotted domain, nothing that would break a key or a header.
fn check_email(field: &str, value: &str) -> Result<(), Invalid> {
    let v = value.trim();
    let ok = v.len() <= MAX_EMAIL_LEN
        && v.split('@').count() == 2
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "{}<>\",;:".contains(c));
    if ok {
        Ok(())
    } else {
        // Not echoed: the value is personal data, and goes on into logs and dead letters.
        Err(Invalid::new(
            field,
            "is not an e-mail address (one @, a dotted domain, no spaces or <>\",;:{})",
        ))
    }
}

/// RFC 3339 (`2026-11-24T10:30:00Z`), or a date and time without offset as seed 003 sends
/// it (`2024-12-04T10:30:00`, read as UTC). Milliseconds since the epoch.
pub fn parse_timestamp(field: &str, raw: &str, now_ms: u64) -> Result<u64, Invalid> {
    let ts = raw
        .parse::<jiff::Timestamp>()
        .or_else(|_| {
            raw.parse::<jiff::civil::DateTime>()
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
        })
        .map_err(|_| {
            Invalid::new(
                field,
                format!("{raw:?} is not a date and time (RFC 3339, e.g. 2026-11-24T10:30:00Z)"),
            )
        })?;
    let ms = u64::try_from(ts.as_millisecond()).map_err(|_| Invalid::new(field, "before 1970"))?;
    if ms > now_ms + MAX_CLOCK_SKEW_MS {
        return Err(Invalid::new(field, "more than a day in the future"));
    }
    Ok(ms)
}

/// Ids that producers send as text or as a number (seed 003's `product_id: 1`).
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrNumber {
    Text(String),
    Number(serde_json::Number),
}

const TEXT_OR_NUMBER: &str = "expected a string or a whole number";

impl TextOrNumber {
    /// The id as text; a number must be whole (what the schema states: an id is not 1.5).
    fn into_text<E: serde::de::Error>(self) -> Result<String, E> {
        match self {
            TextOrNumber::Text(s) => Ok(s),
            TextOrNumber::Number(n) if n.is_i64() => Ok(n.to_string()),
            TextOrNumber::Number(n) => match crate::schema::whole_u64(&n) {
                Some(whole) => Ok(whole.to_string()),
                None => Err(E::custom(TEXT_OR_NUMBER)),
            },
        }
    }
}

fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    TextOrNumber::deserialize(d)
        .map_err(|_| D::Error::custom(TEXT_OR_NUMBER))?
        .into_text()
}

fn optional_text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<TextOrNumber>::deserialize(d)
        .map_err(|_| D::Error::custom(TEXT_OR_NUMBER))?
        .map(TextOrNumber::into_text)
        .transpose()
}

fn sale_id<'de, D: Deserializer<'de>>(d: D) -> Result<SaleId, D::Error> {
    SaleId::try_from(text_or_number(d)?).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000_000; // 2027-01-15

    /// Schemathesis found `"sale_id": 2.5890419884777833e-42` accepted (as the id
    /// "2.5890419884777833e-42") where the document says text or a whole number.
    #[test]
    fn ids_sent_as_numbers_must_be_whole_numbers() {
        for (field, value) in [
            ("sale_id", json!(2.5890419884777833e-42)),
            ("sale_id", json!(1.5)),
            ("product_id", json!(0.25)),
        ] {
            let mut sale = seed_sale();
            sale[field] = value;
            let err = serde_json::from_value::<SaleEvent>(sale).unwrap_err();
            assert!(err.to_string().contains("whole number"), "{field}: {err}");
        }
        let mut sale = seed_sale();
        sale["sale_id"] = json!(12345);
        sale["product_id"] = json!(-7);
        let sale: SaleEvent = serde_json::from_value(sale).unwrap();
        assert_eq!(
            (sale.sale_id.as_str(), sale.product_id.as_str()),
            ("12345", "-7")
        );
    }

    /// Schemathesis: `"quantity": 668.0` is an integer to JSON Schema (and so to the
    /// document), and was refused by serde's u32.
    #[test]
    fn whole_numbers_written_with_a_point_are_whole_numbers() {
        let mut sale = seed_sale();
        (sale["quantity"], sale["sale_id"]) = (json!(668.0), json!(12.0));
        let sale: SaleEvent = serde_json::from_value(sale).unwrap();
        assert_eq!((sale.quantity, sale.sale_id.as_str()), (668, "12"));
        let mut sale = seed_sale();
        sale["quantity"] = json!(2.5);
        let err = serde_json::from_value::<SaleEvent>(sale).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
    }

    fn seed_sale() -> serde_json::Value {
        // Seed 003's example, as it is written there.
        json!({
            "event_type": "sale_completed",
            "sale_id": "12345",
            "product_id": 1,
            "product_name": "Manzana Orgánica",
            "quantity": 5,
            "total": 75.00,
            "customer_email": "cliente@example.com",
            "timestamp": "2024-12-04T10:30:00"
        })
    }

    #[test]
    fn the_seed_sale_is_valid_and_credits_its_email() {
        let sale: SaleEvent = serde_json::from_value(seed_sale()).unwrap();
        let at = sale.validate(NOW).unwrap();
        assert_eq!(at, 1_733_308_200_000);
        assert_eq!(sale.product_id, "1");
        assert_eq!(sale.member().as_str(), "cliente@example.com");
        assert_eq!(sale.confirmation_id().as_str(), "sale-12345");
        assert_eq!(cents("total", sale.total).unwrap(), 7500);
    }

    #[test]
    fn a_sale_names_what_is_wrong() {
        for (field, value) in [
            ("event_type", json!("sale_refunded")),
            ("quantity", json!(0)),
            ("total", json!(-1)),
            ("total", json!(1.005)),
            ("customer_email", json!("not-an-address")),
            ("timestamp", json!("yesterday")),
            ("product_name", json!("  ")),
        ] {
            let mut v = seed_sale();
            v[field] = value;
            let sale: SaleEvent = serde_json::from_value(v).unwrap();
            assert_eq!(sale.validate(NOW).unwrap_err().field, field);
        }
    }

    #[test]
    fn user_events_need_an_amount_exactly_when_they_are_purchases() {
        let mut v = json!({"event_id": "e1", "user_id": "c1", "event_type": "purchase",
            "category": "Shoes", "amount": "19.99", "timestamp": "2026-11-24T10:00:00Z"});
        let a = serde_json::from_value::<UserEvent>(v.clone())
            .unwrap()
            .validate(NOW)
            .unwrap();
        assert_eq!(
            (a.amount_cents, a.category.as_deref()),
            (1999, Some("shoes"))
        );
        v["event_type"] = json!("click");
        let e = serde_json::from_value::<UserEvent>(v.clone()).unwrap();
        assert_eq!(e.validate(NOW).unwrap_err().field, "amount");
        v["event_type"] = json!("purchase");
        v.as_object_mut().unwrap().remove("amount");
        let e = serde_json::from_value::<UserEvent>(v).unwrap();
        assert_eq!(e.validate(NOW).unwrap_err().field, "amount");
    }

    #[test]
    fn members_are_customer_ids_or_lowercased_addresses() {
        assert_eq!(MemberId::parse("c-42").unwrap().as_str(), "c-42");
        assert_eq!(
            MemberId::parse("Ana@Example.com").unwrap().as_str(),
            "ana@example.com"
        );
        assert!(MemberId::parse("a b").is_none());
        assert_eq!(from_cents(12345).to_string(), "123.45");
    }
}
