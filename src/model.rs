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
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
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
    /// Taken on: a request queued by the API, or `count` campaign deliveries fanned out.
    Accepted,
    Processing,
    Sent,
    Failed,
    Deduplicated,
    DeadLettered,
    /// A receipt confirmed a campaign delivery.
    Delivered,
    /// The provider refused, or a failure receipt came: the next channel is due.
    Undelivered,
    /// Moved on to the next channel after silence or failure.
    FellBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Unique per event, so a consumer that sees it twice counts it once.
    pub event_id: String,
    pub kind: LifecycleKind,
    pub id: RequestId,
    /// `None` for what never reached a channel (a customer no channel could reach).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<Channel>,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// Set on campaign deliveries, whose `id` is the delivery key `campaign:customer:channel`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub campaign: Option<CampaignId>,
    /// How many notifications the event stands for when more than one (a fanned-out batch).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    /// On `delivered`: milliseconds from the provider's acceptance to the receipt.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_ms: Option<u64>,
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
            channel: Some(channel),
            at_ms: now_ms(),
            detail,
            campaign: None,
            count: None,
            latency_ms: None,
        }
    }

    /// An event about one campaign delivery.
    pub fn for_delivery(
        kind: LifecycleKind,
        campaign: &CampaignId,
        customer: &CustomerId,
        channel: Channel,
        detail: Option<String>,
    ) -> Self {
        let key = delivery_key(campaign, customer, channel);
        LifecycleEvent {
            campaign: Some(campaign.clone()),
            ..LifecycleEvent::new(kind, &RequestId(key), channel, detail)
        }
    }
}

impl LifecycleKind {
    pub const ALL: [LifecycleKind; 9] = [
        LifecycleKind::Accepted,
        LifecycleKind::Processing,
        LifecycleKind::Sent,
        LifecycleKind::Delivered,
        LifecycleKind::Undelivered,
        LifecycleKind::FellBack,
        LifecycleKind::Failed,
        LifecycleKind::Deduplicated,
        LifecycleKind::DeadLettered,
    ];

    /// The outcome name metrics use (`fallback` for [`LifecycleKind::FellBack`]).
    pub fn outcome(self) -> &'static str {
        match self {
            LifecycleKind::Accepted => "accepted",
            LifecycleKind::Processing => "processing",
            LifecycleKind::Sent => "sent",
            LifecycleKind::Delivered => "delivered",
            LifecycleKind::Undelivered => "undelivered",
            LifecycleKind::FellBack => "fallback",
            LifecycleKind::Failed => "failed",
            LifecycleKind::Deduplicated => "deduplicated",
            LifecycleKind::DeadLettered => "dead_lettered",
        }
    }
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
    /// A user event's id (seed 004's `event_id`): the unit of idempotency.
    EventId
);

impl CampaignId {
    pub fn generate() -> Self {
        CampaignId(format!("cmp-{}", uuid::Uuid::now_v7().simple()))
    }
}

/// A point on Earth, validated on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

/// What Herald knows of a customer: where each channel reaches them, what they agreed to,
/// and what a template may mention. Consent is opt-in: a channel without `true` is unused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address per channel: e-mail address, phone number (SMS), WhatsApp number, push token.
    #[serde(default)]
    pub contacts: std::collections::BTreeMap<Channel, String>,
    #[serde(default)]
    pub consent: std::collections::BTreeMap<Channel, bool>,
    /// IANA name, e.g. `Europe/Madrid`; quiet hours are read in it.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Free-form values a campaign template can mention as `{{key}}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

fn default_time_zone() -> String {
    "UTC".into()
}

impl Customer {
    /// The address to use on `channel`, if the customer has one and agreed to it.
    pub fn reachable_on(&self, channel: Channel) -> Option<&str> {
        let consented = self.consent.get(&channel).copied().unwrap_or(false);
        self.contacts
            .get(&channel)
            .map(String::as_str)
            .filter(|a| consented && !a.trim().is_empty())
    }

