//! Local stand-ins for Twilio Programmable Messaging, Meta's WhatsApp Cloud API and Firebase
//! Cloud Messaging HTTP v1 (with Google's OAuth2 token endpoint), written from their public
//! API references and strict enough to refuse a malformed call with the provider's
//! documented error: wrong credentials, wrong content type, a missing field. They count
//! every message they accept per recipient, can fail on demand, and post status webhooks
//! signed as the real provider signs them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

mod fcm;
pub use fcm::*;

/// What a fake accepted and how it should misbehave.
#[derive(Default)]
pub struct FakeState {
    /// Accepted messages by recipient (`To`, or the push token).
    pub accepted: Mutex<HashMap<String, u64>>,
    /// Every call, accepted or not.
    pub calls: AtomicU64,
    /// Answer every send with a 5xx.
    pub failing: AtomicBool,
    /// Answer the next this-many sends with 429 and the provider's rate-limit headers.
    pub rate_limit_next: AtomicU64,
    /// Recipients the provider says can never receive.
    pub unreachable: Mutex<HashSet<String>>,
    /// Where status webhooks go; `None` sends none.
    pub webhook: Mutex<Option<String>>,
    /// The last message ids, for tests that forge webhooks.
    pub last_id: Mutex<Option<(String, String)>>,
    /// Bodies refused as malformed (with the provider's error), for the tests to read.
    pub malformed: AtomicU64,
}

impl FakeState {
    pub fn total(&self) -> u64 {
        self.accepted.lock().unwrap().values().sum()
    }

    pub fn to(&self, recipient: &str) -> u64 {
        self.accepted
            .lock()
            .unwrap()
            .get(recipient)
            .copied()
            .unwrap_or(0)
    }

    fn accept(&self, recipient: &str) {
        *self
            .accepted
            .lock()
            .unwrap()
            .entry(recipient.to_string())
            .or_default() += 1;
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

// ---------------------------------------------------------------- Twilio

pub struct Twilio {
    pub url: String,
    pub state: Arc<FakeState>,
}

struct TwilioApp {
    state: Arc<FakeState>,
    account_sid: String,
    auth_token: String,
    next: AtomicU64,
}

fn twilio_error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16()})),
    )
        .into_response()
}

impl Twilio {
    pub async fn start(account_sid: &str, auth_token: &str) -> Twilio {
        let state = Arc::new(FakeState::default());
        let app = Arc::new(TwilioApp {
            state: state.clone(),
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            next: AtomicU64::new(0),
        });
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(twilio_messages),
            )
            .with_state(app);
        Twilio {
            url: serve(router).await,
            state,
        }
    }
}

fn e164(n: &str) -> bool {
    let n = n.strip_prefix("whatsapp:").unwrap_or(n);
    n.len() > 4 && n.starts_with('+') && n[1..].bytes().all(|b| b.is_ascii_digit())
}

async fn twilio_messages(
    State(app): State<Arc<TwilioApp>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let state = &app.state;
    state.calls.fetch_add(1, Ordering::Relaxed);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", app.account_sid, app.auth_token))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
        || sid != app.account_sid
    {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !form {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21601,
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let fields: HashMap<String, String> = form_pairs(&body).into_iter().collect();
    let Some(to) = fields.get("To") else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    if !fields.contains_key("From") && !fields.contains_key("MessagingServiceSid") {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    }
    if fields.get("Body").is_none_or(|b| b.is_empty()) {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    }
    if !e164(to) {
        return twilio_error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
    }
    if state.failing.load(Ordering::Relaxed) {
        return twilio_error(
            StatusCode::SERVICE_UNAVAILABLE,
            20500,
            "Internal Server Error",
        );
    }
    let limited = state
        .rate_limit_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if limited {
        let mut r = twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
        r.headers_mut().insert("Retry-After", "1".parse().unwrap());
        return r;
    }
    if state.unreachable.lock().unwrap().contains(to) {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21610,
            "Attempt to send to unsubscribed recipient",
        );
    }
    let message_sid = format!("SM{:032x}", app.next.fetch_add(1, Ordering::Relaxed));
    state.accept(to);
    if let Some(callback) = fields.get("StatusCallback") {
        *state.last_id.lock().unwrap() = Some((callback.clone(), message_sid.clone()));
        let params = vec![
            ("AccountSid".to_string(), app.account_sid.clone()),
            ("MessageSid".to_string(), message_sid.clone()),
            ("MessageStatus".to_string(), "delivered".to_string()),
            ("To".to_string(), to.clone()),
        ];
        tokio::spawn(post_twilio_webhook(
            callback.clone(),
            params,
            app.auth_token.clone(),
        ));
    }
    (
        StatusCode::CREATED,
        Json(json!({"sid": message_sid, "status": "queued", "to": to, "account_sid": app.account_sid})),
    )
        .into_response()
}

/// Posts form `params` to `url` signed as Twilio signs (X-Twilio-Signature); the status.
pub async fn post_twilio_webhook(
    url: String,
    params: Vec<(String, String)>,
    auth_token: String,
) -> u16 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let signature = herald::auth::webhooks::twilio_signature(&auth_token, &url, &params);
    reqwest::Client::new()
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- Meta WhatsApp Cloud API

pub struct Meta {
    pub url: String,
    pub state: Arc<FakeState>,
}

struct MetaApp {
    state: Arc<FakeState>,
    token: String,
    app_secret: String,
    next: AtomicU64,
}

fn meta_error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Afake"}})),
    )
        .into_response()
}

