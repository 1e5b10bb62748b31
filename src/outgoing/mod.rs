//! Outgoing webhooks: the shop's own systems (CRM, warehouse, support desk) told of each
//! lifecycle event they chose, signed as the Standard Webhooks specification says.
//!
//! In the order an event travels:
//! - the API registers endpoints (`api::webhook_endpoints`), each with its URL, its event
//!   types and a secret shown once; [`address`] refuses URLs Herald must not call;
//! - herald-events' `webhooks` consumer (group `{ns}-webhooks` on `herald.events`) queues
//!   each event for each endpoint that chose its type (`events::outgoing`);
//! - [`sender`] delivers each endpoint's queue on its own: retried with back-off for the
//!   retry period, the endpoint disabled (and an event published) when it failed that long.

pub mod address;
pub mod sender;

use ring::hmac;
use serde::Serialize;

pub use crate::model::{Endpoint, EndpointId};
use crate::model::{LifecycleEvent, LifecycleKind};

/// The type of an outgoing event, as the body's `type` names it: `message.sent`,
/// `message.delivered`... one per lifecycle kind, and `customer.unsubscribed`.
pub fn event_type(kind: LifecycleKind) -> String {
    match kind {
        LifecycleKind::Unsubscribed => "customer.unsubscribed".into(),
        LifecycleKind::EndpointDisabled => "webhook.endpoint_disabled".into(),
        other => format!("message.{}", other.outcome()),
    }
}

/// Every event type an endpoint may choose.
pub fn event_types() -> Vec<String> {
    LifecycleKind::ALL
        .iter()
        .chain(&[LifecycleKind::Unsubscribed, LifecycleKind::EndpointDisabled])
        .map(|k| event_type(*k))
        .collect()
}

/// An endpoint's URL as logs may show it: scheme, host, port and path, never a query or a
/// fragment (a receiver may take a token there).
pub fn url_for_logs(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// A new signing secret: 24 random bytes, as `whsec_` and their base64 (the format the
/// specification's libraries read).
pub fn new_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 24] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `webhook-signature`'s value for a message: `v1,` and the base64 of HMAC-SHA256 over
/// `{id}.{timestamp}.{body}` with the secret's key. `None` for a secret that is not
/// `whsec_` and base64 (never stored so).
pub fn signature(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_")?).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Some(format!("v1,{}", b64.encode(ctx.sign().as_ref())))
}

/// An event as an endpoint receives it: `type`, `timestamp` and the event as `data` (with
/// the customer named apart when the event is about one customer's delivery).
#[derive(Serialize)]
pub struct Payload<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    pub data: PayloadData<'a>,
}

#[derive(Serialize)]
pub struct PayloadData<'a> {
    #[serde(flatten)]
    pub event: &'a LifecycleEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

impl<'a> Payload<'a> {
    pub fn of(event: &'a LifecycleEvent) -> Payload<'a> {
        let customer = event
            .campaign
            .as_ref()
            .and_then(|_| crate::model::parse_delivery_key(&event.id.0))
            .map(|(_, customer, _)| customer.to_string());
        Payload {
            kind: event_type(event.kind),
            timestamp: crate::model::rfc3339(event.at_ms),
            data: PayloadData { event, customer },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's example: secret, id, timestamp and body give this signature
    /// (github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md).
    #[test]
    fn the_signature_is_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(signature("no-prefix", "m", 1, b""), None);
    }

    #[test]
    fn a_logged_url_keeps_no_query() {
        assert_eq!(
            url_for_logs("https://crm.example/hook?token=s3cret#x"),
            "https://crm.example/hook"
        );
    }

    #[test]
    fn endpoint_ids_are_what_generate_makes() {
        let id = EndpointId::generate();
        assert_eq!(EndpointId::parse(id.as_str()), Some(id));
        assert_eq!(EndpointId::parse("ep_"), None);
        assert_eq!(EndpointId::parse("ep_ABC"), None);
        assert_eq!(EndpointId::parse("x_abc"), None);
    }
}