    /// The value of `{{key}}` in a template.
    pub fn placeholder(&self, id: &CustomerId, key: &str) -> Option<String> {
        match key {
            "id" | "customer_id" => Some(id.to_string()),
            "name" => self.name.clone(),
            _ => self.attributes.get(key).cloned(),
        }
    }
}

/// A message template with `{{placeholder}}`s filled from each customer's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template(String);

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut rest = s.as_str();
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or("template has a '{{' without its '}}'")?;
            let key = after[..close].trim();
            if key.is_empty() || key.contains('{') {
                return Err(format!("template has an invalid placeholder {{{{{key}}}}}"));
            }
            rest = &after[close + 2..];
        }
        Ok(Template(s))
    }
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.0
    }
}

impl Template {
    /// Fills every placeholder; one the profile lacks becomes empty rather than leaking `{{…}}`.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::with_capacity(self.0.len() + 32);
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            match after.find("}}") {
                Some(close) => {
                    out.push_str(&lookup(after[..close].trim()).unwrap_or_default());
                    rest = &after[close + 2..];
                }
                None => {
                    out.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// A campaign as stored: what to say, on which channels in which order, how long to wait
/// for each channel's confirmation, and to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub name: String,
    pub template: Template,
    /// Preferred order; empty means the rules' default order.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// How long to wait for a receipt on each channel before falling back; channels not
    /// listed use the rules' default.
    #[serde(default)]
    pub confirmation_timeout_ms: std::collections::BTreeMap<Channel, u64>,
    /// The most one message may cost; dearer channels are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    pub recipients: u64,
    pub created_ms: u64,
}

/// One batch of a campaign's audience, the unit of fan-out on `herald.campaigns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignBatch {
    pub campaign: CampaignId,
    pub batch: u32,
    /// A replay: fan out just these customers again (the batch number is then only a label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customers: Vec<CustomerId>,
}

/// The work on a channel topic for one (campaign, customer) on one channel.
/// `attempt` counts channels tried: 0 is the first choice, 1 the first fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub campaign: CampaignId,
    pub customer: CustomerId,
    pub attempt: u32,
    #[serde(flatten)]
    pub message: Message,
    /// How long to wait for a receipt before the next channel is tried.
    pub timeout_ms: u64,
    /// When the campaign's fan-out published the first attempt, for latency figures.
    pub fanned_out_ms: u64,
}

impl Delivery {
    /// The provider idempotency key: one (campaign, customer) on one channel. A fallback is
    /// another message on another channel, so it has its own key.
    pub fn idempotency_key(&self) -> String {
        delivery_key(&self.campaign, &self.customer, self.message.channel)
    }
}

pub fn delivery_key(campaign: &CampaignId, customer: &CustomerId, channel: Channel) -> String {
    format!("{campaign}:{customer}:{channel}")
}

/// Splits a delivery key back into its parts (receipts name deliveries by it).
pub fn parse_delivery_key(key: &str) -> Option<(CampaignId, CustomerId, Channel)> {
    let mut parts = key.split(':');
    let (c, u, ch) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        CampaignId::parse(c)?,
        CustomerId::parse(u)?,
        ch.parse().ok()?,
    ))
}

/// What the provider says happened to a delivery it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    Delivered,
    Failed,
}

/// A delivery receipt: what a provider posts to `POST /v1/receipts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The idempotency key Herald sent with the message.
    pub key: String,
    pub status: ReceiptStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    fn templates_fill_placeholders_and_reject_broken_ones() {
        let t = Template::try_from("Hola {{ name }}, {{tier}} {{missing}}!".to_string()).unwrap();
        let out = t.render(|k| match k {
            "name" => Some("Ana".into()),
            "tier" => Some("gold".into()),
            _ => None,
        });
        assert_eq!(out, "Hola Ana, gold !");
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