impl Meta {
    /// Webhooks (when set in `state.webhook`) are signed with `app_secret`.
    pub async fn start(token: &str, app_secret: &str) -> Meta {
        let state = Arc::new(FakeState::default());
        let app = Arc::new(MetaApp {
            state: state.clone(),
            token: token.into(),
            app_secret: app_secret.into(),
            next: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/{version}/{phone}/messages", post(meta_messages))
            .with_state(app);
        Meta {
            url: serve(router).await,
            state,
        }
    }
}

async fn meta_messages(
    State(app): State<Arc<MetaApp>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let state = &app.state;
    state.calls.fetch_add(1, Ordering::Relaxed);
    let expected = format!("Bearer {}", app.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return meta_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token.");
    }
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let Some(msg) = json_body
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
    else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return meta_error(StatusCode::BAD_REQUEST, 100, "Invalid parameter");
    };
    let to = msg["to"].as_str().unwrap_or_default().to_string();
    let well_formed = msg["messaging_product"] == "whatsapp"
        && !to.is_empty()
        && to.bytes().all(|b| b.is_ascii_digit())
        && match msg["type"].as_str() {
            Some("template") => {
                msg["template"]["name"].is_string()
                    && msg["template"]["language"]["code"].is_string()
            }
            Some("text") => msg["text"]["body"].is_string(),
            _ => false,
        };
    if !well_formed {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return meta_error(StatusCode::BAD_REQUEST, 100, "(#100) Invalid parameter");
    }
    if state.failing.load(Ordering::Relaxed) {
        return meta_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            131000,
            "Something went wrong",
        );
    }
    if state.unreachable.lock().unwrap().contains(&to) {
        return meta_error(StatusCode::BAD_REQUEST, 131026, "Message undeliverable");
    }
    let id = format!("wamid.{:024x}", app.next.fetch_add(1, Ordering::Relaxed));
    state.accept(&to);
    let webhook = state.webhook.lock().unwrap().clone();
    if let (Some(url), Some(key)) = (webhook, msg["biz_opaque_callback_data"].as_str()) {
        let event = meta_status_event(&id, key, &to, "read");
        tokio::spawn(post_meta_webhook(url, event, app.app_secret.clone()));
    }
    Json(
        json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": id, "message_status": "accepted"}]}),
    )
    .into_response()
}

/// A webhook call as Meta sends one status.
pub fn meta_status_event(id: &str, key: &str, to: &str, status: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PN"},
                  "statuses": [{"id": id, "status": status, "timestamp": "1767225600", "recipient_id": to,
                                "biz_opaque_callback_data": key}]}}]}]})
}

/// Posts `event` signed as Meta signs (X-Hub-Signature-256 of the raw body); the status.
pub async fn post_meta_webhook(url: String, event: Value, app_secret: String) -> u16 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let body = event.to_string();
    let signature = herald::auth::webhooks::meta_signature(&app_secret, body.as_bytes());
    reqwest::Client::new()
        .post(&url)
        .header("X-Hub-Signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
