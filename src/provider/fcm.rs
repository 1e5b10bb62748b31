//! Firebase Cloud Messaging HTTP v1 for push: `POST {base}/v1/projects/{project}/messages:send`
//! with an OAuth2 access token. The token comes from the service-account key: a JWT signed
//! RS256 with its private key (`iss` the client e-mail, `scope` firebase.messaging, `aud` the
//! token URI), exchanged at the token URI (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`)
//! and refreshed five minutes before it expires, or at once when FCM answers 401.
//!
//! Answers: 200 with the message `name`; errors as `{"error": {"code", "status", "details":
//! [{"errorCode"}]}}`. `UNREGISTERED` (404) and `INVALID_ARGUMENT` on the token (400),
//! `SENDER_ID_MISMATCH` (403): the token can never receive, it is removed from the profile;
//! `QUOTA_EXCEEDED` (429) slows down by its `Retry-After`; `UNAVAILABLE` (503) and `INTERNAL`
//! are transient. FCM has no delivery receipts: acceptance confirms the delivery.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use reqwest::StatusCode;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::http::{api_client, parse_retry_after, unanswered};
use super::setup::{env, AdapterSettings, ProvidersError, Setup};
use super::{error_reason, AttemptError, AttemptFuture, Outgoing, Transport};
use crate::model::Channel;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A token is renewed this long before Google says it expires (a fifth of its life when
/// that is shorter).
const REFRESH_EARLY: Duration = Duration::from_secs(300);

/// The fields of a service-account key file Herald reads.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key_id: String,
    pub private_key: String,
    pub client_email: String,
    pub token_uri: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FcmSetupError {
    #[error("cannot read the FCM service-account key {0}: {1}")]
    Read(String, String),
    #[error("the FCM service-account key is not a service-account JSON: {0}")]
    Parse(String),
    #[error("the service account's private_key is not a PKCS#8 RSA key in PEM")]
    Key,
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the service account's token_uri {found:?} is not the token endpoint configured ({expected:?}; set `token_uri` in the providers file to use another)")]
    TokenUri { found: String, expected: String },
}

/// Google's OAuth2 token endpoint: the only one a key file may name unless configured.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The `fcm` adapter's settings in the providers file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// FCM's API (`https://fcm.googleapis.com` when absent), or a test server.
    pub url: Option<String>,
    /// The OAuth2 token endpoint the key file must name (Google's when absent).
    pub token_uri: Option<String>,
    /// The variable holding the path of the service-account key file (JSON).
    pub credentials_env: String,
}

impl AdapterSettings for FcmConfig {
    const KIND: &'static str = "fcm";

    fn sends(channel: Channel) -> bool {
        channel == Channel::Push
    }

    fn build(&self, setup: &Setup) -> Result<Box<dyn Transport>, ProvidersError> {
        let path = env(&self.credentials_env)?;
        let token_uri = self
            .token_uri
            .clone()
            .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_string());
        setup.in_clear(&token_uri, true)?;
        Ok(Box::new(
            FcmTransport::new(FcmSettings {
                base_url: setup.api_url(&self.url, "https://fcm.googleapis.com")?,
                account: ServiceAccount::read(path.expose(), &token_uri)
                    .map_err(ProvidersError::adapter)?,
                timeout: setup.timeout(),
                concurrency: setup.concurrency(),
            })
            .map_err(ProvidersError::adapter)?,
        ))
    }
}

pub struct FcmSettings {
    /// `https://fcm.googleapis.com`, or a test server.
    pub base_url: String,
    pub account: ServiceAccount,
    pub timeout: Duration,
    pub concurrency: usize,
}

struct Token {
    value: String,
    renew_at: SystemTime,
}

pub struct FcmTransport {
    http: reqwest::Client,
    send_url: String,
    key: RsaKeyPair,
    account: ServiceAccount,
    token: Mutex<Option<Token>>,
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: u64,
}

impl ServiceAccount {
    /// Reads a key file whose `token_uri` is `expected`: the signed assertion goes there, and
    /// a key file is not trusted to choose where (security review, finding 10).
    pub fn read(path: &str, expected: &str) -> Result<ServiceAccount, FcmSetupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FcmSetupError::Read(path.to_string(), e.to_string()))?;
        let account: ServiceAccount =
            serde_json::from_str(&text).map_err(|e| FcmSetupError::Parse(e.to_string()))?;
        account.check_token_uri(expected)?;
        Ok(account)
    }

    fn check_token_uri(&self, expected: &str) -> Result<(), FcmSetupError> {
        if self.token_uri.trim_end_matches('/') == expected.trim_end_matches('/') {
            Ok(())
        } else {
            Err(FcmSetupError::TokenUri {
                found: self.token_uri.clone(),
                expected: expected.to_string(),
            })
        }
    }
}

