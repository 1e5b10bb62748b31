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

// ---------------------------------------------------------------- FCM HTTP v1 + OAuth2

pub struct Fcm {
    pub url: String,
    pub state: Arc<FakeState>,
    pub tokens_issued: Arc<AtomicU64>,
    /// Tokens the fake now refuses, as if revoked or expired early.
    pub revoked: Arc<Mutex<HashSet<String>>>,
}

struct FcmApp {
    state: Arc<FakeState>,
    project: String,
    client_email: String,
    public_key: Vec<u8>,
    /// Seconds a granted access token lives.
    lifetime: u64,
    tokens: Mutex<HashMap<String, std::time::Instant>>,
    issued: Arc<AtomicU64>,
    revoked: Arc<Mutex<HashSet<String>>>,
}

impl Fcm {
    /// `key_pem`: the service account's PKCS#8 private key (the fake checks assertions with
    /// its public half); access tokens live `lifetime` seconds.
    pub async fn start(project: &str, client_email: &str, key_pem: &str, lifetime: u64) -> Fcm {
        let der: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        let state = Arc::new(FakeState::default());
        let issued = Arc::new(AtomicU64::new(0));
        let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
        let app = Arc::new(FcmApp {
            state: state.clone(),
            project: project.into(),
            client_email: client_email.into(),
            public_key: ring::signature::KeyPair::public_key(&pair)
                .as_ref()
                .to_vec(),
            lifetime,
            tokens: Mutex::default(),
            issued: issued.clone(),
            revoked: revoked.clone(),
        });
        let router = Router::new()
            .route("/token", post(oauth_token))
            .route("/v1/projects/{project}/{action}", post(fcm_send))
            .with_state(app);
        Fcm {
            url: serve(router).await,
            state,
            tokens_issued: issued,
            revoked,
        }
    }

    /// Revokes every token granted so far.
    pub fn revoke_all(&self, app_tokens: &[String]) {
        self.revoked
            .lock()
            .unwrap()
            .extend(app_tokens.iter().cloned());
    }
}

fn google_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Google's token endpoint for a service account: a JWT-bearer grant whose RS256 assertion
/// is checked against the account's public key, issuer, audience, scope and times.
async fn oauth_token(
    State(app): State<Arc<FcmApp>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let fields: HashMap<String, String> = form_pairs(&body).into_iter().collect();
    if !form
        || fields.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        );
    }
    let Some(assertion) = fields.get("assertion") else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let valid = parts.len() == 3
        && b64.decode(parts[2]).is_ok_and(|sig| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &app.public_key,
            )
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .is_ok()
        });
    if !valid {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
    }
    let header: Value =
        serde_json::from_slice(&b64.decode(parts[0]).unwrap_or_default()).unwrap_or_default();
    let claims: Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap_or_default()).unwrap_or_default();
    let now = herald::model::now_ms() / 1000;
    let ok = header["alg"] == "RS256"
        && claims["iss"] == app.client_email.as_str()
        && claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        && claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/token"))
        && claims["iat"].as_u64().is_some_and(|t| t <= now + 5)
        && claims["exp"]
            .as_u64()
            .is_some_and(|t| t > now && t <= now + 3600 + 5);
    if !ok {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: claims",
        );
    }
    let token = format!("ya29.fake-{}", app.issued.fetch_add(1, Ordering::Relaxed));
    app.tokens.lock().unwrap().insert(
        token.clone(),
        std::time::Instant::now() + Duration::from_secs(app.lifetime),
    );
    Json(json!({"access_token": token, "expires_in": app.lifetime, "token_type": "Bearer"}))
        .into_response()
}

fn fcm_error(status: StatusCode, state: &str, code: Option<&str>, message: &str) -> Response {
    let details = code
        .map(|c| json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}]))
        .unwrap_or(json!([]));
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": state, "details": details}})),
    )
        .into_response()
}

async fn fcm_send(
    State(app): State<Arc<FcmApp>>,
    Path((project, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let state = &app.state;
    state.calls.fetch_add(1, Ordering::Relaxed);
    if project != app.project || action != "messages:send" {
        return fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            None,
            "Requested entity was not found.",
        );
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let live = app
        .tokens
        .lock()
        .unwrap()
        .get(&token)
        .is_some_and(|until| std::time::Instant::now() < *until);
    if !live || app.revoked.lock().unwrap().contains(&token) {
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials.",
        );
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v)
            if headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("application/json")) =>
        {
            v
        }
        _ => {
            state.malformed.fetch_add(1, Ordering::Relaxed);
            return fcm_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "Invalid JSON payload received.",
            );
        }
    };
    let Some(push_token) = msg["message"]["token"].as_str() else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
            "Recipient of the message is not set.",
        );
    };
    if state.failing.load(Ordering::Relaxed) {
        return fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
            "The service is currently unavailable.",
        );
    }
    if state.unreachable.lock().unwrap().contains(push_token) {
        return fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        );
    }
    state.accept(push_token);
    Json(json!({"name": format!("projects/{}/messages/{}", app.project, state.total())}))
        .into_response()
}

/// The access tokens granted so far (for revoking them).
pub fn granted(fcm: &Fcm) -> Vec<String> {
    (0..fcm.tokens_issued.load(Ordering::Relaxed))
        .map(|i| format!("ya29.fake-{i}"))
        .collect()
}
