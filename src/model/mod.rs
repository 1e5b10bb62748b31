//! The domain types every program shares: what a notification is, where it goes and how it ends.
//! They travel as JSON on Kafka, so renaming a field here is a wire change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod campaign;
mod campaign_state;
pub mod commerce;
pub mod endpoint;
pub mod frequency;
mod lifecycle;
mod preferences;
mod template;
pub use campaign::*;
pub use campaign_state::*;
pub use endpoint::{Endpoint, EndpointId};
pub use lifecycle::*;
pub use preferences::{CatalogError, Preferences, TopicCatalog};
pub use template::*;

/// A delivery channel. The requests API of seed 001 accepts only `email|sms|push`
/// (see [`Channel::REQUEST_TYPES`]); WhatsApp is for campaigns.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    Whatsapp,
    Push,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Email,
        Channel::Sms,
        Channel::Whatsapp,
        Channel::Push,
    ];
    /// The `type` values seed 001's contract allows on `POST /v1/requests`.
    pub const REQUEST_TYPES: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Push => "push",
        }
    }
}

impl Channel {
    /// The schema of a map keyed by channel name, of `values` (contacts, consent, time-outs).
    pub fn map_schema(values: serde_json::Value) -> utoipa::openapi::schema::Schema {
        let properties: serde_json::Map<String, serde_json::Value> = Channel::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), values.clone()))
            .collect();
        crate::schema::from_json(serde_json::json!({
            "type": "object", "properties": properties, "additionalProperties": false,
        }))
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown channel {0:?}; expected one of email, sms, whatsapp, push")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_string()))
    }
}

/// The id of a seed 001 request; also the provider idempotency key of its notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub String);

impl RequestId {
    /// Time-ordered (UUIDv7), so ids sort roughly by creation.
    pub fn generate() -> Self {
        RequestId(uuid::Uuid::now_v7().to_string())
    }

    /// Ids come from URLs; anything that is not a plain token cannot be ours.
    pub fn parse(raw: &str) -> Option<Self> {
        is_token(raw, 64).then(|| RequestId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::schema::described!(RequestId, crate::schema::token(64));

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a request stands; the four values of seed 001's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Queued,
    Processing,
    Sent,
    Failed,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Queued => "queued",
            RequestStatus::Processing => "processing",
            RequestStatus::Sent => "sent",
            RequestStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Processing, Self::Sent, Self::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RequestStatus::Sent | RequestStatus::Failed)
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller asks to send: the body of `POST /v1/requests`, and of the provider call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    #[schema(schema_with = to_schema)]
    pub to: String,
    #[schema(schema_with = message_schema)]
    pub message: String,
    #[serde(rename = "type")]
    #[schema(schema_with = request_type_schema)]
    pub channel: Channel,
}

impl Message {
    /// Longest accepted `to` and `message`, in bytes.
    pub const MAX_TO_LEN: usize = crate::schema::MAX_ADDRESS_LEN;
    pub const MAX_MESSAGE_LEN: usize = 8192;
}

fn to_schema() -> utoipa::openapi::schema::Schema {
    crate::schema::text(Message::MAX_TO_LEN)
}

fn message_schema() -> utoipa::openapi::schema::Schema {
    crate::schema::text(Message::MAX_MESSAGE_LEN)
}

fn request_type_schema() -> utoipa::openapi::schema::Schema {
    let types: Vec<&str> = Channel::REQUEST_TYPES.iter().map(|c| c.as_str()).collect();
    crate::schema::from_json(serde_json::json!({"type": "string", "enum": types}))
}

/// The unit of work on a `herald.notify.{channel}` topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: RequestId,
    #[serde(flatten)]
    pub message: Message,
    /// Milliseconds since the epoch when it was published, for latency figures.
    pub published_at_ms: u64,
}

