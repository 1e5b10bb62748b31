//! Google's FCM HTTP v1 API and OAuth2 token endpoint, as strict as their public references:
//! a malformed call is refused as Google would.

use super::*;

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
