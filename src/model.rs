//! The domain types every program shares: what a notification is, where it goes and how it ends.
//! They travel as JSON on Kafka, so renaming a field here is a wire change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A delivery channel. The requests API of seed 001 accepts only `email|sms|push`
/// (see [`Channel::REQUEST_TYPES`]); WhatsApp is for campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| RequestId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a request stands; the four values of seed 001's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub to: String,
    pub message: String,
    #[serde(rename = "type")]
    pub channel: Channel,
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

/// What happened to a notification; published on `herald.events` for metrics and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleKind {
    Processing,
    Sent,
    Failed,
    Deduplicated,
    DeadLettered,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Unique per event, so a consumer that sees it twice counts it once.
    pub event_id: String,
    pub kind: LifecycleKind,
    pub id: RequestId,
    pub channel: Channel,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl LifecycleEvent {
    pub fn new(
        kind: LifecycleKind,
        id: &RequestId,
        channel: Channel,
        detail: Option<String>,
    ) -> Self {
        LifecycleEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            kind,
            id: id.clone(),
            channel,
            at_ms: now_ms(),
            detail,
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