/// Defines a validated id newtype: a plain token (letters, digits, `-`, `_`, `.`), at most
/// 64 bytes, so it is safe inside Redis keys, idempotency keys (`:`-separated) and URLs.
macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident) => {
        token_id!($(#[$doc])* $name, 64);
    };
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Option<Self> {
                is_token(raw, $max).then(|| $name(raw.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                if is_token(&s, $max) {
                    Ok($name(s))
                } else {
                    Err(format!(
                        "{s:?} is not a valid id (1-{} letters, digits, '-', '_' or '.')",
                        $max
                    ))
                }
            }
        }

        crate::schema::described!($name, crate::schema::token($max));

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn is_token(raw: &str, max: usize) -> bool {
    !raw.is_empty()
        && raw.len() <= max
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

token_id!(
    /// The e-commerce's own id of a customer.
    CustomerId
);
token_id!(
    /// A campaign's id: given by the caller (so a retried `POST` resumes, never duplicates)
    /// or generated.
    CampaignId
);

token_id!(
    /// The shop's id of a sale (seed 003's `sale_id`). Short enough that its confirmation
    /// e-mail's request id, `sale-{id}`, is still a request id.
    SaleId,
    59
);
token_id!(
    /// A flash promo's id (seed 002).
    PromoId
);
token_id!(
    /// What a promotion is about (`offers`, `flash-sales`): customers choose per topic and
    /// channel what they hear about; the list is configuration (the rules' `[topics]`).
    Topic,
    40
);
token_id!(
    /// A user event's id (seed 004's `event_id`): the unit of idempotency.
    EventId
);

impl Topic {
    /// The topic of campaigns stored before topics existed, and the built-in default.
    pub fn offers() -> Self {
        Topic("offers".into())
    }
}

impl CampaignId {
    pub fn generate() -> Self {
        CampaignId(format!("cmp-{}", uuid::Uuid::now_v7().simple()))
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A time as Herald writes it: RFC 3339 in UTC.
pub fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schemathesis: a customer at latitude 89 passed validation and then failed in Redis'
    /// GEOADD with 503; the geo index ends at ±85.05112878.
    #[test]
    fn a_latitude_beyond_the_geo_index_is_refused() {
        let at = |lat| {
            Location { lat, lon: 0.0 }
                .invalid_part()
                .map(|(part, _)| part)
        };
        assert_eq!(at(85.0), None);
        assert_eq!(at(89.0), Some("lat"));
        assert_eq!(at(-86.0), Some("lat"));
    }

    #[test]
    fn channel_round_trips_through_its_name() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), c);
        }
        assert!("fax".parse::<Channel>().is_err());
    }

    #[test]
    fn request_id_rejects_path_tricks() {
        assert!(RequestId::parse("abc-123").is_some());
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("a/b").is_none());
        assert!(RequestId::parse("a:b").is_none());
    }

    #[test]
    fn templates_fill_a_customers_values_and_reject_broken_ones() {
        let t = Template::try_from("Hola {{ name }}, {{tier}} {{missing}}!".to_string()).unwrap();
        let ana: Customer =
            serde_json::from_str(r#"{"name":"Ana","attributes":{"tier":"gold","name":"x"}}"#)
                .unwrap();
        let id = CustomerId::parse("c-1").unwrap();
        // The built-in `name` wins over an attribute of the same name.
        assert_eq!(
            t.render(&ana.template_context(&id)).unwrap(),
            "Hola Ana, gold !"
        );
        assert!(Template::try_from("Hola {{name".to_string()).is_err());
        assert!(Template::try_from("Hola {{}}".to_string()).is_err());
    }

    #[test]
    fn delivery_keys_round_trip_and_ids_stay_tokens() {
        let c = CampaignId::parse("bf-2026").unwrap();
        let u = CustomerId::parse("cust.42").unwrap();
        let key = delivery_key(&c, &u, Channel::Whatsapp);
        assert_eq!(key, "bf-2026:cust.42:whatsapp");
        assert_eq!(parse_delivery_key(&key), Some((c, u, Channel::Whatsapp)));
        assert_eq!(parse_delivery_key("a:b"), None);
        assert_eq!(parse_delivery_key("a:b:fax"), None);
        assert!(CustomerId::parse("a:b").is_none());
        assert!(CustomerId::parse("{x}").is_none());
    }

    #[test]
    fn consent_is_opt_in() {
        let c: Customer = serde_json::from_str(
            r#"{"contacts":{"email":"a@b","sms":"+34"},"consent":{"sms":true}}"#,
        )
        .unwrap();
        assert_eq!(c.reachable_on(Channel::Email), None);
        assert_eq!(c.reachable_on(Channel::Sms), Some("+34"));
        assert_eq!(c.time_zone, "UTC");
    }

    #[test]
    fn notification_wire_format_is_flat() {
        let n = Notification {
            id: RequestId("r1".into()),
            message: Message {
                to: "a@b".into(),
                message: "hi".into(),
                channel: Channel::Sms,
            },
            published_at_ms: 5,
        };
        let v: serde_json::Value = serde_json::to_value(&n).unwrap();
        assert_eq!(v["type"], "sms");
        assert_eq!(v["to"], "a@b");
        assert_eq!(serde_json::from_value::<Notification>(v).unwrap(), n);
    }
}