/// The DER inside a PEM block.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl FcmTransport {
    pub fn new(s: FcmSettings) -> Result<Self, FcmSetupError> {
        let der = pem_der(&s.account.private_key).ok_or(FcmSetupError::Key)?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|_| FcmSetupError::Key)?;
        let http = api_client(s.timeout, s.concurrency)?;
        Ok(FcmTransport {
            http,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                s.base_url.trim_end_matches('/'),
                s.account.project_id
            ),
            key,
            account: s.account,
            token: Mutex::new(None),
        })
    }

    /// The signed JWT that asks the token URI for an access token.
    fn assertion(&self, now: u64) -> Result<String, AttemptError> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.account.private_key_id});
        let claims = json!({
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.account.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AttemptError::Rejected {
                reason: "cannot sign the FCM token request".into(),
            })?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }

    /// A valid access token: the one held, or a new one when it is due for renewal.
    async fn access_token(&self, force: bool) -> Result<String, AttemptError> {
        let mut held = self.token.lock().await;
        let now = SystemTime::now();
        if let Some(t) = held.as_ref() {
            if !force && now < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let assertion = self.assertion(secs)?;
        let unavailable = |why: String| AttemptError::Transient {
            why,
            maybe_sent: false,
            network: true,
        };
        let response = self
            .http
            .post(&self.account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|_| unavailable("cannot reach the OAuth2 token endpoint".into()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "the OAuth2 token endpoint answered {}",
                response.status()
            )));
        }
        let granted: Granted = super::bounded_json(response).await.ok_or_else(|| {
            unavailable("the OAuth2 token endpoint answered without a token".into())
        })?;
        let life = Duration::from_secs(granted.expires_in);
        let lifetime = life.saturating_sub(REFRESH_EARLY.min(life / 5));
        *held = Some(Token {
            value: granted.access_token.clone(),
            renew_at: now + lifetime,
        });
        Ok(granted.access_token)
    }

    pub fn body(out: &Outgoing<'_>) -> Value {
        let title = out.email.map(|e| e.subject.as_str());
        let mut notification = json!({"body": out.message.message});
        if let Some(t) = title {
            notification["title"] = json!(t);
        }
        json!({"message": {
            "token": out.message.to.trim(),
            "notification": notification,
            "data": {"herald_key": out.key},
        }})
    }

    async fn call(&self, out: &Outgoing<'_>) -> Result<String, AttemptError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token(refreshed).await?;
            let response = self
                .http
                .post(&self.send_url)
                .bearer_auth(&token)
                .json(&Self::body(out))
                .send()
                .await
                .map_err(|e| unanswered("FCM", &e))?;
            let status = response.status();
            if status.is_success() {
                let body: Value = super::bounded_json(response).await.unwrap_or_default();
                return Ok(body["name"].as_str().unwrap_or_default().to_string());
            }
            // An access token that expired early (revoked, clock skew): one new one, once.
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                continue;
            }
            let retry_after =
                parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
            let body: Value = super::bounded_json(response).await.unwrap_or_default();
            return Err(classify(status, &body, retry_after));
        }
    }
}

/// The FCM error code of an error body (`details[].errorCode`), or its `status`.
fn error_code(body: &Value) -> String {
    let error = &body["error"];
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .or(error["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn classify(status: StatusCode, body: &Value, retry_after: Duration) -> AttemptError {
    let code = error_code(body);
    let message = body["error"]["message"].as_str().unwrap_or("");
    let reason = error_reason("FCM", status, &code, message);
    match code.as_str() {
        "UNREGISTERED" | "INVALID_ARGUMENT" | "SENDER_ID_MISMATCH" => {
            AttemptError::Undeliverable { reason }
        }
        "QUOTA_EXCEEDED" => AttemptError::RateLimited { retry_after },
        // The app's APNs / web push credentials are wrong: not this token's fault, not
        // mended by retrying.
        "THIRD_PARTY_AUTH_ERROR" => AttemptError::Rejected { reason },
        "UNAVAILABLE" | "INTERNAL" => AttemptError::answered(reason),
        _ if status == StatusCode::TOO_MANY_REQUESTS => AttemptError::RateLimited { retry_after },
        _ if status.is_server_error() || status == StatusCode::UNAUTHORIZED => {
            AttemptError::answered(reason)
        }
        _ => AttemptError::Rejected { reason },
    }
}

impl Transport for FcmTransport {
    fn attempt<'a>(&'a self, out: &'a Outgoing<'a>) -> AttemptFuture<'a> {
        Box::pin(self.call(out))
    }

    fn confirms_on_accept(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_naming_another_token_endpoint_is_refused() {
        let dir = std::env::temp_dir().join(format!("herald-fcm-uri-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.json");
        let write = |uri: &str| {
            let key = json!({"project_id": "p", "private_key_id": "k", "private_key": "x",
                             "client_email": "a@p.iam.gserviceaccount.com", "token_uri": uri});
            std::fs::write(&file, key.to_string()).unwrap();
        };
        write("https://attacker.example/token");
        let refused = ServiceAccount::read(file.to_str().unwrap(), GOOGLE_TOKEN_URI);
        assert!(
            matches!(&refused, Err(FcmSetupError::TokenUri { found, .. }) if found.contains("attacker")),
            "{:?}",
            refused.err()
        );
        write(GOOGLE_TOKEN_URI);
        assert!(ServiceAccount::read(file.to_str().unwrap(), GOOGLE_TOKEN_URI).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn documented_error_codes_map_to_outcomes() {
        let e = |status: u16, code: &str| {
            let body = json!({"error": {"code": status, "status": "X", "message": "m",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}});
            classify(
                StatusCode::from_u16(status).unwrap(),
                &body,
                Duration::from_secs(2),
            )
        };
        assert!(matches!(
            e(404, "UNREGISTERED"),
            AttemptError::Undeliverable { .. }
        ));
        assert!(matches!(
            e(400, "INVALID_ARGUMENT"),
            AttemptError::Undeliverable { .. }
        ));
        assert!(
            matches!(e(429, "QUOTA_EXCEEDED"), AttemptError::RateLimited { retry_after } if retry_after == Duration::from_secs(2))
        );
        assert!(matches!(
            e(503, "UNAVAILABLE"),
            AttemptError::Transient { .. }
        ));
        assert!(matches!(
            e(401, "THIRD_PARTY_AUTH_ERROR"),
            AttemptError::Rejected { .. }
        ));
    }
}
