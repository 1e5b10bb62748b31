//! Providers' own status webhooks, verified with each provider's signature scheme
//! ([`crate::auth::webhooks`]) and applied through the same path as `/v1/receipts`, so late
//! receipts, counts and metrics behave the same:
//!
//! - `POST /v1/webhooks/twilio`: status callbacks (form-encoded; `delivered`/`read` →
//!   delivered, `failed`/`undelivered` → undelivered with Twilio's error code) for the
//!   delivery named by the callback URL's `key`, and inbound messages: a STOP (or BAJA...)
//!   reply withdraws that number's consent to promotions on SMS or WhatsApp.
//! - `GET /v1/webhooks/whatsapp`: Meta's verification handshake (`hub.verify_token`).
//! - `POST /v1/webhooks/whatsapp`: Meta's `statuses` (the delivery named by
//!   `biz_opaque_callback_data`) and inbound `messages` (STOP / BAJA as above).
//!
//! Unsigned or wrongly signed calls are 401 and change nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, App, Ingest};
use crate::auth::webhooks::{meta_verify, twilio_verify};
use crate::campaigns::receipts;
use crate::http::Body;
use crate::model::{Channel, Receipt, ReceiptStatus};
use crate::schema::{BodyErrors, FormErrors};
use crate::secret::Secret;

/// What herald-ingest needs to check providers' webhooks; each `None` leaves its route
/// answering 401.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// Herald's public base URL: Twilio signs the full URL it called.
    pub public_url: Option<String>,
    pub twilio_auth_token: Option<Secret>,
    pub whatsapp_app_secret: Option<Secret>,
    pub whatsapp_verify_token: Option<Secret>,
}

/// Replies that withdraw consent: Twilio's opt-out keywords, and Spanish `BAJA`.
const STOP_WORDS: [&str; 8] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "BAJA",
    "ALTO",
];

/// Most statuses one Meta call may carry that Herald applies.
const MAX_STATUSES: usize = 1000;

pub fn routes() -> OpenApiRouter<Arc<Ingest>> {
    OpenApiRouter::new()
        .routes(routes!(twilio))
        .routes(routes!(meta_handshake, whatsapp))
}

/// The fields of Twilio's form Herald reads (it posts more, all signed).
#[derive(ToSchema)]
#[allow(dead_code)]
struct TwilioForm {
    #[schema(rename = "MessageSid")]
    message_sid: Option<String>,
    /// queued, sent, delivered, read, failed, undelivered...
    #[schema(rename = "MessageStatus")]
    message_status: Option<String>,
    #[schema(rename = "ErrorCode")]
    error_code: Option<String>,
    /// An inbound message's sender (`whatsapp:+34...` on WhatsApp).
    #[schema(rename = "From")]
    from: Option<String>,
    /// An inbound message's text: STOP, BAJA... withdraw promotions.
    #[schema(rename = "Body")]
    body: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct CallbackKey {
    /// The delivery key Herald put in the StatusCallback URL.
    key: Option<String>,
}

/// Meta's webhook call: `entry[].changes[].value.statuses[]` and `.messages[]`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct MetaWebhook {
    object: Option<String>,
    entry: Option<Vec<Value>>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct Handshake {
    /// `subscribe`
    #[param(rename = "hub.mode")]
    mode: Option<String>,
    /// HERALD_WHATSAPP_VERIFY_TOKEN
    #[param(rename = "hub.verify_token")]
    verify_token: Option<String>,
    /// Echoed back
    #[param(rename = "hub.challenge")]
    challenge: Option<String>,
}

fn unsigned() -> ApiError {
    ApiError::unauthorized("missing or invalid provider signature")
}

fn is_stop(body: &str) -> bool {
    let word = body.trim().to_ascii_uppercase();
    STOP_WORDS.contains(&word.as_str())
}

/// Twilio's status callbacks and inbound messages
///
/// Signed with X-Twilio-Signature (HMAC-SHA1 over the full URL and the sorted form
/// parameters); a STOP/BAJA reply withdraws promotions to that number.
#[utoipa::path(post, path = "/v1/webhooks/twilio", tag = "providers", params(CallbackKey),
    request_body(content = TwilioForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Applied (or nothing to apply): JSON for a status, empty TwiML for an inbound message", body = Object),
        FormErrors))]
async fn twilio(
    State(app): App,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let secrets = &app.access.webhooks;
    let (Some(token), Some(base)) = (&secrets.twilio_auth_token, &secrets.public_url) else {
        return Err(unsigned());
    };
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unsigned)?;
    let params: Vec<(String, String)> = url_decoded(&body);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    if !twilio_verify(token.expose(), &url, &params, signature) {
        return Err(unsigned());
    }
    let fields: HashMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(status) = fields.get("MessageStatus") {
        let key: HashMap<String, String> = uri
            .query()
            .map(|q| url_decoded(q.as_bytes()).into_iter().collect())
            .unwrap_or_default();
        let Some(key) = key.get("key") else {
            return Ok(ok(
                json!({"ignored": "no delivery key in the callback URL"}),
            ));
        };
        let outcome = match *status {
            "delivered" | "read" => ReceiptStatus::Delivered,
            "failed" | "undelivered" => ReceiptStatus::Failed,
            // queued, sending, sent, accepted...: not an outcome yet.
            other => return Ok(ok(json!({"ignored": other}))),
        };
        let reason = fields
            .get("ErrorCode")
            .map(|c| format!("twilio {status} {c}"));
        let receipt = Receipt {
            key: key.chars().take(256).collect(),
            status: outcome,
            reason,
            provider_id: fields
                .get("MessageSid")
                .map(|s| s.chars().take(128).collect()),
        };
        let tally = receipts::apply(
            &app.stores.slots,
            &app.events_producer,
            &app.topics,
            &[receipt],
        )
        .await?;
        return Ok(ok(json!({"outcomes": tally})));
    }
    if let (Some(text), Some(from)) = (fields.get("Body"), fields.get("From")) {
        if is_stop(text) {
            let (channel, number) = match from.strip_prefix("whatsapp:") {
                Some(n) => (Channel::Whatsapp, n),
                None => (Channel::Sms, *from),
            };
            opt_out(&app, channel, number).await?;
        }
    }
    // Twilio reads the answer to an inbound message as TwiML: an empty one sends nothing back.
    Ok((
        StatusCode::OK,
        [("content-type", "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response())
}

/// A STOP reply: the number gets no more promotions on that channel.
async fn opt_out(app: &Ingest, channel: Channel, number: &str) -> Result<(), ApiError> {
    if app
        .stores
        .customers
        .mark_undeliverable(channel, number, "the customer replied STOP")
        .await?
    {
        let change = crate::store::ConsentChange::now(
            &format!("{channel}-stop"),
            "customer reply",
            format!("promotions:{channel}"),
            "subscribed",
            "STOP",
        );
        app.stores
            .customers
            .log_address_consent(channel, number, change)
            .await?;
    }
    tracing::info!(target: "herald::audit", %channel, "a customer replied STOP: promotions withdrawn for that number");
    Ok(())
}

/// Compares two secrets without stopping at the first difference: their digests, folded.
fn same_secret(a: &str, b: &str) -> bool {
    use ring::digest::{digest, SHA256};
    let (a, b) = (digest(&SHA256, a.as_bytes()), digest(&SHA256, b.as_bytes()));
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

fn ok(body: Value) -> Response {
    Json(body).into_response()
}

fn url_decoded(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// Meta's webhook verification handshake
///
/// Echoes `hub.challenge` when `hub.verify_token` is ours.
#[utoipa::path(get, path = "/v1/webhooks/whatsapp", tag = "providers", params(Handshake),
    responses((status = 200, description = "The challenge", content_type = "text/plain", body = String)))]
async fn meta_handshake(
    State(app): App,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // 401 rather than Meta's suggested 403: a caller without the token is unauthenticated,
    // as on every other route; Meta only looks for the 200 with its challenge.
    let Some(expected) = &app.access.webhooks.whatsapp_verify_token else {
        return Err(unsigned());
    };
    let token = q.get("hub.verify_token").map(String::as_str).unwrap_or("");
    let matches = same_secret(token, expected.expose());
    if q.get("hub.mode").map(String::as_str) != Some("subscribe") || !matches {
        return Err(ApiError::unauthorized("verify token does not match"));
    }
    let challenge: String = q
        .get("hub.challenge")
        .map(|c| c.chars().take(256).collect())
        .unwrap_or_default();
    Ok((StatusCode::OK, [("content-type", "text/plain")], challenge).into_response())
}

/// Meta's WhatsApp Cloud API webhooks
///
/// Signed with X-Hub-Signature-256 (of the raw body): statuses become receipts, STOP/BAJA
/// messages withdraw promotions.
#[utoipa::path(post, path = "/v1/webhooks/whatsapp", tag = "providers", request_body = MetaWebhook,
    responses((status = 200, description = "Applied: outcomes by kind, and how many opted out", body = Object), BodyErrors))]
async fn whatsapp(
    State(app): App,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(secret) = &app.access.webhooks.whatsapp_app_secret else {
        return Err(unsigned());
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unsigned)?;
    if !meta_verify(secret.expose(), &body, signature) {
        return Err(unsigned());
    }
    let event: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("not JSON: {e}")))?;
    let mut found = Vec::new();
    let mut stops = Vec::new();
    let changes = event["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten());
    for change in changes {
        let value = &change["value"];
        for s in value["statuses"].as_array().into_iter().flatten() {
            if let Some(r) = meta_receipt(s) {
                found.push(r);
            }
        }
        for m in value["messages"].as_array().into_iter().flatten() {
            if let (Some(text), Some(from)) = (m["text"]["body"].as_str(), m["from"].as_str()) {
                if is_stop(text) {
                    stops.push(from.to_string());
                }
            }
        }
    }
    found.truncate(MAX_STATUSES);
    for number in &stops {
        opt_out(&app, Channel::Whatsapp, number).await?;
    }
    let tally = if found.is_empty() {
        Default::default()
    } else {
        receipts::apply(&app.stores.slots, &app.events_producer, &app.topics, &found).await?
    };
    Ok(ok(json!({"outcomes": tally, "opted_out": stops.len()})))
}

/// A Meta status as a receipt: `delivered`/`read` delivered, `failed` undelivered with its
/// first error; `sent` is not an outcome.
fn meta_receipt(s: &Value) -> Option<Receipt> {
    let status = match s["status"].as_str()? {
        "delivered" | "read" => ReceiptStatus::Delivered,
        "failed" => ReceiptStatus::Failed,
        _ => return None,
    };
    let reason = s["errors"][0].as_object().map(|e| {
        format!(
            "whatsapp {} {}",
            e.get("code").map(|c| c.to_string()).unwrap_or_default(),
            e.get("title").and_then(Value::as_str).unwrap_or("")
        )
    });
    Some(Receipt {
        key: s["biz_opaque_callback_data"]
            .as_str()?
            .chars()
            .take(256)
            .collect(),
        status,
        reason: reason.map(|r| r.chars().take(512).collect()),
        provider_id: s["id"].as_str().map(|i| i.chars().take(128).collect()),
    })
}
